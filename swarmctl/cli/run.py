"""``swarmctl run``: run a suite on the embedded default or on a cluster, and report it."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial
from pathlib import Path

import trio
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from swarmctl import protocol
from swarmctl.bundle import Bundle, build_bundle
from swarmctl.cli import app, fail, find_error, setup_logging
from swarmctl.client import RunWatch, submit_and_follow
from swarmctl.cluster.transport import parse_addresses
from swarmctl.config import config_from_environment
from swarmctl.coordinator.dependencies import resolve
from swarmctl.duration_files import load_durations_file
from swarmctl.durations import parse_duration, parse_start_time
from swarmctl.embedded import LocalNodes, data_home, embedded_cluster
from swarmctl.errors import SwarmError, UsageError
from swarmctl.labels import parse_labels
from swarmctl.manifest import is_command_suite, load_manifest
from swarmctl.reports.json_report import write_json_report
from swarmctl.reports.junit import write_junit
from swarmctl.reports.terminal import render_final_report
from swarmctl.results import FAILING_OUTCOMES

log = logging.getLogger(__name__)

INTERRUPTED = 2


class GroupName(str, Enum):
    none = "none"
    module = "module"
    class_ = "class"
    file = "file"


class StrategyName(str, Enum):
    even = "even"
    time_balanced = "time-balanced"
    dependency_aware = "dependency-aware"


@app.command(context_settings={"ignore_unknown_options": True})
def run(
    path: Path = typer.Argument(..., help="The suite folder: a pytest suite, or a folder with a swarm.toml command manifest."),
    pytest_args: list[str] = typer.Argument(None, help="Arguments for pytest, after --, for example: -- -k smoke -x."),
    cluster: str = typer.Option(
        None, "--cluster",
        help="Submit to running nodes at HOST:PORT[,HOST:PORT...] instead of the embedded default. Default: the "
        "coordinators of the file SWARMCTL_CONFIG names, if set.",
    ),
    executors: int = typer.Option(None, "--executors", "-n", help="Embedded default: local executor processes to start. Default: CPU count."),
    strategy: StrategyName = typer.Option(StrategyName.even, "--strategy", help="How cases are split into shards."),
    group: GroupName = typer.Option(GroupName.none, "--group", help="Keep the tests of one module, class or file in one shard, so they share fixtures; groups are balanced by their durations."),
    junitxml: Path = typer.Option(None, "--junitxml", help="Write a JUnit XML report to this file."),
    json_path: Path = typer.Option(None, "--json", help="Write a JSON report to this file."),
    python: str = typer.Option("python3", "--python", help="The suite's Python interpreter, looked up on each executor's PATH."),
    timeout: float = typer.Option(None, "--timeout", help="Per-test limit in seconds, enforced by the executor."),
    deadline: str = typer.Option(None, "--deadline", help="Run-level limit, such as 90s, 10m or 1h30m: tests not finished by then are reported as errors."),
    retries: int = typer.Option(0, "--retries", help="Run a failed or errored test up to this many more times; one that then passes is reported flaky."),
    priority: int = typer.Option(0, "--priority", help="Runs with a higher priority get free slots first."),
    delay: str = typer.Option(None, "--delay", help="Start the run after this long, such as 10m."),
    at: str = typer.Option(None, "--at", help="Start the run at this time: HH:MM (today, or tomorrow if past) or an ISO 8601 date and time."),
    durations_from: Path = typer.Option(None, "--durations-from", help="Expected test durations for time-balanced planning: a JUnit XML report or a pytest-split .test_durations file."),
    labels: str = typer.Option("", "--labels", help="Embedded default: labels of the local executors as k=v,k=v, for tests marked swarm_requires."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the coordinator and executors do."),
) -> None:
    """Run the suite at PATH and report the result like pytest, with pytest's exit codes."""
    setup_logging(verbose, quiet=not verbose)
    console = Console(highlight=False)
    try:
        request = _check_request(
            path, list(pytest_args or []), cluster, executors, strategy.value, python, timeout, deadline,
            RunOptions(retries, priority, delay, at, durations_from, group.value, labels),
        )
        with tempfile.TemporaryDirectory(prefix="swarmctl-bundle-") as tmp:
            report = partial(_report, console, junitxml, json_path)
            if request.cluster:
                outcome = trio.run(_run, request, console, report, Path(tmp))
            else:
                with LocalNodes(data_home(), request.executors, verbose=verbose, labels=request.labels) as nodes:
                    # The bundle is built first, so that the forked executors start their pytest
                    # workers at once, while this process starts the coordinator.
                    bundle = build_bundle(request.suite_dir, Path(tmp))
                    nodes.store_bundle(bundle)
                    nodes.fork_executors(request.suite_spec(bundle) if request.suite_kind == "pytest" else None)
                    outcome = trio.run(_run, request, console, report, Path(tmp), nodes, bundle)
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is not None:
            raise fail(str(error), error.exit_code) from None
        if find_error(exc, KeyboardInterrupt) is not None:
            console.print("[red]!!!!! Interrupted !!!!![/red]")
            raise typer.Exit(INTERRUPTED) from None
        raise
    summary = outcome[0]
    if summary is None:
        console.print("[red]!!!!! Interrupted: the run was cancelled !!!!![/red]")
        raise typer.Exit(INTERRUPTED)
    raise typer.Exit(summary.exit_code)


