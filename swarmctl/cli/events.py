"""``swarmctl events``: print a coordinator's events as JSON lines, for scripts and other tools."""

from __future__ import annotations

import dataclasses
import json
import signal

import trio
import typer

from swarmctl import protocol
from swarmctl.cli import app, cluster_addresses, fail, find_error, setup_logging
from swarmctl.cli.executors import CLUSTER_HELP
from swarmctl.client import open_events
from swarmctl.durations import parse_duration
from swarmctl.errors import SwarmError, UsageError

INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT


@app.command()
def events(
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
    run_id: str = typer.Option(
        "", "--run", help="Only this run's progress and output, and exit 0 once it completes. Default: every run, until Ctrl-C."
    ),
    output: bool = typer.Option(False, "--output", help="Also print pieces of running tests' captured output (case_output)."),
    logs: bool = typer.Option(False, "--logs", help="Also print executors' log lines (executor_logs)."),
    interval: str = typer.Option("5s", "--interval", help="Time between two lists of runs and executors, such as 1s or 30s."),
    count: int = typer.Option(0, "--count", help="Exit 0 after this many events; 0 means no limit."),
) -> None:
    """Print the coordinator's events, one JSON object per line with its "kind".

    Kinds: progress (each batch of results of a run, with the executors' activity), complete
    (a run ended), runs and executors (every --interval), and with the options case_output
    and executor_logs.
    """
    setup_logging(False, quiet=True)
    try:
        interval_s = parse_duration(interval, "--interval")
        if count < 0:
            raise UsageError(f"--count {count} is invalid: it must be 0 (no limit) or more")
        request = protocol.Subscribe(run_id=run_id, output=output, logs=logs, interval_s=interval_s)
        interrupted = trio.run(_print_events, cluster, request, count)
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C before the signal handler was installed
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code) from None
    if interrupted:
        raise typer.Exit(INTERRUPTED)


async def _print_events(cluster: str | None, request: protocol.Subscribe, count: int) -> bool:
    """Print events until ``count`` were printed, the requested run completed, or a signal; return True on a signal."""
    interrupted = False
    async with trio.open_nursery() as nursery:

        async def stop_on_signal() -> None:
            nonlocal interrupted
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(stop_on_signal)
        async with open_events(cluster_addresses(cluster), request) as stream:
            printed = 0
            while count == 0 or printed < count:
                message = await stream.receive()
                if isinstance(message, protocol.RunList) and request.run_id:
                    _check_run_listed(message, request.run_id, stream.name)
                typer.echo(json.dumps({"kind": message.KIND, **dataclasses.asdict(message)}))
                printed += 1
                if isinstance(message, protocol.RunComplete) and message.run_id == request.run_id:
                    break
        nursery.cancel_scope.cancel()
    return interrupted


def _check_run_listed(runs: protocol.RunList, run_id: str, source: str) -> None:
    """Raise UsageError when ``run_id`` is not an active run, since its completion would never arrive."""
    row = next((run for run in runs.runs if run.get("run_id") == run_id), None)
    if row is None or row.get("status") not in ("collecting", "running"):
        state = f"has status {row.get('status')}" if row is not None else "is not active"
        raise UsageError(
            f"run {run_id!r} {state} on {source}, so no more events will come for it; "
            f"`swarmctl report {run_id}` shows a finished run"
        )
