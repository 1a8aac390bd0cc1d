"""``swarmctl dashboard``: a live view of a cluster's executors, runs, failures and log.

The live dashboard subscribes to the coordinator's events over one connection: the runs and
executors every ``--interval``, each batch of results as it arrives, and executor log lines.
It redraws at most every ``REDRAW_INTERVAL_S``. When the connection drops, it keeps the last
frame, shows the error in a status line, and reconnects. Without ``--cluster`` it looks up
the embedded coordinator again at every attempt, so it follows one ``swarmctl run`` after
another. ``--once`` queries the runs and executors and prints one frame.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import trio
import typer
from rich.console import Console
from rich.live import Live

from swarmctl import protocol
from swarmctl.cli import app, cluster_addresses, fail, find_error, setup_logging
from swarmctl.cli.executors import CLUSTER_HELP
from swarmctl.client import ClusterQueries, open_events, open_queries
from swarmctl.cluster.transport import PeerGone
from swarmctl.config import config_from_environment
from swarmctl.durations import parse_duration
from swarmctl.embedded import data_home
from swarmctl.errors import ConnectionFailed, SwarmError
from swarmctl.ui.cluster_view import LOG_TAIL_LINES, ClusterView
from swarmctl.ui.dashboard import render_dashboard

log = logging.getLogger(__name__)

INTERRUPTED = 2
LOG_TAIL_BYTES = 64 * 1024  # read from the end of the log; far more than LOG_TAIL_LINES lines
# A coordinator that sends no reply to a query for this long is treated as gone.
QUERY_TIMEOUT_S = 10.0
PIPED_WIDTH = 160  # columns of the frame when stdout is not a terminal
REDRAW_INTERVAL_S = 0.2  # results may arrive many times a second; the screen need not follow each


@app.command()
def dashboard(
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
    interval: str = typer.Option(
        "1s", "--interval",
        help="Time between two lists of runs and executors from the coordinator, such as 1s, 0.5s or 5s; "
        "results and log lines arrive as they happen.",
    ),
    once: bool = typer.Option(False, "--once", help="Print one frame and exit, for scripts. Off a terminal this is the default."),
    log_file: Path = typer.Option(
        None, "--log",
        help="Show the last lines of this local file, such as the coordinator's log when the dashboard runs on its "
        "machine. Default without --cluster: the embedded coordinator's log, $SWARMCTL_HOME/logs/coordinator.log, "
        "if it exists; otherwise the executors' log lines as they arrive.",
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
        view = trio.run(_take_snapshot, cluster)
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED) from None
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code) from None
    console.print(_render(view, log_path))


async def _take_snapshot(cluster: str | None) -> ClusterView:
    async with open_queries(cluster_addresses(cluster)) as queries:
        return await _query(queries)


async def _query(queries: ClusterQueries) -> ClusterView:
    """Request the coordinator's executors and runs. Raise ConnectionFailed when no reply arrives in time."""
    with trio.move_on_after(QUERY_TIMEOUT_S):
        executors = await queries.executors()
        runs = await queries.runs()
        return ClusterView(executors, runs, queries.name, time.time())
    raise ConnectionFailed(f"query to {queries.name} timed out after {QUERY_TIMEOUT_S:.0f}s")


async def _watch(console: Console, cluster: str | None, interval_s: float, log_path: Path | None) -> None:
    """Follow the coordinator's events and redraw until Ctrl-C or SIGTERM."""
    view = ClusterView(taken_at=time.time(), status="connecting...")
    pending = [trio.Event()]  # set when the view changed since the last redraw; replaced at each redraw

    def changed() -> None:
        pending[0].set()

    # The frame uses the alternate screen, as top does. A frame taller than the terminal
    # loses its bottom lines (the log tail first), and the shell's screen returns on exit.
    with Live(_render(view, log_path), console=console, auto_refresh=False, screen=True) as live:

        async def redraw() -> None:
            while True:
                await pending[0].wait()
                pending[0] = trio.Event()
                live.update(_render(view, log_path), refresh=True)
                await trio.sleep(REDRAW_INTERVAL_S)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            nursery.start_soon(redraw)
            nursery.start_soon(_follow_events, cluster, interval_s, view, changed, log_path is None)


async def _follow_events(
    cluster: str | None, interval_s: float, view: ClusterView, changed: Callable[[], None], with_logs: bool
) -> None:
    """Apply the coordinator's events to ``view``. On a lost connection, show the error and reconnect."""
    # Frames arrive at least every interval; several intervals of silence mean a coordinator that is gone.
    silence_limit = max(QUERY_TIMEOUT_S, 3 * interval_s)
    while True:
        try:
            request = protocol.Subscribe(logs=with_logs, interval_s=interval_s)
            async with open_events(cluster_addresses(cluster), request) as events:
                view.source, view.status = events.name, ""
                while True:
                    with trio.move_on_after(silence_limit):
                        message = await events.receive()
                        if view.apply(message, time.time()):
                            changed()
                        continue
                    raise ConnectionFailed(f"no event from {events.name} for {silence_limit:.0f}s")
        except Exception as exc:
            error = find_error(exc, (SwarmError, PeerGone))
            if error is None:
                raise
            reason = str(error)

        since = f"; last update {time.strftime('%H:%M:%S', time.localtime(view.taken_at))}" if view.source else ""
        view.status = f"{reason.rstrip('.')}. Reconnecting every {interval_s:g}s{since}"
        log.info("dashboard: %s", view.status)
        changed()
        await trio.sleep(interval_s)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


def _render(view: ClusterView, log_path: Path | None):
    if log_path is not None:
        lines, name = read_log_tail(log_path, LOG_TAIL_LINES), str(log_path)
    elif view.log_lines:
        lines, name = list(view.log_lines), "executor logs"
    else:
        lines, name = None, ""
    return render_dashboard(
        view.executors, view.runs, lines, now=view.taken_at, source=view.source or "-", status=view.status, log_name=name,
    )


def _default_log(cluster: str | None) -> Path | None:
    """Return the embedded coordinator's log if it exists and no cluster was named here or in SWARMCTL_CONFIG, else None."""
    configured = config_from_environment()
    if cluster or (configured is not None and configured.coordinators):
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
