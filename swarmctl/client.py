"""Submitting a run and following it, and the other client requests, through the coordinator's HTTP API."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from swarmctl import protocol
from swarmctl.api_client import ApiClient, EventStream
from swarmctl.bundle import Bundle
from swarmctl.cluster.transport import PeerGone
from swarmctl.errors import ConnectionFailed, ProtocolError, RunFailed, SwarmError
from swarmctl.results import CaseResult, RunSummary

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_S = 5.0
REJOIN_ATTEMPTS = 5  # to follow a run again after its coordinator went away
REJOIN_DELAY_S = 1.0
PING_INTERVAL_S = 5.0  # while following a run, so a coordinator cut off by the network is noticed
PING_TIMEOUT_S = 10.0


@dataclass
class RunWatch:
    """The client's view of a run while it follows it."""

    run_id: str = ""
    total: int = 0
    done: int = 0
    executors: int = 0
    status: str = ""
    eta_s: float | None = None  # seconds left when the last progress frame was sent, None if unknown
    eta_low_s: float | None = None
    eta_high_s: float | None = None
    eta_basis: str = "unknown"
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> final results so far
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case_id, outcome) as they arrive
    results: list[CaseResult] = field(default_factory=list)  # the final results, in collection order
    earlier_attempts: dict[str, list[CaseResult]] = field(default_factory=dict)  # case id -> failed tries before its final result


async def submit_and_follow(
    addresses: Sequence[tuple[str, int]],
    *,
    suite: protocol.SuiteSpec,
    bundle: Bundle,
    strategy: str,
    case_ids: list[str] | None,
    deadline_s: float | None = None,
    priority: int = 0,
    retries: int = 0,
    start_at: float | None = None,
    durations: dict[str, float] | None = None,
    dependencies: dict[str, list[str]] | None = None,
    group: str = "none",
    requirements: dict[str, dict[str, str]] | None = None,
    on_progress: Callable[[RunWatch, list[tuple[str, str]]], None],
    on_accepted: Callable[[str], None] = lambda run_id: None,
    on_ended: Callable[[], None] = lambda: None,
) -> tuple[RunSummary, list[CaseResult], dict[str, list[CaseResult]]]:
    """Upload the bundle, submit the run, and return its summary, results and earlier attempts when it ends.

    ``on_ended`` is called once every test has its final result, or at the latest when the
    coordinator starts sending the ended run's results, and possibly more than once.
    Cancelling this (Ctrl-C) cancels the run on the coordinator.
    """
    api = ApiClient.from_environment(addresses)
    await _upload(api, bundle)
    request = {
        "suite": suite.to_wire(), "strategy": strategy, "case_ids": case_ids, "deadline_s": deadline_s, "priority": priority,
        "retries": retries, "start_at": start_at, "durations": durations, "dependencies": dependencies, "group": group,
        "requirements": requirements,
    }
    accepted = await api.call("POST", "/v1/runs", json_body=request)
    watch = RunWatch(run_id=accepted["run_id"])
    log.info("run %s accepted", watch.run_id)
    on_accepted(watch.run_id)
    try:
        complete = await _follow_to_end(api, bundle, watch, on_progress, on_ended)
    except BaseException as exc:
        if not isinstance(exc, Exception):
            # Ctrl-C or a cancelled caller, at any step of following: the run stops too. A lost
            # coordinator is not a reason to cancel, because the run may still finish there.
            with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_TIMEOUT_S):
                try:
                    await _cancel(api, watch.run_id, "cancelled by the client")
                except SwarmError as error:
                    log.warning("could not cancel run %s: %s", watch.run_id, error)
        raise

    summary = RunSummary(
        run_id=complete.run_id,
        exit_code=complete.exit_code,
        wall_s=complete.wall_s,
        started_at=complete.started_at,
        suite=suite.name,
        deselected=complete.deselected,
        error=complete.error,
        executors=complete.executors,
        duplicates=complete.duplicates,
        fenced=complete.fenced,
    )
    return summary, watch.results, watch.earlier_attempts


