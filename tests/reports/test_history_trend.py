"""Tests for the history's run selection, pass-rate trends and sparklines."""

from __future__ import annotations

import pytest

from swarmctl.reports.history import load_history, select_runs, sparkline, trend_windows
from swarmctl.reports.run_store import RunCounts, RunHeader


def header(run_id: str, suite: str = "tests/", submitted_at: float = 0.0) -> RunHeader:
    return RunHeader(
        run_id=run_id, submitted_at=submitted_at, finished_at=submitted_at + 2.0, status="finished", exit_code=0,
        suite_name=suite, suite_key=f"pytest:{suite.rstrip('/')}", total=4, deselected=0, error="",
    )


# Newest first, as RunStore.runs returns them: suites "tests/" and "other/" interleaved.
RUNS = [
    header("r6", submitted_at=6),
    header("r5", "other/", submitted_at=5),
    header("r4", submitted_at=4),
    header("r3", submitted_at=3),
    header("r2", "other/", submitted_at=2),
    header("r1", submitted_at=1),
]
COUNTS = {
    "r6": RunCounts({"passed": 4}, flaky=1),
    "r5": RunCounts({"skipped": 4}, flaky=0),
    "r4": RunCounts({"passed": 3, "failed": 1}, flaky=0),
    "r3": RunCounts({"passed": 2, "failed": 2}, flaky=0),
    "r2": RunCounts({"passed": 1, "failed": 1}, flaky=0),
    "r1": RunCounts({"failed": 4}, flaky=0),
}


def test_select_runs_by_suite_and_limit():
    assert [run.run_id for run in select_runs(RUNS, suite=None, limit=2)] == ["r6", "r5"]
    assert [run.run_id for run in select_runs(RUNS, suite="other", limit=None)] == ["r5", "r2"]
    assert select_runs(RUNS, suite="missing", limit=None) == []


def test_trend_windows_follow_suite():
    windows = trend_windows(RUNS, RUNS[:2], length=3)

    assert [run.run_id for run in windows["r6"]] == ["r3", "r4", "r6"]
    assert [run.run_id for run in windows["r5"]] == ["r2", "r5"]


def test_load_history_counts_only_needed_runs():
    requested: list[list[str]] = []

    def count_runs(run_ids):
        requested.append(list(run_ids))
        return {run_id: COUNTS[run_id] for run_id in run_ids}

    entries = load_history(RUNS, count_runs, suite="tests", limit=1)

    assert [entry.header.run_id for entry in entries] == ["r6"]
    assert sorted(requested[0]) == ["r1", "r3", "r4", "r6"]
    assert entries[0].trend == (0.0, 0.5, 0.75, 1.0)
    assert entries[0].delta == pytest.approx(25.0)


def test_history_delta_needs_two_rates():
    entries = load_history(RUNS, lambda ids: {i: COUNTS[i] for i in ids}, suite=None, limit=None)
    by_id = {entry.header.run_id: entry for entry in entries}

    assert by_id["r1"].delta is None  # the suite's first run
    assert by_id["r5"].trend == (0.5, None)
    assert by_id["r5"].delta is None  # no test ran in r5


def test_history_entry_json():
    entry = load_history(RUNS, lambda ids: {i: COUNTS[i] for i in ids}, suite=None, limit=1)[0]

    data = entry.to_json()

    assert data["run_id"] == "r6"
    assert data["wall_s"] == 2.0
    assert data["counts"] == {"passed": 4}
    assert data["failing"] == 0
    assert data["flaky"] == 1
    assert data["pass_rate"] == 1.0
    assert data["suite_key"] == "pytest:tests"


@pytest.mark.parametrize(
    ("rates", "line"),
    [([0.0, 0.5, 1.0], "▁▅█"), ([1.0, None, 0.99], "█·█"), ([], ""), ([1.2, -0.1], "█▁")],
)
def test_sparkline(rates, line):
    assert sparkline(rates) == line
