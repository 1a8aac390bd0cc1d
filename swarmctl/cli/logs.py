"""``swarmctl logs``: a run's executor log lines, or one test's captured output.

Runs and results come from ``state.db`` and executor lines from ``logs.db``, both opened
read-only in the data folder, so this works while the coordinator writes them.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from pathlib import Path

import typer

from swarmctl.cli import app, setup_logging
from swarmctl.cli.report import DATA_DIR_HELP, RUN_HELP, cli_errors, read_store
from swarmctl.coordinator.log_collector import LOGS_DB, LogLine, LogReader, OutputPiece
from swarmctl.embedded import data_home
from swarmctl.errors import UsageError
from swarmctl.reports.run_store import ACTIVE_STATUSES, RunStore, StoredRun
from swarmctl.results import CaseResult

FOLLOW_INTERVAL_S = 0.5
INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT


@app.command()
def logs(
    run_id: str = typer.Argument(..., help=RUN_HELP),
    test: str = typer.Option(
        None, "--test",
        help="Print this test's captured stdout and stderr instead of executor logs. While the test runs, print the "
        "output it has written so far; with --follow, keep printing it until the test ends.",
    ),
    executors: list[str] = typer.Option(
        None, "--executor", help="Only lines of this executor id; repeat the option for several."
    ),
    grep: str = typer.Option(None, "--grep", help="Only lines that match this Python regular expression: executor lines, or with --test output lines."),
    follow: bool = typer.Option(
        False, "--follow", "-f",
        help=f"Print new executor lines every {FOLLOW_INTERVAL_S:g}s until the run ends, then exit 0; with --test, "
        f"print the test's new output until the test ends. Ctrl-C stops following with exit code {INTERRUPTED}.",
    ),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
) -> None:
    """Print a run's executor log lines in time order, or with --test the captured output of one test."""
    setup_logging(False, quiet=True)
    with cli_errors():
        pattern = _compile(grep)
        run = read_store(data_dir, lambda store: store.load(run_id))
        folder = (data_dir or data_home()).expanduser()
        logs_path = folder / LOGS_DB
        if test is not None:
            result = _find_result(run, test)
            if result is None and run.header.status in ACTIVE_STATUSES:
                try:
                    result = _print_live_output(logs_path, folder, run, test, pattern, follow=follow)
                except KeyboardInterrupt:
                    raise typer.Exit(INTERRUPTED) from None
                if result is not None:
                    typer.echo(_outcome_line(result))
                return
            _print_test_output(run, test, result, pattern)
            return

        if not logs_path.is_file():
            typer.echo(f"swarmctl: note: no executor logs were collected in {folder} ({LOGS_DB} not found)", err=True)
        else:
            reader = LogReader(logs_path)
            try:
                if follow:
                    try:
                        _follow(reader, folder, run, executors, pattern)
                    except KeyboardInterrupt:
                        raise typer.Exit(INTERRUPTED) from None
                    run = read_store(folder, lambda store: store.load(run.header.run_id))
                else:
                    _print_lines(reader.lines(_run_executors(run, executors), **_window(run)), pattern)
            finally:
                reader.close()
        _print_tests_with_output(run.results)


def _compile(grep: str | None) -> re.Pattern[str] | None:
    if grep is None:
        return None
    try:
        return re.compile(grep)
    except re.error as exc:
        raise UsageError(
            f"--grep {grep!r} is not a valid regular expression: {exc}. "
            "Put a backslash before ( ) [ ] . * + ? to match the character itself"
        ) from None


def _find_result(run: StoredRun, test_id: str) -> CaseResult | None:
    return next((r for r in run.results if r.case_id == test_id), None)


def _print_test_output(run: StoredRun, test_id: str, result: CaseResult | None, pattern: re.Pattern[str] | None) -> None:
    if result is None:
        raise UsageError(
            f"test {test_id!r} not found in run {run.header.run_id}. "
            f"`swarmctl logs {run.header.run_id}` lists the tests that printed output"
        )
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        if not text:
            continue
        typer.echo(f"----- {name} -----")
        lines = text.splitlines()
        if pattern is not None:
            lines = [line for line in lines if pattern.search(line)]
        for line in lines:
            typer.echo(line)
    if not result.stdout and not result.stderr:
        typer.echo("(no output captured)")
    typer.echo(_outcome_line(result))


