"""The coordinator node: the Trio shell around the state machine and the scheduler.

One task per connection reads frames and turns them into commands; every decision is taken
synchronously between two awaits, so the in-memory view never changes under a decision.
Frames to a peer go through that peer's outbox (an unbounded channel drained by one writer
task), so a slow executor or client never stalls the coordinator.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import secrets
import socket
import sqlite3
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from swarmctl import protocol
from swarmctl.bundle import BundleCache
from swarmctl.cluster.gossip import GossipNode
from swarmctl.cluster.transport import Peer, PeerGone, format_address, serve
from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator import store
from swarmctl.coordinator.access import authenticate
from swarmctl.coordinator.clients import ClientMixin
from swarmctl.coordinator.dependencies import DependencyError, dependents_of, resolve
from swarmctl.coordinator.event_hub import EventHub
from swarmctl.coordinator.fleet import FleetMixin
from swarmctl.coordinator.executor_registry import ExecutorRecord, ExecutorRegistry, ExecutorState
from swarmctl.coordinator.heartbeat import LeaseTable
from swarmctl.coordinator.log_collector import LOGS_DB, LogCollector
from swarmctl.coordinator.progress_tracker import ProgressTracker
from swarmctl.coordinator.scheduler import pick_assignments
from swarmctl.limits import Limits
from swarmctl.coordinator.settings import TERM, CoordinatorSettings
from swarmctl.coordinator.state import RunState, RunStatus, ShardStatus, StateMachine, read_results
from swarmctl.coordinator.strategies import PlanInput, get_strategy
from swarmctl.errors import ProtocolError
from swarmctl.executor.runners.pytest_runner import collection_digest
from swarmctl.labels import satisfies
from swarmctl.reports.run_store import read_earlier_attempts
from swarmctl.reports.summary import exit_code_for
from swarmctl.results import ERROR, PASSED, SKIPPED, CaseResult
from swarmctl.tokens import AuthError, Token
from swarmctl.wire_types import check_fields

log = logging.getLogger(__name__)

MAX_SHARD_ATTEMPTS = 3  # a shard that loses its executor this often gets error results instead
MIN_TESTS_TO_RELEASE = 3  # one running and at least two waiting, so both halves get work
RETRY_BASE_S = 1.0  # first retry after about a second, doubling per try, times a jitter of 0.5-1.5
RETRY_MAX_S = 30.0
DEADLINE_MESSAGE = "not run: run deadline reached"
DEADLINE_GRACE_S = 5.0  # stack dump (0.5 s) and SIGTERM grace (2 s) on the executor, plus slack
# How long applied commands wait to be committed together. Acknowledgements wait this long
# at most; assignments do not wait at all. Each COMMIT blocks the event loop, and 10 ms
# rather than 5 ms halves the number of COMMITs: in five runs of the load benchmark the
# assignment latency p99 was 9.2 to 10.3 ms, against 10.7 and 10.8 ms in two runs with 5 ms.
GROUP_COMMIT_S = 0.010
GC_YOUNG_THRESHOLD = 10_000  # allocations between two collections of the youngest generation (Python: 700)


@dataclass(eq=False)
class Session:
    peer: Peer
    hello: protocol.Hello
    outbox: trio.MemorySendChannel
    last_seen: float
    view: ExecutorRecord | None = None  # executors only
    runs: set[str] = field(default_factory=set)  # clients: runs they watch
    token: Token | None = None  # the peer's verified token; None when the coordinator has no cluster secret

    @property
    def node_id(self) -> str:
        return self.hello.node_id

    def send(self, message: protocol.Message) -> None:
        try:
            self.outbox.send_nowait(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the session is closing; its reader task cleans up


class Coordinator(FleetMixin, ClientMixin):
    def __init__(
        self,
        data_dir: Path,
        *,
        resume_runs: bool = True,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        settings: CoordinatorSettings | None = None,
        secret: bytes | None = None,
        advertise: str | None = None,
        machine: StateMachine | None = None,
        term: int = TERM,
        coordinator_id: str | None = None,
        when_committed: Callable[[int, Callable[[], None]], None] | None = None,
        limits: Limits | None = None,
    ) -> None:
        """Open the coordinator state in ``data_dir``.

        With ``resume_runs`` false, runs left unfinished by an earlier process are ended as
        interrupted instead of continued: the embedded default uses this, because the client
        that followed those runs is gone.

        A replicated coordinator passes the elected leader's ``machine``, ``term`` and
        ``when_committed``, which calls back once the command at an index is committed by a
        majority of voters; a single coordinator's commands are committed when applied.
        """
        self.data_dir = data_dir
        self.coordinator_id = coordinator_id or f"coordinator-{secrets.token_hex(3)}"
        self.machine = machine or StateMachine(store.connect(data_dir / "state.db"))
        self.term = term
        self._when_committed = when_committed
        self._durable: list[Callable[[], None]] = []  # acknowledgements waiting for the next group commit
        self._flush_due = False
        self._wal: store.WalSync | None = None
        self._unsynced: list[Callable[[], None]] = []  # acknowledgements of commits not yet on disk
        self._commits = self._synced = 0  # group commits so far, and how many of them are on disk
        self._sync_due = trio.Event()
        self._syncing = False  # a worker thread is syncing
        self._checkpointing = False  # a worker thread is checkpointing
        # Group commit: the commands of one moment share a transaction. A single coordinator
        # also syncs it once (in a worker thread if the disk is slow). A replicated leader
        # needs no sync, because raft.db makes its commands durable.
        self.machine.on_pending = self._schedule_flush
        if machine is None:
            self._wal = store.WalSync(self.machine.conn, data_dir / "state.db")
        self.address: str | None = None  # HOST:PORT served on, once serving
        self.limits = limits or Limits()
        self.bundles = BundleCache(data_dir / "bundles", self.limits.bundle())
        self.logs = LogCollector(data_dir / LOGS_DB)
        self.clock = clock
        self.rng = rng or random.Random()  # retry jitter and run ids
        self.settings = settings or CoordinatorSettings()
        self.secret = secret  # the cluster secret; without it the coordinator does not gossip
        self.advertise = advertise  # the IP executors reach this coordinator at, if --listen binds every address
        self.gossip_address: tuple[str, int] | None = None
        self.gossip: GossipNode | None = None  # set when the coordinator gossips (it has the cluster secret)
        self.registry = ExecutorRegistry(self.machine.cordoned)
        self.leases = LeaseTable(self.settings.lease_s, self.settings.reconnect_grace_s)
        self._leases_changed = trio.Event()
        self._unmatched_since: dict[tuple[str, int], float] = {}  # queued shards no executor can take
        self.executors: dict[str, Session] = {}
        self.clients: list[Session] = []
        self.events = EventHub()  # clients subscribed to progress, executor changes, output and logs
        # run_id -> id of the token that submitted it, for cancel rights.
        # NOTE: kept in memory only, so after a restart only an admin token can cancel a resumed run.
        self.run_owners: dict[str, str] = {}
        self._digests: dict[str, str] = {}  # run_id -> collection digest, see _digest
        self._pending_outcomes: dict[str, list[list[str]]] = {}  # run_id -> outcomes not yet in a RunProgress
        self.collectors: dict[str, str] = {}  # run_id -> executor asked to collect it
        self._nursery: trio.Nursery | None = None
        self._deadline_done: dict[str, trio.Event] = {}  # runs stopping at their deadline
        self._released: set[tuple[str, int, int]] = set()  # shard attempts asked to give tests back
        self._finishing: set[str] = set()  # runs with every result, whose results are being read to end them
        self.progress: dict[str, ProgressTracker] = {}  # run_id -> tracker, for running runs
        self.recent_failures = {}  # run_id -> its last final failures, for swarmctl dashboard
        self.finished_counts = {}  # run_id -> outcome counts of recently finished runs, for swarmctl dashboard
        if resume_runs:
            self._lease_after_restart()
        else:
            self.interrupt_runs("the swarmctl process that ran it stopped")

    # --- serving ---------------------------------------------------------------------------

    async def serve(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
        sockets: list[socket.socket] | None = None, task_status=trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve executors, clients and the HTTP API on HOST:PORT, over TLS when ``ssl_context`` is given.

        ``sockets`` are already listening on HOST:PORT (see ``transport.listen``), when given.
        """
        try:
            async with trio.open_nursery() as nursery:
                from swarmctl.coordinator.http_api import CoordinatorApi  # Starlette: only where a coordinator serves

                api = CoordinatorApi(self)
                bound_port = await nursery.start(
                    partial(
                        serve, self._handle, host, port, ssl_context=ssl_context, http_app=api,
                        websocket_app=api.websocket, sockets=sockets,
                    )
                )
                await self.start_services(nursery, host, bound_port)
                task_status.started(bound_port)
        finally:
            self._nursery = None
            self.flush()
            if self._wal is not None:
                self._wal.close()

    def close(self) -> None:
        """Close the databases that this coordinator opened, after which it cannot serve.

        Closing the last connection to state.db copies its WAL into it, so that a copy or
        backup of that one file contains every run.
        """
        self.logs.close()
        if self._wal is not None:  # the state machine is this coordinator's own
            self.machine.conn.close()

    async def start_services(self, nursery: trio.Nursery, host: str, port: int) -> None:
        """Start what runs beside the connections in ``nursery``: lease watch, gossip, timers of resumed runs."""
        self._nursery = nursery
        self.address = format_address(self.advertise or host, port)
        nursery.start_soon(self._watch_leases)
        if self._wal is not None:
            nursery.start_soon(self._sync_loop)
        if self.secret is not None:
            await self._start_gossip(nursery, host, port)
        for run in list(self.machine.runs.values()):
            self._arm_deadline(run)
            self._plan_retries(run)
            if run.start_at is not None:
                self._wake_at(run.start_at)
            for shard in run.shards.values():
                if shard.not_before > self.clock():
                    self._wake_at(shard.not_before)
            # A run whose last result was committed but whose end was not (the previous
            # leader died in between) ends now.
            self._check_complete(run)
        log.info("coordinator %s listening on %s:%d, state in %s", self.coordinator_id, host, port, self.data_dir)

    def when_committed(self, action: Callable[[], None]) -> None:
        """Run ``action`` (an acknowledgement) once the last applied command is committed and on disk."""
        if self._when_committed is not None:
            self._when_committed(self.machine.last_index, action)
        elif self.machine.conn.in_transaction:
            self._durable.append(action)
        elif self._wal is not None and self._synced < self._commits:
            self._unsynced.append(action)
            self._sync_due.set()
        else:
            action()

    def _schedule_flush(self) -> None:
        if self._nursery is None:
            self.flush()  # not serving yet (or any more): commit at once
        elif not self._flush_due:
            self._flush_due = True
            self._nursery.start_soon(self._flush_soon)

    async def _flush_soon(self) -> None:
        await trio.sleep(GROUP_COMMIT_S)
        self.flush()

    def flush(self) -> None:
        """Commit the applied commands; their acknowledgements follow once the commit is on disk."""
        self._flush_due = False
        committing = self.machine.conn.in_transaction
        self.machine.flush()
        waiting, self._durable = self._durable, []
        if self._wal is None:
            for action in waiting:
                action()
            return

        if committing:
            self._commits += 1
        self._unsynced.extend(waiting)
        if self._synced == self._commits:
            return  # nothing committed since the last sync: no fsync
        if self._nursery is not None and (self._wal.slow or self._syncing):
            self._sync_due.set()
            return

        # A fast disk, or not serving (starting or stopping): sync here, on the loop.
        self._wal.sync()
        self._synced = self._commits
        waiting, self._unsynced = self._unsynced, []
        for action in waiting:
            action()
        self._checkpoint_if_due()

    async def _sync_loop(self) -> None:
        """Put group commits on disk in a worker thread, then send the acknowledgements that waited."""
        while True:
            await self._sync_due.wait()
            self._sync_due = trio.Event()
            commits, waiting, self._unsynced = self._commits, self._unsynced, []
            self._syncing = True
            try:
                await trio.to_thread.run_sync(self._wal.sync)
            finally:
                self._syncing = False
            self._synced = max(self._synced, commits)
            for action in waiting:
                action()
            self._checkpoint_if_due()

    def _checkpoint_if_due(self) -> None:
        if self._wal.checkpoint_due and not self._checkpointing and self._nursery is not None:
            self._checkpointing = True
            self._nursery.start_soon(self._checkpoint)

    async def _checkpoint(self) -> None:
        """Copy the WAL into the database file in a worker thread, while the loop goes on committing."""
        try:
            await trio.to_thread.run_sync(self._wal.checkpoint)
        finally:
            self._checkpointing = False

    async def _handle(self, peer: Peer) -> None:
        hello = await read_hello(peer)
        if hello is not None:
            await self.serve_peer(peer, hello)

    def status(self) -> protocol.NodeStatus:
        """Return this single coordinator's status, in the form a replicated cluster's voters report theirs."""
        index = self.machine.last_index
        address = self.address or self.coordinator_id
        voters = [{"address": address, "state": "leader", "match": index, "lag": 0}]
        return protocol.NodeStatus(address, "single", self.term, address, index, index, voters)

    async def serve_peer(self, peer: Peer, hello: protocol.Hello) -> None:
        """Serve an executor or client whose valid hello was read."""
        token = None
        if self.secret is not None:
            try:
                token = authenticate(self.secret, hello, self.machine.revoked_tokens)
            except AuthError as exc:
                log.warning("%s: rejected %s %s: %s", peer.name, hello.role, hello.node_id, exc)
                await peer.send(protocol.Reject(f"{protocol.AUTH_FAILED} {exc}"))
                return
        duplicate = self._duplicate_id(hello)
        if duplicate:
            log.warning("%s: rejected: %s", peer.name, duplicate)
            await peer.send(protocol.Reject(duplicate))
            return
        await peer.send(
            protocol.Welcome(
                protocol.PROTOCOL_VERSION, self.coordinator_id, self.term, self.settings.heartbeat_s, self.settings.lease_s,
                list(self.gossip_address) if self.gossip_address else None,
            )
        )

        send, receive = trio.open_memory_channel(math.inf)
        session = Session(peer, hello, send, trio.current_time(), token=token)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, session, receive)
            stopping = False
            try:
                if hello.role == protocol.ROLE_EXECUTOR:
                    await self._serve_executor(session, nursery)
                else:
                    await self._serve_client(session, nursery)
            except (PeerGone, ProtocolError) as exc:
                log.info("%s %s disconnected: %s", hello.role, hello.node_id, exc)
            except Exception:
                # A frame that passed decoding but broke its handler must cost only this
                # connection, never the coordinator and its other peers.
                log.exception("%s %s: closing the connection after an unexpected error", hello.role, hello.node_id)
            except trio.Cancelled:
                stopping = True  # the coordinator is stopping; its runs resume when it starts again
                raise
            finally:
                self._session_closed(session, stopping=stopping)
                nursery.cancel_scope.cancel()

    def _duplicate_id(self, hello: protocol.Hello) -> str:
        """Return why an executor's hello is rejected for an id that another live process uses, or ""."""
        previous = self.executors.get(hello.node_id)
        if hello.role != protocol.ROLE_EXECUTOR or previous is None:
            return ""
        if (previous.hello.hostname, previous.hello.pid) == (hello.hostname, hello.pid):
            return ""  # the same process reconnecting
        return (
            f"executor id {hello.node_id!r} is in use by pid {previous.hello.pid} on {previous.hello.hostname}; "
            "give each executor its own --id"
        )

    async def _write(self, session: Session, receive: trio.MemoryReceiveChannel) -> None:
        try:
            async for message in receive:
                await session.peer.send(message)
        except PeerGone:
            pass

    # --- collection -------------------------------------------------------------------

    def _find_collectors(self) -> None:
        """Ask an executor to collect every run that waits for its case list."""
        for run in self.machine.runs.values():
            if run.status is not RunStatus.COLLECTING or run.run_id in self.collectors:
                continue
            if run.start_at is not None and run.start_at > self.clock():
                continue  # a delayed run; its timer calls this again
            active = [s for s in self.executors.values() if s.view.state is ExecutorState.ACTIVE]
            if not active:
                log.info("run %s waits for an active executor to collect it", run.run_id)
                continue
            collector = min(active, key=lambda s: (len(s.view.running), s.view.joined_at))
            self.collectors[run.run_id] = collector.node_id
            for session in self.executors.values():
                session.send(protocol.PrepareSuite(run.run_id, run.suite, session is collector))
            log.info("run %s: collecting on executor %s", run.run_id, collector.node_id)

    def _on_collected(self, session: Session, message: protocol.Collected) -> None:
        run = self.machine.runs.get(message.run_id)
        if run is None or run.status is not RunStatus.COLLECTING:
            return
        if self.collectors.get(run.run_id) != session.node_id:
            return
        del self.collectors[run.run_id]

        if message.exit_code != 0:
            self._finish(run, RunStatus.FAILED, message.exit_code, message.error or "collection failed")
            return
        try:
            resolve(message.case_ids, message.dependencies or {})
        except DependencyError as exc:
            self._finish(run, RunStatus.FAILED, exc.exit_code, str(exc))
            return
        new = self.machine.apply(
            cmd.RunCollected(
                run.run_id, self.clock(), message.case_ids, message.collect_results, message.deselected,
                session.node_id, message.dependencies, message.requirements,
            ),
            self.term,
        )
        self._publish(new)
        log.info("run %s: collected %d tests on %s", run.run_id, len(message.case_ids), session.node_id)

        errors = [r for r in message.collect_results if r["outcome"] == ERROR]
        pytest_args = run.suite.get("pytest_args") or []
        if errors and "--continue-on-collection-errors" not in pytest_args:
            noun = "error" if len(errors) == 1 else "errors"
            self._finish(run, RunStatus.INTERRUPTED, 2, f"Interrupted: {len(errors)} {noun} during collection")
            return
        if not message.case_ids:
            self._finish(run, RunStatus.FINISHED, 1 if errors else 5, "")
            return
        self._plan(run)

    def _plan(self, run: RunState) -> None:
        """Cut the run into shards; tests that require different labels never share a shard."""
        durations = {**self.machine.durations(run.suite), **run.imported_durations}
        strategy = run.strategy
        if run.deps and strategy != "dependency-aware":
            # Other strategies may put a test before, or in one shard with, a test it needs.
            log.info("run %s declares dependencies; planning it with dependency-aware instead of %s", run.run_id, strategy)
            strategy = "dependency-aware"

        partitions: dict[tuple, list[int]] = {}
        for case in run.runnable_ids():
            partitions.setdefault(tuple(sorted(run.requires.get(case, {}).items())), []).append(case)
        shards: list[list[int]] = []
        for requires, cases in partitions.items():
            slots = sum(
                s.view.slots for s in self.executors.values() if satisfies(s.view.labels, dict(requires))
            ) or 1
            request = PlanInput(run.case_ids, cases, slots, durations, run.deps, run.group)
            shards.extend(get_strategy(strategy).plan(request))
        self.machine.apply(cmd.ShardsPlanned(run.run_id, shards), self.term)
        log.info(
            "run %s: %d cases in %d shards, %d label sets, slots %d (%s)",
            run.run_id, len(run.runnable_ids()), len(shards), len(partitions),
            sum(s.view.slots for s in self.executors.values()), strategy,
        )
        self._schedule()

    # --- assignment and results ------------------------------------------------------

    def _schedule(self) -> None:
        views = [s.view for s in self.executors.values() if s.view is not None]
        for run_id, shard_id, executor_id in pick_assignments(self.machine.runs.values(), views, now=self.clock()):
            run = self.machine.runs[run_id]
            shard = run.shards[shard_id]
            if all(case in run.done for case in shard.cases):
                # Every case already has its result (skipped for a failed dependency).
                self.machine.apply(cmd.ShardFinished(run_id, shard_id, shard.attempt, self.clock()), self.term)
                self._check_complete(run)
                self._schedule()
                return
            attempt = shard.attempt + 1
            self.machine.apply(cmd.ShardAssigned(run_id, shard_id, attempt, executor_id, self.term, self.clock()), self.term)
            self.leases.grant(run_id, shard_id, attempt, executor_id, self.clock())
            self._unmatched_since.pop((run_id, shard_id), None)
            self._progress_of(run).shard_started(shard_id, attempt, executor_id, shard.cases, self.clock())
            session = self.executors[executor_id]
            session.view.running.add((run_id, shard_id))
            session.view.warm.add(run.suite.get("bundle", ""))
            session.send(
                protocol.Assign(
                    run_id, shard_id, attempt, self.term, run.suite,
                    [run.case_ids[i] for i in shard.cases if i not in run.done], self._digest(run),
                )
            )
            log.debug("run %s: shard %d attempt %d -> %s (%d cases)", run_id, shard_id, attempt, executor_id, len(shard.cases))

        self._release_for_idle_slots()

    def _release_for_idle_slots(self) -> None:
        """Let idle slots take the unstarted end of the biggest running shards (work stealing).

        Called after every ready shard has been handed out: a slot still free now has nothing
        to do, while a busy shard may hold many tests that have not started. The busy worker
        gives back about half of its unstarted tests; they return to the queue as a shard of
        their own.
        """
        idle = [s.view for s in self.executors.values() if s.view is not None and s.view.free > 0]
        free = sum(view.free for view in idle)
        if free == 0:
            return
        candidates = []
        for session in self.executors.values():
            if session.view is None or session.view.state is not ExecutorState.ACTIVE:
                continue  # a draining executor already gives back all it can
            for run_id, shard_id in session.view.running:
                run = self.machine.runs.get(run_id)
                if run is None or len(run.shards[shard_id].cases) < MIN_TESTS_TO_RELEASE:
                    continue  # too small to give half away (and cheap to check first)
                if run.suite.get("kind") != "pytest":
                    continue  # the command runner runs its cases without a release point
                if run.group != "none":
                    continue  # the worker cannot cut at a group's edge; groups stay whole
                requires = run.shard_requires(shard_id)
                if requires and not any(satisfies(view.labels, requires) for view in idle):
                    continue  # no idle executor could take the tests it gives back
                shard = run.shards[shard_id]
                key = (run_id, shard_id, shard.attempt)
                if key in self._released:
                    continue
                unfinished = self._progress_of(run).tests_left(shard_id)
                if unfinished >= MIN_TESTS_TO_RELEASE:
                    candidates.append((unfinished, key, session))
        for unfinished, (run_id, shard_id, attempt), session in sorted(candidates, reverse=True)[:free]:
            self._released.add((run_id, shard_id, attempt))
            log.info("run %s: asking %s to give back %d tests of shard %d", run_id, session.node_id, unfinished // 2, shard_id)
            session.send(protocol.ReleaseTests(run_id, shard_id, attempt, unfinished // 2))

    def _digest(self, run: RunState) -> str:
        """Return the digest of the run's collection, which every Assign carries.

        The collection does not change once the run is collected, and hashing 100,000 ids
        took about 25 ms, so it is computed once per run.
        """
        digest = self._digests.get(run.run_id)
        if digest is None:
            digest = self._digests[run.run_id] = collection_digest([run.case_ids[i] for i in run.runnable_ids()])
        return digest

    def _on_results(self, session: Session, message: protocol.ResultBatch) -> None:
        for item in message.items:
            reason = _invalid_result_item(item)
            if reason:
                raise ProtocolError(f"executor {session.node_id} sent an invalid result in batch {message.seq}: {reason}")
        items = [[run_id, shard_id, attempt, session.node_id, result] for run_id, shard_id, attempt, result in message.items]
        new = self.machine.apply(cmd.ResultsRecorded(self.clock(), items), self.term)
        self.when_committed(partial(session.send, protocol.ResultAck(message.seq)))
        self._publish(new)
        ready_may_change = False
        for run_id in {item[0] for item in items}:
            run = self.machine.runs.get(run_id)
            if run is not None and run.active:
                self._plan_retries(run)  # retry shards become ready after their backoff, see _wake_at
                self._skip_dependents(run, [data for rid, data in new if rid == run_id])
                self._check_complete(run)
                # A result readies a queued shard only through a dependency; a run that ended freed its slots.
                ready_may_change = ready_may_change or bool(run.deps) or not run.active
        if ready_may_change:
            self._schedule()

    def _skip_dependents(self, run: RunState, results: list[dict]) -> None:
        """Record ``skipped`` for every test that depends, directly or not, on one that did not pass."""
        if not run.deps:
            return
        dependents = dependents_of(run.deps)
        items = []
        for data in results:
            if data["outcome"] == PASSED:
                continue
            reason = f"depends on {data['case_id']}, which {data['outcome']}"
            pending = list(dependents.get(run.index[data["case_id"]], ()))
            while pending:
                case = pending.pop()
                if case in run.done or any(item[4]["case_id"] == run.case_ids[case] for item in items):
                    continue
                result = CaseResult(run.case_ids[case], SKIPPED, when="setup", message=reason, longrepr=reason)
                items.append([run.run_id, -1, 1, "", result.to_wire()])
                pending.extend(dependents.get(case, ()))
        if items:
            log.info("run %s: %d tests skipped because a test they depend on did not pass", run.run_id, len(items))
            self._publish(self.machine.apply(cmd.ResultsRecorded(self.clock(), items), self.term))

    def _plan_retries(self, run: RunState) -> None:
        """Give each failed case that has attempts left a shard of its own, after a backoff."""
        for idx in list(run.retry_pending):
            tries = run.tries[idx]
            backoff = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (tries - 1)) * self.rng.uniform(0.5, 1.5)
            not_before = self.clock() + backoff
            shard_id = max(run.shards, default=-1) + 1
            self.machine.apply(cmd.RetryPlanned(run.run_id, shard_id, [idx], not_before, run.failed_on.get(idx)), self.term)
            log.info(
                "run %s: %s failed on try %d of %d; retrying in %.1fs",
                run.run_id, run.case_ids[idx], tries, run.retries + 1, backoff,
            )
            self._wake_at(not_before)

    def _wake_at(self, when: float) -> None:
        """Schedule again at Unix time ``when`` (a retry backoff or a delayed start ends)."""
        if self._nursery is None:
            return

        async def wake() -> None:
            await trio.sleep(max(0.0, when - self.clock()))
            self._find_collectors()
            self._schedule()

        self._nursery.start_soon(wake)

    def _on_tests_released(self, session: Session, message: protocol.TestsReleased) -> None:
        run = self.machine.runs.get(message.run_id)
        if run is None or not run.active or message.shard_id not in run.shards:
            return
        shard = run.shards[message.shard_id]
        if shard.attempt != message.attempt or shard.status is not ShardStatus.ASSIGNED or shard.executor != session.node_id:
            return
        cases = [run.index[case_id] for case_id in message.case_ids if case_id in run.index]
        if not cases:
            return
        new_shard_id = max(run.shards) + 1
        self.machine.apply(cmd.TestsSplit(run.run_id, shard.shard_id, new_shard_id, cases), self.term)
        log.info("run %s: %d tests of shard %d moved to shard %d for an idle slot", run.run_id, len(cases), shard.shard_id, new_shard_id)
        self._schedule()

    def _on_shard_done(self, session: Session, message: protocol.ShardDone) -> None:
        run = self.machine.runs.get(message.run_id)
        key = (message.run_id, message.shard_id)
        session.view.running.discard(key)
        self.leases.end(message.run_id, message.shard_id, message.attempt, session.node_id)
        if run is None or not run.active:
            self._schedule()
            return
        shard = run.shards[message.shard_id]
        if shard.attempt != message.attempt or shard.status is not ShardStatus.ASSIGNED or shard.executor != session.node_id:
            self._schedule()
            return  # a fenced attempt: the shard was requeued meanwhile
        missing = [i for i in shard.cases if i not in run.done]
        if missing and (run.run_id, shard.shard_id, shard.attempt) in self._released:
            self._requeue(run.run_id, shard.shard_id, f"{len(missing)} tests given back for an idle slot", released=True)
        elif missing:
            reason = message.error or f"executor {session.node_id} ended the shard without results for {len(missing)} cases"
            self._requeue(run.run_id, shard.shard_id, reason)
        else:
            self.machine.apply(cmd.ShardFinished(run.run_id, shard.shard_id, message.attempt, self.clock()), self.term)
        if run.active:
            self._note_deadline_progress(run)
        self._check_complete(run)
        self._schedule()

    def _requeue(self, run_id: str, shard_id: int, reason: str, *, released: bool = False) -> None:
        run = self.machine.runs.get(run_id)
        if run is None or not run.active:
            return
        shard = run.shards[shard_id]
        if shard.status is not ShardStatus.ASSIGNED:
            return
        self.leases.release(run_id, shard_id)
        if self._past_deadline(run):
            self._fail_shard(run, shard_id, DEADLINE_MESSAGE)
            return
        if released:
            # Not a failure: the attempt limit guards against executors that keep getting lost.
            log.info("run %s: shard %d: %s", run_id, shard_id, reason)
            self.machine.apply(cmd.ShardRequeued(run_id, shard_id, shard.attempt, reason, self.clock(), lost=False), self.term)
            return
        if shard.attempt >= MAX_SHARD_ATTEMPTS:
            self._fail_shard(run, shard_id, f"not run: the shard was lost {shard.attempt} times, last because {reason}")
            return
        log.warning("run %s: shard %d attempt %d requeued: %s", run_id, shard_id, shard.attempt, reason)
        self.machine.apply(cmd.ShardRequeued(run_id, shard_id, shard.attempt, reason, self.clock()), self.term)

    def _fail_shard(self, run: RunState, shard_id: int, message: str) -> None:
        """Record an error for every case of the shard without a result, and end the shard."""
        shard = run.shards[shard_id]
        log.warning("run %s: shard %d: %s", run.run_id, shard_id, message)
        items = [
            [run.run_id, shard_id, shard.attempt, shard.executor or "",
             CaseResult(run.case_ids[i], ERROR, when="setup", message=message, longrepr=message).to_wire()]
            for i in shard.cases if i not in run.done
        ]
        new = self.machine.apply(cmd.ResultsRecorded(self.clock(), items), self.term)
        self._publish(new)
        self.machine.apply(cmd.ShardFinished(run.run_id, shard_id, shard.attempt, self.clock()), self.term)
        self.leases.release(run.run_id, shard_id)
        self._skip_dependents(run, [data for _, data in new])
        self._check_complete(run)

    # --- run deadlines ---------------------------------------------------------------

    def _past_deadline(self, run: RunState) -> bool:
        return run.deadline_at is not None and self.clock() >= run.deadline_at

    def _arm_deadline(self, run: RunState) -> None:
        if run.deadline_at is not None and self._nursery is not None:
            self._nursery.start_soon(self._stop_at_deadline, run.run_id, run.deadline_at)

    async def _stop_at_deadline(self, run_id: str, deadline_at: float) -> None:
        """At the run's deadline, stop its running tests and report every unfinished test."""
        await trio.sleep(max(0.0, deadline_at - self.clock()))
        run = self.machine.runs.get(run_id)
        if run is None or not run.active:
            return
        log.warning("run %s: deadline reached; stopping its tests", run_id)
        if run.status is RunStatus.COLLECTING:
            self._finish(run, RunStatus.INTERRUPTED, 2, "Interrupted: run deadline reached during collection")
            return

        for shard_id in list(run.queue):
            self._fail_shard(run, shard_id, DEADLINE_MESSAGE)
        done = self._deadline_done[run_id] = trio.Event()
        for session in self.executors.values():
            for running_run, shard_id in session.view.running:
                if running_run == run_id:
                    shard = run.shards[shard_id]
                    session.send(protocol.CancelShard(run_id, shard_id, shard.attempt, DEADLINE_MESSAGE, interrupt=True))
        self._note_deadline_progress(run)

        # Executors report the tests they stopped, with their stacks; one that does not answer
        # within the grace period gets its tests reported for it.
        with trio.move_on_after(DEADLINE_GRACE_S):
            await done.wait()
        self._deadline_done.pop(run_id, None)
        run = self.machine.runs.get(run_id)
        if run is not None and run.active:
            for shard in list(run.shards.values()):
                if shard.status is ShardStatus.ASSIGNED:
                    self._fail_shard(run, shard.shard_id, DEADLINE_MESSAGE)

    def _note_deadline_progress(self, run: RunState) -> None:
        done = self._deadline_done.get(run.run_id)
        if done is not None and not any(s.status is ShardStatus.ASSIGNED for s in run.shards.values()):
            done.set()

    def _check_complete(self, run: RunState) -> None:
        """End a run that has every result, once its exit code is known from them."""
        if run.status is not RunStatus.RUNNING or len(run.done) != run.total or run.run_id in self._finishing:
            return
        if self._nursery is None:
            self._finish_complete(run, read_final_results(self.machine.conn, run.run_id))
            return
        self._finishing.add(run.run_id)
        # Its client learns now that every test has its result, while the results are read:
        # the embedded default stops its executors meanwhile.
        self._send_progress(run.run_id)
        self._nursery.start_soon(self._finish_after_reading, run.run_id)

    async def _finish_after_reading(self, run_id: str) -> None:
        try:
            final = await self._read_final_results(run_id)
        finally:
            self._finishing.discard(run_id)
        run = self.machine.runs.get(run_id)
        if run is not None and run.status is RunStatus.RUNNING and len(run.done) == run.total:
            self._finish_complete(run, final)  # else it ended otherwise meanwhile (cancelled, deadline)

    def _finish_complete(self, run: RunState, final: FinalResults) -> None:
        error = "Stopped: run deadline reached" if self._past_deadline(run) else ""
        self._finish(run, RunStatus.FINISHED, final.exit_code, error, final)

    async def _read_final_results(self, run_id: str) -> FinalResults:
        """Read a run's final results in a worker thread, on a connection of its own.

        For 100,000 results this takes over a second: on the event loop it held up every
        executor, and a replicated leader's heartbeats past the election timeout.
        """
        # A leader that lost office between starting this task and its first step has
        # closed its state: the checkpoint delivers the cancellation before it is read.
        await trio.lowlevel.checkpoint()
        self.flush()  # the reader sees committed rows only
        path = Path(self.machine.conn.execute("PRAGMA database_list").fetchone()[2])
        return await trio.to_thread.run_sync(read_final_results_from_file, path, run_id)

    def _finish(
        self, run: RunState, status: RunStatus, exit_code: int, error: str, final: FinalResults | None = None
    ) -> None:
        """End a run; ``final`` saves reading its results again when the caller already has them."""
        self._send_progress(run.run_id)  # the outcomes still gathered, so no subscriber misses them
        for session in self.executors.values():
            for run_id, shard_id in list(session.view.running):
                if run_id == run.run_id:
                    shard = run.shards[shard_id]
                    session.send(protocol.CancelShard(run_id, shard_id, shard.attempt, error or status))
                    session.view.running.discard((run_id, shard_id))
        for shard_id in run.shards:
            self.leases.release(run.run_id, shard_id)
            self._unmatched_since.pop((run.run_id, shard_id), None)
        self.collectors.pop(run.run_id, None)
        self.machine.apply(cmd.RunFinished(run.run_id, self.clock(), status, exit_code, error), self.term)
        wall = (run.finished_at or self.clock()) - run.submitted_at
        log.info("run %s %s with exit code %d in %.2fs%s", run.run_id, status, exit_code, wall, f": {error}" if error else "")
        complete = protocol.RunComplete(
            run.run_id, exit_code, wall, run.submitted_at, run.deselected, error, sorted(run.executors), run.duplicates, run.fenced,
        )
        watchers = [client for client in self.clients if run.run_id in client.runs]
        if watchers:
            self.send_final_results(watchers, run.run_id, complete, final)
        subscribers = list(self.events.following(run.run_id))
        for subscriber in subscribers:
            self.when_committed(partial(self.events.send, subscriber, complete))  # the outcome, not the results
        self.progress.pop(run.run_id, None)
        self.run_owners.pop(run.run_id, None)
        self._digests.pop(run.run_id, None)
        self._schedule()

    def send_final_results(
        self, clients: list[Session], run_id: str, complete: protocol.RunComplete, final: FinalResults | None = None
    ) -> None:
        """Send an ended run's results, its earlier attempts, then ``complete`` to ``clients``, once the end is committed.

        Without ``final``, the results are read first, in a worker thread while serving.
        """
        if final is None and self._nursery is None:
            final = read_final_results(self.machine.conn, run_id)
        if final is None:

            async def read_then_send() -> None:
                self.send_final_results(clients, run_id, complete, await self._read_final_results(run_id))

            self._nursery.start_soon(read_then_send)
            return
        frames: list[protocol.Message] = [protocol.RunResults(run_id, part) for part in final.parts]
        frames += [protocol.RunResults(run_id, [], part) for part in final.earlier_parts]
        frames.append(complete)

        def send() -> None:
            for client in clients:
                for frame in frames:
                    client.send(frame)

        self.when_committed(send)

    def _finished_run(self, run_id: str) -> protocol.RunComplete | None:
        """Return the ``RunComplete`` of a run that ended, from the store; None for an unknown or active run."""
        row = self.machine.conn.execute(
            "SELECT exit_code, submitted_at, finished_at, deselected, error, duplicates, fenced FROM runs "
            "WHERE run_id = ? AND finished_at IS NOT NULL",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        exit_code, submitted_at, finished_at, deselected, error, duplicates, fenced = row
        executors = [e for (e,) in self.machine.conn.execute(
            "SELECT DISTINCT executor FROM results WHERE run_id = ? AND executor != '' ORDER BY executor", (run_id,)
        )]
        return protocol.RunComplete(
            run_id, exit_code if exit_code is not None else 3, finished_at - submitted_at, submitted_at, deselected,
            error, executors, duplicates, fenced,
        )

    def _publish(self, new: list[tuple[str, dict]]) -> None:
        """Record new results in the progress trackers, and send their outcomes in a RunProgress soon.

        Results arrive in many small batches when tests are short, so the outcomes of one run
        are gathered for PROGRESS_INTERVAL_S and sent in one frame. With a frame per batch, a
        run of 1,000 tests on 200 executors sent its client 48 MB.
        """
        by_run: dict[str, list[dict]] = {}
        for run_id, result in new:
            by_run.setdefault(run_id, []).append(result)
        now = self.clock()
        for run_id, results in by_run.items():
            tracker = self._progress_of(self.machine.runs[run_id])
            for result in results:
                tracker.record(result["case_id"], result["outcome"], result.get("duration", 0.0), result.get("executor", ""), now)
            self._note_failures(run_id, results)
            pending = self._pending_outcomes.setdefault(run_id, [])
            pending.extend([result["case_id"], result["outcome"]] for result in results)
            if self._nursery is None:
                self._send_progress(run_id)
            elif len(pending) == len(results):  # the first outcomes since the last frame
                self._nursery.start_soon(self._send_progress_soon, run_id)

    async def _send_progress_soon(self, run_id: str) -> None:
        await trio.sleep(PROGRESS_INTERVAL_S)
        self._send_progress(run_id)

    def _send_progress(self, run_id: str) -> None:
        """Send the run's progress with the outcomes gathered since the last frame to its client and subscribers."""
        outcomes = self._pending_outcomes.pop(run_id, [])
        run = self.machine.runs.get(run_id)
        if run is None:
            return  # finished meanwhile: its client has every result in RunResults
        watchers = [client for client in self.clients if run_id in client.runs]
        if not watchers and not self.events.following(run_id):
            return
        tracker = self._progress_of(run)
        tracker.sync_shards(run.shards)
        free_slots = sum(s.view.free for s in self.executors.values() if s.view is not None)
        eta = tracker.recent_estimate(self.clock(), free_slots, ETA_INTERVAL_S)
        progress = protocol.RunProgress(
            run_id, run.status, run.total, len(run.done), len(self.registry), outcomes,
            eta.eta_s, eta.low_s, eta.high_s, eta.basis, dict(tracker.counts), tracker.running_by_executor(),
        )
        for client in watchers:
            client.send(progress)
        self.events.progress(progress)

    def _progress_of(self, run: RunState) -> ProgressTracker:
        """Return the run's progress tracker, made on first use from the durations planning uses.

        A run that a restarted coordinator resumes gets its tracker here too, with the
        results it already has.
        """
        tracker = self.progress.get(run.run_id)
        if tracker is not None and len(tracker.case_ids) != len(run.case_ids):
            tracker = None  # made while the run was collecting, before it had its cases
        if tracker is None:
            durations = {**self.machine.durations(run.suite), **run.imported_durations}
            tracker = ProgressTracker(run.case_ids, run.runnable_ids(), durations, run.deps)
            now = self.clock()
            if run.done:
                for result in self.machine.results(run.run_id):
                    tracker.record(result.case_id, result.outcome, result.duration, result.executor, now)
            for shard in run.shards.values():
                if shard.status is ShardStatus.ASSIGNED and shard.executor:
                    tracker.shard_started(shard.shard_id, shard.attempt, shard.executor, shard.cases, now)
            self.progress[run.run_id] = tracker
        return tracker

    def interrupt_runs(self, reason: str) -> None:
        """End every active run as interrupted (exit code 2), before the coordinator stops."""
        for run in list(self.machine.runs.values()):
            if run.active:
                self._finish(run, RunStatus.INTERRUPTED, 2, f"Interrupted: {reason}")

PROGRESS_INTERVAL_S = 0.25  # a run's outcomes are gathered this long before a RunProgress goes out
ETA_INTERVAL_S = 1.0  # a run's ETA is estimated at most this often, and frames in between carry the last one aged
MAX_NODE_ID_CHARS = 200
MAX_LABELS = 64
MAX_LABEL_CHARS = 256


async def read_hello(peer: Peer, extra_roles: tuple[str, ...] = ()) -> protocol.Hello | None:
    """Return the connection's first frame if it is a valid hello; else reject the peer and return None."""
    try:
        hello = await peer.receive()
    except ProtocolError as exc:
        log.warning("%s: rejected: %s", peer.name, exc)
        return None
    reason = invalid_hello(hello, extra_roles)
    if reason:
        log.warning("%s: rejected: %s", peer.name, reason)
        await peer.send(protocol.Reject(reason))
        return None
    return hello


def tune_garbage_collection() -> None:
    """Shorten the cyclic garbage collector's pauses in a coordinator process; call it once started.

    A full collection walks every tracked object while the event loop waits. The modules a
    serving coordinator imports hold about 60,000 of them, which never become garbage and
    cost some 15 ms per full collection: ``gc.freeze`` takes them out of its walk. A higher
    threshold for the youngest generation means fewer collections, full ones included,
    during a burst of short-lived objects such as a large run's final results.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def invalid_hello(hello: protocol.Message, extra_roles: tuple[str, ...] = ()) -> str:
    """Return why a connection's first frame is rejected, or "" for an acceptable hello."""
    if not isinstance(hello, protocol.Hello):
        return f"expected a hello frame first, got {hello.KIND}"
    if hello.version != protocol.PROTOCOL_VERSION:
        return (
            f"expected hello of protocol version {protocol.PROTOCOL_VERSION}, got version {hello.version}; "
            "run the same swarmctl version on every node"
        )
    roles = (protocol.ROLE_EXECUTOR, protocol.ROLE_CLIENT, *extra_roles)
    if hello.role not in roles:
        return f"invalid role {hello.role[:40]!r}: expected one of {', '.join(roles)}"
    if not 0 < len(hello.node_id) <= MAX_NODE_ID_CHARS or not hello.node_id.isprintable():
        return f"invalid node id {hello.node_id[:40]!r}: it must be 1 to {MAX_NODE_ID_CHARS} printable characters"
    if len(hello.labels) > MAX_LABELS or any(
        len(key) > MAX_LABEL_CHARS or not isinstance(value, str) or len(value) > MAX_LABEL_CHARS for key, value in hello.labels.items()
    ):
        return f"invalid labels: at most {MAX_LABELS} labels of at most {MAX_LABEL_CHARS} characters each"
    return ""


def _invalid_result_item(item: Any) -> str:
    """Return why a ``ResultBatch`` item is not ``[run_id, shard_id, attempt, result]`` with a valid result, or ""."""
    if not (isinstance(item, list) and len(item) == 4):
        return f"expected [run_id, shard_id, attempt, result], got {str(item)[:100]}"
    run_id, shard_id, attempt, result = item
    if not (isinstance(run_id, str) and type(shard_id) is int and type(attempt) is int and isinstance(result, dict)):
        return f"expected [run_id, shard_id, attempt, result], got {str(item)[:100]}"
    try:
        check_fields("result", CaseResult, {name: value for name, value in result.items() if name != "subtests"})
        CaseResult.from_wire(result)
    except (ProtocolError, ValueError, TypeError) as exc:
        return str(exc)
    return ""


@dataclass
class FinalResults:
    """An ended run's results as a following client gets them, read and cut into frames."""

    exit_code: int  # the exit code pytest would give these results
    parts: list[list[dict]]  # final results in case order, in wire form, one list per RunResults frame
    earlier_parts: list[list[dict]]  # failed attempts before a final result, likewise


def read_final_results(conn: sqlite3.Connection, run_id: str) -> FinalResults:
    results = read_results(conn, run_id)
    earlier = [attempt for attempts in read_earlier_attempts(conn, run_id).values() for attempt in attempts]
    return FinalResults(exit_code_for(results), _parts(results), [part for part in _parts(earlier) if part])


def read_final_results_from_file(path: Path, run_id: str) -> FinalResults:
    """Read with a connection of its own, so that it may run in a worker thread."""
    reader = store.open_reader(path)
    try:
        return read_final_results(reader, run_id)
    finally:
        reader.close()


def _parts(results: list[CaseResult]) -> list[list[dict]]:
    """Cut results into frames of about ``BATCH_BYTES`` each."""
    parts: list[list[dict]] = [[]]
    size = 0
    for result in results:
        wire = result.to_wire()
        item_size = 200 + len(result.longrepr) + len(result.stdout) + len(result.stderr) + len(result.message)
        if parts[-1] and size + item_size > protocol.BATCH_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(wire)
        size += item_size
    return parts
