"""``swarmctl cancel``: stop a run's queued and running tests."""

from __future__ import annotations

import trio
import typer

from swarmctl.cli import app, cluster_addresses, fail, find_error, setup_logging
from swarmctl.cli.executors import CLUSTER_HELP
from swarmctl.client import cancel_run
from swarmctl.errors import SwarmError


@app.command()
def cancel(
    run_id: str = typer.Argument(..., help="The run to cancel, as swarmctl run printed it."),
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
    reason: str = typer.Option("cancelled with swarmctl cancel", "--reason", help="Why, recorded with the run."),
) -> None:
    """Cancel a run: its tests stop and it ends as interrupted (exit code 2)."""
    setup_logging(False, quiet=True)
    try:
        trio.run(cancel_run, cluster_addresses(cluster), run_id, reason)
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code) from None
    typer.echo(f"run {run_id} cancelled")
