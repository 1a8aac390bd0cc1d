"""The coordinator's side of clients: run submission, cancel, bundle upload, executor queries."""

from __future__ import annotations

import logging
from functools import partial
import sqlite3
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from swarmctl import protocol
from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator.access import denial
from swarmctl.coordinator.dependencies import DependencyError, resolve
from swarmctl.coordinator.progress_tracker import UNKNOWN_ETA
from swarmctl.coordinator.state import RunStatus
from swarmctl.coordinator.strategies import GROUPINGS, get_strategy
from swarmctl.errors import BundleError, ProtocolError, StoreError, SwarmError
from swarmctl.results import FAILING_OUTCOMES
from swarmctl.tokens import Role

if TYPE_CHECKING:
    from swarmctl.coordinator.event_hub import EventHub
    from swarmctl.coordinator.node import Session

log = logging.getLogger(__name__)

MAX_RETRIES = 10
CLOSE_TIMEOUT_S = 2.0  # how long a revoked token's connection gets to close cleanly
MAX_SECONDS = 366 * 86400.0  # the maximum deadline or expected test duration of a run
MAX_START_AT = 32503680000.0  # 3000-01-01 UTC

# ``ListRuns`` shows this many final failures per run, newest last, and this many finished
# runs after the active ones. Failure messages are cut to FAILURE_MESSAGE_CHARS characters.
RECENT_FAILURES_PER_RUN = 5
RECENT_FINISHED_RUNS = 5
FAILURE_MESSAGE_CHARS = 200


def invalid_numbers(message: protocol.SubmitRun) -> str:
    """Return why a number of the request cannot be stored or used (NaN, infinite, out of range), or ""."""
    if not -(2**63) <= message.priority < 2**63:
        return f"priority {message.priority} is invalid: it must fit in 64 bits"
    if message.deadline_s is not None and not 0 < message.deadline_s <= MAX_SECONDS:
        return f"deadline {message.deadline_s} is invalid: give seconds above 0 and at most {MAX_SECONDS:g}"
    if message.start_at is not None and not 0 <= message.start_at <= MAX_START_AT:
        return f"start time {message.start_at} is invalid: give a Unix time before the year 3000"
    timeout = message.suite.get("timeout")
    if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout <= MAX_SECONDS):
        return f"--timeout {timeout} is invalid: give seconds above 0 and at most {MAX_SECONDS:g}"
    for case_id, seconds in (message.durations or {}).items():
        if not 0 <= seconds <= MAX_SECONDS:
            return f"expected duration {seconds} of {case_id[:80]!r} is invalid: give seconds from 0 to {MAX_SECONDS:g}"
    return ""


