"""The frame of ``swarmctl dashboard``, built from plain data.

The functions here take the rows of ``ExecutorList`` and ``RunList`` (see
``ExecutorRecord.describe`` and ``ClientMixin._describe_active_runs``) and lines of a log,
and return Rich renderables. They do no I/O and read no clock, so one frame can be rendered
into a recording console and checked as text.

Every value that comes from the cluster or from a log (test ids, messages, suite names) is
put into a ``Text`` object, never into a markup string, so ``[red]`` in a test id is printed
as it is. Control characters are shown as escapes so that a log line cannot move the cursor.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from swarmctl.cli.run import format_eta, format_seconds
from swarmctl.results import FAILING_OUTCOMES, OUTCOMES

ACTIVE_STATUSES = ("collecting", "running")
MAX_FAILURES = 10  # failure lines in the frame, newest first, across runs
BAR_WIDTH = 16  # characters of a run's progress bar
SUITE_WIDTH = 16  # characters of a suite folder's name, and a longer one shows its end

STATE_STYLES = {
    "active": "green",
    "cordoned": "yellow",
    "draining": "yellow",
    "silent": "red",
    "lost": "red",
    "left": "dim",
}
RUN_STATUS_STYLES = {
    "collecting": "cyan",
    "running": "cyan",
    "finished": "green",
    "interrupted": "yellow",
    "failed": "red",
}


def render_dashboard(
    executors: Sequence[dict[str, Any]],
    runs: Sequence[dict[str, Any]],
    log_lines: Sequence[str] | None,
    *,
    now: float,
    source: str,
    status: str = "",
    log_name: str = "",
) -> RenderableType:
    """Build one frame: header, executors, active runs, finished runs, recent failures and the log tail.

    ``now`` is the Unix time of the data, ``source`` the coordinator's address, ``status``
    a warning shown under the header (a lost connection), and ``log_lines`` None when no
    log is shown.
    """
    active = [run for run in runs if run.get("status") in ACTIVE_STATUSES]
    finished = [run for run in runs if run.get("status") not in ACTIVE_STATUSES]

    parts: list[RenderableType] = [header(source, now, status)]
    parts.append(executor_table(executors))
    parts.append(run_table(active, now))
    if finished:
        parts.append(finished_table(finished, now))
    parts.append(failure_table(runs))
    if log_lines is not None:
        parts.append(log_table(log_lines, log_name))
    return Group(*parts)


def header(source: str, now: float, status: str = "") -> Text:
    text = Text()
    text.append("swarmctl dashboard", style="bold")
    text.append(f"  {plain(source)}  {time.strftime('%H:%M:%S', time.localtime(now))}", style="dim")
    if status:
        text.append("\n")
        text.append(plain(status), style="bold red")
    return text


def executor_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = _table(f"Executors ({sum(1 for row in rows if row.get('state') not in ('left', 'lost'))} connected)")
    table.add_column("ID", no_wrap=True, overflow="ellipsis")
    table.add_column("STATE", no_wrap=True)
    table.add_column("LOAD", justify="right", no_wrap=True)
    table.add_column("BUSY", justify="right", no_wrap=True)
    table.add_column("SHARDS", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("LAST SEEN", justify="right", no_wrap=True)
    if not rows:
        table.add_row(Text("no executors have joined", style="dim"))
        return table
    for row in rows:
        state = str(row.get("state", ""))
        table.add_row(
            Text(plain(row.get("id", ""))),
            Text(plain(state), style=STATE_STYLES.get(state, "")),
            Text(f"{float(row.get('load') or 0.0):.2f}"),
            Text(f"{row.get('busy', 0)}/{row.get('slots', 0)}"),
            Text(plain(", ".join(row.get("shards") or ())) or "-"),
            Text(f"{format_seconds(float(row.get('last_seen_s') or 0.0))} ago"),
        )
    return table


def run_table(runs: Sequence[dict[str, Any]], now: float) -> Table:
    table = _table(f"Active runs ({len(runs)})")
    table.add_column("RUN", no_wrap=True)
    table.add_column("SUITE", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("PROGRESS", no_wrap=True, width=BAR_WIDTH)
    table.add_column("DONE", justify="right", no_wrap=True)
    table.add_column("FAIL", justify="right", no_wrap=True)
    table.add_column("ETA", no_wrap=True)
    table.add_column("EXECUTORS", overflow="ellipsis", no_wrap=True, ratio=1)
    if not runs:
        table.add_row(Text("no active runs", style="dim"))
        return table
    for run in runs:
        total, done = int(run.get("total") or 0), int(run.get("done") or 0)
        failed = failed_count(run)
        bar: RenderableType = ProgressBar(total=total, completed=done, width=BAR_WIDTH) if total else Text("")
        table.add_row(
            Text(plain(run.get("run_id", ""))),
            Text(_tail(plain(run.get("suite", "")), SUITE_WIDTH)),
            _run_status(run, now),
            bar,
            Text(f"{done}/{total}"),
            Text(str(failed), style="red" if failed else ""),
            Text(_eta_text(run)),
            Text(plain(", ".join(run.get("executors") or ())) or "-"),
        )
    return table


def finished_table(runs: Sequence[dict[str, Any]], now: float) -> Table:
    table = _table("Recently finished")
    table.add_column("RUN", no_wrap=True)
    table.add_column("SUITE", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("EXIT", justify="right", no_wrap=True)
    table.add_column("RESULTS", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("ENDED", justify="right", no_wrap=True)
    for run in runs:
        status = str(run.get("status", ""))
        exit_code = run.get("exit_code")
        finished_at = run.get("finished_at")
        table.add_row(
            Text(plain(run.get("run_id", ""))),
            Text(_tail(plain(run.get("suite", "")), SUITE_WIDTH)),
            Text(plain(status), style=RUN_STATUS_STYLES.get(status, "")),
            Text("-" if exit_code is None else str(exit_code), style="red" if exit_code else ""),
            Text(format_counts(run.get("counts") or {}) or "no results"),
            Text("-" if finished_at is None else f"{format_seconds(now - finished_at)} ago"),
        )
    return table


def failure_table(runs: Sequence[dict[str, Any]]) -> Table:
    """List the failures of every run, newest first, at most ``MAX_FAILURES``."""
    failures = [(failure, run.get("run_id", "")) for run in runs for failure in run.get("failures") or ()]
    failures.sort(key=lambda pair: pair[0].get("at", 0.0), reverse=True)
    table = _table("Recent failures")
    table.add_column("OUTCOME", no_wrap=True)
    table.add_column("TEST", overflow="fold", ratio=2)
    table.add_column("MESSAGE", overflow="ellipsis", no_wrap=True, ratio=2)
    table.add_column("RUN", no_wrap=True)
    if not failures:
        table.add_row(Text("no failures", style="dim"))
        return table
    for failure, run_id in failures[:MAX_FAILURES]:
        table.add_row(
            Text(plain(str(failure.get("outcome", ""))).upper(), style="red"),
            Text(plain(failure.get("case_id", ""))),
            Text(plain(failure.get("message", ""))),
            Text(plain(run_id), style="dim"),
        )
    return table


def log_table(lines: Sequence[str], name: str = "") -> Table:
    table = _table(f"Log {name}".strip(), show_header=False)
    table.add_column("LINE", overflow="ellipsis", no_wrap=True, ratio=1)
    if not lines:
        table.add_row(Text("no log lines", style="dim"))
    for line in lines:
        table.add_row(Text(plain(line)))
    return table


def failed_count(run: dict[str, Any]) -> int:
    counts = run.get("counts") or {}
    return sum(int(counts.get(outcome, 0)) for outcome in FAILING_OUTCOMES)


def format_counts(counts: dict[str, int]) -> str:
    """Format outcome counts in pytest's order of outcomes, such as ``10 passed, 2 failed``."""
    known = [outcome for outcome in OUTCOMES if counts.get(outcome)]
    others = sorted(outcome for outcome in counts if outcome not in OUTCOMES and counts[outcome])
    return ", ".join(f"{counts[outcome]} {plain(outcome)}" for outcome in known + others)


def plain(value: object) -> str:
    """Return ``value`` as text with control characters, ANSI escapes included, shown as escapes."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() or char == " " else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _tail(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _run_status(run: dict[str, Any], now: float) -> Text:
    status = str(run.get("status", ""))
    start_at = run.get("start_at")
    if start_at is not None and start_at > now:
        return Text(f"waiting until {time.strftime('%H:%M', time.localtime(start_at))}", style="dim")
    return Text(plain(status), style=RUN_STATUS_STYLES.get(status, ""))


def _eta_text(run: dict[str, Any]) -> str:
    eta_s = run.get("eta_s")
    if eta_s is None:
        return "ETA unknown" if run.get("status") == "running" else ""
    return format_eta(eta_s, run.get("eta_low_s"), run.get("eta_high_s"))


def _table(title: str, *, show_header: bool = True) -> Table:
    return Table(
        title=Text(plain(title), style="bold"), title_justify="left", box=box.SIMPLE_HEAD, show_header=show_header,
        show_edge=False, expand=True, pad_edge=False, collapse_padding=True,
    )
