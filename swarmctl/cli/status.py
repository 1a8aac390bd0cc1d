"""``swarmctl status``: check that a coordinator responds, or show who leads a replicated cluster.

Exit codes follow Docker's health checks rather than pytest's: 0 healthy, 1 unhealthy
(Docker reserves 2). An invalid option is still a usage error, exit code 4.
"""

from __future__ import annotations

import json
from typing import Any

import trio
import typer

from swarmctl import protocol
from swarmctl.cli import app, fail, find_error, setup_logging
from swarmctl.cli.doctor import default_listen_address
from swarmctl.client import list_executors, node_status
from swarmctl.cluster.transport import format_address, parse_addresses
from swarmctl.config import config_from_environment
from swarmctl.durations import parse_duration
from swarmctl.errors import SwarmError, UsageError
from swarmctl.tokens import AuthError

UNHEALTHY = 1
# An executor in one of these states is connected to the coordinator.
CONNECTED_STATES = ("active", "cordoned", "draining")


@app.command()
def status(
    local: bool = typer.Option(
        False, "--local",
        help="Check the node at --address, for a container or systemd health check. This is what status does without --cluster.",
    ),
    address: str = typer.Option(
        None, "--address",
        help="The coordinator's HOST:PORT[,HOST:PORT...]. Default: the coordinators listed in the file that "
        "SWARMCTL_CONFIG names, else 127.0.0.1 and swarmctl up's default port.",
    ),
    executor_id: str = typer.Option(
        None, "--executor", help="Also require that the coordinator lists this executor id as connected (active, cordoned or draining).",
    ),
    timeout: str = typer.Option("5s", "--timeout", help="How long to wait for the coordinator's response, such as 5s."),
    cluster: str = typer.Option(
        None, "--cluster",
        help="Show the consensus status of these coordinator-eligible nodes, HOST:PORT[,HOST:PORT...]: the leader, "
        "the term, the commit index and each voter's lag. Exit 1 when no node leads.",
    ),
    as_json: bool = typer.Option(False, "--json", help="With --cluster: print one JSON object instead of a table."),
) -> None:
    """Exit 0 if the coordinator responds (and lists --executor as connected), 1 if not."""
    del local  # checking the node at --address is what status does without --cluster
    setup_logging(False, quiet=True)
    try:
        seconds = parse_duration(timeout, "--timeout")
        if seconds <= 0:
            raise UsageError(f"--timeout {timeout!r} is invalid: it must be longer than 0s")
        if cluster is not None:
            view = trio.run(_cluster_view, parse_addresses(cluster), seconds)
        else:
            addresses = parse_addresses(address) if address else _configured_addresses() or [default_listen_address()]
            rows = trio.run(_list_within, addresses, seconds)
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code if isinstance(error, UsageError) else UNHEALTHY) from None

    if cluster is not None:
        _print_cluster(view, as_json)
        if not view["leader"]:
            raise typer.Exit(UNHEALTHY)
        return
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


def _configured_addresses() -> list[tuple[str, int]]:
    """Return the coordinators of the file SWARMCTL_CONFIG names, or [] without one."""
    configured = config_from_environment()
    if configured is None or not configured.coordinators:
        return []
    return parse_addresses(configured.coordinators)


async def _cluster_view(addresses: list[tuple[str, int]], seconds: float) -> dict[str, Any]:
    """Ask every node for its status at once; return the leader's view, with unreachable nodes marked."""
    answers: dict[str, protocol.NodeStatus | str] = {}
    rejections: list[AuthError] = []
    rejected: set[str] = set()  # nodes that rejected the credentials

    async def ask(address: tuple[str, int]) -> None:
        where = format_address(*address)
        try:
            with trio.fail_after(seconds):
                answers[where] = await node_status(address)
        except trio.TooSlowError:
            answers[where] = (
                f"no answer within {seconds:g}s; check that it runs and that TLS is used on both sides or neither "
                "(SWARMCTL_CA_FILE)"
            )
        except AuthError as exc:
            rejections.append(exc)
            rejected.add(where)
            answers[where] = str(exc)
        except SwarmError as exc:
            answers[where] = str(exc).split(". Check")[0]  # the reason, without the general advice

    async with trio.open_nursery() as nursery:
        for address in addresses:
            nursery.start_soon(ask, address)

    statuses = [answer for answer in answers.values() if isinstance(answer, protocol.NodeStatus)]
    if not statuses and rejections:
        raise rejections[0]  # a credential problem, not an outage
    leaders = [s for s in statuses if s.state in ("leader", "single")]
    leader = max(leaders, key=lambda s: s.term) if leaders else None
    newest = leader or (max(statuses, key=lambda s: s.term) if statuses else None)
    voters = {row["address"]: dict(row) for row in newest.voters} if newest else {}
    for where, answer in answers.items():
        row = voters.setdefault(where, {"address": where})
        if isinstance(answer, str):
            row.update(state="rejected" if where in rejected else "unreachable", error=answer)
        elif not row.get("state") or row["state"] == "unknown":
            row["state"] = answer.state
    for row in voters.values():
        row.setdefault("lag", None)
    # When the leader itself was not asked or did not respond, take the newest follower's view.
    if leader is not None:
        leader_id = leader.node_id
    elif newest is not None:
        leader_id = newest.leader
    else:
        leader_id = ""
    return {
        "leader": leader_id,
        "term": newest.term if newest else 0,
        "commit_index": newest.commit_index if newest else 0,
        "voters": sorted(voters.values(), key=lambda row: row["address"]),
    }


def _print_cluster(view: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    answered = [row for row in view["voters"] if row["state"] not in ("unreachable", "rejected")]
    if not answered:
        typer.echo("no coordinator answered:")
        for row in view["voters"]:
            typer.echo(f"  {row['address']:<24} {row['state']:<12}  ({row.get('error', '')})")
        return
    leader = view["leader"] or "none (no node leads: a majority of the voters must be up and reach each other)"
    typer.echo(f"leader {leader}, term {view['term']}, commit index {view['commit_index']}")
    for row in view["voters"]:
        lag = "" if row.get("lag") is None else f"  lag {row['lag']}"
        error = f"  ({row['error']})" if row.get("error") else ""
        typer.echo(f"  {row['address']:<24} {row['state']:<12}{lag}{error}")
