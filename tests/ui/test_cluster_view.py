"""Tests of swarmctl.ui.cluster_view: the dashboard's state built from subscription events."""

from __future__ import annotations

from swarmctl import protocol
from swarmctl.ui.cluster_view import LOG_TAIL_LINES, ClusterView


def run_row(run_id: str = "run-1") -> dict:
    return {"run_id": run_id, "status": "running", "total": 4, "done": 0, "counts": {}, "failures": [], "executors": []}


def test_cluster_view_lists_replace_rows() -> None:
    view = ClusterView()

    assert view.apply(protocol.RunList([run_row()]), now=5.0)
    assert view.apply(protocol.ExecutorList([{"id": "exec-0"}]), now=6.0)

    assert [run["run_id"] for run in view.runs] == ["run-1"]
    assert view.executors == [{"id": "exec-0"}]
    assert view.taken_at == 6.0


def test_cluster_view_progress_updates_run() -> None:
    view = ClusterView(runs=[run_row()])
    activity = [{"executor": "exec-1", "shards": 1, "current": ["t.py::c"], "remaining": 2}]
    progress = protocol.RunProgress(
        "run-1", "running", 4, 2, 2, [["t.py::a", "passed"], ["t.py::b", "failed"]], 3.0, 2.0, 4.0, "durations",
        {"passed": 1, "failed": 1}, activity,
    )

    view.apply(progress, now=7.0)

    (row,) = view.runs
    assert row["done"] == 2
    assert row["counts"] == {"passed": 1, "failed": 1}
    assert row["eta_s"] == 3.0
    assert row["executors"] == ["exec-1"]
    assert [(f["case_id"], f["outcome"]) for f in row["failures"]] == [("t.py::b", "failed")]


def test_cluster_view_progress_of_unlisted_run_waits() -> None:
    view = ClusterView(runs=[run_row("run-1")])

    view.apply(protocol.RunProgress("run-2", "running", 1, 1, 1, [["t.py::a", "failed"]]), now=1.0)

    assert [run["run_id"] for run in view.runs] == ["run-1"]
    assert view.runs[0]["failures"] == []


def test_cluster_view_log_tail() -> None:
    view = ClusterView()
    lines = [[0.0, "INFO", "swarmctl.executor", f"line {i}"] for i in range(LOG_TAIL_LINES + 3)]

    view.apply(protocol.ExecutorLogs("exec-0", [*lines, ["broken"]]), now=1.0)

    assert len(view.log_lines) == LOG_TAIL_LINES
    assert view.log_lines[-2].endswith("exec-0 INFO line 10")
    assert view.log_lines[-1] == "exec-0: malformed log line ['broken']"


def test_cluster_view_ignores_other_frames() -> None:
    view = ClusterView()

    assert not view.apply(protocol.RunCancelled("run-1"), now=1.0)
    assert view.taken_at == 0.0