class ClientMixin:
    """Client-facing part of ``Coordinator``."""

    # run_id -> its last final failures, for active runs and a few finished ones
    recent_failures: dict[str, deque[dict[str, Any]]]
    # run_id -> outcome counts of the finished runs that ListRuns last showed
    finished_counts: dict[str, dict[str, int]]
    events: EventHub

    async def _serve_client(self, session: Session, nursery: trio.Nursery) -> None:
        self.clients.append(session)
        writers: dict[str, object] = {}
        while True:
            message = await session.peer.receive()
            if isinstance(message, protocol.BundleChunk):
                if not self._deny(session, message):
                    self._receive_bundle_chunk(session, writers, message)
            else:
                await self.handle_request(session, message, nursery)

    async def handle_request(self, session: Session, message: protocol.Message, nursery: trio.Nursery | None = None) -> None:
        """Handle one client request on ``session``, whose outbox receives the replies.

        The HTTP API calls this too, with a session of its own per call. ``nursery`` runs
        the periodic lists of a ``Subscribe``; requests without one cannot subscribe.
        """
        if self._deny(session, message):
            return
        match message:
            case protocol.BundleQuery():
                session.send(protocol.BundleStatus(message.digest, self.bundles.has_archive(message.digest)))
            case protocol.BundleFetch():
                # Other coordinators copy the bundles of the runs they replicate.
                await self._send_bundle(session, message.digest)
            case protocol.SubmitRun():
                self._submit(session, message)
            case protocol.WatchRun():
                self._watch(session, message.run_id)
            case protocol.CancelRun():
                self._cancel(session, message)
            case protocol.ListExecutors():
                self.refresh_silence()
                session.send(protocol.ExecutorList(self.registry.describe(self.clock())))
            case protocol.ListRuns():
                self._list_runs(session)
            case protocol.Subscribe() if nursery is not None:
                subscription = self.events.subscribe(session, message)
                nursery.start_soon(self._send_lists_every, session, subscription.interval_s)
            case protocol.ControlExecutor():
                self._control_executor(session, message)
            case protocol.RevokeToken():
                await self._revoke_token(session, message)
            case protocol.GossipKeyRequest():
                self._gossip_key(session, message)
            case _:
                raise ProtocolError(f"client {session.node_id} sent unexpected {message.KIND}")

    def _deny(self, session: Session, message: protocol.Message) -> bool:
        """Send the reason when the session's token may not make the request; return whether it was denied."""
        reason = denial(session.token, message)
        if reason:
            log.warning("client %s: %s", session.node_id, reason)
            session.send(protocol.ErrorReply(reason, 4))
        return bool(reason)

    async def _send_lists_every(self, session: Session, interval_s: float) -> None:
        """Send a subscriber the RunList and ExecutorList rows every ``interval_s`` until its connection closes.

        ``_serve_client``'s nursery cancels this when the connection closes. A new
        subscription on the same connection starts another task. The older task ends at its
        next wake-up, because the session's subscription object is no longer its own.
        """
        subscription = self.events.subscriptions.get(session)
        while self.events.subscriptions.get(session) is subscription:
            try:
                finished = self._describe_finished_runs()
            except StoreError as exc:
                log.error("cannot list finished runs for subscriber %s: %s", session.node_id, exc)
                finished = []
            self.events.send(session, protocol.RunList(self._describe_active_runs() + finished))
            self.refresh_silence()
            self.events.send(session, protocol.ExecutorList(self.registry.describe(self.clock())))
            await trio.sleep(interval_s)

    async def _revoke_token(self, session: Session, message: protocol.RevokeToken) -> None:
        """Record the revocation, then close every connection that authenticated with that token."""
        self.machine.apply(cmd.TokenRevoked(message.token_id, self.clock()), self.term)
        holders = [
            other for other in [*self.clients, *self.executors.values()]
            if other is not session and other.token is not None and other.token.token_id == message.token_id
        ]
        log.warning("token %s revoked by %s; closing %d of its connections", message.token_id, session.node_id, len(holders))
        self.when_committed(partial(session.send, protocol.TokenRevoked(message.token_id, len(holders))))
        for holder in holders:
            # A holder that stopped reading must not hold up the revocation, or this session.
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await holder.peer.aclose()

    def _watch(self, session: Session, run_id: str) -> None:
        run = self.machine.runs.get(run_id)
        if run is not None:
            session.runs.add(run_id)
            if run.total:
                self._send_progress(run_id)  # a collecting run has nothing to show yet
            return
        complete = self._finished_run(run_id)
        if complete is None:
            session.send(protocol.ErrorReply(f"run {run_id} is unknown to the coordinator; check the run id", 4))
            return
        self.send_final_results([session], run_id, complete)

    def _cancel(self, session: Session, message: protocol.CancelRun) -> None:
        run = self.machine.runs.get(message.run_id)
        if run is None or not run.active:
            session.send(protocol.ErrorReply(f"run {message.run_id!r} is not active on this coordinator", 4))
            return
        token = session.token
        if token is not None and not token.allows(Role.ADMIN) and self.run_owners.get(run.run_id) != token.token_id:
            reason = f"permission denied: run {run.run_id} was submitted with another token; cancelling it needs role admin"
            log.warning("client %s: %s", session.node_id, reason)
            session.send(protocol.ErrorReply(reason, 4))
            return
        log.info("run %s cancelled by %s: %s", run.run_id, session.node_id, message.reason)
        self._finish(run, RunStatus.INTERRUPTED, 2, f"Interrupted: {message.reason}")
        self.when_committed(partial(session.send, protocol.RunCancelled(message.run_id)))

    def _receive_bundle_chunk(self, session: Session, writers: dict, message: protocol.BundleChunk) -> None:
        try:
            writer = writers.get(message.digest)
            if writer is None:
                writer = writers[message.digest] = self.bundles.open_writer(message.digest)
            writer.write(message.data)
            if message.last:
                del writers[message.digest]
                writer.commit()
                session.send(protocol.BundleStatus(message.digest, True))
                log.info("stored bundle %s from client %s", message.digest[:12], session.node_id)
        except BundleError as exc:
            writers.pop(message.digest, None)
            session.send(protocol.ErrorReply(str(exc), 3))

    def _submit(self, session: Session, message: protocol.SubmitRun) -> None:
        try:
            suite = protocol.SuiteSpec.from_wire(message.suite)
            get_strategy(message.strategy)
            if not self.bundles.has_archive(suite.bundle):
                raise BundleError(f"bundle {suite.bundle} was not uploaded before the run was submitted")
        except (SwarmError, TypeError) as exc:
            session.send(protocol.ErrorReply(str(exc), getattr(exc, "exit_code", 4)))
            return

        if message.case_ids is not None and message.dependencies:
            try:
                resolve(message.case_ids, message.dependencies)
            except DependencyError as exc:
                session.send(protocol.ErrorReply(str(exc), exc.exit_code))
                return
        if message.group not in GROUPINGS:
            session.send(protocol.ErrorReply(f"--group {message.group!r} is invalid: choose one of {', '.join(GROUPINGS)}", 4))
            return
        if not 0 <= message.retries <= MAX_RETRIES:
            session.send(protocol.ErrorReply(f"--retries {message.retries} is invalid: it must be between 0 and {MAX_RETRIES}", 4))
            return
        reason = invalid_numbers(message)
        if reason:
            session.send(protocol.ErrorReply(reason, 4))
            return

        now = self.clock()
        run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"-{self.rng.getrandbits(24):06x}"
        start_at = message.start_at if message.start_at and message.start_at > now else None
        deadline_at = (start_at or now) + message.deadline_s if message.deadline_s else None
        self.machine.apply(
            cmd.RunSubmitted(
                run_id, now, suite.to_wire(), message.strategy, message.case_ids, deadline_at,
                message.priority, message.retries, start_at, message.durations, message.dependencies,
                message.group, message.requirements,
            ),
            self.term,
        )
        if session.token is not None:
            self.run_owners[run_id] = session.token.token_id

        def accepted() -> None:
            # Watching starts with the acceptance, so no progress frame can precede it.
            session.runs.add(run_id)
            session.send(protocol.RunAccepted(run_id))

        self.when_committed(accepted)
        log.info("run %s submitted by %s: %s suite %s", run_id, session.node_id, suite.kind, suite.name)

        run = self.machine.runs[run_id]
        self._arm_deadline(run)
        if start_at is not None:
            log.info("run %s waits until %s", run_id, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(start_at)))
            self._wake_at(start_at)
        if run.status is RunStatus.RUNNING:
            if run.total == 0:
                self._finish(run, RunStatus.FINISHED, 5, "")
            else:
                self._plan(run)
        else:
            self._find_collectors()


    # --- run overview --------------------------------------------------------------------

    def _list_runs(self, session: Session) -> None:
        try:
            finished = self._describe_finished_runs()
        except StoreError as exc:
            log.error("cannot list finished runs for %s: %s", session.node_id, exc)
            session.send(protocol.ErrorReply(str(exc), 3))
            return
        session.send(protocol.RunList(self._describe_active_runs() + finished))

    def _note_failures(self, run_id: str, results: list[dict]) -> None:
        """Keep the run's newest final failures. ``_publish`` calls this with every batch of new results."""
        failures = [result for result in results if result["outcome"] in FAILING_OUTCOMES]
        if not failures:
            return
        recent = self.recent_failures.get(run_id)
        if recent is None:
            recent = self.recent_failures[run_id] = deque(maxlen=RECENT_FAILURES_PER_RUN)
            # The failures of finished runs are dropped oldest first, keeping those of
            # RECENT_FINISHED_RUNS of them.
            finished = [other for other in self.recent_failures if other not in self.machine.runs]
            for other in finished[:-RECENT_FINISHED_RUNS]:
                del self.recent_failures[other]
        now = self.clock()
        for result in failures:
            message = (result.get("message") or "").strip().splitlines()
            recent.append({
                "case_id": result["case_id"],
                "outcome": result["outcome"],
                "message": message[0][:FAILURE_MESSAGE_CHARS] if message else "",
                "at": now,
            })

    def _describe_active_runs(self) -> list[dict[str, Any]]:
        """Describe every active run, oldest first, with its estimate and the executors running it."""
        now = self.clock()
        free_slots = sum(record.free for record in self.registry.connected())
        working: dict[str, set[str]] = {}
        for record in self.registry.connected():
            for run_id, _ in record.running:
                working.setdefault(run_id, set()).add(record.executor_id)

        rows = []
        for run in self.machine.runs.values():
            # A run gets its tracker when its first shard is assigned, and before that there
            # is nothing to estimate from.
            tracker = self.progress.get(run.run_id)
            eta, counts = UNKNOWN_ETA, {}
            if tracker is not None:
                tracker.sync_shards(run.shards)
                eta, counts = tracker.estimate(now, free_slots), dict(tracker.counts)
            rows.append({
                "run_id": run.run_id,
                "suite": str(run.suite.get("name", "")),
                "status": str(run.status),
                "priority": run.priority,
                "submitted_at": run.submitted_at,
                "start_at": run.start_at,
                "finished_at": None,
                "exit_code": None,
                "error": run.error,
                "total": run.total,
                "done": len(run.done),
                "counts": counts,
                "eta_s": eta.eta_s,
                "eta_low_s": eta.low_s,
                "eta_high_s": eta.high_s,
                "eta_basis": eta.basis,
                "executors": sorted(working.get(run.run_id, ())),
                "failures": list(self.recent_failures.get(run.run_id, ())),
            })
        return rows

    def _describe_finished_runs(self) -> list[dict[str, Any]]:
        """Describe the RECENT_FINISHED_RUNS runs that ended last, newest first.

        The runs are found through the index on finish time, so a poll does not scan the
        runs table. A finished run's results no longer change, so its outcome counts are
        read once and kept in ``finished_counts``. Counting the results of five runs of
        10,000 tests on every poll took 45 ms.
        """
        active = [str(status) for status in (RunStatus.COLLECTING, RunStatus.RUNNING)]
        try:
            runs = self.machine.conn.execute(
                "SELECT run_id, suite, status, exit_code, priority, submitted_at, finished_at, total, error "
                "FROM runs WHERE finished_at IS NOT NULL AND status NOT IN (?, ?) ORDER BY finished_at DESC LIMIT ?",
                (*active, RECENT_FINISHED_RUNS),
            ).fetchall()
            counts = {run_id: self.finished_counts[run_id] for run_id, *_ in runs if run_id in self.finished_counts}
            missing = [run_id for run_id, *_ in runs if run_id not in counts]
            if missing:
                for run_id in missing:
                    counts[run_id] = {}
                marks = ",".join("?" * len(missing))
                for run_id, outcome, count in self.machine.conn.execute(
                    f"SELECT run_id, outcome, count(*) FROM results WHERE run_id IN ({marks}) GROUP BY run_id, outcome",
                    missing,
                ):
                    counts[run_id][outcome] = count
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the finished runs: {exc}") from exc
        self.finished_counts = counts

        rows = []
        for run_id, suite, status, exit_code, priority, submitted_at, finished_at, total, error in runs:
            rows.append({
                "run_id": run_id,
                "suite": str(msgpack.unpackb(suite, raw=False).get("name", "")),
                "status": status,
                "priority": priority,
                "submitted_at": submitted_at,
                "start_at": None,
                "finished_at": finished_at,
                "exit_code": exit_code,
                "error": error,
                "total": total,
                "done": sum(counts[run_id].values()),
                "counts": dict(counts[run_id]),
                "eta_s": None,
                "eta_low_s": None,
                "eta_high_s": None,
                "eta_basis": UNKNOWN_ETA.basis,
                "executors": [],
                "failures": list(self.recent_failures.get(run_id, ())),
            })
        return rows
