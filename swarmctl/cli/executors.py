"""``swarmctl executors``: list the executors of a cluster, and drain, cordon or uncordon one."""

from __future__ import annotations

import json

import trio
import typer
from rich.console import Console
from rich.table import Table

from swarmctl.cli import app, cluster_addresses, fail, find_error, setup_logging
from swarmctl.client import control_executor, list_executors
from swarmctl.errors import SwarmError
from swarmctl.labels import format_labels

executors_app = typer.Typer(
    help="List executors, or drain, cordon or uncordon one.", invoke_without_command=True, no_args_is_help=False
)
app.add_typer(executors_app, name="executors")

CLUSTER_HELP = (
    "Coordinator addresses, HOST:PORT[,HOST:PORT...]. Default: the coordinators of the file SWARMCTL_CONFIG names, "
    "else the embedded coordinator of a swarmctl run on this machine."
)


@executors_app.callback()
def show(
    ctx: typer.Context,
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON array instead of a table."),
) -> None:
    """List executors: state, labels, slots, load, current shards and when each was last heard from."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = cluster  # `swarmctl executors --cluster X drain ID` works as well as `drain ID --cluster X`
        return
    setup_logging(False, quiet=True)
    rows = _call(list_executors, cluster)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    Console(highlight=False).print(executor_table(rows))


def executor_table(rows: list[dict]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "STATE", "LABELS", "SLOTS", "CPU", "MEM", "LOAD", "SHARDS", "LAST SEEN"):
        # The id is what drain and cordon take, so it is never cut; labels and shards wrap.
        table.add_column(column, no_wrap=column not in ("LABELS", "SHARDS"), min_width=len(column))
    table.columns[0].min_width = max([2, *(len(row["id"]) for row in rows)])
    table.columns[1].min_width = max([5, *(len(row["state"]) for row in rows)])
    for row in rows:
        resources = row["resources"]
        table.add_row(
            row["id"],
            row["state"],
            format_labels(row["labels"]),
            f"{row['busy']}/{row['slots']}",
            _percent(resources.get("cpu_percent")),
            _percent(resources.get("memory_percent")),
            f"{row['load']:.2f}",
            ", ".join(row["shards"]) or "-",
            f"{row['last_seen_s']:.0f}s ago",
        )
    return table


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _control(ctx: typer.Context, action: str, executor_id: str, cluster: str | None) -> None:
    setup_logging(False, quiet=True)
    cluster = cluster or ctx.obj
    state = _call(control_executor, cluster, action, executor_id)
    typer.echo(f"executor {executor_id} is {state}")


@executors_app.command()
def drain(
    ctx: typer.Context,
    executor_id: str = typer.Argument(..., help="The executor's id, as `swarmctl executors` lists it."),
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
) -> None:
    """Give no new work to the executor, take back its unstarted tests, and let it leave when its running tests end."""
    _control(ctx, "drain", executor_id, cluster)


@executors_app.command()
def cordon(
    ctx: typer.Context,
    executor_id: str = typer.Argument(..., help="The executor's id, as `swarmctl executors` lists it."),
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
) -> None:
    """Give no new work to the executor; its running tests go on. Kept across restarts until uncordon."""
    _control(ctx, "cordon", executor_id, cluster)


@executors_app.command()
def uncordon(
    ctx: typer.Context,
    executor_id: str = typer.Argument(..., help="The executor's id, as `swarmctl executors` lists it."),
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
) -> None:
    """Give the executor new work again."""
    _control(ctx, "uncordon", executor_id, cluster)


def _call(function, cluster: str | None, *args):
    try:
        return trio.run(function, cluster_addresses(cluster), *args)
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code) from None
