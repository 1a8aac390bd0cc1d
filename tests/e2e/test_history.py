"""``swarmctl history``, ``compare`` and ``report`` over two real runs in one data folder.

The first run is a generated suite as written. Before the second run one test is broken,
one is made flaky, one is added and one is removed. Both runs use ``--retries 1``, so the
failing tests leave earlier attempts in the database.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import BIN, generate_suite, load_json, run_swarmctl

# Its tests share a module-scoped fixture, so pytest-xdist keeps them on one worker.
pytestmark = pytest.mark.xdist_group("history")

BROKEN = "test_gen_0.py::test_case_2"
FLAKY = "test_gen_0.py::test_case_0"
ADDED = "test_gen_1.py::test_case_added"
REMOVED = "test_gen_1.py::test_case_5"
ALWAYS_FAILING = "test_gen_1.py::test_case_4"  # the generated failure, in both runs


@dataclass(frozen=True)
class TwoRuns:
    env: dict[str, str]
    first: dict  # the --json report of each run
    second: dict


def edit_suite(suite: Path, marker: Path) -> None:
    """Break one test, make one flaky, add one and remove one, in the generated files."""
    first_file = suite / "test_gen_0.py"
    text = first_file.read_text()
    text = text.replace("assert 3 * 4 == 12", 'assert 3 * 4 == 13, "broken in the second run"')
    text = text.replace(
        "def test_case_0():\n    assert 1 * 2 == 2",
        "def test_case_0():\n"
        f"    marker = __import__('pathlib').Path({str(marker)!r})\n"
        "    if not marker.exists():\n"
        "        marker.write_text('failed once')\n"
        "        assert False, 'fails on the first attempt only'",
    )
    first_file.write_text(text)

    second_file = suite / "test_gen_1.py"
    text = second_file.read_text()
    text = text.replace("def test_case_5():\n    assert 6 * 7 == 42\n", "")
    text += "\n\ndef test_case_added():\n    assert True\n"
    second_file.write_text(text)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> TwoRuns:
    folder = tmp_path_factory.mktemp("history")
    env = dict(os.environ)
    env["SWARMCTL_HOME"] = str(folder / "swarm-home")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTEST_ADDOPTS", None)
    suite = generate_suite(folder / "suite", tests=6, files=2, sleep_ms=0, failed=1, skipped=1)

    reports = []
    for number in (1, 2):
        if number == 2:
            edit_suite(suite, folder / "flaky-marker")
        report = folder / f"run-{number}.json"
        process = run_swarmctl(["run", str(suite), "-n", "2", "--retries", "1", "--json", str(report)], env)
        assert process.returncode == 1, process.stdout + process.stderr
        reports.append(load_json(report))
    return TwoRuns(env, reports[0], reports[1])


def swarmctl_ok(args: list[str], env: dict[str, str]) -> str:
    process = run_swarmctl(args, env, timeout=60)
    assert process.returncode == 0, process.stderr
    return process.stdout


class ScriptCollector(HTMLParser):
    """Collect the text of each ``<script>`` element by its id."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: dict[str, str] = {}
        self._current: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._current = dict(attrs).get("id") or ""
            self.scripts[self._current] = ""

    def handle_endtag(self, tag):
        if tag == "script":
            self._current = None

    def handle_data(self, data):
        if self._current is not None:
            self.scripts[self._current] += data


def test_history_lists_runs_newest_first(two_runs):
    entries = json.loads(swarmctl_ok(["history", "--json"], two_runs.env))

    assert [entry["run_id"] for entry in entries] == [two_runs.second["run_id"], two_runs.first["run_id"]]
    newest = entries[0]
    assert newest["counts"] == two_runs.second["summary"]["counts"]
    assert newest["flaky"] == 1
    assert newest["status"] == "finished"
    assert newest["exit_code"] == 1
    assert len(newest["trend"]) == 2
    assert newest["delta_pp"] == pytest.approx((newest["trend"][1] - newest["trend"][0]) * 100)


