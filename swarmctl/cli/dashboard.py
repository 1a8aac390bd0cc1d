"""``swarmctl dashboard``: a live view of a cluster's executors, runs, failures and log.

The dashboard polls the coordinator with ``ListExecutors`` and ``ListRuns`` over one
connection and redraws after every poll. When the connection drops, it keeps the last frame,
shows the error in a status line, and reconnects. Without ``--cluster`` it looks up the
embedded coordinator again at every attempt, so it follows one ``swarmctl run`` after another.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import typer
from rich.console import Console
from rich.live import Live

from swarmctl.cli import app, cluster_addresses, fail, find_error, setup_logging
from swarmctl.cli.executors import CLUSTER_HELP
from swarmctl.client import ClusterQueries, open_queries
from swarmctl.cluster.transport import PeerGone
from swarmctl.durations import parse_duration
from swarmctl.embedded import data_home
from swarmctl.errors import ConnectionFailed, SwarmError
from swarmctl.ui.dashboard import render_dashboard

log = logging.getLogger(__name__)

INTERRUPTED = 2
LOG_TAIL_LINES = 8
LOG_TAIL_BYTES = 64 * 1024  # read from the end of the log; far more than LOG_TAIL_LINES lines
# A coordinator that sends no reply to a query for this long is treated as gone.
QUERY_TIMEOUT_S = 10.0
PIPED_WIDTH = 160  # columns of the frame when stdout is not a terminal


@dataclass
class Snapshot:
    """The newest data the dashboard has, and what went wrong since, if anything."""

    executors: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""  # the coordinator's address
    taken_at: float = 0.0  # Unix time of the data
    status: str = ""


@app.command()
def dashboard(
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
    interval: str = typer.Option("1s", "--interval", help="Time between two polls of the coordinator, such as 1s, 0.5s or 5s."),
    once: bool = typer.Option(False, "--once", help="Print one frame and exit, for scripts. Off a terminal this is the default."),
    log_file: Path = typer.Option(
        None, "--log",
        help="Show the last lines of this local file, such as the coordinator's log when the dashboard runs on its "
        "machine. Default without --cluster: the embedded coordinator's log, $SWARMCTL_HOME/logs/coordinator.log, "
        "if it exists.",
    ),
) -> None:
    """Show executors, active and recently finished runs with progress and ETA, recent failures and a log tail."""
    setup_logging(False, quiet=True)
    console = Console(highlight=False)
    try:
        interval_s = parse_duration(interval, "--interval")
    except SwarmError as exc:
        raise fail(str(exc), exc.exit_code) from None
    log_path = log_file if log_file is not None else _default_log(cluster)

    if not console.is_terminal:
        if not once:
            typer.echo("swarmctl dashboard: stdout is not a terminal, so one frame is printed (--once)", err=True)
            once = True
        # Piped output has no width to fit, and cut ids would be useless to grep.
        console = Console(highlight=False, width=PIPED_WIDTH)
    if once:
        _print_once(console, cluster, log_path)
        return

    try:
        trio.run(_watch, console, cluster, interval_s, log_path)
    except KeyboardInterrupt:
        pass  # Ctrl-C before the signal handler was installed


def _print_once(console: Console, cluster: str | None, log_path: Path | None) -> None:
    try:
        snapshot = trio.run(_take_snapshot, cluster)
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED) from None
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code) from None
    console.print(_render(snapshot, log_path))


async def _take_snapshot(cluster: str | None) -> Snapshot:
    async with open_queries(cluster_addresses(cluster)) as queries:
        return await _query(queries)


async def _query(queries: ClusterQueries) -> Snapshot:
    """Request the coordinator's executors and runs. Raise ConnectionFailed when no reply arrives in time."""
    with trio.move_on_after(QUERY_TIMEOUT_S):
        executors = await queries.executors()
        runs = await queries.runs()
        return Snapshot(executors, runs, queries.peer.name, time.time())
    raise ConnectionFailed(f"query to {queries.peer.name} timed out after {QUERY_TIMEOUT_S:.0f}s")


async def _watch(console: Console, cluster: str | None, interval_s: float, log_path: Path | None) -> None:
    """Poll and redraw until Ctrl-C or SIGTERM. The frame is redrawn once per poll, so it refreshes at the interval."""
    snapshot = Snapshot(taken_at=time.time(), status="connecting...")
    # The frame uses the alternate screen, as top does. A frame taller than the terminal
    # loses its bottom lines (the log tail first), and the shell's screen returns on exit.
    with Live(_render(snapshot, log_path), console=console, auto_refresh=False, screen=True) as live:

        def show(new: Snapshot) -> None:
            nonlocal snapshot
            snapshot = new
            live.update(_render(snapshot, log_path), refresh=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            nursery.start_soon(_poll, cluster, interval_s, lambda: snapshot, show)


async def _poll(
    cluster: str | None, interval_s: float, current: Callable[[], Snapshot], show: Callable[[Snapshot], None]
) -> None:
    """Show a new snapshot every ``interval_s`` seconds. On a lost connection, show the error and reconnect."""
    while True:
        try:
            async with open_queries(cluster_addresses(cluster)) as queries:
                while True:
                    show(await _query(queries))
                    await trio.sleep(interval_s)
        except Exception as exc:
            error = find_error(exc, (SwarmError, PeerGone))
            if error is None:
                raise
            reason = str(error)

        last = current()
        since = f"; last update {time.strftime('%H:%M:%S', time.localtime(last.taken_at))}" if last.source else ""
        status = f"{reason.rstrip('.')}. Reconnecting every {interval_s:g}s{since}"
        log.info("dashboard: %s", status)
        show(Snapshot(last.executors, last.runs, last.source, last.taken_at, status))
        await trio.sleep(interval_s)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def _render(snapshot: Snapshot, log_path: Path | None):
    lines = read_log_tail(log_path, LOG_TAIL_LINES) if log_path is not None else None
    return render_dashboard(
        snapshot.executors, snapshot.runs, lines, now=snapshot.taken_at, source=snapshot.source or "-",
        status=snapshot.status, log_name=str(log_path or ""),
    )


def _default_log(cluster: str | None) -> Path | None:
    """Return the embedded coordinator's log if it exists and no cluster was named, else None."""
    if cluster:
        return None
    path = data_home() / "logs" / "coordinator.log"
    return path if path.is_file() else None


def read_log_tail(path: Path, count: int) -> list[str]:
    """Return the last ``count`` lines of the file, or one line with the error when it cannot be read."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - LOG_TAIL_BYTES))
            data = file.read()
    except OSError as exc:
        return [f"cannot read {path}: {exc.strerror or exc}"]
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > LOG_TAIL_BYTES and lines:
        lines = lines[1:]  # the first line is cut
    return lines[-count:]