def _report(console: Console, junitxml: Path | None, json_path: Path | None, summary, results, earlier_attempts) -> None:
    """Print the final report and write the report files."""
    render_final_report(console, summary, results)
    if junitxml:
        write_junit(junitxml, summary, results, earlier_attempts)
    if json_path:
        write_json_report(json_path, summary, results)


@dataclass(frozen=True)
class RunOptions:
    retries: int
    priority: int
    delay: str | None
    at: str | None
    durations_from: Path | None
    group: str
    labels: str

    def start_at(self) -> float | None:
        if self.delay is not None and self.at is not None:
            raise UsageError("--delay and --at both set a start time; give one of them")
        if self.delay is not None:
            return time.time() + parse_duration(self.delay, "--delay")
        if self.at is not None:
            return parse_start_time(self.at)
        return None


@dataclass(frozen=True)
class RunRequest:
    """A checked ``swarmctl run`` command line."""

    path: Path  # as the user gave it
    suite_dir: Path
    suite_kind: str
    case_ids: list[str] | None
    dependencies: dict | None
    requirements: dict | None
    pytest_args: list[str]
    cluster: str | None
    executors: int  # of the embedded default
    labels: dict[str, str]
    strategy: str
    python: str
    timeout: float | None
    deadline_s: float | None
    start_at: float | None
    durations: dict | None
    options: RunOptions

    def suite_spec(self, bundle: Bundle) -> protocol.SuiteSpec:
        return protocol.SuiteSpec(
            self.suite_kind, bundle.digest, str(self.path), self.python, tuple(self.pytest_args), self.timeout
        )


def _check_request(path, pytest_args, cluster, executors, strategy, python, timeout, deadline, options) -> RunRequest:
    """Check the command line before anything starts, and resolve its defaults."""
    if not cluster:
        configured = config_from_environment()
        cluster = configured.coordinators if configured is not None else None
    suite_dir, suite_kind, case_ids, dependencies, requirements = _check_suite(path, pytest_args)
    labels = parse_labels(options.labels)
    if cluster and labels:
        raise UsageError("--labels applies to the embedded default only; a cluster's executors have their own labels")
    deadline_s = parse_duration(deadline, "--deadline") if deadline is not None else None
    if options.retries < 0:
        raise UsageError(f"--retries {options.retries} is invalid: it must be 0 or more")
    start_at = options.start_at()
    durations = load_durations_file(options.durations_from) if options.durations_from else None
    python = _resolve_python(python)
    if timeout is not None and timeout <= 0:
        raise UsageError(f"--timeout {timeout} is invalid: it must be a number of seconds > 0")
    if cluster and executors is not None:
        raise UsageError("--executors applies to the embedded default only; a cluster runs on its own executors")
    if executors is not None and executors < 1:
        raise UsageError(f"--executors {executors} is invalid: it must be at least 1")
    return RunRequest(
        path, suite_dir, suite_kind, case_ids, dependencies, requirements, pytest_args, cluster,
        executors or os.cpu_count() or 1, labels, strategy, python, timeout, deadline_s, start_at, durations, options,
    )


