"""Durable state of one voter: the storage contract, and an in-memory implementation.

A voter's shell persists every Ready with ``save`` before it sends the Ready's messages,
and persists a snapshot it took itself with ``compact``. After a restart it reads the
result back with ``state`` and passes it to a new ``Node``. ``MemoryStorage`` is what
the simulator uses: a simulated crash keeps it and loses everything else. A coordinator
stores the same three things in SQLite, with the snapshot as a database backup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from swarmctl.cluster.consensus.messages import Entry, Snapshot
from swarmctl.cluster.consensus.ready import HardState, Ready
from swarmctl.errors import UsageError


@dataclass(frozen=True)
class PersistentState:
    """Everything a voter kept across a restart: hard state, latest snapshot, and the entries after it."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot = field(default_factory=Snapshot)
    entries: tuple[Entry, ...] = ()

    def check(self, node_id: str, voters: tuple[str, ...] | list[str]) -> None:
        """Raise UsageError unless this state can belong to ``node_id`` among ``voters``.

        The log itself is checked when ``RaftLog`` loads it.
        """
        if len(set(voters)) != len(voters):
            raise UsageError(f"consensus voters must be distinct, not {list(voters)}")
        if node_id not in voters:
            raise UsageError(f"node {node_id} is not among the consensus voters {list(voters)}")
        vote = self.hard_state.vote
        if vote is not None and vote not in voters:
            raise UsageError(f"stored vote for {vote} names no voter of {list(voters)}")


EMPTY_STATE = PersistentState()  # a voter that never ran


class Storage(Protocol):
    def save(self, ready: Ready) -> None:
        """Make the snapshot, entries and hard state of ``ready`` durable, in that order."""

    def compact(self, snapshot: Snapshot) -> None:
        """Make ``snapshot`` durable and drop the stored entries it covers."""

    def state(self) -> PersistentState:
        """Return what a restarted voter starts from."""


class MemoryStorage:
    def __init__(self) -> None:
        self.hard_state = HardState()
        self.snapshot = Snapshot()
        self.entries: list[Entry] = []

    def save(self, ready: Ready) -> None:
        if ready.snapshot is not None:
            self.snapshot = ready.snapshot
            self.entries = []
        if ready.entries:
            first = ready.entries[0].index
            del self.entries[max(0, first - self.snapshot.index - 1) :]
            self.entries.extend(ready.entries)
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state

    def compact(self, snapshot: Snapshot) -> None:
        if snapshot.index <= self.snapshot.index:
            return
        del self.entries[: snapshot.index - self.snapshot.index]
        self.snapshot = snapshot

    def state(self) -> PersistentState:
        return PersistentState(self.hard_state, self.snapshot, tuple(self.entries))
