"""A voter's durable consensus state in SQLite: hard state, the latest snapshot, and log entries.

``raft.db`` sits beside ``state.db`` in the coordinator's data folder. Each ``save`` is one
transaction with ``synchronous=FULL``, so a vote or an accepted entry is on disk before the
message that reveals it leaves the node. The snapshot's data is a serialized copy of
``state.db`` at the snapshot's index. It lies in a file of its own beside ``raft.db``
(``raft-snapshot-INDEX.db``), so that a voter can write a large one in a worker thread and
then record it in ``raft.db`` with a small transaction. The file is written and synced
before the row names it, and older files are removed after.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from swarmctl.cluster.consensus import Entry, EntryKind, HardState, PersistentState, Ready, Snapshot
from swarmctl.errors import StoreError

RAFT_DB = "raft.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS hard_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    term INTEGER NOT NULL,
    vote TEXT,
    commit_index INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    idx INTEGER NOT NULL,
    term INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    command BLOB NOT NULL
);
"""


class RaftStore:
    """The ``Storage`` of the consensus core, in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the consensus log {path}: {exc}") from exc

    def save(self, ready: Ready) -> None:
        self.save_all([ready])

    def save_all(self, readies: Sequence[Ready]) -> None:
        """Persist ``readies`` in their order, in one transaction: one fsync for all of them."""
        readies = [r for r in readies if r.snapshot is not None or r.entries or r.hard_state is not None]
        if not readies:
            return
        for ready in readies:
            if ready.snapshot is not None:
                self.write_snapshot(ready.snapshot)
        with self._transaction("save"):
            for ready in readies:
                self._write(ready)
        if any(ready.snapshot is not None for ready in readies):
            self._remove_other_snapshots()

    def _write(self, ready: Ready) -> None:
        if ready.snapshot is not None:
            self._put_snapshot(ready.snapshot)
            self.conn.execute("DELETE FROM entries")
        if ready.entries:
            self.conn.execute("DELETE FROM entries WHERE idx >= ?", (ready.entries[0].index,))
            self.conn.executemany(
                "INSERT INTO entries (idx, term, kind, command) VALUES (?, ?, ?, ?)",
                ((e.index, e.term, int(e.kind), e.command) for e in ready.entries),
            )
        if ready.hard_state is not None:
            hs = ready.hard_state
            self.conn.execute(
                "INSERT OR REPLACE INTO hard_state (id, term, vote, commit_index) VALUES (1, ?, ?, ?)",
                (hs.term, hs.vote, hs.commit),
            )

    def compact(self, snapshot: Snapshot, *, written: bool = False) -> None:
        """Record ``snapshot`` and drop the entries it covers; ``written`` when ``write_snapshot`` ran for it."""
        if not written or not self.snapshot_path(snapshot.index).exists():
            self.write_snapshot(snapshot)
        with self._transaction("compact"):
            row = self.conn.execute("SELECT idx FROM snapshot").fetchone()
            if row is None or row[0] < snapshot.index:
                self._put_snapshot(snapshot)
                self.conn.execute("DELETE FROM entries WHERE idx <= ?", (snapshot.index,))
        self._remove_other_snapshots()

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """Write the snapshot's data to its file and sync it. Touches no connection, so it may run in a thread."""
        path = self.snapshot_path(snapshot.index)
        temporary = path.with_name(path.name + ".partial")
        try:
            with open(temporary, "wb") as file:
                file.write(snapshot.data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise StoreError(f"cannot write the snapshot {path}: {exc}") from exc

    def snapshot_path(self, index: int) -> Path:
        return self.path.with_name(f"raft-snapshot-{index}.db")

    def state(self) -> PersistentState:
        try:
            row = self.conn.execute("SELECT term, vote, commit_index FROM hard_state").fetchone()
            hard_state = HardState(*row) if row else HardState()
            row = self.conn.execute("SELECT idx, term, data FROM snapshot").fetchone()
            snapshot = Snapshot(row[0], row[1], bytes(row[2]) or self.snapshot_path(row[0]).read_bytes()) if row else Snapshot()
            entries = tuple(
                Entry(idx, term, EntryKind(kind), bytes(command))
                for idx, term, kind, command in self.conn.execute(
                    "SELECT idx, term, kind, command FROM entries WHERE idx > ? ORDER BY idx", (snapshot.index,)
                )
            )
        except (sqlite3.Error, ValueError, OSError) as exc:
            raise StoreError(f"cannot read the consensus log {self.path}: {exc}") from exc
        return PersistentState(hard_state, snapshot, entries)

    def close(self) -> None:
        self.conn.close()

    def _put_snapshot(self, snapshot: Snapshot) -> None:
        """Name the snapshot, whose file is written, in ``raft.db``; its data column stays empty."""
        self.conn.execute(
            "INSERT OR REPLACE INTO snapshot (id, idx, term, data) VALUES (1, ?, ?, ?)",
            (snapshot.index, snapshot.term, b""),
        )

    def _remove_other_snapshots(self) -> None:
        """Remove the snapshot files that ``raft.db`` does not name (older ones, or one a crash left half written)."""
        row = self.conn.execute("SELECT idx FROM snapshot").fetchone()
        keep = self.snapshot_path(row[0]).name if row else None
        for path in self.path.parent.glob("raft-snapshot-*.db*"):
            if path.name != keep:
                path.unlink(missing_ok=True)

    @contextmanager
    def _transaction(self, action: str) -> Iterator[None]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            yield
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot {action} the consensus log {self.path}: {exc}") from exc
            raise
