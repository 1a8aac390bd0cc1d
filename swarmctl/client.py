"""Submitting a run and following it: the client side of the data plane."""

from __future__ import annotations

import logging
import math
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from swarmctl import __version__, protocol
from swarmctl.bundle import Bundle, iter_chunks
from swarmctl.cluster.transport import Peer, PeerGone, connect, format_address, parse_address
from swarmctl.credentials import client_tls, client_token
from swarmctl.errors import ConnectionFailed, ProtocolError, RunFailed, SwarmError
from swarmctl.results import CaseResult, RunSummary
from swarmctl.tokens import AuthError

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_S = 5.0
ELECTION_WAIT_S = 15.0  # how long a client waits for a leader while the coordinators elect one
ELECTION_RETRY_S = 0.5
MAX_REDIRECTS = 3  # in a row; more means the nodes disagree on the leader, so wait for the election
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


class RemoteError(SwarmError):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
) -> tuple[RunSummary, list[CaseResult], dict[str, list[CaseResult]]]:
    """Upload the bundle, submit the run, and return its summary, results and earlier attempts when it ends.

    Cancelling this (Ctrl-C) cancels the run on the coordinator.
    """
    async with leader_session(addresses) as peer:
        await _upload(peer, bundle)
        await peer.send(
            protocol.SubmitRun(
                suite.to_wire(), strategy, case_ids, deadline_s, priority, retries, start_at, durations, dependencies,
                group, requirements,
            )
        )
        accepted = await _expect(peer, protocol.RunAccepted)
        watch = RunWatch(run_id=accepted.run_id)
        log.info("run %s accepted", watch.run_id)
        on_accepted(watch.run_id)
        complete = await _follow_or_cancel(peer, watch, on_progress)
    failures = 0
    while complete is None:
        # The coordinator went away: a replicated cluster's new leader continues the run.
        failures += 1
        if failures > REJOIN_ATTEMPTS:
            raise ConnectionFailed(
                f"lost the coordinator while following run {watch.run_id}, and {REJOIN_ATTEMPTS} attempts to follow it "
                "again failed; the run may still finish on the coordinators: follow it with swarmctl dashboard"
            )
        log.warning("lost the coordinator while following run %s; following it again", watch.run_id)
        try:
            async with leader_session(addresses) as peer:
                # A new leader may lack the bundle, which executors fetch from it: offer it again.
                await _upload(peer, bundle)
                await peer.send(protocol.WatchRun(watch.run_id))
                # Results are sent again in full when the run ends.
                watch.results.clear()
                watch.earlier_attempts.clear()
                complete = await _follow_or_cancel(peer, watch, on_progress)
        except (ConnectionFailed, PeerGone) as exc:
            log.warning("%s", exc)
            await trio.sleep(REJOIN_DELAY_S)

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


async def _follow_or_cancel(peer: Peer, watch: RunWatch, on_progress) -> protocol.RunComplete | None:
    """Follow the run to its end; None when the connection broke. Cancelling this cancels the run."""
    try:
        return await _follow_alive(peer, watch, on_progress)
    except PeerGone:
        return None
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_TIMEOUT_S):
            try:
                await peer.send(protocol.CancelRun(watch.run_id, "cancelled by the client"))
            except PeerGone:
                pass
        raise


async def _follow_alive(peer: Peer, watch: RunWatch, on_progress) -> protocol.RunComplete:
    """Follow the run while pinging the coordinator; raise PeerGone when it stops responding.

    A run may send no frame for minutes while a long test runs, so silence alone proves
    nothing, but a coordinator cut off by the network does not return a ping either.
    """
    outcome: list[protocol.RunComplete | BaseException] = []
    async with trio.open_nursery() as nursery:

        async def follow() -> None:
            try:
                outcome.append(await _follow(peer, watch, on_progress))
            except Exception as exc:
                outcome.append(exc)
            nursery.cancel_scope.cancel()

        async def keep_alive() -> None:
            while True:
                await trio.sleep(PING_INTERVAL_S)
                try:
                    await peer.check_alive(PING_TIMEOUT_S)
                except PeerGone as exc:
                    outcome.append(exc)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(follow)
        nursery.start_soon(keep_alive)
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


async def cancel_run(addresses: Sequence[tuple[str, int]], run_id: str, reason: str) -> None:
    """Ask the coordinator to cancel ``run_id``; raise RemoteError if it is not active there."""
    async with leader_session(addresses) as peer:
        await peer.send(protocol.CancelRun(run_id, reason))
        await _expect(peer, protocol.RunCancelled)


