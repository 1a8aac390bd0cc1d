"""The coordinator's side of the executor fleet: sessions, leases, heartbeats, drain and cordon.

An executor session starts with its hello, which registers it and claims the shards it
still runs. Heartbeats renew their leases; a lease that lapses sends its shard back to the
queue (see ``heartbeat``). A connection that closes is not yet a lost executor: its leases
wait out the reconnect grace. A watch task wakes at the next lease expiry (at least once a
second) to requeue lapsed shards, to stop giving work to executors that missed heartbeats,
and to report tests whose required labels no executor has.
"""

from __future__ import annotations

import ipaddress
import logging
from functools import partial
from typing import TYPE_CHECKING

import trio

from swarmctl import protocol
from swarmctl.bundle import iter_chunks
from swarmctl.cluster.gossip import GossipNode
from swarmctl.cluster.members import MemberState
from swarmctl.cluster.node_gossip import apply_keyring, gossip_node
from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator.executor_registry import ExecutorRecord, ExecutorState, UnknownExecutor
from swarmctl.coordinator.heartbeat import Lease
from swarmctl.coordinator.load_balancer import can_ever_run
from swarmctl.coordinator.state import RunStatus, ShardStatus
from swarmctl.errors import BundleError, ProtocolError, UsageError
from swarmctl.labels import format_labels

if TYPE_CHECKING:
    from swarmctl.coordinator.node import Session

log = logging.getLogger(__name__)



