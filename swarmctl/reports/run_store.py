"""Read-only access to the runs kept in a coordinator's state database.

The database (``state.db`` in a data folder) belongs to the coordinator that writes it,
which may be running while a report is made. This module therefore opens it with
``mode=ro``, never writes or migrates it, and reads each run inside one read transaction,
so a run's summary and results come from the same committed state. In WAL mode a reader
does not block the writer.

Result bodies are msgpack maps of ``CaseResult.to_wire()``, decoded here exactly as
``StateMachine.results`` decodes them. Errors from sqlite3 and msgpack become
``StoreError``; a run id or a folder that does not exist is a ``UsageError``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from swarmctl.coordinator.state import suite_key
from swarmctl.coordinator.store import SCHEMA_VERSION
from swarmctl.errors import StoreError, UsageError
from swarmctl.reports.statistics import pass_rate
from swarmctl.reports.summary import exit_code_for
from swarmctl.results import FAILING_OUTCOMES, OUTCOMES, CaseResult, RunSummary

STATE_DB = "state.db"
BUSY_TIMEOUT_MS = 5000  # how long a read waits while the coordinator recovers the WAL
LISTED_IN_ERRORS = 5  # run ids an unknown-run error lists
ACTIVE_STATUSES = ("collecting", "running")

# `last` is the newest run and `last~N` the N-th run before it, as in git's `HEAD~N`.
_LAST = re.compile(r"last(?:~(\d+))?")


@dataclass(frozen=True, slots=True)
class RunHeader:
    """One row of the ``runs`` table, without its results."""

    run_id: str
    submitted_at: float  # Unix time
    finished_at: float | None  # Unix time; None while the run is active
    status: str  # collecting, running, finished, interrupted or failed
    exit_code: int | None  # None while the run is active
    suite_name: str  # the suite folder as the user named it to swarmctl run
    suite_key: str  # kind and folder name, the same for every run of one suite
    total: int  # collected test cases
    deselected: int
    error: str

    @property
    def wall_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return self.finished_at - self.submitted_at

    def matches_suite(self, name: str) -> bool:
        """Return whether ``name`` names this run's suite: as given, by folder name, or by key."""
        folder = name.rstrip("/").rpartition("/")[2]
        return name in (self.suite_name, self.suite_key) or self.suite_key.partition(":")[2] == folder


@dataclass(frozen=True, slots=True)
class RunCounts:
    """Final results of one run per outcome, and how many of them were flaky."""

    counts: dict[str, int]
    flaky: int

    @property
    def recorded(self) -> int:
        return sum(self.counts.values())

    @property
    def pass_rate(self) -> float | None:
        return pass_rate(self.counts)


@dataclass(frozen=True, slots=True)
class StoredRun:
    """One run as the database keeps it: summary, final results and earlier failed attempts."""

    header: RunHeader
    summary: RunSummary
    results: list[CaseResult]  # in case order, as `swarmctl run` reports them
    earlier_attempts: dict[str, list[CaseResult]]  # case id -> failed attempts before its final result

    def all_earlier_attempts(self) -> list[CaseResult]:
        return [attempt for attempts in self.earlier_attempts.values() for attempt in attempts]


def database_path(data_dir: Path) -> Path:
    return data_dir / STATE_DB


@contextmanager
def open_run_store(data_dir: Path) -> Iterator[RunStore]:
    """Open the state database of ``data_dir`` read-only, and close it on exit."""
    store = RunStore(database_path(data_dir))
    try:
        yield store
    finally:
        store.close()