async def _run(request: RunRequest, console, report, tmp: Path, nodes: LocalNodes | None = None, bundle: Bundle | None = None):
    """Submit the run, follow it and report it; return the summary (None if cancelled), results and earlier attempts.

    On the embedded default, ``nodes`` is the data folder with its executors, which are
    started here unless ``nodes`` forked them. Without ``bundle``, this function builds it.
    """
    display = ProgressDisplay(console, request.start_at)
    options = request.options

    async with trio.open_nursery() as nursery:
        outcome: list = []

        async def submit(addresses, on_ended: Callable[[], None] = lambda: None) -> None:
            nonlocal bundle
            if bundle is None:
                # Built in a worker thread, so that the embedded coordinator accepts its starting executors meanwhile.
                bundle = await trio.to_thread.run_sync(build_bundle, request.suite_dir, tmp)
            # Read again here, so that a --delay counts from the submission and not from before
            # the embedded coordinator started.
            start_at = options.start_at()
            outcome.append(
                await submit_and_follow(
                    addresses, suite=request.suite_spec(bundle), bundle=bundle, strategy=request.strategy,
                    case_ids=request.case_ids, deadline_s=request.deadline_s, priority=options.priority,
                    retries=options.retries, start_at=start_at, durations=request.durations,
                    dependencies=request.dependencies, group=options.group, requirements=request.requirements,
                    on_progress=display.update, on_accepted=display.accepted, on_ended=on_ended,
                )
            )
            # Written while the embedded executors stop, in a thread so that the coordinator
            # keeps handling their connections.
            display.close()
            await trio.to_thread.run_sync(report, *outcome[0])

        async def main() -> None:
            with display:
                if request.cluster:
                    await submit(parse_addresses(request.cluster))
                else:
                    async with embedded_cluster(nodes) as embedded:
                        await submit([embedded.address], on_ended=embedded.stop_executors)
            nursery.cancel_scope.cancel()

        nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
        nursery.start_soon(main)

    return outcome[0] if outcome else (None, [], {})


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    # SIGHUP is a closed terminal: the run ends as on Ctrl-C, so the embedded executors stop too.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for _ in signals:
            scope.cancel()
            return


def _resolve_python(python: str) -> str:
    """Make a relative interpreter path absolute; a bare name is looked up on each executor's PATH.

    Workers start in the suite folder, where a path such as ``.venv/bin/python``, written
    relative to where the user typed it, would point elsewhere.
    """
    if "/" in python and not Path(python).is_absolute():
        resolved = Path(python).absolute()
        if not resolved.exists():
            raise UsageError(f"--python {python!r} does not exist (looked for {resolved}); pass the interpreter's path")
        return str(resolved)
    return python


def _check_suite(path: Path, pytest_args: list[str]) -> tuple[Path, str, list[str] | None, dict | None, dict | None]:
    """Return the suite folder, its kind, and a command suite's case ids, dependencies and requirements."""
    if not path.exists():
        raise UsageError(f"suite folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise UsageError(
            f"{str(path)!r} is not a folder: pass the suite folder, and select files after --, "
            f"for example: swarmctl run {path.parent or '.'} -- {path.name}"
        )
    folder = path.resolve()
    if is_command_suite(folder):
        if pytest_args:
            raise UsageError(f"{str(path)!r} is a command suite (swarm.toml); pytest arguments {pytest_args} do not apply to it")
        cases = load_manifest(folder).cases
        case_ids = [case.id for case in cases]
        dependencies = {case.id: list(case.depends_on) for case in cases if case.depends_on}
        resolve(case_ids, dependencies)  # a cycle or an unknown id fails here, before any upload
        requirements = {case.id: dict(case.requires) for case in cases if case.requires}
        return folder, "command", case_ids, dependencies, requirements
    return folder, "pytest", None, None, None