class FleetMixin:
    """Executor-facing part of ``Coordinator``; it uses the coordinator's queue and state."""

    async def _start_gossip(self, nursery: trio.Nursery, host: str, port: int) -> None:
        """Join the gossip membership on UDP at the coordinator's own host and port."""
        advertise = self.advertise or host
        if ipaddress.ip_address(advertise).is_unspecified:
            raise UsageError(
                f"--listen {host} binds every address, so gossip needs --advertise IP: "
                "the address at which executors reach this coordinator"
            )
        meta = {"role": "coordinator", "address": f"{advertise}:{port}"}
        gossip = gossip_node(self.coordinator_id, (host, port), meta, self.secret, advertise=(advertise, port))
        apply_keyring(gossip.cipher, self.secret, *self.machine.gossip_keyring)
        self.gossip = gossip
        await nursery.start(gossip.run)
        self.gossip_address = (advertise, port)
        nursery.start_soon(self._follow_gossip, gossip)

    async def _follow_gossip(self, gossip: GossipNode) -> None:
        """Treat a gossip ``dead`` verdict on an executor like its lapsed leases."""
        async for event in gossip.events:
            if event.state is not MemberState.DEAD:
                continue  # suspicion alone moves nothing: heartbeats over TCP decide sooner
            if event.node_id in self.executors or self.leases.held_by(event.node_id):
                log.warning("executor %s declared dead by gossip (incarnation %d)", event.node_id, event.incarnation)
                self.executor_dead(event.node_id, f"gossip declared executor {event.node_id} dead")

    def refresh_silence(self) -> None:
        """Mark each executor that missed two heartbeats silent: no new work for it until it reports again.

        The lease watch calls this every second, and listings call it too, so that they show
        the state of now, not of the last check.
        """
        now = trio.current_time()
        for session in self.executors.values():
            if session.view is not None:
                session.view.silent = now - session.last_seen > 2.5 * self.settings.heartbeat_s

    def _gossip_key(self, session: Session, request: protocol.GossipKeyRequest) -> None:
        """List, install, use or remove a gossip key generation, and send the new keyring to every executor.

        ``use`` waits until every connected gossiping executor has applied a keyring with the
        generation, and ``remove`` until each seals with the current one, so no node drops
        another's packets and suspects it.
        """
        generations, primary = self.machine.gossip_keyring
        generations = list(generations)
        if self.secret is None:
            session.send(protocol.ErrorReply("this coordinator has no cluster secret, so nodes do not gossip and have no gossip keys", 4))
            return
        match request.action:
            case "list":
                session.send(protocol.GossipKeyring(generations, primary))
                return
            case "install":
                generations.append(max(generations) + 1)
            case "use" | "remove" if request.generation not in generations:
                session.send(protocol.ErrorReply(
                    f"gossip key generation {request.generation} is not installed; installed: {', '.join(map(str, generations))}", 4
                ))
                return
            case "use":
                waiting = self._executors_lacking(lambda applied, _: request.generation in applied)
                if waiting:
                    session.send(protocol.ErrorReply(f"executors {waiting} have not installed generation {request.generation} yet; try again in a few seconds", 4))
                    return
                primary = request.generation
            case "remove" if request.generation == primary:
                session.send(protocol.ErrorReply(f"generation {primary} seals packets now; `use` another generation before removing it", 4))
                return
            case "remove":
                waiting = self._executors_lacking(lambda _, sealing: sealing == primary)
                if waiting:
                    session.send(protocol.ErrorReply(f"executors {waiting} still seal with an older generation; try again in a few seconds", 4))
                    return
                generations.remove(request.generation)
            case _:
                session.send(protocol.ErrorReply(f"gossip key action {request.action!r} is invalid: use list, install, use or remove", 4))
                return
        self.machine.apply(cmd.GossipKeyringChanged(generations, primary, self.clock()), self.term)
        if self.gossip is not None:
            apply_keyring(self.gossip.cipher, self.secret, generations, primary)
        keyring = protocol.GossipKeyring(generations, primary)
        for executor in self.executors.values():
            if executor.hello.gossip:
                executor.send(keyring)
        log.warning("gossip keys %s by %s: generations %s, sealing with %d", request.action, session.node_id, generations, primary)
        self.when_committed(partial(session.send, keyring))

    def _executors_lacking(self, applied_enough) -> str:
        """Return the ids of connected gossiping executors whose applied keyring fails ``applied_enough(generations, primary)``."""
        lacking = [
            executor_id for executor_id, executor in sorted(self.executors.items())
            if executor.hello.gossip and executor.view is not None and not applied_enough(*executor.view.gossip_keyring)
        ]
        return ", ".join(lacking)



    async def _serve_executor(self, session: Session, nursery: trio.Nursery) -> None:
        hello = session.hello
        if hello.node_id in self.executors:
            previous = self.executors[hello.node_id]
            log.warning("executor %s connected again; dropping its previous connection", hello.node_id)
            del self.executors[hello.node_id]
            previous.view = None  # its leases stay; this hello claims them
            await previous.peer.aclose()
        record = session.view = self.registry.register(hello, address=session.peer.name, now=self.clock())
        self.executors[hello.node_id] = session
        log.info(
            "executor %s joined: slots %d, labels %s, state %s, from %s",
            hello.node_id, record.slots, format_labels(record.labels), record.state, session.peer.name,
        )
        if hello.gossip and self.machine.gossip_keyring != ([0], 0):
            session.send(protocol.GossipKeyring(*self.machine.gossip_keyring))
        self._claim_leases(session, hello.held)
        for run in self.machine.runs.values():
            if run.status is RunStatus.COLLECTING and run.run_id in self.collectors:
                # Another executor collects it; this one warms its workers meanwhile.
                session.send(protocol.PrepareSuite(run.run_id, run.suite, False))
        self._find_collectors()
        self._schedule()

        while session.view is not None:  # None once the executor was declared lost
            message = await session.peer.receive()
            session.last_seen = trio.current_time()
            match message:
                case protocol.Heartbeat():
                    self._on_heartbeat(session, message)
                case protocol.Collected():
                    self._on_collected(session, message)
                case protocol.ResultBatch():
                    self._on_results(session, message)
                case protocol.ShardDone():
                    self._on_shard_done(session, message)
                case protocol.LogBatch():
                    stored = self.logs.add(session.node_id, message.lines, self.clock())
                    if stored:
                        self.events.logs(session.node_id, stored)
                case protocol.CaseOutput():
                    self._on_case_output(session, message)
                case protocol.TestsReleased():
                    self._on_tests_released(session, message)
                case protocol.BundleFetch():
                    nursery.start_soon(self._send_bundle, session, message.digest)
                case protocol.GossipKeyring():
                    record.gossip_keyring = (list(message.generations), message.primary)
                case protocol.Draining():
                    self._drain(record, message.reason, tell_executor=False)
                case protocol.Leave():
                    log.info("executor %s leaves: %s", hello.node_id, message.reason)
                    self._executor_gone(session, ExecutorState.LEFT, message.reason)
                    return
                case _:
                    raise ProtocolError(f"executor {hello.node_id} sent unexpected {message.KIND}")

    def _claim_leases(self, session: Session, held: list[list]) -> None:
        """Resume the shards a reconnecting executor still runs; stop those that moved on."""
        now = self.clock()
        orphans = self.leases.renew(session.node_id, held, now)
        for run_id, shard_id, attempt in held:
            if (run_id, shard_id, attempt) not in orphans:
                session.view.running.add((run_id, shard_id))
                log.info("run %s: shard %d attempt %d resumes on executor %s", run_id, shard_id, attempt, session.node_id)
        self._stop_orphans(session, orphans)

    def _stop_orphans(self, session: Session, orphans: list[tuple[str, int, int]]) -> None:
        for run_id, shard_id, attempt in orphans:
            log.info("run %s: shard %d attempt %d on executor %s has ended here; stopping it", run_id, shard_id, attempt, session.node_id)
            session.send(protocol.CancelShard(run_id, shard_id, attempt, "the shard attempt ended: it was reassigned"))

    def _on_heartbeat(self, session: Session, message: protocol.Heartbeat) -> None:
        self.registry.report(session.node_id, message, self.clock())
        orphans = self.leases.renew(session.node_id, message.held, self.clock())
        self._stop_orphans(session, orphans)
        session.send(protocol.HeartbeatAck(self.term))

    def _on_case_output(self, session: Session, message: protocol.CaseOutput) -> None:
        """Store and pass on live output of the shard attempts this executor holds; drop the rest."""
        current = []
        for chunk in message.chunks:
            if not (isinstance(chunk, list) and len(chunk) == 7 and isinstance(chunk[0], str) and isinstance(chunk[1], int)):
                raise ProtocolError(f"executor {session.node_id} sent a malformed case_output piece: {str(chunk)[:200]}")
            lease = self.leases.get(chunk[0], chunk[1])
            if lease is not None and lease.attempt == chunk[2] and lease.executor_id == session.node_id:
                current.append(chunk)
        stored = self.logs.add_output(session.node_id, current, self.clock()) if current else []
        if stored:
            self.events.output(stored)

    def _session_closed(self, session: Session, *, stopping: bool = False) -> None:
        session.outbox.close()
        self.events.unsubscribe(session)
        if session.view is None:
            if session in self.clients:
                self.clients.remove(session)
            return
        if self.executors.get(session.node_id) is not session or stopping:
            return
        # Its leases wait out the reconnect grace: a broken connection that comes back at once
        # keeps its shards, and a dead executor's shards move on when the grace ends.
        self.leases.disconnected(session.node_id, self.clock())
        self._leases_changed.set()
        reason = f"connection from {session.peer.name} closed"
        self._executor_gone(session, ExecutorState.LOST, reason)

    def _executor_gone(self, session: Session, state: ExecutorState, reason: str) -> None:
        """Take an executor out of the registry; requeue at once what a leaving executor held."""
        if self.executors.get(session.node_id) is not session:
            return
        del self.executors[session.node_id]
        record = self.registry.remove(session.node_id, state, reason, self.clock())
        if state is ExecutorState.LEFT:
            for lease in self.leases.revoke(session.node_id):
                self._requeue(lease.run_id, lease.shard_id, f"executor {session.node_id} left: {reason}")
        elif record is not None and record.running:
            log.warning(
                "executor %s lost (%s); its %d shards move on unless it reconnects within %.1fs",
                session.node_id, reason, len(record.running), self.settings.reconnect_grace_s,
            )
        else:
            log.info("executor %s %s: %s", session.node_id, state, reason)
        session.view = None
        for run_id, executor_id in list(self.collectors.items()):
            if executor_id == session.node_id:
                del self.collectors[run_id]
        self._find_collectors()
        self._schedule()

    def executor_dead(self, executor_id: str, reason: str) -> None:
        """Reassign an executor's shards now (gossip declared it dead) and drop its connection."""
        for lease in self.leases.revoke(executor_id):
            self._lease_lapsed(lease, reason)
        session = self.executors.get(executor_id)
        if session is not None:
            self._executor_gone(session, ExecutorState.LOST, reason)
            if self._nursery is not None:
                self._nursery.start_soon(session.peer.aclose)

    async def _watch_leases(self) -> None:
        """Requeue the shards whose leases lapse, drop silent executors, and fail unmatched shards."""
        while True:
            next_expiry = self.leases.next_expiry()
            wait = 1.0 if next_expiry is None else min(1.0, max(0.0, next_expiry - self.clock()))
            with trio.move_on_after(wait):
                await self._leases_changed.wait()
            self._leases_changed = trio.Event()

            now = trio.current_time()
            self.refresh_silence()
            for lease in self.leases.expire(self.clock()):
                if lease.disconnected:
                    reason = (
                        f"executor {lease.executor_id}'s connection closed and it did not reconnect within "
                        f"{self.settings.reconnect_grace_s:g}s"
                    )
                else:
                    reason = f"its lease on executor {lease.executor_id} lapsed (not renewed for {self.settings.lease_s:g}s)"
                self._lease_lapsed(lease, reason)
            for session in list(self.executors.values()):
                silent = now - session.last_seen
                if silent > self.settings.lease_s:
                    log.warning(
                        "executor %s silent for %.1fs (lease %gs); closing its connection",
                        session.node_id, silent, self.settings.lease_s,
                    )
                    self._executor_gone(session, ExecutorState.LOST, f"silent for {silent:.1f}s")
                    self._nursery.start_soon(session.peer.aclose)
            self._fail_unmatched()
            self._schedule()

    def _lease_lapsed(self, lease: Lease, reason: str) -> None:
        session = self.executors.get(lease.executor_id)
        if session is not None and session.view is not None:
            session.view.running.discard(lease.key)
            session.send(protocol.CancelShard(lease.run_id, lease.shard_id, lease.attempt, reason))
        run = self.machine.runs.get(lease.run_id)
        shard = run.shards.get(lease.shard_id) if run is not None else None
        if shard is not None and shard.attempt == lease.attempt:
            self._requeue(lease.run_id, lease.shard_id, reason)

    # --- executor control ----------------------------------------------------------------

    def _drain(self, record: ExecutorRecord, reason: str, *, tell_executor: bool) -> None:
        """Send no new work to an executor and take back the unstarted tests of its shards."""
        self.registry.drain(record.executor_id, reason)
        session = self.executors[record.executor_id]
        if tell_executor:
            session.send(protocol.Drain(reason))
        for run_id, shard_id in sorted(record.running):
            run = self.machine.runs.get(run_id)
            if run is None or run.suite.get("kind") != "pytest" or run.group != "none":
                continue  # the command runner, and a kept-together group, finish what they started
            shard = run.shards[shard_id]
            key = (run_id, shard_id, shard.attempt)
            if key not in self._released:
                self._released.add(key)
                session.send(protocol.ReleaseTests(run_id, shard_id, shard.attempt, len(shard.cases)))
        self._schedule()

    def _control_executor(self, session: Session, message: protocol.ControlExecutor) -> None:
        try:
            record = self.registry.get(message.executor_id)
        except UnknownExecutor as exc:
            session.send(protocol.ErrorReply(f"{exc.args[0]}; list them with `swarmctl executors`", 4))
            return
        reason = f"requested by {session.node_id}"
        match message.action:
            case "cordon":
                self.machine.apply(cmd.ExecutorCordoned(record.executor_id, True, self.clock()), self.term)
                self.registry.cordon(record.executor_id, reason)
            case "uncordon":
                self.machine.apply(cmd.ExecutorCordoned(record.executor_id, False, self.clock()), self.term)
                self.registry.uncordon(record.executor_id)
            case "drain":
                self._drain(record, reason, tell_executor=True)
            case _:
                session.send(
                    protocol.ErrorReply(f"executor action {message.action!r} is invalid: use drain, cordon or uncordon", 4)
                )
                return
        log.info("executor %s: %s %s", record.executor_id, message.action, reason)
        self.when_committed(partial(session.send, protocol.ExecutorControlled(record.executor_id, str(record.state))))
        self._schedule()

    async def _send_bundle(self, session: Session, digest: str) -> None:
        try:
            path = self.bundles.archive_path(digest)
            if not path.exists():
                raise BundleError(f"bundle {digest} is not stored on this coordinator")
            chunks = list(iter_chunks(path, protocol.BUNDLE_CHUNK_BYTES)) or [b""]
            for i, chunk in enumerate(chunks):
                await session.peer.send(protocol.BundleChunk(digest, chunk, i == len(chunks) - 1))
        except BundleError as exc:
            log.error("executor %s asked for bundle %s: %s", session.node_id, digest, exc)
            session.send(protocol.ErrorReply(str(exc)))

    def _fail_unmatched(self) -> None:
        """Report as errors the ready shards whose required labels no active executor has had for a while."""
        now = self.clock()
        waiting = set()
        for run in list(self.machine.runs.values()):
            if run.status is not RunStatus.RUNNING or not run.requires:
                continue
            for shard_id in list(run.queue):
                requires = run.shard_requires(shard_id)
                if not requires or run.shards[shard_id].not_before > now:
                    continue
                if can_ever_run(requires, (s.view for s in self.executors.values() if s.view is not None)):
                    continue
                key = (run.run_id, shard_id)
                waiting.add(key)
                since = self._unmatched_since.setdefault(key, now)
                if now - since >= self.settings.unmatched_timeout_s:
                    self._fail_shard(run, shard_id, self._unmatched_message(requires))
                    if not run.active:
                        break
        self._unmatched_since = {key: since for key, since in self._unmatched_since.items() if key in waiting}

    def _unmatched_message(self, requires: dict[str, str]) -> str:
        wanted = format_labels(requires)
        seen = sorted(
            {format_labels(s.view.labels) for s in self.executors.values() if s.view is not None
             and s.view.state is ExecutorState.ACTIVE}
        )
        return (
            f"not run: no active executor has the labels {wanted} this test requires "
            f"(waited {self.settings.unmatched_timeout_s:g}s; active executors have: {'; '.join(seen) or 'none'}). "
            f"Start one with `swarmctl up --role executor --labels {wanted}`, "
            f"or give local executors the labels with `swarmctl run --labels {wanted}`"
        )

    def _lease_after_restart(self) -> None:
        """Give every shard that was running a fresh lease, for its executor to claim on reconnect."""
        now = self.clock()
        for run in self.machine.runs.values():
            for shard in run.shards.values():
                if shard.status is ShardStatus.ASSIGNED and shard.executor:
                    self.leases.grant(run.run_id, shard.shard_id, shard.attempt, shard.executor, now)
