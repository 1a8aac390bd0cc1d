"""Tests for the JSON report: its layout and byte-exact case ids."""

from __future__ import annotations

import json

import pytest

from swarmctl.reports.json_report import build_json_report, write_json_report
from swarmctl.results import CaseResult, RunSummary, Subtest

SUMMARY = RunSummary(
    run_id="run-7",
    exit_code=1,
    wall_s=3.5,
    started_at=1_700_000_000.25,
    suite="tests/",
    deselected=2,
    error="",
    executors=["exec-a", "exec-b"],
)

# Ids as pytest writes them. The backslashes are literal characters: pytest escapes
# non-ASCII and control characters in parameter ids, and the report must keep that text.
AWKWARD_IDS = [
    "tests/test_word.py::test_word[caf\\xe9]",
    "tests/test_word.py::test_word[a\\nb]",
    'tests/test_q.py::test_quote[say "hi"]',
    "tests/test_q.py::test_quote[it's]",
    "test_case.py::test_id[a::b]",
    "test_case.py::TestNested::TestInner::test_deep[a::b::c]",
    "tests/test_x.py::test_nested[x[1]]",
    "tests/test_uni.py::test_literal[é中]",
    "tests/test_tab.py::test_raw[\t]",
    "make docs && echo 'done'",
]


def test_json_layout():
    results = [
        CaseResult("tests/test_a.py::test_one", "passed", duration=0.5, executor="exec-a"),
        CaseResult(
            "tests/test_a.py::test_two",
            "failed",
            duration=1.25,
            executor="exec-b",
            attempt=2,
            message="assert 1 == 2",
            longrepr="E   assert 1 == 2",
            counted_as=("failed", "failed"),
            subtests=(Subtest("[bad]", "failed", "E   assert False"),),
            stdout="collected output\n",
            reassigned_from=("exec-c",),
        ),
        CaseResult("lint", "timed_out", message="timed out after 5s", exit_code=None, signal="SIGKILL"),
        CaseResult("tests/test_a.py::test_three", "passed", executor="exec-a"),
    ]

    report = build_json_report(SUMMARY, results)

    assert list(report) == ["run_id", "summary", "cases"]
    assert report["run_id"] == "run-7"
    assert report["summary"] == {
        "exit_code": 1,
        "wall_s": 3.5,
        "total": 4,
        "counts": {"passed": 2, "failed": 1, "timed_out": 1},
        "categories": {"passed": 2, "failed": 2, "timed_out": 1},
        "deselected": 2,
        "error": "",
        "started_at": 1_700_000_000.25,
        "suite": "tests/",
        "executors": ["exec-a", "exec-b"],
        "reassigned": 1,
        "duplicates": 0,
        "fenced": 0,
    }
    assert [case["id"] for case in report["cases"]] == [result.case_id for result in results]
    assert report["cases"][1] == {
        "id": "tests/test_a.py::test_two",
        "outcome": "failed",
        "duration": 1.25,
        "executor": "exec-b",
        "attempt": 2,
        "when": "call",
        "message": "assert 1 == 2",
        "longrepr": "E   assert 1 == 2",
        "exit_code": None,
        "signal": None,
        "subtests": [{"description": "[bad]", "outcome": "failed", "longrepr": "E   assert False"}],
        "warnings": [],
        "flaky": False,
        "reassigned_from": ["exec-c"],
        "stdout": "collected output\n",
        "stderr": "",
    }
    assert report["cases"][2]["signal"] == "SIGKILL"


def test_json_counts_only_present_outcomes():
    results = [CaseResult("a", "skipped"), CaseResult("b", "error"), CaseResult("c", "skipped")]

    counts = build_json_report(SUMMARY, results)["summary"]["counts"]

    assert counts == {"skipped": 2, "error": 1}


def test_json_empty_run():
    report = build_json_report(SUMMARY, [])

    assert report["summary"]["total"] == 0
    assert report["summary"]["counts"] == {}
    assert report["cases"] == []


def test_json_is_serialisable():
    results = [CaseResult(case_id, "passed") for case_id in AWKWARD_IDS]

    json.dumps(build_json_report(SUMMARY, results), allow_nan=False)


@pytest.mark.parametrize("case_id", AWKWARD_IDS)
def test_json_round_trips_id(tmp_path, case_id):
    path = tmp_path / "report.json"

    write_json_report(path, SUMMARY, [CaseResult(case_id, "failed", message=case_id)])

    loaded = json.loads(path.read_bytes().decode("utf-8"))
    assert loaded["cases"][0]["id"] == case_id
    assert loaded["cases"][0]["id"].encode("utf-8") == case_id.encode("utf-8")


def test_json_writes_utf8_unescaped(tmp_path):
    path = tmp_path / "report.json"

    write_json_report(path, SUMMARY, [CaseResult("tests/test_uni.py::test_literal[é中]", "passed")])

    data = path.read_bytes()
    assert "test_literal[é中]".encode() in data
    assert b"\\u00e9" not in data


def test_json_keeps_backslash_escapes(tmp_path):
    path = tmp_path / "report.json"
    case_id = "tests/test_word.py::test_word[caf\\xe9]"

    write_json_report(path, SUMMARY, [CaseResult(case_id, "passed")])

    # JSON doubles the literal backslash, and loading gives the single one back.
    assert b"test_word[caf\\\\xe9]" in path.read_bytes()
    assert json.loads(path.read_text(encoding="utf-8"))["cases"][0]["id"] == case_id


def test_json_write_creates_folder(tmp_path):
    path = tmp_path / "out" / "nested" / "report.json"

    write_json_report(path, SUMMARY, [])
    write_json_report(path, SUMMARY, [CaseResult("a", "passed")])

    assert json.loads(path.read_text(encoding="utf-8"))["summary"]["total"] == 1
    assert [entry.name for entry in path.parent.iterdir()] == ["report.json"]


def test_json_one_line_per_case(tmp_path):
    path = tmp_path / "report.json"
    results = [CaseResult(case_id, "failed", message="line one\nline two") for case_id in AWKWARD_IDS]

    write_json_report(path, SUMMARY, results)

    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == build_json_report(SUMMARY, results)
    case_lines = [line for line in text.splitlines() if line.startswith('    {"id": ')]
    assert [json.loads(line.rstrip(","))["id"] for line in case_lines] == AWKWARD_IDS
    assert '\n  "summary": {\n    "exit_code": 1,' in text