class LiveOutputPrinter:
    """Print pieces of live output as whole lines, with a header whenever the stream changes.

    A piece may end in the middle of a line, so each stream keeps its unfinished line until
    the rest arrives or ``finish`` prints it.
    """

    def __init__(self, pattern: re.Pattern[str] | None, echo: Callable[[str], None] = typer.echo) -> None:
        self.pattern = pattern
        self.echo = echo
        self.stream = ""
        self.partial = {"stdout": "", "stderr": ""}
        self.printed = False

    def add(self, piece: OutputPiece) -> None:
        text = self.partial[piece.stream] + piece.text
        *lines, self.partial[piece.stream] = text.split("\n")
        self._print(piece.stream, lines)

    def finish(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self._print(stream, [rest])
            self.partial[stream] = ""

    def _print(self, stream: str, lines: list[str]) -> None:
        if self.pattern is not None:
            lines = [line for line in lines if self.pattern.search(line)]
        if not lines:
            return
        if stream != self.stream:
            self.echo(f"----- {stream} (live) -----")
            self.stream = stream
        for line in lines:
            self.echo(line)
        self.printed = True


def _print_live_output(
    logs_path: Path,
    folder: Path,
    run: StoredRun,
    test_id: str,
    pattern: re.Pattern[str] | None,
    *,
    follow: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> CaseResult | None:
    """Print what a test without a result has written so far; with ``follow``, until it gets one.

    Return the test's result if it arrived while following, else None.
    """
    run_id = run.header.run_id
    if not logs_path.is_file():
        if not follow:
            typer.echo(f"{test_id}: no result yet, and no live output was collected ({logs_path} not found)")
            return None
        while not logs_path.is_file():
            sleep(FOLLOW_INTERVAL_S)
    reader = LogReader(logs_path)
    printer = LiveOutputPrinter(pattern)
    last_id = 0
    try:
        while True:
            # Read the run before the output, so the output of the last pass covers the test's end.
            result = _find_result(run, test_id)
            active = run.header.status in ACTIVE_STATUSES
            for piece in reader.output(run_id, test_id, after_id=last_id):
                last_id = piece.id
                printer.add(piece)
            if not follow or result is not None or not active:
                break
            sleep(FOLLOW_INTERVAL_S)
            run = read_store(folder, lambda store: _load_by_id(store, run_id))
    finally:
        reader.close()
    printer.finish()
    if result is None and not follow:
        note = "printed so far" if printer.printed else "no live output yet"
        typer.echo(f"{test_id}: no result yet ({note}); --follow prints its output until it ends")
    elif result is None:
        typer.echo(f"{test_id}: run {run_id} ended with status {run.header.status} and no result for this test")
    return result


def _outcome_line(result: CaseResult) -> str:
    line = f"{result.case_id} {result.outcome.upper()} in {result.duration:.2f}s"
    if result.executor:
        line += f" on {result.executor}"
    if result.message:
        line += f": {result.message}"
    return line


def _run_executors(run: StoredRun, chosen: list[str] | None) -> list[str]:
    executors = run.summary.executors
    if chosen:
        executors = [executor for executor in executors if executor in chosen]
    return executors


def _window(run: StoredRun) -> dict[str, float]:
    """Return the run's time range: from submission to its end, or to now while it is active."""
    header = run.header
    until = header.finished_at if header.finished_at is not None else time.time()
    return {"since": header.submitted_at, "until": until}


def _print_lines(lines: list[LogLine], pattern: re.Pattern[str] | None) -> int:
    """Print the ``lines`` that match ``pattern``, and return the highest id among all of them."""
    last_id = 0
    for line in lines:
        last_id = max(last_id, line.id)
        text = f"{_format_time(line.time)} {line.executor} {line.level} {line.logger}: {line.message}"
        if pattern is None or pattern.search(text):
            typer.echo(text)
    return last_id


def _follow(
    reader: LogReader,
    folder: Path,
    run: StoredRun,
    chosen: list[str] | None,
    pattern: re.Pattern[str] | None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print new lines every FOLLOW_INTERVAL_S until the run's status in state.db is no longer active."""
    run_id = run.header.run_id
    last_id = 0
    while True:
        # Read the status before the lines, so the lines of the last pass cover the run's end.
        active = run.header.status in ACTIVE_STATUSES
        window = _window(run)
        if active:
            window["until"] = float("inf")  # lines that arrive late still belong to the run
        last_id = max(last_id, _print_lines(reader.lines(_run_executors(run, chosen), after_id=last_id, **window), pattern))
        if not active:
            return
        sleep(FOLLOW_INTERVAL_S)
        # NOTE: each pass loads every result of the run to learn its executors and status,
        # which costs more than a status query on runs of many thousands of tests.
        run = read_store(folder, lambda store: _load_by_id(store, run_id))


def _load_by_id(store: RunStore, run_id: str) -> StoredRun:
    # The resolved id, not `last`: a newer run may start while this one is followed.
    return store.load(run_id)


def _print_tests_with_output(results: list[CaseResult]) -> None:
    printed = [result for result in results if result.stdout or result.stderr]
    if not printed:
        typer.echo("\nno test printed output")
        return
    typer.echo(f"\ntests that printed output ({len(printed)}), shown by --test ID:")
    for result in printed:
        typer.echo(f"  {result.case_id}  stdout {_byte_count(result.stdout)} B, stderr {_byte_count(result.stderr)} B")


def _byte_count(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _format_time(unix_time: float) -> str:
    moment = datetime.datetime.fromtimestamp(unix_time, tz=datetime.UTC).astimezone()
    return moment.isoformat(sep=" ", timespec="milliseconds")
