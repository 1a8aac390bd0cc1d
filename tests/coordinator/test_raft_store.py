"""The consensus log in SQLite: what a voter saves is what it reads back after a restart."""

from __future__ import annotations

import pytest

from swarmctl.cluster.consensus import Entry, EntryKind, HardState, Ready, Snapshot
from swarmctl.coordinator.raft_store import RaftStore
from swarmctl.errors import StoreError


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


def test_save_all_writes_readies_in_order(tmp_path):
    store = RaftStore(tmp_path / "raft.db")
    store.save_all([
        Ready(entries=entries(1, 5, 1)),
        Ready(entries=entries(4, 4, 2), hard_state=HardState(2, "b:1", 3)),
        Ready(),
        Ready(entries=entries(5, 6, 2)),
    ])

    state = store.state()
    assert state.entries == entries(1, 3, 1) + entries(4, 6, 2)
    assert state.hard_state == HardState(2, "b:1", 3)


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


def test_snapshot_data_in_own_file(tmp_path):
    store = RaftStore(tmp_path / "raft.db")
    store.save(Ready(entries=entries(1, 9, 1)))
    store.compact(Snapshot(4, 1, b"state at 4"))
    assert (tmp_path / "raft-snapshot-4.db").read_bytes() == b"state at 4"

    store.write_snapshot(Snapshot(7, 1, b"state at 7"))  # as a worker thread writes it, before compact
    store.compact(Snapshot(7, 1, b"state at 7"), written=True)
    assert sorted(path.name for path in tmp_path.glob("raft-snapshot-*")) == ["raft-snapshot-7.db"]
    store.close()

    state = RaftStore(tmp_path / "raft.db").state()
    assert state.snapshot == Snapshot(7, 1, b"state at 7")
    assert state.entries == entries(8, 9, 1)


def test_snapshot_stored_in_the_row_is_read_too(tmp_path):
    """raft.db files written before snapshots moved to their own files keep their data in the row."""
    store = RaftStore(tmp_path / "raft.db")
    store.conn.execute("INSERT INTO snapshot (id, idx, term, data) VALUES (1, 3, 1, ?)", (b"inline state",))

    assert store.state().snapshot == Snapshot(3, 1, b"inline state")


def test_missing_snapshot_file_is_a_clear_error(tmp_path):
    store = RaftStore(tmp_path / "raft.db")
    store.compact(Snapshot(2, 1, b"state at 2"))
    (tmp_path / "raft-snapshot-2.db").unlink()

    with pytest.raises(StoreError, match="raft-snapshot-2.db"):
        store.state()
