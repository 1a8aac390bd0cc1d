"""Tests of the dashboard frame: rendered from hand-made rows into a recording console."""

from __future__ import annotations

import time

from rich.console import Console

from swarmctl.cli.dashboard import LOG_TAIL_BYTES, read_log_tail
from swarmctl.ui.dashboard import SUITE_WIDTH, format_counts, plain, render_dashboard

NOW = 1_800_000_000.0
RUN_ID = "20270115-080000-a1b2c3"


def executor_row(executor_id: str, state: str, *, busy: int = 0, shards: list[str] | None = None, last_seen_s: float = 0.4) -> dict:
    return {
        "id": executor_id, "state": state, "labels": {"os": "linux"}, "slots": 2, "busy": busy, "load": 0.42,
        "resources": {}, "shards": shards or [], "last_seen_s": last_seen_s, "hostname": "host", "pid": 1,
        "address": "127.0.0.1", "software": "swarmctl", "reason": "",
    }


def run_row(**changes) -> dict:
    row = {
        "run_id": RUN_ID, "suite": "tests", "status": "running", "priority": 0, "submitted_at": NOW - 60,
        "start_at": None, "finished_at": None, "exit_code": None, "error": "", "total": 400, "done": 120,
        "counts": {"passed": 117, "failed": 3}, "eta_s": 80.0, "eta_low_s": 65.0, "eta_high_s": 100.0,
        "eta_basis": "durations", "executors": ["exec-0", "exec-1"],
        "failures": [
            {"case_id": "tests/test_a.py::test_one", "outcome": "failed", "message": "assert 1 == 2", "at": NOW - 5},
        ],
    }
    row.update(changes)
    return row


def render(executors, runs, log_lines=None, **options) -> str:
    console = Console(record=True, width=120, height=40, color_system=None)
    console.print(render_dashboard(executors, runs, log_lines, now=NOW, source="127.0.0.1:7400", **options))
    return console.export_text()


