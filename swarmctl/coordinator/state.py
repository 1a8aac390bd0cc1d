"""The coordinator's state machine: commands in, SQLite rows and an in-memory view out.

``StateMachine.apply`` is deterministic: everything it needs (ids, times, the term) is in the
command. It writes the command to the log and its effect to the tables in one transaction,
then updates the in-memory view that the scheduler reads. On start the view is rebuilt from
the tables, so a restarted coordinator continues where the last committed command left it.

Exactly-once results: the first committed result for a case wins. A later copy of the same
case (a resent batch) is counted in ``runs.duplicates`` and otherwise ignored. A result from
a shard attempt that has ended (its lease lapsed, its executor was lost or gave the shard
back) is fenced: counted in ``runs.fenced`` and ignored, even when the case has no result
yet, because the attempt that replaced it may already be running the case.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator.dependencies import resolve
from swarmctl.errors import StoreError
from swarmctl.results import FAILING_OUTCOMES, OUTCOMES, CaseResult

log = logging.getLogger(__name__)


class RunStatus(enum.StrEnum):
    COLLECTING = "collecting"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class ShardStatus(enum.StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    DONE = "done"


@dataclass(slots=True)
class ShardState:
    run_id: str
    shard_id: int
    cases: list[int]
    attempt: int = 0
    status: ShardStatus = ShardStatus.QUEUED
    executor: str | None = None
    not_before: float = 0.0  # Unix time before which it must not start (retry backoff)
    avoid: str | None = None  # executor to avoid when another one is free (where it failed)
    lost_on: list[str] = field(default_factory=list)  # executors that lost an attempt of it


@dataclass(slots=True)
class RunState:
    run_id: str
    submitted_at: float
    suite: dict[str, Any]
    strategy: str
    status: RunStatus
    case_ids: list[str] = field(default_factory=list)
    collect_only: set[int] = field(default_factory=set)  # indexes of collection-time results
    done: set[int] = field(default_factory=set)  # indexes with a recorded result
    shards: dict[int, ShardState] = field(default_factory=dict)
    queue: deque[int] = field(default_factory=deque)  # queued shard ids, oldest first
    index: dict[str, int] = field(default_factory=dict)  # case id -> index
    deselected: int = 0
    duplicates: int = 0
    exit_code: int | None = None
    error: str = ""
    finished_at: float | None = None
    executors: set[str] = field(default_factory=set)
    deadline_at: float | None = None
    priority: int = 0  # higher runs first
    retries: int = 0  # extra attempts for a failed or errored test
    start_at: float | None = None  # Unix time before which the run does not start
    tries: dict[int, int] = field(default_factory=dict)  # case index -> failed attempts so far
    retry_pending: list[int] = field(default_factory=list)  # failed cases waiting for a retry shard
    failed_on: dict[int, str] = field(default_factory=dict)  # case index -> executor of its last failure
    imported_durations: dict[str, float] = field(default_factory=dict)  # from swarmctl run --durations-from
    deps: dict[int, list[int]] = field(default_factory=dict)  # case index -> indexes it depends on
    group: str = "none"  # tests kept together in one shard: none, module, class or file
    waiting_on: dict[int, set[int]] = field(default_factory=dict)  # scheduler cache: shard -> unmet needs
    requires: dict[int, dict[str, str]] = field(default_factory=dict)  # case index -> labels its executor needs
    fenced: int = 0  # results ignored because their shard attempt had ended

    @property
    def total(self) -> int:
        return len(self.case_ids)

    @property
    def active(self) -> bool:
        return self.status in (RunStatus.COLLECTING, RunStatus.RUNNING)

    def runnable_ids(self) -> list[int]:
        return [i for i in range(len(self.case_ids)) if i not in self.collect_only]

    def shard_requires(self, shard_id: int) -> dict[str, str]:
        """Return the labels an executor needs for the shard (planning keeps a shard's cases alike)."""
        cases = self.shards[shard_id].cases
        return self.requires.get(cases[0], {}) if cases and self.requires else {}


class StateMachine:
    """Applies commands to SQLite and keeps the in-memory view of runs and shards."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.runs: dict[str, RunState] = {}
        self.cordoned: set[str] = set()  # executors that get no new work
        self.revoked_tokens: set[str] = set()  # ids of access tokens that are rejected
        self.gossip_keyring: tuple[list[int], int] = ([0], 0)  # accepted key generations, sealing generation
        # On the leader of a replicated cluster: appends each command to the replicated log
        # and returns its log index. None on a single coordinator and while following.
        self.replicate: Callable[[str, bytes], int] | None = None
        # Group commit: when set, commands share one transaction until ``flush``, and this is
        # called after each one, so the owner can schedule the flush. None: one transaction
        # per command.
        self.on_pending: Callable[[], None] | None = None
        row = conn.execute("SELECT max(idx) FROM log").fetchone()
        self.last_index = row[0] or 0
        self._load()

    # --- applying commands ---------------------------------------------------------------

    def apply(self, command: cmd.Command, term: int = 0, index: int | None = None) -> list[tuple[str, dict]]:
        """Apply ``command`` durably; return the results it recorded that were new, in wire form.

        ``index`` is the command's place in the replicated log when a follower applies a
        committed entry. A leader's command gets its index from ``replicate``, and a single
        coordinator's the next free one.
        """
        kind, body = cmd.encode_command(command)
        if index is None:
            index = self.replicate(kind, body) if self.replicate is not None else self.last_index + 1
        grouped = self.on_pending is not None
        try:
            if not self.conn.in_transaction:
                self.conn.execute("BEGIN IMMEDIATE")
            if grouped:
                self.conn.execute("SAVEPOINT command")
            self.conn.execute("INSERT INTO log (idx, term, kind, body) VALUES (?, ?, ?, ?)", (index, term, kind, body))
            effects = self._dispatch(command)
            self.conn.execute("RELEASE command" if grouped else "COMMIT")
        except Exception as exc:
            if self.conn.in_transaction and grouped:
                # A failed command in a group takes back only its own writes.
                self.conn.execute("ROLLBACK TO command")
                self.conn.execute("RELEASE command")
            elif self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._load()  # the in-memory view may have moved ahead of the rolled-back rows
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot apply {kind} command: {exc}") from exc
            raise
        self.last_index = index
        if grouped:
            self.on_pending()
        return effects

    def flush(self) -> None:
        """Commit the commands applied since the last flush, with one durable write."""
        if not self.conn.in_transaction:
            return
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self._load()
            raise StoreError(f"cannot commit the coordinator state: {exc}") from exc

    def _dispatch(self, command: cmd.Command) -> list[tuple[str, dict]]:
        match command:
            case cmd.RunSubmitted():
                self._run_submitted(command)
            case cmd.RunCollected():
                return self._run_collected(command)
            case cmd.ShardsPlanned():
                self._shards_planned(command)
            case cmd.ShardAssigned():
                self._shard_assigned(command)
            case cmd.ResultsRecorded():
                return self._results_recorded(command.at, command.items)
            case cmd.ShardFinished():
                self._shard_finished(command)
            case cmd.ShardRequeued():
                self._shard_requeued(command)
            case cmd.RetryPlanned():
                self._retry_planned(command)
            case cmd.TestsSplit():
                self._tests_split(command)
            case cmd.RunFinished():
                self._run_finished(command)
            case cmd.ExecutorCordoned():
                self._executor_cordoned(command)
            case cmd.TokenRevoked():
                self._token_revoked(command)
            case cmd.GossipKeyringChanged():
                self._gossip_keyring_changed(command)
            case _:
                raise StoreError(f"no handler for command {command!r}")
        return []

    def _run_submitted(self, c: cmd.RunSubmitted) -> None:
        run = RunState(
            c.run_id, c.at, c.suite, c.strategy, RunStatus.COLLECTING,
            deadline_at=c.deadline_at, priority=c.priority, retries=c.retries, start_at=c.start_at,
            imported_durations=dict(c.durations or {}), group=c.group,
        )
        self.conn.execute(
            "INSERT INTO runs (run_id, submitted_at, status, suite, strategy, deadline_at, priority, retries, start_at, "
            "durations, grouping) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (c.run_id, c.at, run.status, msgpack.packb(c.suite), c.strategy, c.deadline_at, c.priority, c.retries,
             c.start_at, msgpack.packb(c.durations) if c.durations else None, c.group),
        )
        self.runs[c.run_id] = run
        if c.case_ids is not None:
            self._set_cases(run, c.case_ids, [], 0, c.dependencies, c.requirements)

    def _run_collected(self, c: cmd.RunCollected) -> list[tuple[str, dict]]:
        run = self.runs[c.run_id]
        self._set_cases(
            run, c.case_ids, [r["case_id"] for r in c.collect_results], c.deselected, c.dependencies, c.requirements
        )
        items = [[c.run_id, -1, 1, c.executor, r] for r in c.collect_results]
        return self._results_recorded(c.at, items)

    def _set_cases(
        self, run: RunState, case_ids: list[str], collect_ids: list[str], deselected: int,
        dependencies: dict[str, list[str]] | None = None,
        requirements: dict[str, dict[str, str]] | None = None,
    ) -> None:
        all_ids = collect_ids + case_ids
        run.case_ids = all_ids
        # The leader validated the dependencies before it applied the command.
        run.deps = resolve(all_ids, dependencies or {})
        run.collect_only = set(range(len(collect_ids)))
        run.index = {case_id: i for i, case_id in reversed(list(enumerate(all_ids)))}
        run.requires = _requirements_by_index(run.index, requirements)
        run.deselected = deselected
        run.status = RunStatus.RUNNING
        self.conn.executemany(
            "INSERT INTO cases (run_id, idx, case_id, collect_only) VALUES (?, ?, ?, ?)",
            ((run.run_id, i, case_id, i in run.collect_only) for i, case_id in enumerate(all_ids)),
        )
        self.conn.execute(
            "UPDATE runs SET status = ?, total = ?, deselected = ?, dependencies = ?, requirements = ? WHERE run_id = ?",
            (run.status, run.total, deselected, msgpack.packb(dependencies) if dependencies else None,
             msgpack.packb(requirements) if requirements else None, run.run_id),
        )

    def _shards_planned(self, c: cmd.ShardsPlanned) -> None:
        run = self.runs[c.run_id]
        for shard_id, cases in enumerate(c.shards):
            run.shards[shard_id] = ShardState(c.run_id, shard_id, list(cases))
            run.queue.append(shard_id)
        self.conn.executemany(
            "INSERT INTO shards (run_id, shard_id, cases, attempt, state) VALUES (?, ?, ?, 0, ?)",
            ((c.run_id, i, msgpack.packb(cases), ShardStatus.QUEUED) for i, cases in enumerate(c.shards)),
        )

    def _shard_assigned(self, c: cmd.ShardAssigned) -> None:
        run = self.runs[c.run_id]
        shard = run.shards[c.shard_id]
        shard.attempt, shard.status, shard.executor = c.attempt, ShardStatus.ASSIGNED, c.executor
        if c.shard_id in run.queue:
            run.queue.remove(c.shard_id)
        run.executors.add(c.executor)
        self.conn.execute(
            "UPDATE shards SET attempt = ?, state = ?, executor = ? WHERE run_id = ? AND shard_id = ?",
            (c.attempt, shard.status, c.executor, c.run_id, c.shard_id),
        )
        self.conn.execute(
            "INSERT INTO attempts (run_id, shard_id, attempt, executor, term, assigned_at) VALUES (?, ?, ?, ?, ?, ?)",
            (c.run_id, c.shard_id, c.attempt, c.executor, c.term, c.at),
        )

    def _results_recorded(self, at: float, items: list[list[Any]]) -> list[tuple[str, dict]]:
        new: list[tuple[str, dict]] = []
        rows = []
        tries = []
        duplicates: dict[str, int] = {}
        fenced: dict[str, int] = {}
        for run_id, shard_id, attempt, executor, data in items:
            run = self.runs.get(run_id)
            if run is None:
                log.warning("result for unknown run %s ignored", run_id)
                continue
            idx = run.index.get(data.get("case_id"))
            if idx is None or data.get("outcome") not in OUTCOMES:
                log.warning("run %s: result for unknown case %r or outcome %r ignored", run_id, data.get("case_id"), data.get("outcome"))
                continue
            shard = run.shards.get(shard_id)
            if idx in run.done or idx in run.retry_pending or not run.active:
                duplicates[run_id] = duplicates.get(run_id, 0) + 1
                continue
            # Results the coordinator records itself (no executor) are never fenced.
            # Matching the executor too fences an attempt that a deposed leader handed out with
            # a number the new leader gave to another executor.
            if executor and shard is not None and (
                shard.attempt != attempt or shard.status is not ShardStatus.ASSIGNED or idx not in shard.cases
                or shard.executor != executor
            ):
                fenced[run_id] = fenced.get(run_id, 0) + 1
                continue

            # The executor and attempt are stamped here: the worker that produced the result
            # does not know them, and the coordinator must not trust a peer's claim anyway.
            # The attempt counts this case's earlier failed tries as well as reassignments.
            previous = run.tries.get(idx, 0)
            data = {**data, "executor": executor, "attempt": attempt + previous}
            if shard is not None and shard.lost_on:
                data["reassigned_from"] = list(shard.lost_on)
            body = msgpack.packb(data, use_bin_type=True, unicode_errors="surrogatepass")
            tries.append((run_id, idx, previous + 1, data["outcome"], executor, at, body))

            if self._retryable(run, idx, data):
                run.tries[idx] = previous + 1
                run.retry_pending.append(idx)
                run.failed_on[idx] = executor
                if shard is not None:
                    shard.cases.remove(idx)
                    self.conn.execute(
                        "UPDATE shards SET cases = ? WHERE run_id = ? AND shard_id = ?",
                        (msgpack.packb(shard.cases), run_id, shard_id),
                    )
                continue

            if previous and data["outcome"] not in FAILING_OUTCOMES:
                data["flaky"] = True
                body = msgpack.packb(data, use_bin_type=True, unicode_errors="surrogatepass")
            run.done.add(idx)
            if executor:  # results the coordinator records itself (not run, skipped) have none
                run.executors.add(executor)
            rows.append((run_id, idx, data["case_id"], data["outcome"], data.get("duration", 0.0), executor, data["attempt"], at, body))
            new.append((run_id, data))
        self.conn.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self.conn.executemany("INSERT INTO case_attempts VALUES (?, ?, ?, ?, ?, ?, ?)", tries)
        for run_id, count in duplicates.items():
            self.runs[run_id].duplicates += count
            self.conn.execute("UPDATE runs SET duplicates = duplicates + ? WHERE run_id = ?", (count, run_id))
            log.info("run %s: %d duplicate results ignored (first result wins)", run_id, count)
        for run_id, count in fenced.items():
            self.runs[run_id].fenced += count
            self.conn.execute("UPDATE runs SET fenced = fenced + ? WHERE run_id = ?", (count, run_id))
            log.warning("run %s: %d results from ended shard attempts fenced (ignored)", run_id, count)
        return new

    @staticmethod
    def _retryable(run: RunState, idx: int, data: dict) -> bool:
        """Return whether a result is a failed try that gets another attempt instead of being final."""
        return (
            data.get("outcome") in FAILING_OUTCOMES
            and data.get("when") != "collect"
            and idx not in run.collect_only
            and run.tries.get(idx, 0) < run.retries
        )

    def _tests_split(self, c: cmd.TestsSplit) -> None:
        run = self.runs[c.run_id]
        shard = run.shards[c.shard_id]
        moved = [case for case in c.cases if case in shard.cases and case not in run.done]
        shard.cases = [case for case in shard.cases if case not in moved]
        run.waiting_on.pop(c.shard_id, None)
        run.shards[c.new_shard_id] = ShardState(c.run_id, c.new_shard_id, moved)
        run.queue = deque(sorted([*run.queue, c.new_shard_id]))
        self.conn.execute(
            "UPDATE shards SET cases = ? WHERE run_id = ? AND shard_id = ?",
            (msgpack.packb(shard.cases), c.run_id, c.shard_id),
        )
        self.conn.execute(
            "INSERT INTO shards (run_id, shard_id, cases, attempt, state) VALUES (?, ?, ?, 0, ?)",
            (c.run_id, c.new_shard_id, msgpack.packb(moved), ShardStatus.QUEUED),
        )

    def _retry_planned(self, c: cmd.RetryPlanned) -> None:
        run = self.runs[c.run_id]
        shard = ShardState(c.run_id, c.shard_id, list(c.cases), not_before=c.not_before, avoid=c.avoid)
        run.shards[c.shard_id] = shard
        run.queue = deque(sorted([*run.queue, c.shard_id]))
        run.retry_pending = [i for i in run.retry_pending if i not in c.cases]
        self.conn.execute(
            "INSERT INTO shards (run_id, shard_id, cases, attempt, state, not_before, avoid) VALUES (?, ?, ?, 0, ?, ?, ?)",
            (c.run_id, c.shard_id, msgpack.packb(shard.cases), ShardStatus.QUEUED, c.not_before, c.avoid),
        )

    def _shard_finished(self, c: cmd.ShardFinished) -> None:
        run = self.runs[c.run_id]
        shard = run.shards[c.shard_id]
        shard.status = ShardStatus.DONE
        if c.shard_id in run.queue:
            run.queue.remove(c.shard_id)  # finished without running: its cases were all settled
        self.conn.execute(
            "UPDATE shards SET state = ? WHERE run_id = ? AND shard_id = ?", (shard.status, c.run_id, c.shard_id)
        )
        self._end_attempt(c.run_id, c.shard_id, c.attempt, c.at, "finished")

    def _shard_requeued(self, c: cmd.ShardRequeued) -> None:
        run = self.runs[c.run_id]
        shard = run.shards[c.shard_id]
        shard.cases = [i for i in shard.cases if i not in run.done]
        run.waiting_on.pop(c.shard_id, None)
        if c.lost and shard.executor:
            shard.lost_on.append(shard.executor)
        shard.executor = None
        shard.status = ShardStatus.QUEUED if shard.cases else ShardStatus.DONE
        if shard.status is ShardStatus.QUEUED:
            # Queued shards wait in shard-id order, the order a restarted coordinator rebuilds;
            # a requeued shard has an older id than unstarted ones, so it goes near the front.
            run.queue = deque(sorted([*run.queue, c.shard_id]))
        self.conn.execute(
            "UPDATE shards SET cases = ?, state = ?, executor = NULL, lost_on = ? WHERE run_id = ? AND shard_id = ?",
            (msgpack.packb(shard.cases), shard.status, msgpack.packb(shard.lost_on) if shard.lost_on else None,
             c.run_id, c.shard_id),
        )
        self._end_attempt(c.run_id, c.shard_id, c.attempt, c.at, c.reason)

    def _end_attempt(self, run_id: str, shard_id: int, attempt: int, at: float, reason: str) -> None:
        self.conn.execute(
            "UPDATE attempts SET ended_at = ?, end_reason = ? WHERE run_id = ? AND shard_id = ? AND attempt = ?",
            (at, reason, run_id, shard_id, attempt),
        )

    def _run_finished(self, c: cmd.RunFinished) -> None:
        run = self.runs[c.run_id]
        run.status, run.exit_code, run.error, run.finished_at = RunStatus(c.status), c.exit_code, c.error, c.at
        run.queue.clear()
        self.conn.execute(
            "UPDATE runs SET status = ?, exit_code = ?, error = ?, finished_at = ? WHERE run_id = ?",
            (run.status, c.exit_code, c.error, c.at, c.run_id),
        )
        # Durations of tests that ran to a verdict feed the next plan of the same suite; skips,
        # and errors such as "not run", say nothing about how long a test takes.
        self.conn.execute(
            "INSERT INTO durations (suite_key, case_id, seconds, run_id) "
            "SELECT ?, case_id, duration, run_id FROM results "
            "WHERE run_id = ? AND outcome IN ('passed', 'failed', 'xfailed', 'xpassed', 'timed_out') "
            "ON CONFLICT (suite_key, case_id) DO UPDATE SET seconds = excluded.seconds, run_id = excluded.run_id",
            (suite_key(run.suite), c.run_id),
        )
        # The view contains unfinished runs only, as after a restart. A follower that applies
        # the end of a run drops it here, and so does the leader.
        del self.runs[c.run_id]

    def _executor_cordoned(self, c: cmd.ExecutorCordoned) -> None:
        if c.cordoned:
            self.cordoned.add(c.executor_id)
            self.conn.execute(
                "INSERT INTO cordons (executor_id, at) VALUES (?, ?) ON CONFLICT (executor_id) DO UPDATE SET at = excluded.at",
                (c.executor_id, c.at),
            )
        else:
            self.cordoned.discard(c.executor_id)
            self.conn.execute("DELETE FROM cordons WHERE executor_id = ?", (c.executor_id,))

    def _token_revoked(self, c: cmd.TokenRevoked) -> None:
        self.revoked_tokens.add(c.token_id)
        self.conn.execute(
            "INSERT INTO revoked_tokens (token_id, at) VALUES (?, ?) ON CONFLICT (token_id) DO NOTHING", (c.token_id, c.at)
        )

    def _gossip_keyring_changed(self, c: cmd.GossipKeyringChanged) -> None:
        self.gossip_keyring = (sorted(c.generations), c.primary)
        self.conn.execute("DELETE FROM gossip_keyring")
        self.conn.executemany(
            "INSERT INTO gossip_keyring (generation, is_primary, at) VALUES (?, ?, ?)",
            [(generation, int(generation == c.primary), c.at) for generation in c.generations],
        )

    def durations(self, suite: dict[str, Any]) -> dict[str, float]:
        """Return the last known duration of each test of a suite, in seconds."""
        rows = self.conn.execute("SELECT case_id, seconds FROM durations WHERE suite_key = ?", (suite_key(suite),))
        return dict(rows.fetchall())

    # --- reading ------------------------------------------------------------------------

    def results(self, run_id: str) -> list[CaseResult]:
        """Return every recorded result of a run, in case order."""
        return read_results(self.conn, run_id)

    def _load(self) -> None:
        """Rebuild the in-memory view of unfinished runs from the tables."""
        self.runs.clear()
        self.cordoned = {executor_id for (executor_id,) in self.conn.execute("SELECT executor_id FROM cordons")}
        self.revoked_tokens = {token_id for (token_id,) in self.conn.execute("SELECT token_id FROM revoked_tokens")}
        keyring = self.conn.execute("SELECT generation, is_primary FROM gossip_keyring ORDER BY generation").fetchall()
        if keyring:
            self.gossip_keyring = ([generation for generation, _ in keyring], next(g for g, primary in keyring if primary))
        active = (RunStatus.COLLECTING, RunStatus.RUNNING)
        rows = self.conn.execute(
            "SELECT run_id, submitted_at, suite, strategy, status, deselected, duplicates, deadline_at, priority, "
            "retries, start_at, durations, dependencies, grouping, requirements, fenced FROM runs "
            "WHERE status IN (?, ?) ORDER BY submitted_at",
            active,
        ).fetchall()
        for (run_id, submitted_at, suite, strategy, status, deselected, duplicates, deadline_at, priority, retries,
             start_at, durations, dependencies, grouping, requirements, fenced) in rows:
            run = RunState(
                run_id, submitted_at, msgpack.unpackb(suite, raw=False), strategy, RunStatus(status),
                deadline_at=deadline_at, priority=priority, retries=retries, start_at=start_at,
                imported_durations=msgpack.unpackb(durations, raw=False) if durations else {}, group=grouping,
            )
            run.deselected, run.duplicates, run.fenced = deselected, duplicates, fenced
            for idx, case_id, collect_only in self.conn.execute(
                "SELECT idx, case_id, collect_only FROM cases WHERE run_id = ? ORDER BY idx", (run_id,)
            ):
                run.case_ids.append(case_id)
                run.index.setdefault(case_id, idx)
                if collect_only:
                    run.collect_only.add(idx)
            if dependencies:
                run.deps = resolve(run.case_ids, msgpack.unpackb(dependencies, raw=False))
            if requirements:
                run.requires = _requirements_by_index(run.index, msgpack.unpackb(requirements, raw=False))
            run.done = {idx for (idx,) in self.conn.execute("SELECT idx FROM results WHERE run_id = ?", (run_id,))}
            run.executors = {
                executor
                for (executor,) in self.conn.execute(
                    "SELECT executor FROM attempts WHERE run_id = ? UNION SELECT executor FROM results WHERE run_id = ?",
                    (run_id, run_id),
                )
            }
            for shard_id, cases, attempt, state, executor, not_before, avoid, lost_on in self.conn.execute(
                "SELECT shard_id, cases, attempt, state, executor, not_before, avoid, lost_on FROM shards "
                "WHERE run_id = ? ORDER BY shard_id",
                (run_id,),
            ):
                shard = ShardState(
                    run_id, shard_id, msgpack.unpackb(cases), attempt, ShardStatus(state), executor, not_before or 0.0,
                    avoid, msgpack.unpackb(lost_on, raw=False) if lost_on else [],
                )
                run.shards[shard_id] = shard
                if shard.status is ShardStatus.QUEUED:
                    run.queue.append(shard_id)

            # Failed tries: a case with tries but no final result waits for a retry, unless a
            # queued or running shard already holds it.
            for idx, count, executor in self.conn.execute(
                "SELECT idx, count(*), executor FROM case_attempts WHERE run_id = ? GROUP BY idx", (run_id,)
            ):
                if idx not in run.done:
                    run.tries[idx], run.failed_on[idx] = count, executor
            in_shards = {i for shard in run.shards.values() if shard.status is not ShardStatus.DONE for i in shard.cases}
            run.retry_pending = sorted(idx for idx in run.tries if idx not in in_shards)
            self.runs[run_id] = run


def read_results(conn: sqlite3.Connection, run_id: str) -> list[CaseResult]:
    """Return every recorded result of a run in ``conn``, in case order."""
    rows = conn.execute("SELECT body FROM results WHERE run_id = ? ORDER BY idx", (run_id,))
    return [CaseResult.from_wire(msgpack.unpackb(body, raw=False, unicode_errors="surrogatepass")) for (body,) in rows]


def _requirements_by_index(
    index: dict[str, int], requirements: dict[str, dict[str, str]] | None
) -> dict[int, dict[str, str]]:
    return {index[case_id]: dict(labels) for case_id, labels in (requirements or {}).items() if labels and case_id in index}


def suite_key(suite: dict[str, Any]) -> str:
    """Name a suite across runs: its kind and folder name (the bundle changes with every edit)."""
    name = str(suite.get("name", "")).rstrip("/").rpartition("/")[2]
    return f"{suite.get('kind', '')}:{name}"
