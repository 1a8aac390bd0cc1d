"""``swarmctl up``: start a long-running coordinator or executor node."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
from enum import Enum
from pathlib import Path

import trio
import typer

from swarmctl.cli import app, fail, find_error, setup_logging
from swarmctl.cluster.transport import parse_address, parse_addresses
from swarmctl.embedded import data_home
from swarmctl.errors import SwarmError, UsageError

log = logging.getLogger(__name__)


class Role(str, Enum):
    coordinator = "coordinator"
    executor = "executor"


@app.command()
def up(
    role: Role = typer.Option(..., "--role", help="What this node does: coordinator or executor."),
    listen: str = typer.Option("127.0.0.1:7400", "--listen", help="Coordinator: HOST:PORT to serve executors and clients on."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Folder for state, bundles and logs. Default: $SWARMCTL_HOME or the user data folder."),
    join: str = typer.Option(None, "--join", help="Executor: coordinator addresses, HOST:PORT[,HOST:PORT...]."),
    slots: int = typer.Option(
        os.cpu_count() or 1, "--slots", show_default=False,
        help="Executor: tests run at once (one pytest worker each). Default: CPU count.",
    ),
    labels: str = typer.Option("", "--labels", help="Executor: labels as k=v,k=v, for example os=linux,browser=chromium."),
    node_id: str = typer.Option(None, "--id", help="Executor: node id. Default: hostname plus a random suffix."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    """Start a coordinator or an executor and run until SIGINT or SIGTERM."""
    setup_logging(verbose)
    try:
        folder = (data_dir or data_home()).resolve()
        if role is Role.coordinator:
            host, port = parse_address(listen)
            _warn_if_exposed(host)
            main = _run_coordinator(folder, host, port)
        else:
            main = _run_executor(folder, join, slots, parse_labels(labels), node_id)
        trio.run(_until_signal, main)
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code) from None


def parse_labels(text: str) -> dict[str, str]:
    labels = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid label {part!r}: expected key=value, for example os=linux")
        labels[key.strip()] = value.strip()
    return labels


def _warn_if_exposed(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # NOTE: nodes do not authenticate each other yet; anyone who reaches this port can run code on executors.
        log.warning("listening on %s, which is not a loopback address; connections are not authenticated", host)


async def _run_coordinator(folder: Path, host: str, port: int) -> None:
    from swarmctl.coordinator.node import Coordinator

    coordinator = Coordinator(folder)
    await coordinator.serve(host, port)
    await trio.sleep_forever()


async def _run_executor(folder: Path, join: str | None, slots: int, labels: dict[str, str], node_id: str | None) -> None:
    from swarmctl.executor.node import Executor, default_executor_id

    if not join:
        raise UsageError("an executor needs --join HOST:PORT with the coordinator's address")
    if slots < 1:
        raise UsageError(f"--slots {slots} is invalid: it must be at least 1")
    executor = Executor(
        executor_id=node_id or default_executor_id(), join=parse_addresses(join), slots=slots, labels=labels, data_dir=folder
    )
    await executor.run()


async def _until_signal(main) -> None:
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s; stopping", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch_signals)
        await main
        nursery.cancel_scope.cancel()
    log.info("stopped")
