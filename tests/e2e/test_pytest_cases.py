"""The hard pytest cases, each run end to end with `swarmctl run` on the embedded default.

Each case folder holds the correct result per node id in expected.json; these tests compare
swarmctl's JSON and JUnit reports with it, node id by node id, byte for byte.
"""

from __future__ import annotations

import os
import re
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

from tests.conftest import copy_case, load_json, outcomes_by_id, run_swarmctl


def run_case(name: str, tmp_path: Path, env: dict, *args: str, timeout: float = 180):
    """Run a copy of case ``name``; return (process, JSON report, JUnit root, seconds)."""
    suite = copy_case("pytest", name, tmp_path)
    json_path, junit_path = tmp_path / "report.json", tmp_path / "report.xml"
    started = time.monotonic()
    process = run_swarmctl(
        ["run", str(suite), "--json", str(json_path), "--junitxml", str(junit_path), *args], env, timeout=timeout
    )
    elapsed = time.monotonic() - started
    assert json_path.exists(), f"no JSON report; stdout:\n{process.stdout}\nstderr:\n{process.stderr}"
    return process, load_json(json_path), ET.parse(junit_path).getroot(), elapsed


def expected_of(name: str) -> dict:
    from tests.conftest import CASES

    return load_json(CASES / "pytest" / name / "expected.json")["expected"]


