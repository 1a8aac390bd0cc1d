"""``swarmctl leader transfer NODE``: hand the leadership of replicated coordinators to another voter."""

from __future__ import annotations

import trio
import typer

from swarmctl.cli import app, cluster_addresses, fail, find_error, setup_logging
from swarmctl.api_client import RemoteError
from swarmctl.client import node_status, transfer_leadership
from swarmctl.cluster.transport import format_address, parse_address
from swarmctl.durations import parse_duration
from swarmctl.errors import SwarmError, UsageError

leader_app = typer.Typer(help="Leadership of coordinators started with --peers.", no_args_is_help=True)
app.add_typer(leader_app, name="leader")


@leader_app.command("transfer")
def transfer(
    node: str = typer.Argument(..., help="The voter to lead next, as HOST:PORT from --peers."),
    cluster: str = typer.Option(
        None, "--cluster", help="The coordinators' HOST:PORT[,HOST:PORT...]. Default: the coordinators listed in the file that SWARMCTL_CONFIG names.",
    ),
    timeout: str = typer.Option("10s", "--timeout", help="How long to wait for NODE to lead, such as 10s."),
) -> None:
    """Make NODE the leader, for maintenance of the current leader's machine; exit 0 once NODE leads."""
    setup_logging(False, quiet=True)
    try:
        target = format_address(*parse_address(node))
        seconds = parse_duration(timeout, "--timeout")
        if seconds <= 0:
            raise UsageError(f"--timeout {timeout!r} is invalid: it must be longer than 0s")
        term = trio.run(_transfer, cluster_addresses(cluster), target, seconds)
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        # A refused request keeps its exit code (4 for a usage or permission error); a
        # transfer that did not happen in time exits 1.
        raise fail(str(error), error.exit_code if isinstance(error, (UsageError, RemoteError)) else 1) from None
    typer.echo(f"{target} leads term {term}")


async def _transfer(addresses: list[tuple[str, int]], target: str, seconds: float) -> int:
    """Ask the leader to hand over to ``target``; return the term in which ``target`` leads."""
    statuses = []
    for address in addresses:
        try:
            statuses.append(await node_status(address))
        except SwarmError:
            continue
    leaders = [status for status in statuses if status.state == "leader"]
    if not leaders:
        raise SwarmError(
            "no coordinator of " + ", ".join(format_address(*a) for a in addresses) + " leads: check swarmctl status --cluster"
        )
    leader = max(leaders, key=lambda status: status.term)
    if leader.node_id == target:
        return leader.term
    await transfer_leadership(parse_address(leader.node_id), target)
    with trio.move_on_after(seconds):
        while True:
            try:
                status = await node_status(parse_address(target))
                if status.state == "leader":
                    return status.term
            except SwarmError:
                pass
            await trio.sleep(0.1)
    raise SwarmError(f"{target} did not become the leader within {seconds:g}s; {leader.node_id} may still lead")
