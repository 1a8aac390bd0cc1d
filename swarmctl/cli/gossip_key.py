"""``swarmctl gossip-key list|install|use|remove``: rotate the key that seals gossip packets, without restarts.

Every node opens packets sealed with any installed generation, and seals with one. Rotation
is install (every node accepts the new generation), use (every node seals with it), then
remove (the old generation is no longer accepted). The coordinator rejects a ``use`` or a
``remove`` until every connected executor has applied the previous step, so no node ever
drops a live peer's packets and suspects it.
"""

from __future__ import annotations

import trio
import typer

from swarmctl.cli import app, cluster_addresses, fail, find_error, setup_logging
from swarmctl.cli.executors import CLUSTER_HELP
from swarmctl.errors import SwarmError

gossip_key_app = typer.Typer(
    help="Rotate the gossip encryption key: install a new generation, use it, remove the old one (admin).",
    no_args_is_help=True,
)
app.add_typer(gossip_key_app, name="gossip-key")


def _run(action: str, cluster: str | None, generation: int = -1) -> None:
    from swarmctl.client import gossip_keys

    setup_logging(False, quiet=True)
    try:
        keyring = trio.run(gossip_keys, cluster_addresses(cluster), action, generation)
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code) from None
    installed = ", ".join(str(g) for g in keyring.generations)
    typer.echo(f"gossip key generations installed: {installed}; sealing with generation {keyring.primary}")


@gossip_key_app.command("list")
def list_keys(cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP)) -> None:
    """Print the installed gossip key generations and the one that seals packets."""
    _run("list", cluster)


@gossip_key_app.command("install")
def install(cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP)) -> None:
    """Install the next generation on every node; packets are still sealed with the current one."""
    _run("install", cluster)


@gossip_key_app.command("use")
def use(
    generation: int = typer.Argument(..., help="The installed generation to seal packets with."),
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
) -> None:
    """Make every node seal packets with GENERATION."""
    _run("use", cluster, generation)


@gossip_key_app.command("remove")
def remove(
    generation: int = typer.Argument(..., help="The generation that nodes stop accepting; not the one in use."),
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
) -> None:
    """Make every node stop accepting packets sealed with GENERATION."""
    _run("remove", cluster, generation)