def line_with(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert lines, f"no line contains {needle!r} in:\n{text}"
    return lines[0]


def test_dashboard_executors_section() -> None:
    text = render(
        [executor_row("exec-0", "active", busy=1, shards=[f"{RUN_ID}/3"]), executor_row("exec-1", "lost", last_seen_s=75)],
        [],
    )

    assert "Executors (1 connected)" in text
    first = line_with(text, "exec-0")
    assert "active" in first
    assert "0.42" in first
    assert "1/2" in first
    assert f"{RUN_ID}/3" in first
    assert "0s ago" in first
    second = line_with(text, "exec-1")
    assert "lost" in second
    assert "1m15s ago" in second


def test_dashboard_active_run_progress_and_eta() -> None:
    text = render([executor_row("exec-0", "active")], [run_row()])

    assert "Active runs (1)" in text
    line = line_with(text, RUN_ID)
    assert "running" in line
    assert "120/400" in line
    assert "━" in line
    assert "ETA 1m20s (1m05s–1m40s)" in line
    assert " 3 " in line
    assert "exec-0, exec-1" in line


def test_dashboard_run_without_estimate() -> None:
    text = render([], [run_row(eta_s=None, eta_low_s=None, eta_high_s=None, done=0, counts={}, failures=[])])

    assert "ETA unknown" in line_with(text, RUN_ID)
    assert "no failures" in text


def test_dashboard_long_suite_name_keeps_end() -> None:
    text = render([], [run_row(suite="/home/ci/checkouts/project/tests/integration")])

    line = line_with(text, RUN_ID)
    assert "…" + "/home/ci/checkouts/project/tests/integration"[-(SUITE_WIDTH - 1):] in line


def test_dashboard_delayed_run_waits() -> None:
    start_at = NOW + 3600
    text = render([], [run_row(status="collecting", total=0, done=0, start_at=start_at, eta_s=None)])

    assert f"waiting until {time.strftime('%H:%M', time.localtime(start_at))}" in line_with(text, RUN_ID)


def test_dashboard_failure_lines_newest_first() -> None:
    failures = [
        {"case_id": "tests/test_a.py::test_old", "outcome": "failed", "message": "old", "at": NOW - 30},
        {"case_id": "tests/test_b.py::test_new", "outcome": "error", "message": "fixture broke", "at": NOW - 1},
    ]
    text = render([], [run_row(failures=failures)])

    new = line_with(text, "tests/test_b.py::test_new")
    assert "ERROR" in new
    assert "fixture broke" in new
    assert RUN_ID in new
    assert text.index("test_new") < text.index("test_old")


def test_dashboard_finished_run_section() -> None:
    finished = run_row(
        run_id="20270115-070000-d4e5f6", status="finished", exit_code=1, finished_at=NOW - 120, total=10, done=10,
        counts={"passed": 8, "failed": 1, "skipped": 1}, eta_s=None, executors=[], failures=[],
    )
    text = render([], [finished])

    assert "Recently finished" in text
    assert "no active runs" in text
    line = line_with(text, "20270115-070000-d4e5f6")
    assert "finished" in line
    assert "8 passed, 1 failed, 1 skipped" in line
    assert "2m00s ago" in line


def test_dashboard_log_tail() -> None:
    lines = ["2027-01-15 08:00:01 INFO swarmctl.coordinator.node: run started", "second line"]
    text = render([], [], lines, log_name="/var/log/coordinator.log")

    assert "Log /var/log/coordinator.log" in text
    assert "INFO swarmctl.coordinator.node: run started" in text
    assert "second line" in text


def test_dashboard_no_log_section() -> None:
    text = render([], [])

    assert "Log" not in text


def test_dashboard_status_line_shown() -> None:
    text = render([], [], status="could not connect to 127.0.0.1:7400. Reconnecting every 1s")

    assert "could not connect to 127.0.0.1:7400. Reconnecting every 1s" in text


def test_dashboard_markup_printed_literally() -> None:
    hostile = "tests/test_x.py::test_[red]x[/red]"
    executors = [executor_row("[bold]exec[/bold]", "active")]
    runs = [run_row(suite="[i]suite[/i]", failures=[
        {"case_id": hostile, "outcome": "failed", "message": "[/]broken [blink]", "at": NOW},
    ])]
    text = render(executors, runs, ["[red]log[/red]"], log_name="[b]file[/b]")

    assert hostile in text
    assert "[/]broken [blink]" in text
    assert "[bold]exec[/bold]" in text
    assert "[i]suite[/i]" in text
    assert "[red]log[/red]" in text
    assert "Log [b]file[/b]" in text


def test_dashboard_control_characters_escaped() -> None:
    text = render([], [], ["\x1b[31mred\x1b[0m and a\x07bell"])

    assert "\\x1b[31mred\\x1b[0m and a\\x07bell" in text
    assert "\x1b" not in text


def test_plain_keeps_printable_text() -> None:
    assert plain("tests/test_ü.py::test[日本-😀]") == "tests/test_ü.py::test[日本-😀]"
    assert plain("tab\there") == "tab\\x09here"
    assert plain("lone \udcff surrogate") == "lone \\udcff surrogate"


def test_format_counts_in_outcome_order() -> None:
    assert format_counts({"skipped": 1, "failed": 2, "passed": 10, "custom": 1, "error": 0}) == "10 passed, 2 failed, 1 skipped, 1 custom"
    assert format_counts({}) == ""


def test_log_tail_last_lines(tmp_path) -> None:
    path = tmp_path / "coordinator.log"
    path.write_text("".join(f"line {i}\n" for i in range(20)))

    assert read_log_tail(path, 3) == ["line 17", "line 18", "line 19"]


def test_log_tail_large_file_drops_cut_line(tmp_path) -> None:
    path = tmp_path / "coordinator.log"
    line = "x" * 99 + "\n"
    path.write_text("head\n" + line * (2 * LOG_TAIL_BYTES // len(line)) + "last\n")

    lines = read_log_tail(path, 1000)

    assert lines[-1] == "last"
    assert all(entry == "x" * 99 for entry in lines[:-1])


def test_log_tail_missing_file(tmp_path) -> None:
    path = tmp_path / "absent.log"

    assert read_log_tail(path, 5) == [f"cannot read {path}: No such file or directory"]
