"""``swarmctl cancel``: stop a run's queued and running tests."""

from __future__ import annotations

import trio
import typer

from swarmctl.cli import app, fail, find_error, setup_logging
from swarmctl.client import cancel_run
from swarmctl.cluster.transport import parse_addresses
from swarmctl.embedded import data_home, embedded_address
from swarmctl.errors import SwarmError, UsageError


@app.command()
def cancel(
    run_id: str = typer.Argument(..., help="The run to cancel, as swarmctl run printed it."),
    cluster: str = typer.Option(None, "--cluster", help="Coordinator addresses, HOST:PORT[,HOST:PORT...]. Default: the embedded coordinator of a swarmctl run on this machine."),
    reason: str = typer.Option("cancelled with swarmctl cancel", "--reason", help="Why, recorded with the run."),
) -> None:
    """Cancel a run: its tests stop and it ends as interrupted (exit code 2)."""
    setup_logging(False, quiet=True)
    try:
        if cluster:
            addresses = parse_addresses(cluster)
        else:
            address = embedded_address(data_home())
            if address is None:
                raise UsageError(
                    f"no swarmctl run is running with the data folder {data_home()}; "
                    "pass --cluster HOST:PORT to cancel a run on a cluster"
                )
            addresses = [address]
        trio.run(cancel_run, addresses, run_id, reason)
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code) from None
    typer.echo(f"run {run_id} cancelled")