async def _follow_to_end(api: ApiClient, bundle: Bundle, watch: RunWatch, on_progress, on_ended) -> protocol.RunComplete:
    """Follow the run on its stream until it completes, following it again when the stream breaks."""
    failures = 0
    while True:
        try:
            if failures:
                # A new leader may lack the bundle, which executors fetch from it: offer it again.
                await _upload(api, bundle)
            async with api.open_stream(f"/v1/runs/{urllib.parse.quote(watch.run_id, safe='')}/watch") as stream:
                # The stream sends the run's results in full when it ends.
                watch.results.clear()
                watch.earlier_attempts.clear()
                try:
                    return await _follow_alive(stream, watch, on_progress, on_ended)
                except PeerGone as exc:
                    log.warning("%s", exc)
                    # A node cut off by the network would hold up the next calls until the connect times out.
                    api.demote(stream.name)
        except (ConnectionFailed, PeerGone) as exc:
            log.warning("%s", exc)
            await trio.sleep(REJOIN_DELAY_S)
        # The coordinator went away: a replicated cluster's new leader continues the run.
        failures += 1
        if failures > REJOIN_ATTEMPTS:
            raise ConnectionFailed(
                f"lost the coordinator while following run {watch.run_id}, and {REJOIN_ATTEMPTS} attempts to follow it "
                "again failed; the run may still finish on the coordinators: follow it with swarmctl dashboard"
            )
        log.warning("lost the coordinator while following run %s; following it again", watch.run_id)


async def _follow_alive(stream: EventStream, watch: RunWatch, on_progress, on_ended) -> protocol.RunComplete:
    """Follow the run while pinging the coordinator; raise PeerGone when it stops responding.

    A run may send no event for minutes while a long test runs, so silence alone proves
    nothing, but a coordinator cut off by the network does not return a ping either.
    """
    outcome: list[protocol.RunComplete | BaseException] = []
    async with trio.open_nursery() as nursery:

        async def follow() -> None:
            try:
                outcome.append(await _follow(stream, watch, on_progress, on_ended))
            except Exception as exc:
                outcome.append(exc)
            nursery.cancel_scope.cancel()

        async def keep_alive() -> None:
            while True:
                await trio.sleep(PING_INTERVAL_S)
                try:
                    await stream.check_alive(PING_TIMEOUT_S)
                except PeerGone as exc:
                    outcome.append(exc)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(follow)
        nursery.start_soon(keep_alive)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


async def _cancel(api: ApiClient, run_id: str, reason: str) -> None:
    await api.call("POST", f"/v1/runs/{urllib.parse.quote(run_id, safe='')}/cancel", {"reason": reason})


async def cancel_run(addresses: Sequence[tuple[str, int]], run_id: str, reason: str) -> None:
    """Ask the coordinator to cancel ``run_id``; raise RemoteError if it is not active there."""
    await _cancel(ApiClient.from_environment(addresses), run_id, reason)


async def list_executors(addresses: Sequence[tuple[str, int]]) -> list[dict]:
    """Return the coordinator's executor rows (see ``ExecutorRecord.describe``)."""
    return (await ApiClient.from_environment(addresses).call("GET", "/v1/executors"))["executors"]


class ClusterQueries:
    """Repeated queries to one cluster, such as the polls of ``swarmctl dashboard``."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    @property
    def name(self) -> str:
        return self.api.name

    async def executors(self) -> list[dict]:
        return (await self.api.call("GET", "/v1/executors"))["executors"]

    async def runs(self) -> list[dict]:
        return (await self.api.call("GET", "/v1/runs"))["runs"]


@asynccontextmanager
async def open_queries(addresses: Sequence[tuple[str, int]]) -> AsyncIterator[ClusterQueries]:
    """Make a query client for the coordinators of ``addresses``; later queries go to the leader found first."""
    yield ClusterQueries(ApiClient.from_environment(addresses))


@asynccontextmanager
async def open_events(addresses: Sequence[tuple[str, int]], request: protocol.Subscribe) -> AsyncIterator[EventStream]:
    """Open the leader's event stream, ``/v1/events``, with the options of ``request``."""
    params = {"interval_s": f"{request.interval_s:g}", "output": str(request.output).lower(), "logs": str(request.logs).lower()}
    if request.run_id:
        params["run_id"] = request.run_id
    async with ApiClient.from_environment(addresses).open_stream("/v1/events", params) as stream:
        yield stream