class RunStore:
    """Queries over the runs of one state database, opened read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise UsageError(
                f"no state database at {path}: no run has been recorded in {path.parent}. "
                "Run `swarmctl run SUITE` first, or pass --data-dir with the folder of a "
                "coordinator (its `swarmctl up --data-dir`)"
            )
        try:
            # as_uri() percent-encodes the path, so a folder name with '?' or '#' stays a path.
            self.conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the state database {path}: {exc}") from exc
        version = int(row[0]) if row else None
        if version != SCHEMA_VERSION:
            self.conn.close()
            raise StoreError(
                f"{path} has schema version {version}, and this swarmctl reads version {SCHEMA_VERSION}. "
                "A `swarmctl run` or `swarmctl up` of this version upgrades an older database, "
                "and a newer one needs the swarmctl that wrote it"
            )

    def close(self) -> None:
        self.conn.close()

    # --- listing --------------------------------------------------------------------------

    def runs(self) -> list[RunHeader]:
        """Return every run, newest first."""
        rows = self._query(
            "SELECT run_id, submitted_at, finished_at, status, exit_code, suite, total, deselected, error "
            "FROM runs ORDER BY submitted_at DESC, run_id DESC"
        )
        return [_header(row) for row in rows]

    def run_counts(self, run_ids: Iterable[str]) -> dict[str, RunCounts]:
        """Count the final results of each run per outcome, with its flaky results.

        A flaky result is a non-failing final result whose case has an earlier try in
        ``case_attempts``, the rule the state machine uses to set ``flaky``. Counting it
        in SQL saves decoding every result body.
        """
        ids = list(dict.fromkeys(run_ids))
        counts: dict[str, dict[str, int]] = {run_id: {} for run_id in ids}
        flaky = dict.fromkeys(ids, 0)
        failing = sorted(FAILING_OUTCOMES)
        for chunk in _chunks(ids, 500):  # SQLite before 3.32 allows at most 999 parameters
            marks = ",".join("?" * len(chunk))
            for run_id, outcome, count in self._query(
                f"SELECT run_id, outcome, count(*) FROM results WHERE run_id IN ({marks}) GROUP BY run_id, outcome",
                chunk,
            ):
                counts[run_id][outcome] = count
            for run_id, count in self._query(
                f"SELECT r.run_id, count(*) FROM results AS r WHERE r.run_id IN ({marks}) "
                f"AND r.outcome NOT IN ({','.join('?' * len(failing))}) AND EXISTS ("
                "SELECT 1 FROM case_attempts AS a WHERE a.run_id = r.run_id AND a.idx = r.idx AND a.try > 1"
                ") GROUP BY r.run_id",
                [*chunk, *failing],
            ):
                flaky[run_id] = count
        return {run_id: RunCounts(_ordered_counts(counts[run_id]), flaky[run_id]) for run_id in ids}

    def resolve(self, reference: str) -> RunHeader:
        """Return the run named by ``reference``: a run id, ``last`` or ``last~N``.

        Raises UsageError naming the reference and the newest run ids when there is no
        such run.
        """
        runs = self.runs()
        match = _LAST.fullmatch(reference)
        if match is not None:
            back = int(match.group(1) or 0)
            if back < len(runs):
                return runs[back]
        else:
            for header in runs:
                if header.run_id == reference:
                    return header
        raise UsageError(self._unknown_run_message(reference, runs))

    def _unknown_run_message(self, reference: str, runs: Sequence[RunHeader]) -> str:
        if not runs:
            return f"run {reference!r} not found: {self.path} has no runs yet. Run `swarmctl run SUITE` first"
        newest = ", ".join(header.run_id for header in runs[:LISTED_IN_ERRORS])
        return (
            f"run {reference!r} not found in {self.path} ({len(runs)} runs). The newest are: {newest}. "
            "Pass one of those, `last`, or `last~N`, or list them all with `swarmctl history`"
        )

    # --- one run --------------------------------------------------------------------------

    def load(self, reference: str) -> StoredRun:
        """Load one run's summary, final results and earlier failed attempts.

        ``reference`` is anything ``resolve`` takes. A run that is still active gets the
        exit code its results so far would give, and a summary error saying so.
        """
        self._query("BEGIN")  # one snapshot for every query below
        try:
            header = self.resolve(reference)
            rows = self._query("SELECT body FROM results WHERE run_id = ? ORDER BY idx", (header.run_id,))
            results = [_decode(body, header.run_id) for (body,) in rows]
            earlier = self._earlier_attempts(header.run_id)
            summary = self._summary(header, results)
        finally:
            if self.conn.in_transaction:
                self._query("COMMIT")
        return StoredRun(header, summary, results, earlier)

    def _earlier_attempts(self, run_id: str) -> dict[str, list[CaseResult]]:
        try:
            return read_earlier_attempts(self.conn, run_id)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the state database {self.path}: {exc}") from exc

    def _summary(self, header: RunHeader, results: list[CaseResult]) -> RunSummary:
        # The same fields the coordinator sends in RunComplete when a run ends.
        run_id = header.run_id
        executors = sorted(
            executor
            for (executor,) in self._query(
                "SELECT executor FROM attempts WHERE run_id = ? "
                "UNION SELECT executor FROM results WHERE run_id = ? AND executor != ''",
                (run_id, run_id),
            )
        )
        duplicates, fenced = self._query("SELECT duplicates, fenced FROM runs WHERE run_id = ?", (run_id,))[0]

        exit_code, error, ended_at = header.exit_code, header.error, header.finished_at
        if header.status in ACTIVE_STATUSES or exit_code is None:
            exit_code = exit_code_for(results)
            error = f"run is still {header.status}: {len(results)} of {header.total} tests have a result"
            ended_at = self._last_activity(run_id, header.submitted_at)
        return RunSummary(
            run_id=run_id,
            exit_code=exit_code,
            wall_s=(ended_at or header.submitted_at) - header.submitted_at,
            started_at=header.submitted_at,
            suite=header.suite_name,
            deselected=header.deselected,
            error=error,
            executors=executors,
            duplicates=duplicates,
            fenced=fenced,
        )

    def _last_activity(self, run_id: str, default: float) -> float:
        row = self._query(
            "SELECT max(t) FROM (SELECT max(recorded_at) AS t FROM case_attempts WHERE run_id = ? "
            "UNION ALL SELECT max(coalesce(ended_at, assigned_at)) FROM attempts WHERE run_id = ?)",
            (run_id, run_id),
        )[0]
        return row[0] if row[0] is not None else default

    def _query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the state database {self.path}: {exc}") from exc


def read_earlier_attempts(conn: sqlite3.Connection, run_id: str) -> dict[str, list[CaseResult]]:
    """Return each case's failed attempts before its final result, oldest first, by case id."""
    # case_attempts contains every try of a case, the final one included, and the final
    # try has the highest number. Cases with tries but no final result (a run
    # interrupted while a retry waited) are left out, because no report lists them.
    rows = conn.execute(
        "SELECT a.body FROM case_attempts AS a "
        "JOIN (SELECT idx, max(try) AS last FROM case_attempts WHERE run_id = ? GROUP BY idx) AS m "
        "ON a.idx = m.idx "
        "JOIN results AS r ON r.run_id = a.run_id AND r.idx = a.idx "
        "WHERE a.run_id = ? AND a.try < m.last ORDER BY a.idx, a.try",
        (run_id, run_id),
    ).fetchall()
    earlier: dict[str, list[CaseResult]] = {}
    for (body,) in rows:
        attempt = _decode(body, run_id)
        earlier.setdefault(attempt.case_id, []).append(attempt)
    return earlier


def _header(row: tuple) -> RunHeader:
    run_id, submitted_at, finished_at, status, exit_code, suite_blob, total, deselected, error = row
    try:
        suite = msgpack.unpackb(suite_blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise StoreError(f"run {run_id}: its suite record cannot be decoded: {exc}") from exc
    return RunHeader(
        run_id=run_id,
        submitted_at=submitted_at,
        finished_at=finished_at,
        status=status,
        exit_code=exit_code,
        suite_name=str(suite.get("name", "")),
        suite_key=suite_key(suite),
        total=total,
        deselected=deselected,
        error=error,
    )


def _decode(body: bytes, run_id: str) -> CaseResult:
    try:
        return CaseResult.from_wire(msgpack.unpackb(body, raw=False, unicode_errors="surrogatepass"))
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise StoreError(f"run {run_id}: a stored result cannot be decoded ({exc}); it may come from a newer swarmctl") from exc


def _ordered_counts(counts: dict[str, int]) -> dict[str, int]:
    ordered = {outcome: counts[outcome] for outcome in OUTCOMES if outcome in counts}
    ordered.update((outcome, count) for outcome, count in counts.items() if outcome not in ordered)
    return ordered


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
