"""The coordinator's own state under simulation: its commands applied to SQLite by every voter.

``CoordinatorMachine`` is the state machine a voter of a replicated coordinator runs. It
decodes each committed entry into a command of ``swarmctl.coordinator.commands``, and the
real ``StateMachine`` applies it to a SQLite database (in memory here). A snapshot is that
database serialized. ``RunWorkload`` proposes the commands of a few test runs as a leading
coordinator does. It decides each command from the leader's applied state and proposes one
at a time. It proposes only to a leader that applied an entry of its own term, since by
then that leader has every command ever committed. It also loses shards (a new attempt follows) and replays
results of ended attempts, which the state machine must fence.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import msgpack

from swarmctl.cluster.consensus import Entry, EntryKind, Snapshot
from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator import store
from swarmctl.coordinator.state import RunStatus, ShardStatus, StateMachine
from swarmctl.results import FAILED, PASSED
from swarmctl.sim.consensus.state_machine import DIGEST_BYTES, HashChain

SUITE = {"kind": "command", "bundle": "", "name": "simulated"}
EXECUTORS = ("exec-a", "exec-b", "exec-c")


def encode(command: cmd.Command) -> bytes:
    """Return a command as a replicated log entry carries it."""
    return msgpack.packb(list(cmd.encode_command(command)))


def _open_database(data: bytes) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    if data:
        conn.deserialize(data)
    store.prepare_schema(conn, "the simulated state database")
    return conn


class CoordinatorMachine:
    """A voter's coordinator state: the real StateMachine over an in-memory SQLite database.

    A ``HashChain`` beside it gives the digest of the sequence of applied entries after
    each one; ``database_digest`` hashes the database's rows themselves. A snapshot's data is
    that sequence digest followed by the serialized database.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.install(snapshot)

    @property
    def applied(self) -> int:
        return self.chain.applied

    def install(self, snapshot: Snapshot) -> None:
        data = snapshot.data if snapshot.index else b""
        self.chain = HashChain(Snapshot(snapshot.index, snapshot.term, data[:DIGEST_BYTES]))
        self.machine = StateMachine(_open_database(data[DIGEST_BYTES:]))

    def apply(self, entry: Entry) -> bytes:
        """Apply ``entry``, which must follow the last applied one, and return the new sequence digest."""
        if entry.index != self.applied + 1:
            raise AssertionError(f"entry {entry.index} applied after entry {self.applied}")
        if entry.kind is EntryKind.COMMAND:
            kind, body = msgpack.unpackb(entry.command)
            self.machine.apply(cmd.decode_command(kind, body), entry.term, index=entry.index)
        return self.chain.apply(entry)

    def snapshot_data(self) -> bytes:
        return self.chain.digest + self.machine.conn.serialize()

    def database_digest(self) -> bytes:
        """Return a digest of every row of every table, so that two equal databases have equal digests."""
        conn = self.machine.conn
        digest = hashlib.sha256()
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            digest.update(table.encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                digest.update(repr(row).encode())
        return digest.digest()


@dataclass
class RunWorkload:
    """The commands of ``runs`` test runs of ``tests`` tests each, proposed as a leading coordinator would."""

    runs: int = 3
    tests: int = 12
    shard_size: int = 3
    # Results that a leader acknowledged as committed and that must be recorded:
    # (run_id, case index) -> the outcome.
    acknowledged: dict[tuple[str, int], str] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def run_ids(self) -> list[str]:
        return [f"run-{number}" for number in range(self.runs)]

    def case_ids(self) -> list[str]:
        return [f"tests/test_sim.py::test_{number}" for number in range(self.tests)]

    def outcome(self, case: int) -> str:
        return FAILED if case % 5 == 4 else PASSED

    def next_command(self, machine: StateMachine, term: int, now: float, chance: float) -> cmd.Command | None:
        """Return the command a leader with this applied state proposes next, or None once every run ended.

        ``chance`` is a number in [0, 1) drawn by the caller, which picks the rarer commands.
        """
        finished = {run_id for (run_id,) in machine.conn.execute("SELECT run_id FROM runs WHERE finished_at IS NOT NULL")}
        for run_id in self.run_ids():
            if run_id in finished:
                continue
            run = machine.runs.get(run_id)
            if run is None:
                return cmd.RunSubmitted(run_id, now, dict(SUITE), "even", None)
            if run.status is RunStatus.COLLECTING:
                return cmd.RunCollected(run_id, now, self.case_ids(), [], 0, EXECUTORS[0])
            if not run.shards:
                cases = list(range(self.tests))
                shards = [cases[start:start + self.shard_size] for start in range(0, self.tests, self.shard_size)]
                return cmd.ShardsPlanned(run_id, shards)
            return self._next_for_run(run, term, now, chance)
        return None

    def _next_for_run(self, run: Any, term: int, now: float, chance: float) -> cmd.Command:
        if len(run.done) == run.total:
            exit_code = 1 if any(self.outcome(case) == FAILED for case in range(self.tests)) else 0
            return cmd.RunFinished(run.run_id, now, RunStatus.FINISHED, exit_code, "")
        for shard in sorted(run.shards.values(), key=lambda shard: shard.shard_id):
            missing = [case for case in shard.cases if case not in run.done]
            if shard.status is ShardStatus.QUEUED and missing:
                executor = EXECUTORS[(shard.shard_id + shard.attempt) % len(EXECUTORS)]
                return cmd.ShardAssigned(run.run_id, shard.shard_id, shard.attempt + 1, executor, term, now)
            if shard.status is not ShardStatus.ASSIGNED:
                continue
            if not missing:
                return cmd.ShardFinished(run.run_id, shard.shard_id, shard.attempt, now)
            if chance < 0.05:
                self._count("shards_lost")
                return cmd.ShardRequeued(run.run_id, shard.shard_id, shard.attempt, "executor lost", now)
            if chance < 0.10 and shard.attempt > 1:
                # An executor of an ended attempt sends late: the state machine must fence it.
                self._count("stale_results")
                item = self._result(run.run_id, shard.shard_id, shard.attempt - 1, EXECUTORS[0], missing[0])
                return cmd.ResultsRecorded(now, [item])
            items = [self._result(run.run_id, shard.shard_id, shard.attempt, shard.executor, case) for case in missing[:2]]
            return cmd.ResultsRecorded(now, items)
        raise AssertionError(f"{run.run_id}: {len(run.done)} of {run.total} results and no shard to act on")

    def _result(self, run_id: str, shard_id: int, attempt: int, executor: str, case: int) -> list[Any]:
        data = {"case_id": self.case_ids()[case], "outcome": self.outcome(case), "duration": 0.01}
        return [run_id, shard_id, attempt, executor, data]

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def note_acknowledged(self, command: cmd.Command, machine: StateMachine) -> None:
        """Remember the results of ``command``, acknowledged as committed, that ``machine`` recorded."""
        if not isinstance(command, cmd.ResultsRecorded):
            return
        for run_id, _, _, _, data in command.items:
            run = machine.runs.get(run_id)
            index = self.case_ids().index(data["case_id"])
            recorded = machine.conn.execute(
                "SELECT outcome FROM results WHERE run_id = ? AND idx = ?", (run_id, index)
            ).fetchone()
            if recorded is not None and (run is None or index in run.done):
                self.acknowledged.setdefault((run_id, index), recorded[0])

    def check_complete(self, machine: StateMachine, name: str) -> None:
        """Check that every run ended with exactly one result per test, the acknowledged ones among them."""
        for run_id in self.run_ids():
            row = machine.conn.execute("SELECT status, exit_code FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None or row[0] != RunStatus.FINISHED:
                raise AssertionError(f"{name}: {run_id} did not finish ({row})")
            rows = machine.conn.execute("SELECT idx, outcome FROM results WHERE run_id = ? ORDER BY idx", (run_id,)).fetchall()
            if [idx for idx, _ in rows] != list(range(self.tests)):
                raise AssertionError(f"{name}: {run_id} has results for cases {[idx for idx, _ in rows]}, expected one per test")
            for idx, outcome in rows:
                if outcome != self.outcome(idx):
                    raise AssertionError(f"{name}: {run_id} case {idx} has outcome {outcome}")
        for (run_id, index), outcome in self.acknowledged.items():
            row = machine.conn.execute("SELECT outcome FROM results WHERE run_id = ? AND idx = ?", (run_id, index)).fetchone()
            if row is None or row[0] != outcome:
                raise AssertionError(f"{name}: the acknowledged result of {run_id} case {index} is missing")