def assert_outcomes(actual: dict[str, str], expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for node_id, outcome in expected.items():
        if isinstance(outcome, dict):
            assert actual[node_id] in outcome["any_of"], node_id
        else:
            assert actual[node_id] == outcome, node_id


def junit_count(root: ET.Element) -> int:
    return len(root.findall(".//testcase"))


def case_by_id(report: dict, node_id: str) -> dict:
    return next(case for case in report["cases"] if case["id"] == node_id)


PLAIN_CASES = [
    "008_unicode_ids_escaped",
    "010_special_char_ids",
    "021_skip_xfail_matrix",
    "026_sys_exit_in_test",
]


@pytest.mark.parametrize("name", PLAIN_CASES)
def test_case_matches_plain_pytest(name, tmp_path, swarm_env):
    expected = expected_of(name)

    process, report, junit, _ = run_case(name, tmp_path, swarm_env, "-n", "2")

    assert_outcomes(outcomes_by_id(report), expected["outcomes"])
    assert process.returncode == expected["exit_code"], process.stdout + process.stderr
    assert junit_count(junit) == len(expected["outcomes"])


def test_case_unicode_ids_round_trip(tmp_path, swarm_env):
    _, report, junit, _ = run_case("008_unicode_ids_escaped", tmp_path, swarm_env, "-n", "2")

    ids = [case["id"] for case in report["cases"]]
    assert "test_case.py::test_word[caf\\xe9]" in ids
    assert "test_case.py::test_ünicode_function_name" in ids
    names = {tc.get("name") for tc in junit.iter("testcase")}
    assert "test_word[\\U0001f680\\U0001f525]" in names


def test_case_skip_xfail_totals(tmp_path, swarm_env):
    expected = expected_of("021_skip_xfail_matrix")

    process, report, _, _ = run_case("021_skip_xfail_matrix", tmp_path, swarm_env, "-n", "2")

    assert report["summary"]["categories"] == expected["totals"]
    assert "3 failed, 3 passed, 7 skipped, 4 xfailed, 1 xpassed, 1 error in" in process.stdout
    assert case_by_id(report, "test_case.py::test_skip_marker")["message"] == "marker skip"
    assert case_by_id(report, "test_case.py::test_xfail_that_fails")["message"] == "known bug"


def test_case_failed_ids_select_exactly(tmp_path, swarm_env):
    """Passing failed node ids back as pytest arguments selects exactly those tests."""
    _, first, _, _ = run_case("010_special_char_ids", tmp_path / "first", swarm_env, "-n", "2")
    failed = [case["id"] for case in first["cases"] if case["outcome"] == "failed"]
    assert len(failed) == 7

    _, rerun, _, _ = run_case("010_special_char_ids", tmp_path / "rerun", swarm_env, "-n", "2", "--", *failed)

    assert sorted(outcomes_by_id(rerun)) == sorted(failed)


def test_case_segfault_attributed_to_one_test(tmp_path, swarm_env):
    expected = expected_of("001_segfault_mid_file")

    process, report, _, _ = run_case("001_segfault_mid_file", tmp_path, swarm_env, "-n", "2")

    assert_outcomes(outcomes_by_id(report), expected["outcomes"])
    assert process.returncode == 1
    crash = case_by_id(report, "test_case.py::test_segfault")
    assert "SIGSEGV" in crash["message"]
    assert "Segmentation fault" in crash["longrepr"]  # faulthandler's report from the worker
    assert "test_case.py" in crash["longrepr"]


def test_case_sigkill_names_signal(tmp_path, swarm_env):
    expected = expected_of("003_sigkill_self")

    process, report, _, _ = run_case("003_sigkill_self", tmp_path, swarm_env, "-n", "2")

    assert_outcomes(outcomes_by_id(report), expected["outcomes"])
    assert process.returncode == 1
    crash = case_by_id(report, "test_case.py::test_killed_like_oom")
    assert "SIGKILL" in crash["message"]
    assert "out-of-memory" in crash["message"]


def test_case_hangs_stopped_by_timeout(tmp_path, swarm_env):
    expected = expected_of("004_hang_forever")

    process, report, _, elapsed = run_case("004_hang_forever", tmp_path, swarm_env, "-n", "2", "--timeout", "3")

    assert_outcomes(outcomes_by_id(report), expected["outcomes"])
    assert process.returncode == 1
    for node_id in ("test_case.py::test_sleeps_900s", "test_case.py::test_deadlock_on_own_lock", "test_case.py::test_busy_loop"):
        case = case_by_id(report, node_id)
        assert "Timeout (>3.0s)" in case["message"], node_id
        assert "test_case.py" in case["longrepr"], node_id  # the stack dump shows where it hung
    assert elapsed < 60  # a hang guard, not a speed check: without the timeout this never ends


def test_case_huge_output_truncated(tmp_path, swarm_env):
    expected = expected_of("006_huge_output")

    process, report, junit, _ = run_case("006_huge_output", tmp_path, swarm_env, "-n", "2", "--", "-rA")

    assert_outcomes(outcomes_by_id(report), expected["outcomes"])
    assert process.returncode == 1
    failing = case_by_id(report, "test_case.py::test_stdout_50mb_lines_then_fails")
    assert "fails after printing 50 MB to stdout" in failing["message"]
    assert "fails after printing 50 MB to stdout" in failing["longrepr"]
    assert junit_count(junit) == 4
    report_size = (tmp_path / "report.json").stat().st_size
    assert report_size < 5 * 1024 * 1024


def test_case_collection_errors_interrupt(tmp_path, swarm_env):
    expected = expected_of("014_collection_error_one_file")["default"]

    process, report, _, _ = run_case("014_collection_error_one_file", tmp_path, swarm_env, "-n", "2")

    assert_outcomes(outcomes_by_id(report), expected["outcomes"])
    assert process.returncode == expected["exit_code"] == 2
    assert "Interrupted: 2 errors during collection" in process.stdout
    assert "ModuleNotFoundError" in case_by_id(report, "test_import_error.py")["longrepr"]
    assert "SyntaxError" in case_by_id(report, "test_syntax_error.py")["longrepr"]


def test_case_collection_errors_continue(tmp_path, swarm_env):
    expected = expected_of("014_collection_error_one_file")["continue_on_collection_errors"]

    process, report, _, _ = run_case(
        "014_collection_error_one_file", tmp_path, swarm_env, "-n", "2", "--", "--continue-on-collection-errors"
    )

    assert_outcomes(outcomes_by_id(report), expected["outcomes"])
    assert process.returncode == expected["exit_code"] == 1


def test_case_children_outliving_tests(tmp_path, swarm_env):
    expected = expected_of("024_child_outlives_test")
    pidfile = tmp_path / "case024_pids.txt"
    swarm_env["CASE024_PIDFILE"] = str(pidfile)
    try:
        process, report, _, elapsed = run_case("024_child_outlives_test", tmp_path, swarm_env, "-n", "2")

        assert_outcomes(outcomes_by_id(report), expected["outcomes"])
        assert process.returncode == 0
        assert elapsed < 60  # the children live 120 s; the run must not wait for them
        pids = [int(line) for line in pidfile.read_text().split()]
        assert len(pids) == 3
        assert [pid for pid in pids if running(pid)] == []
        warnings = {case["id"]: " ".join(case["warnings"]) for case in report["cases"]}
        for pid in pids:
            assert sum(f"pid {pid}:" in text for text in warnings.values()) == 1, (pid, warnings)
        assert all(warnings[node_id] for node_id in list(expected["outcomes"])[:3])
        assert warnings["test_case.py::test_quick_neighbour"] == ""
    finally:
        for line in pidfile.read_text().split() if pidfile.exists() else []:
            try:
                os.kill(int(line), signal.SIGKILL)
            except ProcessLookupError:
                pass


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_case_more_executors_than_tests(tmp_path, swarm_env):
    expected = expected_of("029_more_executors_than_tests")

    process, report, _, _ = run_case("029_more_executors_than_tests", tmp_path, swarm_env, "-n", "8")

    assert_outcomes(outcomes_by_id(report), expected["outcomes"])
    assert process.returncode == 0


def test_case_flaky_without_retries(tmp_path, swarm_env):
    expected = expected_of("030_flaky_then_passes_on_retry")

    process, report, _, _ = run_case("030_flaky_then_passes_on_retry", tmp_path, swarm_env, "-n", "2")

    assert_outcomes(outcomes_by_id(report), expected["outcomes"])
    assert process.returncode == 1
    assert {case["attempt"] for case in report["cases"]} == {1}


def test_case_many_tiny_tests(tmp_path, swarm_env):
    pattern = expected_of("033_many_tiny_tests")["outcome_patterns"][0]

    process, report, junit, _ = run_case("033_many_tiny_tests", tmp_path, swarm_env, "-n", "2")

    outcomes = outcomes_by_id(report)
    assert len(outcomes) == pattern["count"] == 10000
    assert all(re.match(pattern["regex"], node_id) for node_id in outcomes)
    assert set(outcomes.values()) == {pattern["outcome"]}
    assert process.returncode == 0
    assert junit_count(junit) == 10000


def test_case_flaky_passes_on_retry(tmp_path, swarm_env):
    expected = expected_of("030_flaky_then_passes_on_retry")["with_retries_1_or_more"]

    process, report, junit, _ = run_case("030_flaky_then_passes_on_retry", tmp_path, swarm_env, "-n", "2", "--retries", "2")

    assert_outcomes(outcomes_by_id(report), expected["outcomes"])
    assert process.returncode == expected["exit_code"] == 1
    flaky = [case["id"] for case in report["cases"] if case["flaky"]]
    assert flaky == expected["flaky"]
    attempts = {case["id"]: case["attempt"] for case in report["cases"]}
    assert attempts == {
        "test_case.py::test_fails_first_attempt_only": 2,
        "test_case.py::test_always_fails": 3,  # retries + 1
        "test_case.py::test_always_passes": 1,
    }
    assert "FLAKY test_case.py::test_fails_first_attempt_only" in process.stdout
    flaky_props = [p.get("value") for p in junit.iter("property") if p.get("name") == "flaky"]
    assert flaky_props == ["true"]
    flaky_case = next(case for case in junit.iter("testcase") if case.get("name") == "test_fails_first_attempt_only")
    assert [child.tag for child in flaky_case if child.tag.startswith(("flaky", "rerun"))] == ["flakyFailure"]
    failing_case = next(case for case in junit.iter("testcase") if case.get("name") == "test_always_fails")
    assert [child.tag for child in failing_case if child.tag.startswith(("flaky", "rerun"))] == ["rerunFailure", "rerunFailure"]
    assert failing_case.find("failure") is not None
