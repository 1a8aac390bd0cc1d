"""``swarmctl status``: check that a coordinator responds, for health checks such as Docker's HEALTHCHECK.

Exit codes follow Docker's health checks rather than pytest's: 0 healthy, 1 unhealthy
(Docker reserves 2). An invalid option is still a usage error, exit code 4.
"""

from __future__ import annotations

import trio
import typer

from swarmctl.cli import app, fail, find_error, setup_logging
from swarmctl.cli.doctor import default_listen_address
from swarmctl.client import list_executors
from swarmctl.cluster.transport import format_address, parse_addresses
from swarmctl.durations import parse_duration
from swarmctl.errors import SwarmError, UsageError

UNHEALTHY = 1
# An executor in one of these states is connected to the coordinator.
CONNECTED_STATES = ("active", "cordoned", "draining")


@app.command()
def status(
    local: bool = typer.Option(
        False, "--local",
        help="Check only the node at --address, for a container or systemd health check. Today status checks only that node either way.",
    ),
    address: str = typer.Option(
        None, "--address", help="The coordinator's HOST:PORT[,HOST:PORT...]. Default: 127.0.0.1 and swarmctl up's default port.",
    ),
    executor_id: str = typer.Option(
        None, "--executor", help="Also require that the coordinator lists this executor id as connected (active, cordoned or draining).",
    ),
    timeout: str = typer.Option("5s", "--timeout", help="How long to wait for the coordinator's response, such as 5s."),
) -> None:
    """Exit 0 if the coordinator responds (and lists --executor as connected), 1 if not."""
    # NOTE: --local is the only mode there is; a status of the whole cluster is not built yet.
    del local
    setup_logging(False, quiet=True)
    try:
        addresses = parse_addresses(address) if address else [default_listen_address()]
        seconds = parse_duration(timeout, "--timeout")
        if seconds <= 0:
            raise UsageError(f"--timeout {timeout!r} is invalid: it must be longer than 0s")
        rows = trio.run(_list_within, addresses, seconds)
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code if isinstance(error, UsageError) else UNHEALTHY) from None

    where = ", ".join(format_address(host, port) for host, port in addresses)
    connected = [row for row in rows if row["state"] in CONNECTED_STATES]
    if executor_id is not None:
        row = next((row for row in rows if row["id"] == executor_id), None)
        if row is None:
            raise fail(f"the coordinator at {where} does not list executor {executor_id!r}; check its --id and --join", UNHEALTHY)
        if row["state"] not in CONNECTED_STATES:
            raise fail(f"executor {executor_id} is {row['state']} at the coordinator {where}", UNHEALTHY)
        typer.echo(f"executor {executor_id} is {row['state']} at the coordinator {where}")
        return
    typer.echo(f"coordinator {where} responds: {len(connected)} executor{'s' if len(connected) != 1 else ''} connected")


async def _list_within(addresses: list[tuple[str, int]], seconds: float) -> list[dict]:
    where = ", ".join(format_address(host, port) for host, port in addresses)
    try:
        with trio.fail_after(seconds):
            return await list_executors(addresses)
    except trio.TooSlowError:
        raise SwarmError(
            f"the coordinator at {where} timed out: no response within {seconds:g}s. "
            "Check that it is not overloaded or stopped (SIGSTOP), or raise --timeout"
        ) from None
