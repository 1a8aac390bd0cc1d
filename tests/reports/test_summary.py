"""Tests for the summary line, colour and exit code, checked against a real pytest run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swarmctl.reports.summary import (
    count_categories,
    exit_code_for,
    format_session_duration,
    format_summary_line,
    main_color,
)
from swarmctl.results import CaseResult

# A suite that produces every category of pytest 9.2's summary line except "subtests
# failed" and "subtests skipped", which pytest 9.2 counts as "failed" and "skipped".
# The conftest hook adds two categories pytest does not list, "rerun" and "timed out",
# the way plugins such as pytest-rerunfailures add theirs.
REAL_SUITE_CONFTEST = """
def pytest_configure(config):
    config.addinivalue_line("markers", "rerun: counted as rerun")
    config.addinivalue_line("markers", "ran_too_long: counted as timed out")


def pytest_report_teststatus(report, config):
    if report.when != "call":
        return None
    if "rerun" in report.keywords:
        return "rerun", "R", "RERUN"
    if "ran_too_long" in report.keywords:
        return "timed out", "T", "TIMED OUT"
    return None
"""

REAL_SUITE_TESTS = """
import warnings

import pytest


@pytest.fixture
def broken_setup():
    raise RuntimeError("setup failed")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown failed")


def test_pass():
    pass


def test_fail():
    assert 1 == 2


def test_skip():
    pytest.skip("not here")


@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False


@pytest.mark.xfail(reason="fixed since")
def test_xpass():
    pass


def test_setup_error(broken_setup):
    pass


def test_teardown_error_after_pass(broken_teardown):
    pass


def test_left_out_by_k():
    pass


def test_warns():
    warnings.warn("careful", UserWarning)


def test_subtests(subtests):
    with subtests.test(msg="good"):
        pass
    with subtests.test(msg="bad"):
        assert False


@pytest.mark.rerun
def test_rerun():
    pass


@pytest.mark.ran_too_long
def test_ran_too_long():
    pass
"""

# The results swarmctl would report for REAL_SUITE_TESTS, in collection order.
REAL_SUITE_RESULTS = [
    CaseResult("test_real.py::test_pass", "passed"),
    CaseResult("test_real.py::test_fail", "failed"),
    CaseResult("test_real.py::test_skip", "skipped"),
    CaseResult("test_real.py::test_xfail", "xfailed"),
    CaseResult("test_real.py::test_xpass", "xpassed"),
    CaseResult("test_real.py::test_setup_error", "error", when="setup"),
    CaseResult(
        "test_real.py::test_teardown_error_after_pass",
        "error",
        when="teardown",
        counted_as=("passed", "error"),
    ),
    CaseResult("test_real.py::test_warns", "passed"),
    CaseResult(
        "test_real.py::test_subtests",
        "failed",
        counted_as=("subtests passed", "failed", "failed"),
    ),
    CaseResult("test_real.py::test_rerun", "passed", counted_as=("rerun",)),
    CaseResult("test_real.py::test_ran_too_long", "timed_out"),
]

SUMMARY_DURATION = re.compile(r" in (\d+\.\d+)s(?: \(\d+:\d\d:\d\d\))?$")


def run_real_pytest(folder: Path, *args: str) -> subprocess.Popen[str]:
    """Start pytest on ``folder`` with only its built-in plugins, quiet, without a cache."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish_real_pytest(process: subprocess.Popen[str]) -> tuple[str, int]:
    """Wait for pytest and return its last output line and its exit code."""
    output, _ = process.communicate(timeout=60)
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, f"pytest printed nothing, exit code {process.returncode}"
    return lines[-1], process.returncode


def reported_seconds(line: str) -> float:
    match = SUMMARY_DURATION.search(line)
    assert match, f"no duration in pytest's summary line: {line!r}"
    return float(match.group(1))


def make_folder(parent: Path, name: str, files: dict[str, str]) -> Path:
    folder = parent / name
    folder.mkdir()
    # An ini file pins pytest's rootdir here, so no configuration above tmp_path applies.
    (folder / "pytest.ini").write_text("[pytest]\n")
    for filename, source in files.items():
        (folder / filename).write_text(textwrap.dedent(source))
    return folder


def test_summary_line_matches_real_pytest(tmp_path):
    full = make_folder(
        tmp_path,
        "full",
        {"conftest.py": REAL_SUITE_CONFTEST, "test_real.py": REAL_SUITE_TESTS},
    )
    empty = make_folder(tmp_path, "empty", {"test_empty.py": "\n"})
    all_deselected = make_folder(tmp_path, "deselected", {"test_one.py": "def test_one():\n    pass\n"})

    # The three runs are started together to keep this test fast.
    full_run = run_real_pytest(full, "-k", "not left_out_by_k", "-o", "verbosity_subtests=1")
    empty_run = run_real_pytest(empty)
    deselected_run = run_real_pytest(all_deselected, "-k", "nothing_has_this_name")

    full_line, full_code = finish_real_pytest(full_run)
    counts = count_categories(REAL_SUITE_RESULTS)
    counts["warnings"] = 1
    assert format_summary_line(counts, reported_seconds(full_line), deselected=1) == full_line
    assert exit_code_for(REAL_SUITE_RESULTS) == full_code

    empty_line, empty_code = finish_real_pytest(empty_run)
    assert format_summary_line({}, reported_seconds(empty_line)) == empty_line
    assert exit_code_for([]) == empty_code

    deselected_line, deselected_code = finish_real_pytest(deselected_run)
    assert format_summary_line({}, reported_seconds(deselected_line), deselected=1) == deselected_line
    assert deselected_code == 5


