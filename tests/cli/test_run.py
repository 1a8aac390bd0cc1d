"""Tests of the live view of ``swarmctl run``: the bar on a terminal, plain lines in a log."""

from __future__ import annotations

import io

from rich.console import Console

from swarmctl.cli.run import PLAIN_PROGRESS_INTERVAL_S, EtaColumn, ProgressDisplay, format_eta, format_seconds
from swarmctl.client import RunWatch


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def log_console() -> tuple[Console, io.StringIO]:
    output = io.StringIO()
    return Console(file=output, force_terminal=False, width=200), output


def watch_at(done: int, eta_s: float | None = 130.0) -> RunWatch:
    return RunWatch(
        run_id="run-1", total=400, done=done, executors=2, status="running",
        eta_s=eta_s, eta_low_s=None if eta_s is None else eta_s - 20, eta_high_s=None if eta_s is None else eta_s + 30,
    )


def test_format_seconds() -> None:
    assert format_seconds(0.4) == "0s"
    assert format_seconds(45) == "45s"
    assert format_seconds(80) == "1m20s"
    assert format_seconds(3599.6) == "1h00m"
    assert format_seconds(7500) == "2h05m"
    assert format_seconds(-3) == "0s"


def test_format_eta_with_and_without_range() -> None:
    assert format_eta(80, 65, 100) == "ETA 1m20s (1m05s–1m40s)"
    assert format_eta(80, 65, 100, dash="-") == "ETA 1m20s (1m05s-1m40s)"
    assert format_eta(80) == "ETA 1m20s"


def test_display_off_terminal_prints_plain_lines_at_interval() -> None:
    console, output = log_console()
    clock = FakeClock()
    display = ProgressDisplay(console, clock=clock)

    with display:
        display.update(watch_at(10), [])
        clock.now += PLAIN_PROGRESS_INTERVAL_S - 1
        display.update(watch_at(20), [])
        clock.now += 1
        display.update(watch_at(120), [("tests/test_a.py::test_x", "failed")])
        clock.now += 5
        display.update(watch_at(130), [])

    lines = output.getvalue().splitlines()
    assert lines == ["running: 120/400 done, 1 failed, ETA 2m10s (1m50s-2m40s)"]


def test_display_off_terminal_line_without_eta() -> None:
    console, output = log_console()
    clock = FakeClock()
    display = ProgressDisplay(console, clock=clock)

    with display:
        clock.now += PLAIN_PROGRESS_INTERVAL_S
        display.update(watch_at(3, eta_s=None), [])

    assert output.getvalue().splitlines() == ["running: 3/400 done, 0 failed"]


def test_display_off_terminal_draws_no_bar() -> None:
    console, output = log_console()
    clock = FakeClock()
    display = ProgressDisplay(console, clock=clock)

    with display:
        for step in range(30):
            clock.now += 1
            display.update(watch_at(step * 10), [])

    text = output.getvalue()
    assert "━" not in text
    assert "executors" not in text
    assert len(text.splitlines()) == 3


def test_display_on_terminal_prints_no_plain_lines() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=200)
    clock = FakeClock()
    display = ProgressDisplay(console, clock=clock)

    with display:
        clock.now += 2 * PLAIN_PROGRESS_INTERVAL_S
        display.update(watch_at(120), [])
        display.progress.refresh()

    assert "running: 120/400 done" not in output.getvalue()
    assert "ETA 2m10s (1m50s–2m40s)" in output.getvalue()


def test_eta_column_counts_down_between_frames() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=200)
    clock = FakeClock()
    display = ProgressDisplay(console, clock=clock)
    display.update(watch_at(120), [])
    task = display.progress.tasks[0]
    column = EtaColumn(clock)

    clock.now += 30

    assert column.render(task).plain == "ETA 1m40s (1m20s–2m10s)"


def test_eta_column_blank_when_unknown() -> None:
    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=200)
    display = ProgressDisplay(console, clock=FakeClock())
    display.update(watch_at(0, eta_s=None), [])

    assert EtaColumn().render(display.progress.tasks[0]).plain == ""
