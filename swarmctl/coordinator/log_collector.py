"""Storage of executor log lines and running tests' live output in ``logs.db``, next to ``state.db``.

Logs live in their own SQLite file so that they never share a write lock or a WAL with the
results. The file uses ``synchronous=NORMAL``: in WAL mode a power loss may then lose the
last batches but never corrupts the file, and a log batch is not worth an fsync that would
compete with the fsync of each result commit.

Retention is applied on write: ``add`` and ``add_output`` delete rows older than
``max_age_s`` and the oldest rows beyond ``max_rows`` in each table, at most once every
``prune_interval_s``. Logs are not replicated
to standby coordinators, so a failover starts with the new leader's own file.

``LogReader`` opens the file read-only for ``swarmctl logs``.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmctl.errors import StoreError

log = logging.getLogger(__name__)

LOGS_DB = "logs.db"
MAX_AGE_S = 7 * 24 * 3600.0
MAX_ROWS = 1_000_000
PRUNE_INTERVAL_S = 60.0
BUSY_TIMEOUT_MS = 5000

SCHEMA = """
CREATE TABLE IF NOT EXISTS log_lines (
    id INTEGER PRIMARY KEY,
    executor TEXT NOT NULL,
    time REAL NOT NULL,
    level TEXT NOT NULL,
    logger TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_lines_executor_time ON log_lines (executor, time);
CREATE TABLE IF NOT EXISTS case_output (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    executor TEXT NOT NULL,
    stream TEXT NOT NULL,
    time REAL NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS case_output_case ON case_output (run_id, case_id, id);
"""

# One piece of live output longer than this is cut. Executors send at most 256 KiB per test in
# pieces of what a test wrote in half a second, so only a broken or hostile executor hits it.
MAX_OUTPUT_PIECE_CHARS = 256 * 1024


@dataclass(frozen=True, slots=True)
class LogLine:
    """One stored log record of an executor."""

    id: int  # increases in insertion order; `swarmctl logs --follow` reads past the last one seen
    executor: str
    time: float  # Unix time on the executor's clock
    level: str
    logger: str
    message: str


@dataclass(frozen=True, slots=True)
class OutputPiece:
    """Part of a running test's captured output, as its executor sent it."""

    id: int  # increases in insertion order
    run_id: str
    case_id: str
    attempt: int  # the shard attempt that ran the test
    executor: str
    stream: str  # stdout or stderr
    time: float  # Unix time on the executor's clock
    text: str


class LogCollector:
    """Writes executors' ``LogBatch`` lines and ``CaseOutput`` pieces to ``logs.db`` and prunes them by age and count."""

    def __init__(
        self,
        path: Path,
        *,
        max_age_s: float = MAX_AGE_S,
        max_rows: int = MAX_ROWS,
        prune_interval_s: float = PRUNE_INTERVAL_S,
    ) -> None:
        self.path = path
        self.max_age_s = max_age_s
        self.max_rows = max_rows
        self.prune_interval_s = prune_interval_s
        self.pruned_at = -math.inf
        self.failures = 0  # batches lost to SQLite errors
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.conn.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the log database {path}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()

    def add(self, executor: str, lines: Sequence[Sequence[Any]], now: float) -> list[list[Any]]:
        """Store one batch of ``[time, level, logger, message]`` lines in one transaction, then prune if due.

        Return the lines as stored, with those types, for passing on to subscribers. A batch
        that is malformed or cannot be stored is dropped and logged, and [] returned, so that
        logs never stop the coordinator from serving the executor that sent them.
        """
        try:
            rows = [(executor, float(t), str(level), str(logger), str(message)) for t, level, logger, message in lines]
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany(
                    "INSERT INTO log_lines (executor, time, level, logger, message) VALUES (?, ?, ?, ?, ?)", rows
                )
            if now - self.pruned_at >= self.prune_interval_s:
                self.prune(now)
        except (sqlite3.Error, ValueError, TypeError) as exc:
            self.failures += 1
            # Count repeats: a full disk would otherwise log once per batch.
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning(
                    "dropped a batch of %d log lines of executor %s: cannot store it in %s: %s (%d batches dropped so far)",
                    len(lines), executor, self.path, exc, self.failures,
                )
            return []
        return [list(row[1:]) for row in rows]

    def add_output(self, executor: str, chunks: Sequence[Sequence[Any]], now: float) -> list[list[Any]]:
        """Store ``[run_id, shard_id, attempt, case_id, stream, time, text]`` pieces of live output in one transaction.

        As with ``add``, return the pieces as stored, or [] when the batch is malformed or
        cannot be stored, which is logged.
        """
        try:
            pieces = [
                [str(run_id), int(shard_id), int(attempt), str(case_id), _stream(stream), float(t), _text(text)]
                for run_id, shard_id, attempt, case_id, stream, t, text in chunks
            ]
            rows = [(run_id, case_id, attempt, executor, stream, t, text) for run_id, _, attempt, case_id, stream, t, text in pieces]
            with self.conn:
                self.conn.execute("BEGIN")
                self.conn.executemany(
                    "INSERT INTO case_output (run_id, case_id, attempt, executor, stream, time, text) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            if now - self.pruned_at >= self.prune_interval_s:
                self.prune(now)
        except (sqlite3.Error, ValueError, TypeError) as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning(
                    "dropped %d pieces of live test output of executor %s: cannot store them in %s: %s (%d batches dropped so far)",
                    len(chunks), executor, self.path, exc, self.failures,
                )
            return []
        return pieces

    def prune(self, now: float) -> int:
        """Delete rows older than ``max_age_s`` and the oldest beyond ``max_rows`` per table, and return the number deleted."""
        self.pruned_at = now
        deleted = 0
        with self.conn:
            self.conn.execute("BEGIN")
            for table in ("log_lines", "case_output"):
                deleted += self.conn.execute(f"DELETE FROM {table} WHERE time < ?", (now - self.max_age_s,)).rowcount
                # Ids grow in insertion order, which is close to time order and needs no index on time.
                deleted += self.conn.execute(
                    f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (self.max_rows,),
                ).rowcount
        return deleted

    def count(self) -> int:
        return self.conn.execute("SELECT count(*) FROM log_lines").fetchone()[0]


class LogReader:
    """Read-only queries over a ``logs.db``, safe while a coordinator writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the log database {path}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()

    def lines(
        self,
        executors: Sequence[str],
        *,
        since: float = -math.inf,
        until: float = math.inf,
        after_id: int = 0,
    ) -> list[LogLine]:
        """Return the lines of ``executors`` with ``since <= time <= until`` and an id above ``after_id``, in time order."""
        if not executors:
            return []
        marks = ",".join("?" * len(executors))
        try:
            rows = self.conn.execute(
                "SELECT id, executor, time, level, logger, message FROM log_lines "
                f"WHERE executor IN ({marks}) AND time >= ? AND time <= ? AND id > ? ORDER BY time, id",
                [*executors, since, until, after_id],
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the log database {self.path}: {exc}") from exc
        return [LogLine(*row) for row in rows]

    def output(self, run_id: str, case_id: str, *, after_id: int = 0) -> list[OutputPiece]:
        """Return the live output pieces of one test with an id above ``after_id``, oldest first."""
        try:
            rows = self.conn.execute(
                "SELECT id, run_id, case_id, attempt, executor, stream, time, text FROM case_output "
                "WHERE run_id = ? AND case_id = ? AND id > ? ORDER BY id",
                (run_id, case_id, after_id),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the log database {self.path}: {exc}") from exc
        return [OutputPiece(*row) for row in rows]


def _text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"invalid output text of type {type(text).__name__}: expected a string")
    return text[:MAX_OUTPUT_PIECE_CHARS]


def _stream(name: Any) -> str:
    if name not in ("stdout", "stderr"):
        raise ValueError(f"invalid output stream {name!r}: expected stdout or stderr")
    return name
