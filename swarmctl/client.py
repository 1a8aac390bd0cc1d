"""Submitting a run and following it: the client side of the data plane."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from swarmctl import __version__, protocol
from swarmctl.bundle import Bundle, iter_chunks
from swarmctl.cluster.transport import Peer, connect
from swarmctl.credentials import client_tls, client_token
from swarmctl.errors import ProtocolError, RunFailed, SwarmError
from swarmctl.results import CaseResult, RunSummary
from swarmctl.tokens import AuthError

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_S = 5.0


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
    async with connect(addresses, client_tls()) as peer:
        await _hello(peer)
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
        try:
            complete = await _follow(peer, watch, on_progress)
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_TIMEOUT_S):
                await peer.send(protocol.CancelRun(watch.run_id, "cancelled by the client"))
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


async def cancel_run(addresses: Sequence[tuple[str, int]], run_id: str, reason: str) -> None:
    """Ask the coordinator to cancel ``run_id``; raise RemoteError if it is not active there."""
    async with connect(addresses, client_tls()) as peer:
        await _hello(peer)
        await peer.send(protocol.CancelRun(run_id, reason))
        await _expect(peer, protocol.RunCancelled)


async def list_executors(addresses: Sequence[tuple[str, int]]) -> list[dict]:
    """Return the coordinator's executor rows (see ``ExecutorRecord.describe``)."""
    async with connect(addresses, client_tls()) as peer:
        await _hello(peer)
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
    async with connect(addresses, client_tls()) as peer:
        await _hello(peer)
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
    async with connect(addresses, client_tls()) as peer:
        await _hello(peer)
        await peer.send(request)
        yield EventStream(peer)


async def revoke_token(addresses: Sequence[tuple[str, int]], token_id: str) -> int:
    """Revoke a token on the coordinator; return how many of its connections were closed."""
    async with connect(addresses, client_tls()) as peer:
        await _hello(peer)
        await peer.send(protocol.RevokeToken(token_id))
        reply = await _expect(peer, protocol.TokenRevoked)
        return reply.connections_closed


async def control_executor(addresses: Sequence[tuple[str, int]], action: str, executor_id: str) -> str:
    """Drain, cordon or uncordon an executor; return its state afterwards."""
    async with connect(addresses, client_tls()) as peer:
        await _hello(peer)
        await peer.send(protocol.ControlExecutor(action, executor_id))
        reply = await _expect(peer, protocol.ExecutorControlled)
        return reply.state


async def _hello(peer: Peer) -> None:
    from swarmctl.embedded import EMBEDDED_SECRET, data_home  # the embedded module starts coordinators; load it late

    client_id = f"client-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
    token = client_token(data_home() / EMBEDDED_SECRET)
    await peer.send(
        protocol.Hello(protocol.PROTOCOL_VERSION, protocol.ROLE_CLIENT, client_id, 0, {}, f"swarmctl {__version__}",
                       socket.gethostname(), os.getpid(), token=token)
    )
    reply = await peer.receive()
    if isinstance(reply, protocol.Reject):
        if reply.reason.startswith(protocol.AUTH_FAILED):
            raise AuthError(f"{peer.name} rejected this client: {reply.reason}")
        raise ProtocolError(f"{peer.name} rejected this client: {reply.reason}")
    if not isinstance(reply, protocol.Welcome):
        raise ProtocolError(f"{peer.name}: expected welcome, got {reply.KIND}")


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
