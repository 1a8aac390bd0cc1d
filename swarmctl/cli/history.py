"""``swarmctl history`` and ``swarmctl compare``: past runs and what changed between two of them."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from swarmctl.cli import app, setup_logging
from swarmctl.cli.report import DATA_DIR_HELP, REMOTE_HELP, RUN_HELP, cli_errors, read_store, remote, remote_cluster
from swarmctl.errors import UsageError
from swarmctl.reports.comparison import (
    DEFAULT_THRESHOLD,
    MIN_CHANGE_S,
    DurationChange,
    RunComparison,
    compare_runs,
)
from swarmctl.reports.history import TREND_LENGTH, HistoryEntry, load_history, sparkline
from swarmctl.reports.run_store import RunStore
from swarmctl.reports.statistics import failing_count, format_duration

DEFAULT_LIMIT = 20
MAX_REMOTE_RUNS = 10_000  # the maximum number of runs the HTTP API lists at once
WIDE_OUTPUT = 200  # columns of the table when stdout is not a terminal


@app.command()
def history(
    suite: str = typer.Option(
        None, "--suite", help="Only runs of this suite: its folder as given to swarmctl run, or the folder's name."
    ),
    limit: int = typer.Option(DEFAULT_LIMIT, "--limit", "-n", help="Show at most this many runs, newest first (0 shows all)."),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array instead of a table."),
    cluster: str = typer.Option(None, "--cluster", help=REMOTE_HELP),
) -> None:
    """List past runs, newest first, with counts, wall time, pass rate and the pass-rate trend of their suite."""
    setup_logging(False, quiet=True)
    with cli_errors():
        if limit < 0:
            raise UsageError(f"--limit {limit} is invalid: it must be 0 (all runs) or more")
        cluster = remote_cluster(cluster, data_dir)
        if cluster:
            params = {"limit": min(limit or MAX_REMOTE_RUNS, MAX_REMOTE_RUNS), **({"suite": suite} if suite else {})}
            rows = remote(cluster).get_json("/v1/history", params)["runs"]
            entries = [HistoryEntry.from_json(row) for row in rows]
        else:
            entries = read_store(
                data_dir,
                lambda store: load_history(store.runs(), store.run_counts, suite=suite, limit=limit or None),
            )
        if not entries and suite is not None:
            raise UsageError(f"no run of suite {suite!r} found. List the runs of every suite with `swarmctl history`")

    if as_json:
        typer.echo(json.dumps([entry.to_json() for entry in entries], indent=2))
        return
    if not entries:
        typer.echo("no runs recorded yet")
        return
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped output has no width to fit, and cut ids would be useless to grep.
        console = Console(highlight=False, width=WIDE_OUTPUT)
    console.print(history_table(entries))


def history_table(entries: list[HistoryEntry]) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1))
    # FAIL counts failed, error and timed_out results; PASS% is the pass rate. --json has
    # every count and the full submission time.
    numeric = ("TESTS", "FAIL", "FLAKY", "WALL", "PASS%")
    for column in ("RUN", "SUBMITTED", "SUITE", "RESULT", *numeric, "TREND"):
        if column == "SUITE":
            table.add_column(column, min_width=8, overflow="fold")
        elif column == "TREND":
            table.add_column(column, min_width=TREND_LENGTH + len(" +100.0pp"), no_wrap=True)
        else:
            table.add_column(column, justify="right" if column in numeric else "left", no_wrap=True)
    for entry in entries:
        header, counts = entry.header, entry.counts.counts
        failing = failing_count(counts)
        rate = entry.counts.pass_rate
        wall = header.wall_s
        table.add_row(
            header.run_id,
            _local_time(header.submitted_at),
            Text(header.suite_name),
            _result_text(header.status, header.exit_code),
            str(entry.counts.recorded),
            Text(str(failing), style="red" if failing else ""),
            str(entry.counts.flaky),
            "-" if wall is None else f"{wall:.1f}s",
            "-" if rate is None else f"{rate * 100:.1f}%",
            _trend_text(entry),
        )
    return table


def _result_text(status: str, exit_code: int | None) -> Text:
    """Show a finished run by its exit code, as pytest's, and any other run by its status."""
    if status != "finished" or exit_code is None:
        return Text(status, style="yellow")
    return Text(f"exit {exit_code}", style="green" if exit_code == 0 else "red")