# Off a terminal (a CI log), a plain progress line is printed at most this often, so a long
# run shows signs of life without flooding the log.
PLAIN_PROGRESS_INTERVAL_S = 10.0


class ProgressDisplay:
    """Progress of a run: on a terminal a live bar with failures printed as they arrive,
    otherwise a plain line at most every ``PLAIN_PROGRESS_INTERVAL_S`` seconds."""

    def __init__(
        self, console: Console, start_at: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.console = console
        self.clock = clock
        self.live = console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TextColumn("{task.fields[executors]} executors"),
            TimeElapsedColumn(),
            EtaColumn(clock),
            console=console,
            transient=True,
        )
        waiting = f"waiting until {time.strftime('%H:%M:%S', time.localtime(start_at))}" if start_at else "collecting"
        self.task = self.progress.add_task(waiting, total=None, failed=0, executors=0, eta=None)
        self.failed = 0
        self.last_line_at = clock()

    def __enter__(self):
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Remove the live bar from the terminal; later calls do nothing."""
        if self.live:
            self.progress.stop()

    def accepted(self, run_id: str) -> None:
        # The run id is what `swarmctl cancel` and later commands take.
        self.console.print(f"swarmctl run {run_id}", style="bold", highlight=False)

    def update(self, watch: RunWatch, new: list[tuple[str, str]]) -> None:
        for case_id, outcome in new:
            if outcome in FAILING_OUTCOMES:
                self.failed += 1
                if self.live:
                    # Off a terminal these lines would only repeat the short test summary.
                    self.console.print(f"[red]{outcome.upper()}[/red] {escape(case_id)}", soft_wrap=True)

        now = self.clock()
        if self.live:
            eta = (watch.eta_s, watch.eta_low_s, watch.eta_high_s, now) if watch.eta_s is not None else None
            self.progress.update(
                self.task, description="running", total=watch.total, completed=watch.done,
                failed=self.failed, executors=watch.executors, eta=eta,
            )
        elif now - self.last_line_at >= PLAIN_PROGRESS_INTERVAL_S:
            self.last_line_at = now
            line = f"{watch.status or 'running'}: {watch.done}/{watch.total} done, {self.failed} failed"
            if watch.eta_s is not None:
                line += ", " + format_eta(watch.eta_s, watch.eta_low_s, watch.eta_high_s, dash="-")
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)


class EtaColumn(ProgressColumn):
    """The time left of a run, counting down from the estimate of the last progress frame."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock

    def render(self, task) -> Text:
        reading = task.fields.get("eta")
        if reading is None:
            return Text("")
        eta_s, low_s, high_s, received_at = reading
        passed = self.clock() - received_at
        return Text(format_eta(eta_s - passed, _minus(low_s, passed), _minus(high_s, passed)))


def format_eta(eta_s: float, low_s: float | None = None, high_s: float | None = None, *, dash: str = "–") -> str:
    """Format a time left as ``ETA 1m20s (1m05s–1m40s)``, without the range when it is unknown."""
    text = f"ETA {format_seconds(eta_s)}"
    if low_s is not None and high_s is not None:
        text += f" ({format_seconds(low_s)}{dash}{format_seconds(high_s)})"
    return text


def format_seconds(seconds: float) -> str:
    """Format seconds as 45s, 1m20s or 2h05m; negative values count as 0."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _minus(seconds: float | None, passed: float) -> float | None:
    return None if seconds is None else seconds - passed
