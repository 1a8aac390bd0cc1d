"""SQLite storage of the coordinator: schema, connection settings and read queries.

Writes happen only in ``state.StateMachine.apply``, and a command's log row and the rows
it produced are written in one transaction (a savepoint of a group commit), so they never
disagree. ``synchronous=FULL`` makes a committed transaction survive a power loss: results
are acknowledged to executors only after their transaction commits. A serving coordinator
commits without the fsync and syncs the WAL file itself (``WalSync``), in a worker thread
when the disk is slow.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from swarmctl.errors import StoreError

SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    submitted_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    suite BLOB NOT NULL,
    strategy TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    deselected INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    deadline_at REAL,
    priority INTEGER NOT NULL DEFAULT 0,
    retries INTEGER NOT NULL DEFAULT 0,
    start_at REAL,
    durations BLOB,
    dependencies BLOB,
    grouping TEXT NOT NULL DEFAULT 'none',
    requirements BLOB,
    fenced INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cases (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    case_id TEXT NOT NULL,
    collect_only INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, idx)
);
CREATE TABLE IF NOT EXISTS shards (
    run_id TEXT NOT NULL,
    shard_id INTEGER NOT NULL,
    cases BLOB NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    executor TEXT,
    not_before REAL NOT NULL DEFAULT 0,
    avoid TEXT,
    lost_on BLOB,
    PRIMARY KEY (run_id, shard_id)
);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL,
    shard_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    executor TEXT NOT NULL,
    term INTEGER NOT NULL,
    assigned_at REAL NOT NULL,
    ended_at REAL,
    end_reason TEXT,
    PRIMARY KEY (run_id, shard_id, attempt)
);
CREATE TABLE IF NOT EXISTS durations (
    suite_key TEXT NOT NULL,
    case_id TEXT NOT NULL,
    seconds REAL NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (suite_key, case_id)
);
CREATE TABLE IF NOT EXISTS case_attempts (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    try INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    executor TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (run_id, idx, try)
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    case_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration REAL NOT NULL,
    executor TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    recorded_at REAL NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (run_id, idx)
);
CREATE INDEX IF NOT EXISTS runs_by_finish ON runs (finished_at);
CREATE TABLE IF NOT EXISTS cordons (
    executor_id TEXT PRIMARY KEY,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revoked_tokens (
    token_id TEXT PRIMARY KEY,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS gossip_keyring (
    generation INTEGER PRIMARY KEY,
    is_primary INTEGER NOT NULL,
    at REAL NOT NULL
);
"""


# Statements that bring a database of an older schema version to the next version.
MIGRATIONS = {
    1: ["ALTER TABLE runs ADD COLUMN deadline_at REAL"],
    2: [
        "ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN start_at REAL",
        "ALTER TABLE runs ADD COLUMN durations BLOB",
        "ALTER TABLE runs ADD COLUMN dependencies BLOB",
        "ALTER TABLE runs ADD COLUMN grouping TEXT NOT NULL DEFAULT 'none'",
        "ALTER TABLE shards ADD COLUMN not_before REAL NOT NULL DEFAULT 0",
        "ALTER TABLE shards ADD COLUMN avoid TEXT",
    ],
    3: [
        "ALTER TABLE runs ADD COLUMN requirements BLOB",
        "ALTER TABLE runs ADD COLUMN fenced INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE shards ADD COLUMN lost_on BLOB",
    ],
}


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    while version in MIGRATIONS:
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
        version += 1
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.execute("COMMIT")


def connect(path: Path, *, durable: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) the state database at ``path``.

    ``durable=False`` skips the fsync of each commit, for a voter of a replicated
    coordinator: its consensus log is the durable record, and a voter that lost its last
    commits to a power loss applies them again from that log.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA busy_timeout=5000")
        prepare_schema(conn, str(path))
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the state database {path}: {exc}") from exc
    return conn


def prepare_schema(conn: sqlite3.Connection, name: str) -> None:
    """Create the tables of an empty state database, or bring an older one up to this schema version."""
    conn.executescript(SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    elif int(row[0]) in MIGRATIONS:
        _migrate(conn, int(row[0]))
    elif int(row[0]) != SCHEMA_VERSION:
        raise StoreError(
            f"{name} has schema version {row[0]}, this swarmctl reads version {SCHEMA_VERSION}; "
            "use the swarmctl that wrote it, or move the file away to start empty"
        )


def open_reader(path: Path) -> sqlite3.Connection:
    """Open a read transaction on the state database, which reads what was committed until now and nothing later."""
    try:
        reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM meta").fetchone()  # the first read fixes the transaction's snapshot
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the state database {path}: {exc}") from exc
    return reader


CHECKPOINT_WAL_BYTES = 16 * 1024 * 1024  # checkpoint once the WAL file is this large
SLOW_SYNC_S = 0.001  # syncs slower than this, on average, go to a worker thread


class WalSync:
    """Makes the commits of a WAL database durable with an fsync of the WAL file, outside COMMIT.

    With ``synchronous=FULL`` every COMMIT waits for an fsync on the event loop, and the
    automatic checkpoint syncs the database file there too. On a busy disk either can take
    tens of milliseconds, and no executor gets work meanwhile. Here ``conn`` runs with
    ``synchronous=NORMAL`` and no automatic checkpoint, so COMMIT only writes to the WAL
    file, and ``sync`` fsyncs that file: every transaction committed before the call is
    then as durable as under FULL. Once the WAL file has grown past
    ``CHECKPOINT_WAL_BYTES``, ``checkpoint_due`` turns true, and ``checkpoint`` copies the
    WAL into the database file from a connection of its own: a passive checkpoint, which
    never blocks the writer, meant for a worker thread (copying 16 MiB takes milliseconds).

    Handing a sync to a thread costs some CPU, more than a fast disk's fsync takes, so
    ``slow`` tells the caller whether recent syncs averaged over ``SLOW_SYNC_S``.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self.wal = path.with_name(path.name + "-wal")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # A WAL file keeps its size when a write starts it over after a checkpoint, so its
        # size would stay past the threshold and every sync would checkpoint. Truncated
        # then, it grows from zero again.
        conn.execute("PRAGMA journal_size_limit=0")
        self._checkpointer: sqlite3.Connection | None = None
        self.average_s = 0.0  # moving average of the time a sync took
        self.wal_bytes = 0  # the WAL file's size at the last sync

    @property
    def slow(self) -> bool:
        return self.average_s > SLOW_SYNC_S

    @property
    def checkpoint_due(self) -> bool:
        return self.wal_bytes >= CHECKPOINT_WAL_BYTES

    def sync(self) -> None:
        """Make every transaction committed so far durable; blocks for an fsync."""
        started = time.perf_counter()
        try:
            self._sync()
        finally:
            self.average_s += (time.perf_counter() - started - self.average_s) / 8

    def _sync(self) -> None:
        try:
            try:
                fd = os.open(self.wal, os.O_RDONLY)
            except FileNotFoundError:
                self.wal_bytes = 0
                return  # closed: the last connection checkpointed the WAL into the database and synced it
            try:
                os.fsync(fd)
                self.wal_bytes = os.fstat(fd).st_size
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"cannot write the state database {self.path} to disk: {exc}") from exc

    def checkpoint(self) -> None:
        """Copy the WAL's committed pages into the database file. Run one call at a time, from any thread."""
        try:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._checkpointer.execute("PRAGMA busy_timeout=5000")
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write the state database {self.path} to disk: {exc}") from exc
        self.wal_bytes = 0  # the next sync measures the file again

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
