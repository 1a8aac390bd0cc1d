"""The executor registry: who is connected, in which state, with what labels, slots and load.

An executor registers with its hello and leaves by closing its connection, gracefully
(``Leave``, drain, SIGTERM) or not (lost: connection reset, lapsed leases, gossip verdict).
Only an ``active`` executor gets new work. ``cordoned`` keeps its running shards but gets
nothing new, and survives restarts of the executor and of the coordinator (it is stored
through a command). ``draining`` gives back its unstarted tests, finishes the running ones,
then leaves. Executors that left stay listed for ``FORGET_AFTER_S`` so that ``swarmctl
executors`` can show what happened to them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from swarmctl import protocol

log = logging.getLogger(__name__)

FORGET_AFTER_S = 600.0


class ExecutorState(enum.StrEnum):
    ACTIVE = "active"
    CORDONED = "cordoned"
    DRAINING = "draining"
    LEFT = "left"
    LOST = "lost"


@dataclass(slots=True, eq=False)
class ExecutorRecord:
    """The coordinator's record of one executor; the scheduler reads ``free``, ``labels`` and ``load``."""

    executor_id: str
    slots: int
    joined_at: float  # the coordinator's clock (Unix time), as every time here; earlier executors win ties
    running: set[tuple[str, int]] = field(default_factory=set)  # (run_id, shard_id)
    labels: dict[str, str] = field(default_factory=dict)
    state: ExecutorState = ExecutorState.ACTIVE
    load: float = 0.0  # load score from the executor's last heartbeat
    resources: dict[str, Any] = field(default_factory=dict)
    warm: set[str] = field(default_factory=set)  # suite bundles its workers have loaded
    software: str = ""
    hostname: str = ""
    pid: int = 0
    address: str = ""
    gossip: tuple[str, int] | None = None
    last_seen: float = 0.0
    silent: bool = False  # missed heartbeats: gets no new work until it is heard from again
    left_at: float = 0.0  # for executors that left
    reason: str = ""  # why it left, was cordoned or drains
    gossip_keyring: tuple[list[int], int] = ([0], 0)  # the gossip key generations it applied, and its sealing one

    @property
    def free(self) -> int:
        """Return the slots that may take a new shard now (none unless active)."""
        if self.state is not ExecutorState.ACTIVE or self.silent:
            return 0
        return self.slots - len(self.running)

    def describe(self, now: float) -> dict[str, Any]:
        """Return the plain-data row that ``swarmctl executors`` prints."""
        gone = self.state in (ExecutorState.LEFT, ExecutorState.LOST)
        running = set() if gone else self.running  # a departed executor's shards moved on
        return {
            "id": self.executor_id,
            "state": "silent" if self.silent and self.state is ExecutorState.ACTIVE else str(self.state),
            "labels": dict(self.labels),
            "slots": self.slots,
            "busy": len(running),
            "load": round(self.load, 3),
            "resources": dict(self.resources),
            "shards": [f"{run_id}/{shard_id}" for run_id, shard_id in sorted(running)],
            "last_seen_s": round(max(0.0, now - (self.left_at or self.last_seen)), 1),
            "hostname": self.hostname,
            "pid": self.pid,
            "address": self.address,
            "software": self.software,
            "reason": self.reason,
        }


class UnknownExecutor(KeyError):
    """No connected executor has this id."""


class ExecutorRegistry:
    def __init__(self, cordoned: set[str] | None = None) -> None:
        self._connected: dict[str, ExecutorRecord] = {}
        self._departed: dict[str, ExecutorRecord] = {}
        self._cordoned = set(cordoned or ())

    def __contains__(self, executor_id: str) -> bool:
        return executor_id in self._connected

    def __len__(self) -> int:
        return len(self._connected)

    def get(self, executor_id: str) -> ExecutorRecord:
        try:
            return self._connected[executor_id]
        except KeyError:
            known = ", ".join(sorted(self._connected)) or "none"
            raise UnknownExecutor(f"executor {executor_id!r} is not connected (connected: {known})") from None

    def connected(self) -> Iterator[ExecutorRecord]:
        return iter(list(self._connected.values()))

    def register(self, hello: protocol.Hello, *, address: str, now: float) -> ExecutorRecord:
        """Add the executor of ``hello``; a cordon set earlier for its id still holds."""
        record = ExecutorRecord(
            hello.node_id, max(1, hello.slots), now, labels=dict(hello.labels), software=hello.software,
            hostname=hello.hostname, pid=hello.pid, address=address, last_seen=now,
            resources=dict(hello.resources), load=float(hello.resources.get("load", 0.0) or 0.0),
            gossip=tuple(hello.gossip) if hello.gossip else None,
        )
        if hello.node_id in self._cordoned:
            record.state, record.reason = ExecutorState.CORDONED, "cordoned before it joined"
        self._departed.pop(hello.node_id, None)
        self._connected[hello.node_id] = record
        return record

    def remove(self, executor_id: str, state: ExecutorState, reason: str, now: float) -> ExecutorRecord | None:
        """Take an executor out of service as ``left`` or ``lost``; return its record."""
        record = self._connected.pop(executor_id, None)
        if record is None:
            return None
        record.state, record.reason, record.left_at = state, reason, now
        self._departed[executor_id] = record
        self._forget_old(now)
        return record

    def report(self, executor_id: str, heartbeat: protocol.Heartbeat, now: float) -> None:
        record = self._connected.get(executor_id)
        if record is not None:
            record.load = float(heartbeat.load)
            record.resources = dict(heartbeat.resources)
            record.last_seen = now
            record.silent = False

    def cordon(self, executor_id: str, reason: str) -> ExecutorRecord:
        record = self.get(executor_id)
        self._cordoned.add(executor_id)
        if record.state is ExecutorState.ACTIVE:
            record.state, record.reason = ExecutorState.CORDONED, reason
            log.info("executor %s cordoned: %s", executor_id, reason)
        return record

    def uncordon(self, executor_id: str) -> ExecutorRecord:
        record = self.get(executor_id)
        self._cordoned.discard(executor_id)
        if record.state is ExecutorState.CORDONED:
            record.state, record.reason = ExecutorState.ACTIVE, ""
            log.info("executor %s uncordoned", executor_id)
        return record

    def drain(self, executor_id: str, reason: str) -> ExecutorRecord:
        record = self.get(executor_id)
        if record.state is not ExecutorState.DRAINING:
            record.state, record.reason = ExecutorState.DRAINING, reason
            log.info("executor %s draining: %s", executor_id, reason)
        return record

    def describe(self, now: float) -> list[dict[str, Any]]:
        """Return every connected executor, then those that left recently, by id."""
        self._forget_old(now)
        rows = [record.describe(now) for _, record in sorted(self._connected.items())]
        rows += [record.describe(now) for _, record in sorted(self._departed.items())]
        return rows

    def _forget_old(self, now: float) -> None:
        for executor_id, record in list(self._departed.items()):
            if now - record.left_at > FORGET_AFTER_S:
                del self._departed[executor_id]