async def list_executors(addresses: Sequence[tuple[str, int]]) -> list[dict]:
    """Return the coordinator's executor rows (see ``ExecutorRecord.describe``)."""
    async with leader_session(addresses) as peer:
        await peer.send(protocol.ListExecutors())
        reply = await _expect(peer, protocol.ExecutorList)
        return reply.executors


async def list_runs(addresses: Sequence[tuple[str, int]]) -> list[dict]:
    """Return the coordinator's active runs, then its most recently finished ones, as ``RunList`` rows."""
    async with open_queries(addresses) as queries:
        return await queries.runs()


class ClusterQueries:
    """A client connection for repeated queries, such as the polls of ``swarmctl dashboard``."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    async def executors(self) -> list[dict]:
        await self.peer.send(protocol.ListExecutors())
        reply = await _expect(self.peer, protocol.ExecutorList)
        return reply.executors

    async def runs(self) -> list[dict]:
        await self.peer.send(protocol.ListRuns())
        reply = await _expect(self.peer, protocol.RunList)
        return reply.runs


@asynccontextmanager
async def open_queries(addresses: Sequence[tuple[str, int]]) -> AsyncIterator[ClusterQueries]:
    """Connect to the first coordinator of ``addresses`` that accepts, and keep the connection open."""
    async with leader_session(addresses) as peer:
        yield ClusterQueries(peer)


class EventStream:
    """A client connection subscribed to the coordinator's events."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    async def receive(self) -> protocol.Message:
        """Return the next event frame; raise RemoteError if the coordinator rejected the subscription."""
        message = await self.peer.receive()
        if isinstance(message, protocol.ErrorReply):
            raise RemoteError(message.message, message.code)
        return message


@asynccontextmanager
async def open_events(addresses: Sequence[tuple[str, int]], request: protocol.Subscribe) -> AsyncIterator[EventStream]:
    """Connect to the first coordinator of ``addresses`` that accepts, and subscribe with ``request``."""
    async with leader_session(addresses) as peer:
        await peer.send(request)
        yield EventStream(peer)


async def revoke_token(addresses: Sequence[tuple[str, int]], token_id: str) -> int:
    """Revoke a token on the coordinator; return how many of its connections were closed."""
    async with leader_session(addresses) as peer:
        await peer.send(protocol.RevokeToken(token_id))
        reply = await _expect(peer, protocol.TokenRevoked)
        return reply.connections_closed


async def control_executor(addresses: Sequence[tuple[str, int]], action: str, executor_id: str) -> str:
    """Drain, cordon or uncordon an executor; return its state afterwards."""
    async with leader_session(addresses) as peer:
        await peer.send(protocol.ControlExecutor(action, executor_id))
        reply = await _expect(peer, protocol.ExecutorControlled)
        return reply.state


async def gossip_keys(addresses: Sequence[tuple[str, int]], action: str, generation: int = -1) -> protocol.GossipKeyring:
    """List, install, use or remove a gossip key generation; return the keyring afterwards."""
    async with leader_session(addresses) as peer:
        await peer.send(protocol.GossipKeyRequest(action, generation))
        return await _expect(peer, protocol.GossipKeyring)


async def node_status(address: tuple[str, int]) -> protocol.NodeStatus:
    """Return one node's consensus status, which every voter sends, whether it leads or not."""
    async with _observer_session(address) as peer:
        await peer.send(protocol.StatusQuery())
        return await _expect(peer, protocol.NodeStatus)


async def transfer_leadership(leader: tuple[str, int], target: str) -> None:
    """Request that the leader at ``leader`` hand leadership to the voter ``target``; raise RemoteError if it declines."""
    async with _observer_session(leader) as peer:
        await peer.send(protocol.TransferLeadership(target))
        await _expect(peer, protocol.NodeStatus)


@asynccontextmanager
async def _observer_session(address: tuple[str, int]) -> AsyncIterator[Peer]:
    """Connect to the node at ``address`` itself, leader or not, as an observer."""
    async with connect([address], client_tls()) as peer:
        reject = await _hello(peer, protocol.ROLE_OBSERVER)
        if reject is not None:
            raise ProtocolError(f"{peer.name} rejected the observer: {reject.reason}")
        yield peer