def test_history_table_and_suite_filter(two_runs):
    table = swarmctl_ok(["history"], two_runs.env)
    assert two_runs.first["run_id"] in table
    assert two_runs.second["run_id"] in table
    assert "pp" in table  # the delta of the second run

    limited = json.loads(swarmctl_ok(["history", "--json", "--limit", "1", "--suite", "suite"], two_runs.env))
    assert [entry["run_id"] for entry in limited] == [two_runs.second["run_id"]]

    process = run_swarmctl(["history", "--suite", "no-such-suite"], two_runs.env, timeout=60)
    assert process.returncode == 4
    assert process.stderr.startswith("swarmctl: error: no run of suite 'no-such-suite'")


def test_compare_names_each_change(two_runs):
    first, second = two_runs.first["run_id"], two_runs.second["run_id"]

    comparison = json.loads(swarmctl_ok(["compare", first, second, "--json"], two_runs.env))

    assert [entry["id"] for entry in comparison["new_failures"]] == [BROKEN]
    assert comparison["new_failures"][0]["message"].startswith("AssertionError: broken in the second run")
    assert [entry["id"] for entry in comparison["added"]] == [ADDED]
    assert [entry["id"] for entry in comparison["removed"]] == [REMOVED]
    assert [entry["id"] for entry in comparison["newly_flaky"]] == [FLAKY]
    assert comparison["fixed"] == []


def test_compare_text_output(two_runs):
    text = swarmctl_ok(["compare", "last~1", "last"], two_runs.env)

    assert "new failures (1):" in text
    assert f"  {BROKEN}  passed -> failed" in text
    assert f"  {ADDED}  passed" in text


def test_report_json_equals_run_json(two_runs):
    report = json.loads(swarmctl_ok(["report", "last", "--format", "json"], two_runs.env))

    assert report == two_runs.second


def test_report_junit_has_reruns(two_runs, tmp_path):
    output = tmp_path / "junit.xml"
    swarmctl_ok(["report", "last", "-o", str(output)], two_runs.env)

    root = ET.parse(output).getroot()
    cases = {f"{case.get('classname')}.{case.get('name')}": case for case in root.iter("testcase")}
    flaky = cases["test_gen_0.test_case_0"]
    assert flaky.find("failure") is None
    assert len(flaky.findall("flakyFailure")) == 1
    assert "fails on the first attempt only" in flaky.find("flakyFailure/stackTrace").text
    broken = cases["test_gen_0.test_case_2"]
    assert len(broken.findall("failure")) == 1
    assert len(broken.findall("rerunFailure")) == 1
    assert root.find("testsuite").get("failures") == "2"


def test_report_html_and_markdown(two_runs):
    page = swarmctl_ok(["report", "last", "--format", "html"], two_runs.env)
    collector = ScriptCollector()
    collector.feed(page)
    data = json.loads(collector.scripts["swarmctl-data"])
    assert [case["id"] for case in data["cases"]] == [case["id"] for case in two_runs.second["cases"]]

    markdown = swarmctl_ok(["report", "last", "--format", "md"], two_runs.env)
    assert f"| `{BROKEN}` | failed |" in markdown
    assert f"| `{FLAKY}` | 2 |" in markdown


def test_report_unknown_run_lists_ids(two_runs):
    process = run_swarmctl(["report", "no-such-run"], two_runs.env, timeout=60)

    assert process.returncode == 4
    assert process.stderr.count("\n") == 1
    assert process.stderr.startswith("swarmctl: error: run 'no-such-run' not found")
    assert two_runs.second["run_id"] in process.stderr


def test_report_missing_database(tmp_path, swarm_env):
    process = run_swarmctl(["report", "last", "--data-dir", str(tmp_path / "empty")], swarm_env, timeout=60)

    assert process.returncode == 4
    assert process.stderr.startswith(f"swarmctl: error: no state database at {tmp_path / 'empty' / 'state.db'}")