def _trend_text(entry: HistoryEntry) -> Text:
    text = Text(sparkline(entry.trend))
    if entry.delta is not None:
        style = ""
        if entry.delta > 0:
            style = "green"
        elif entry.delta < 0:
            style = "red"
        text.append(f" {entry.delta:+.1f}pp", style=style)
    return text


@app.command()
def compare(
    base: str = typer.Argument(..., help="The earlier run. " + RUN_HELP),
    head: str = typer.Argument(..., help="The later run, in the same forms."),
    threshold: float = typer.Option(
        DEFAULT_THRESHOLD, "--threshold",
        help=f"Relative duration change that counts as slower or faster: 0.5 means 50%. "
        f"Changes of {MIN_CHANGE_S:g}s or less never count.",
    ),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    cluster: str = typer.Option(None, "--cluster", help=REMOTE_HELP),
) -> None:
    """List new failures, fixed, newly flaky, added, removed, slower and faster tests between two runs."""
    setup_logging(False, quiet=True)
    with cli_errors():
        if not threshold > 0:
            raise UsageError(f"--threshold {threshold} is invalid: it must be a fraction greater than 0, such as 0.5")
        cluster = remote_cluster(cluster, data_dir)
        if cluster:
            data = remote(cluster).get_json("/v1/compare", {"base": base, "head": head, "threshold": threshold})
            comparison = RunComparison.from_json(data)
        else:
            comparison = read_store(data_dir, lambda store: _compare(store, base, head, threshold))

    if as_json:
        typer.echo(json.dumps(comparison.to_json(), indent=2, ensure_ascii=False))
        return
    print_comparison(Console(highlight=False), comparison)


def _compare(store: RunStore, base: str, head: str, threshold: float) -> RunComparison:
    before = store.load(base)
    after = store.load(head)
    return compare_runs(
        before.header.run_id, before.results, after.header.run_id, after.results, threshold=threshold
    )


def print_comparison(console: Console, comparison: RunComparison) -> None:
    console.print(Text(f"comparing run {comparison.base} (base) with run {comparison.head}"), soft_wrap=True)
    if comparison.is_empty():
        console.print("no differences: the same tests with the same outcomes and similar durations")
        return

    def section(title: str, lines: list[Text], style: str = "") -> None:
        if not lines:
            return
        console.print(Text(f"\n{title} ({len(lines)}):", style=f"bold {style}".strip()))
        for line in lines:
            console.print(line, soft_wrap=True)

    section("new failures", [_change_line(c.id, c.before, c.after, c.message) for c in comparison.new_failures], "red")
    section("fixed", [_change_line(c.id, c.before, c.after, "") for c in comparison.fixed], "green")
    section("newly flaky", [Text(f"  {c.id}  {c.after} after a failed attempt") for c in comparison.newly_flaky], "yellow")
    section("added", [Text(f"  {t.id}  {t.outcome}") for t in comparison.added])
    section("removed", [Text(f"  {t.id}  was {t.outcome}") for t in comparison.removed])
    percent = f"{comparison.threshold * 100:g}%"
    section(f"slower by more than {percent}", [_duration_line(d) for d in comparison.slower])
    section(f"faster by more than {percent}", [_duration_line(d) for d in comparison.faster])


def _change_line(case_id: str, before: str, after: str, message: str) -> Text:
    line = Text(f"  {case_id}  {before} -> {after}")
    if message:
        line.append(f"  {message}", style="dim")
    return line


def _duration_line(change: DurationChange) -> Text:
    relative = "new time from 0" if change.before_s <= 0 else f"{change.change * 100:+.0f}%"
    return Text(f"  {change.id}  {format_duration(change.before_s)} -> {format_duration(change.after_s)} ({relative})")


def _local_time(unix_time: float) -> str:
    moment = datetime.datetime.fromtimestamp(unix_time, tz=datetime.UTC).astimezone()
    return moment.strftime("%m-%d %H:%M")
