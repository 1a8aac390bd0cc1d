"""The coordinator's side of clients: run submission, cancel, bundle upload, executor queries."""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING

import trio

from swarmctl import protocol
from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator.dependencies import DependencyError, resolve
from swarmctl.coordinator.settings import TERM
from swarmctl.coordinator.state import RunStatus
from swarmctl.coordinator.strategies import GROUPINGS, get_strategy
from swarmctl.errors import BundleError, ProtocolError, SwarmError

if TYPE_CHECKING:
    from swarmctl.coordinator.node import Session

log = logging.getLogger(__name__)

MAX_RETRIES = 10


class ClientMixin:
    """Client-facing part of ``Coordinator``."""



    async def _serve_client(self, session: Session, nursery: trio.Nursery) -> None:
        self.clients.append(session)
        writers: dict[str, object] = {}
        while True:
            message = await session.peer.receive()
            match message:
                case protocol.BundleQuery():
                    session.send(protocol.BundleStatus(message.digest, self.bundles.has_archive(message.digest)))
                case protocol.BundleChunk():
                    self._receive_bundle_chunk(session, writers, message)
                case protocol.SubmitRun():
                    self._submit(session, message)
                case protocol.CancelRun():
                    self._cancel(session, message)
                case protocol.ListExecutors():
                    session.send(protocol.ExecutorList(self.registry.describe(trio.current_time())))
                case protocol.ControlExecutor():
                    self._control_executor(session, message)
                case _:
                    raise ProtocolError(f"client {session.node_id} sent unexpected {message.KIND}")

    def _cancel(self, session: Session, message: protocol.CancelRun) -> None:
        run = self.machine.runs.get(message.run_id)
        if run is None or not run.active:
            session.send(protocol.ErrorReply(f"run {message.run_id!r} is not active on this coordinator", 4))
            return
        log.info("run %s cancelled by %s: %s", run.run_id, session.node_id, message.reason)
        self._finish(run, RunStatus.INTERRUPTED, 2, f"Interrupted: {message.reason}")
        session.send(protocol.RunCancelled(message.run_id))

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

        now = self.clock()
        run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(3)
        start_at = message.start_at if message.start_at and message.start_at > now else None
        deadline_at = (start_at or now) + message.deadline_s if message.deadline_s else None
        self.machine.apply(
            cmd.RunSubmitted(
                run_id, now, suite.to_wire(), message.strategy, message.case_ids, deadline_at,
                message.priority, message.retries, start_at, message.durations, message.dependencies,
                message.group, message.requirements,
            ),
            TERM,
        )
        session.runs.add(run_id)
        session.send(protocol.RunAccepted(run_id))
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

