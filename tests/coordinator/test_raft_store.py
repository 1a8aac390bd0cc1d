"""The consensus log in SQLite: what a voter saves is what it reads back after a restart."""

from __future__ import annotations

from swarmctl.cluster.consensus import Entry, EntryKind, HardState, Ready, Snapshot
from swarmctl.coordinator.raft_store import RaftStore


def entries(first: int, last: int, term: int) -> tuple[Entry, ...]:
    return tuple(Entry(i, term, EntryKind.COMMAND, f"command {i}".encode()) for i in range(first, last + 1))


def test_saved_state_survives_reopening(tmp_path):
    store = RaftStore(tmp_path / "raft.db")
    store.save(Ready(entries=entries(1, 3, 1), hard_state=HardState(1, "a:1", 2)))
    store.close()

    state = RaftStore(tmp_path / "raft.db").state()
    assert state.hard_state == HardState(1, "a:1", 2)
    assert state.entries == entries(1, 3, 1)
    assert state.snapshot == Snapshot()


def test_new_entries_replace_the_conflicting_tail(tmp_path):
    store = RaftStore(tmp_path / "raft.db")
    store.save(Ready(entries=entries(1, 5, 1)))
    store.save(Ready(entries=entries(3, 4, 2)))

    assert store.state().entries == entries(1, 2, 1) + entries(3, 4, 2)


def test_received_snapshot_replaces_every_entry(tmp_path):
    store = RaftStore(tmp_path / "raft.db")
    store.save(Ready(entries=entries(1, 5, 1)))
    store.save(Ready(snapshot=Snapshot(8, 2, b"database"), entries=entries(9, 9, 2)))

    state = store.state()
    assert state.snapshot == Snapshot(8, 2, b"database")
    assert state.entries == entries(9, 9, 2)


def test_compaction_keeps_the_entries_after_the_snapshot(tmp_path):
    store = RaftStore(tmp_path / "raft.db")
    store.save(Ready(entries=entries(1, 6, 1)))
    store.compact(Snapshot(4, 1, b"state at 4"))
    store.compact(Snapshot(2, 1, b"older"))  # an older snapshot changes nothing

    state = store.state()
    assert state.snapshot == Snapshot(4, 1, b"state at 4")
    assert state.entries == entries(5, 6, 1)