async def revoke_token(addresses: Sequence[tuple[str, int]], token_id: str) -> int:
    """Revoke a token on the coordinator; return how many of its connections were closed."""
    path = f"/v1/tokens/{urllib.parse.quote(token_id, safe='')}"
    return (await ApiClient.from_environment(addresses).call("DELETE", path))["closed_connections"]


async def control_executor(addresses: Sequence[tuple[str, int]], action: str, executor_id: str) -> str:
    """Drain, cordon or uncordon an executor; return its state afterwards."""
    path = f"/v1/executors/{urllib.parse.quote(executor_id, safe='')}/{action}"
    return (await ApiClient.from_environment(addresses).call("POST", path))["state"]


async def gossip_keys(addresses: Sequence[tuple[str, int]], action: str, generation: int = -1) -> protocol.GossipKeyring:
    """List, install, use or remove a gossip key generation; return the keyring afterwards."""
    method, path = {
        "list": ("GET", "/v1/gossip-keys"),
        "install": ("POST", "/v1/gossip-keys"),
        "use": ("POST", f"/v1/gossip-keys/{generation}/use"),
        "remove": ("DELETE", f"/v1/gossip-keys/{generation}"),
    }[action]
    reply = await ApiClient.from_environment(addresses).call(method, path)
    return protocol.GossipKeyring(reply["generations"], reply["primary"])


async def node_status(address: tuple[str, int]) -> protocol.NodeStatus:
    """Return one node's consensus status, which every voter sends, whether it leads or not."""
    reply = await ApiClient.from_environment([address]).call("GET", "/v1/status")
    return protocol.from_fields(protocol.NodeStatus.KIND, reply)


async def transfer_leadership(leader: tuple[str, int], target: str) -> None:
    """Request that the leader at ``leader`` hand leadership to the voter ``target``; raise RemoteError if it declines."""
    await ApiClient.from_environment([leader]).call("POST", "/v1/leader/transfer", {"target": target})


async def _upload(api: ApiClient, bundle: Bundle) -> None:
    path = f"/v1/bundles/{bundle.digest}"
    if (await api.call("GET", path))["stored"]:
        log.info("bundle %s already on the coordinator", bundle.digest[:12])
        return
    reply = await api.call("PUT", path, file=bundle.path)
    if not reply.get("stored"):
        raise RunFailed("-", f"the coordinator did not store bundle {bundle.digest}")
    log.info("uploaded bundle %s (%d bytes)", bundle.digest[:12], bundle.size)


async def _follow(stream: EventStream, watch: RunWatch, on_progress, on_ended) -> protocol.RunComplete:
    while True:
        message = await stream.receive()
        match message:
            case protocol.RunProgress():
                watch.total, watch.done, watch.executors = message.total, message.done, message.executors
                watch.status, watch.counts = message.status, dict(message.counts)
                watch.eta_s, watch.eta_low_s, watch.eta_high_s = message.eta_s, message.eta_low_s, message.eta_high_s
                watch.eta_basis = message.eta_basis
                on_progress(watch, [tuple(pair) for pair in message.outcomes])
                if message.total and message.done >= message.total:
                    on_ended()  # no test is left to run
            case protocol.RunResults():
                on_ended()
                watch.results.extend(CaseResult.from_wire(r) for r in message.results)
                for wire in message.earlier_attempts:
                    attempt = CaseResult.from_wire(wire)
                    watch.earlier_attempts.setdefault(attempt.case_id, []).append(attempt)
            case protocol.RunComplete():
                on_ended()
                return message
            case _:
                raise ProtocolError(f"{stream.name} sent unexpected {message.KIND} while following a run")