def test_summary_line_known_types_order():
    counts = {
        "error": 1,
        "xpassed": 1,
        "passed": 3,
        "xfailed": 4,
        "skipped": 7,
        "failed": 3,
    }

    assert format_summary_line(counts, 0.12) == (
        "3 failed, 3 passed, 7 skipped, 4 xfailed, 1 xpassed, 1 error in 0.12s"
    )


def test_summary_line_subtests_after_errors():
    counts = {"subtests skipped": 1, "subtests failed": 2, "subtests passed": 3, "error": 2}

    line = format_summary_line(counts, 1.0)

    assert line == "2 errors, 3 subtests passed, 2 subtests failed, 1 subtests skipped in 1.00s"


def test_summary_line_unknown_types_first_seen():
    counts = {"timed_out": 2, "passed": 1, "rerun": 1, "failed": 1}

    line = format_summary_line(counts, 0.5)

    assert line == "1 failed, 1 passed, 2 timed out, 1 rerun in 0.50s"


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"error": 1}, "1 error"),
        ({"error": 2}, "2 errors"),
        ({"warnings": 1}, "1 warning"),
        ({"warnings": 3}, "3 warnings"),
        ({"failed": 1, "passed": 0}, "1 failed"),
    ],
)
def test_summary_line_plurals(counts, expected):
    assert format_summary_line(counts, 0.0) == f"{expected} in 0.00s"


def test_summary_line_deselected_added():
    assert format_summary_line({"passed": 1}, 0.01, deselected=2) == "1 passed, 2 deselected in 0.01s"
    assert format_summary_line({"deselected": 1}, 0.01, deselected=2) == "3 deselected in 0.01s"


def test_summary_line_nothing_ran():
    assert format_summary_line({}, 0.01) == "no tests ran in 0.01s"
    assert format_summary_line({"passed": 0}, 0.01) == "no tests ran in 0.01s"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, "0.00s"),
        (0.125, "0.12s"),
        (59.99, "59.99s"),
        (60.0, "60.00s (0:01:00)"),
        (75.0, "75.00s (0:01:15)"),
        (3725.5, "3725.50s (1:02:05)"),
    ],
)
def test_session_duration_format(seconds, expected):
    assert format_session_duration(seconds) == expected


def test_summary_line_long_duration():
    assert format_summary_line({"passed": 1}, 75.0) == "1 passed in 75.00s (0:01:15)"


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"passed": 5}, "green"),
        ({"passed": 5, "skipped": 1, "xfailed": 1, "deselected": 2}, "green"),
        ({"passed": 5, "failed": 1}, "red"),
        ({"passed": 5, "error": 1}, "red"),
        ({"passed": 5, "timed_out": 1}, "red"),
        ({"failed": 1, "xpassed": 1}, "red"),
        ({"passed": 5, "xpassed": 1}, "yellow"),
        ({"passed": 5, "warnings": 1}, "yellow"),
        ({"passed": 5, "rerun": 1}, "yellow"),
        ({"skipped": 2}, "yellow"),
        ({"deselected": 2}, "yellow"),
        ({}, "yellow"),
        ({"passed": 0, "failed": 0}, "yellow"),
        ({"passed": 1, "subtests passed": 2}, "green"),
    ],
)
def test_main_color_rules(counts, expected):
    assert main_color(counts) == expected


def test_count_categories_sums_counted_as():
    results = [
        CaseResult("a.py::test_a", "passed"),
        CaseResult("a.py::test_b", "error", when="teardown", counted_as=("passed", "error")),
        CaseResult("a.py::test_c", "failed", counted_as=("failed", "failed", "failed")),
    ]

    counts = count_categories(results)

    assert counts == {"passed": 2, "error": 1, "failed": 3}
    assert list(counts) == ["passed", "error", "failed"]


@pytest.mark.parametrize(
    ("outcomes", "interrupted", "expected"),
    [
        ([], False, 5),
        ([], True, 2),
        (["passed"], True, 2),
        (["passed", "skipped", "xfailed", "xpassed"], False, 0),
        (["passed", "failed"], False, 1),
        (["error"], False, 1),
        (["timed_out"], False, 1),
    ],
)
def test_exit_code_rules(outcomes, interrupted, expected):
    results = [CaseResult(f"cmd-{index}", outcome) for index, outcome in enumerate(outcomes)]

    assert exit_code_for(results, interrupted=interrupted) == expected


def test_exit_code_counted_error():
    # A passed outcome that pytest also counts as an error still fails the run.
    result = CaseResult("a.py::test_a", "passed", counted_as=("passed", "error"))

    assert exit_code_for([result]) == 1


def test_exit_code_accepts_generator():
    assert exit_code_for(CaseResult(f"cmd-{i}", "passed") for i in range(3)) == 0