@asynccontextmanager
async def leader_session(addresses: Sequence[tuple[str, int]], role: str = protocol.ROLE_CLIENT) -> AsyncIterator[Peer]:
    """Connect to the first of ``addresses`` that accepts, say hello, and follow redirects to the leader.

    A coordinator-eligible node that does not lead names the leader, and the next attempt
    goes there. While an election is under way, no node names one: wait and try again, for
    at most ``ELECTION_WAIT_S``.
    """
    addresses = list(addresses)
    redirects = 0
    warned = False
    with trio.move_on_after(ELECTION_WAIT_S) as waiting:
        while True:
            async with connect(addresses, client_tls()) as peer:
                reject = await _hello(peer, role)
                if reject is None:
                    waiting.deadline = math.inf
                    yield peer
                    return
            if reject.redirect and redirects < MAX_REDIRECTS:
                redirects += 1
                address = parse_address(reject.redirect)
                log.info("%s; connecting to the leader at %s", reject.reason, reject.redirect)
                addresses = [address, *(a for a in addresses if a != address)]
                continue
            # No leader yet, or redirects in a circle to a leader that is gone: an election is due.
            if not warned:
                log.warning("%s; waiting up to %gs for the coordinators to elect a leader", reject.reason, ELECTION_WAIT_S)
                warned = True
            redirects = 0
            await trio.sleep(ELECTION_RETRY_S)
    raise ConnectionFailed(
        f"no coordinator led within {ELECTION_WAIT_S:g}s at {', '.join(format_address(*a) for a in addresses)}: "
        "a majority of the coordinator-eligible nodes (--peers) must be up and reach each other"
    )


async def _hello(peer: Peer, role: str) -> protocol.Reject | None:
    """Introduce this client; return the node's rejection when it redirects or has no leader, else None."""
    from swarmctl.embedded import EMBEDDED_SECRET, data_home  # the embedded module starts coordinators; load it late

    client_id = f"client-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
    token = client_token(data_home() / EMBEDDED_SECRET)
    await peer.send(
        protocol.Hello(protocol.PROTOCOL_VERSION, role, client_id, 0, {}, f"swarmctl {__version__}",
                       socket.gethostname(), os.getpid(), token=token)
    )
    reply = await peer.receive()
    if isinstance(reply, protocol.Reject):
        if reply.reason.startswith(protocol.AUTH_FAILED):
            raise AuthError(f"{peer.name} rejected this client: {reply.reason}")
        if reply.redirect or reply.reason.startswith(protocol.NO_LEADER):
            return reply
        raise ProtocolError(f"{peer.name} rejected this client: {reply.reason}")
    if not isinstance(reply, protocol.Welcome):
        raise ProtocolError(f"{peer.name}: expected welcome, got {reply.KIND}")
    return None


async def _upload(peer: Peer, bundle: Bundle) -> None:
    await peer.send(protocol.BundleQuery(bundle.digest, bundle.size))
    status = await _expect(peer, protocol.BundleStatus)
    if status.present:
        log.info("bundle %s already on the coordinator", bundle.digest[:12])
        return
    chunks = list(iter_chunks(bundle.path, protocol.BUNDLE_CHUNK_BYTES)) or [b""]
    for i, chunk in enumerate(chunks):
        await peer.send(protocol.BundleChunk(bundle.digest, chunk, i == len(chunks) - 1))
    status = await _expect(peer, protocol.BundleStatus)
    if not status.present:
        raise RunFailed("-", f"the coordinator did not store bundle {bundle.digest}")
    log.info("uploaded bundle %s (%d bytes)", bundle.digest[:12], bundle.size)


async def _follow(peer: Peer, watch: RunWatch, on_progress) -> protocol.RunComplete:
    while True:
        message = await peer.receive()
        match message:
            case protocol.RunProgress():
                watch.total, watch.done, watch.executors = message.total, message.done, message.executors
                watch.status, watch.counts = message.status, dict(message.counts)
                watch.eta_s, watch.eta_low_s, watch.eta_high_s = message.eta_s, message.eta_low_s, message.eta_high_s
                watch.eta_basis = message.eta_basis
                on_progress(watch, [tuple(pair) for pair in message.outcomes])
            case protocol.RunResults():
                watch.results.extend(CaseResult.from_wire(r) for r in message.results)
                for wire in message.earlier_attempts:
                    attempt = CaseResult.from_wire(wire)
                    watch.earlier_attempts.setdefault(attempt.case_id, []).append(attempt)
            case protocol.RunComplete():
                return message
            case protocol.ErrorReply():
                raise RemoteError(message.message, message.code)
            case _:
                raise ProtocolError(f"{peer.name} sent unexpected {message.KIND} while following a run")


async def _expect(peer: Peer, kind: type):
    message = await peer.receive()
    if isinstance(message, protocol.ErrorReply):
        raise RemoteError(message.message, message.code)
    if not isinstance(message, kind):
        raise ProtocolError(f"{peer.name}: expected {kind.KIND}, got {message.KIND}")
    return message
