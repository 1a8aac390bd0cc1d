"""A whole replicated coordinator under seeded faults, in one process on trio's virtual clock.

Three (or five) voters run the real ``Replica``, which runs the real ``Coordinator`` while it
leads, each with its ``raft.db`` and ``state.db`` in its own folder. Two executors run the
real ``Executor`` with simulated slots (``executor``), and a client submits test runs
through any voter, as ``swarmctl run --cluster`` would. All of them talk over the memory
network of ``network``. Trio runs with a ``MockClock`` that jumps whenever every task
waits, with deterministic task scheduling seeded from the schedule, and work that the
coordinator hands to worker threads runs inline, so that a seed decides the whole run.

``generate_schedule`` draws the faults from the seed. Voters crash and restart from their
files, the leader more often. Machines are cut off from the others. Executors crash and
come back under a new name, and leadership is handed over. The network resets stream
connections, and drops, duplicates and reorders consensus frames. After the fault phase
everything heals and restarts, and every run must end within ``FINISH_WITHIN_S``.

Checked throughout, through ``swarmctl.sim.consensus.invariants``: one leader per term,
terms never decrease, a committed entry never changes, a new leader has every committed
entry, and every voter's ``state.db`` has the same rows at the same committed index.
Checked at the end: every submitted run finished on every voter with one final result per
test and the expected outcome, every result an executor had acknowledged is there, and the
voters' databases are identical.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import os
import random
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgpack
import trio
import trio.testing

from swarmctl import protocol
from swarmctl.bundle import build_bundle
from swarmctl.cluster.consensus import ConsensusConfig
from swarmctl.cluster.transport import PeerGone, parse_address
from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator.node import MAX_SHARD_ATTEMPTS, Coordinator
from swarmctl.coordinator.replica import Replica
from swarmctl.coordinator.state import read_results
from swarmctl.errors import ConnectionFailed, ProtocolError
from swarmctl.results import ERROR
from swarmctl.sim.consensus.invariants import InvariantChecker, InvariantViolation
from swarmctl.sim.coordinator.executor import EPOCH, SUITE_PREFIX, SimExecutor, case_ids, expected_outcome
from swarmctl.sim.coordinator.network import FAULTY, RELIABLE, MemoryNetwork, MemoryPeer

PORT = 7400
FAULT_PHASE_S = 20.0  # faults start within this many simulated seconds
FINISH_WITHIN_S = 120.0  # after the faults heal, every run ends within this
CHECK_EVERY_S = 0.5
REPLY_TIMEOUT_S = 5.0
COMPACT_EVERY = 40  # small, so that schedules take snapshots and install them on lagging voters
DATABASE_CHECK_EVERY = 4  # committed indexes between two comparisons of a voter's database


class FaultKind(enum.Enum):
    CRASH_VOTER = "crash-voter"
    CRASH_LEADER = "crash-leader"
    ISOLATE_VOTER = "isolate-voter"
    ISOLATE_LEADER = "isolate-leader"
    ISOLATE_EXECUTOR = "isolate-executor"
    CRASH_EXECUTOR = "crash-executor"
    TRANSFER = "transfer"


@dataclass(frozen=True)
class Fault:
    at: float
    kind: FaultKind
    target: int  # which voter or executor, where the kind does not pick the leader
    duration: float  # how long the crash or the cut lasts


@dataclass(frozen=True)
class Schedule:
    seed: int
    voters: int
    executors: int
    runs: tuple[tuple[float, int, int], ...]  # (submitted at, tests, retries)
    faults: tuple[Fault, ...]
    faulty_network: bool

    def describe(self) -> str:
        lines = [f"seed {self.seed}: {self.voters} voters, {self.executors} executors, "
                 f"{'faulty' if self.faulty_network else 'reliable'} network"]
        lines += [f"  {at:6.2f}s submit a run of {tests} tests, {retries} retries" for at, tests, retries in self.runs]
        lines += [
            f"  {f.at:6.2f}s {f.kind.value} {f.target}" + ("" if f.kind is FaultKind.TRANSFER else f" for {f.duration:.2f}s")
            for f in self.faults
        ]
        return "\n".join(lines)


def generate_schedule(seed: int, voters: int = 3) -> Schedule:
    rng = random.Random(f"coordinator-schedule-{seed}")
    runs = tuple(
        (round(rng.uniform(0.5, 10.0), 3), rng.randint(12, 40), rng.choice((0, 0, 1)))
        for _ in range(rng.randint(2, 3))
    )
    faults = []
    for _ in range(rng.randint(2, 6)):
        kind = rng.choice(list(FaultKind))
        faults.append(Fault(
            round(rng.uniform(1.0, FAULT_PHASE_S), 3), kind, rng.randrange(voters if "voter" in kind.value else 2),
            round(rng.uniform(0.3, 6.0), 3),
        ))
    faults.sort(key=lambda fault: fault.at)
    return Schedule(seed, voters, 2, tuple(sorted(runs)), tuple(faults), faulty_network=rng.random() < 0.7)


class ScheduleFailure(AssertionError):
    """A schedule broke an invariant or did not finish its runs; the message gives the replay command."""

    def __init__(self, schedule: Schedule, at: float, reason: str) -> None:
        self.schedule, self.at, self.reason = schedule, at, reason
        super().__init__(
            f"coordinator schedule with seed {schedule.seed} and {schedule.voters} voters failed at {at:.3f} s "
            f"simulated: {reason}\nreplay it with: python -m swarmctl.sim.coordinator --seed {schedule.seed} "
            f"--voters {schedule.voters} --verbose\n{schedule.describe()}"
        )


@dataclass
class ScheduleResult:
    seed: int
    trace_digest: str
    finished_s: float  # simulated seconds from healing until every run had ended everywhere (0: before)
    stats: Counter[str] = field(default_factory=Counter)


class CheckedReplica(Replica):
    """A ``Replica`` that passes every Ready it persists and every step to the invariant checker."""

    def __init__(self, *args, simulation: CoordinatorSimulation, voter: SimVoter, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.simulation = simulation
        self.voter = voter
        self.stored = self.store.state().hard_state
        save_all = self.store.save_all

        def checked_save_all(readies) -> None:
            for ready in readies:
                simulation.checker.check_ready(self.node, ready, self.stored)
                if ready.hard_state is not None:
                    self.stored = ready.hard_state
                if ready.snapshot is not None:
                    simulation.stats["snapshots_installed"] += 1
            save_all(readies)

        self.store.save_all = checked_save_all

    def _process(self, ready) -> None:
        super()._process(ready)
        self.simulation.after_step(self)

    def _compact(self, node, index, data, *, written=False) -> None:
        super()._compact(node, index, data, written=written)
        self.simulation.stats["compactions"] += 1


@dataclass
class SimVoter:
    name: str
    address: str
    data_dir: Path
    replica: CheckedReplica | None = None
    scope: trio.CancelScope | None = None
    stopped: trio.Event = field(default_factory=trio.Event)
    checked_index: int = 0  # the last committed index at which its database was compared

    @property
    def up(self) -> bool:
        return self.scope is not None and not self.scope.cancel_called


@dataclass
class SimMachine:
    """An executor's machine: the executor on it is replaced by a new one when it crashes."""

    host: str
    generation: int = 0
    executor: SimExecutor | None = None
    scope: trio.CancelScope | None = None
    acknowledged: list[tuple[str, int, int, str, str, float]] = field(default_factory=list)


class CoordinatorSimulation:
    def __init__(self, schedule: Schedule, root: Path) -> None:
        self.schedule = schedule
        self.root = root
        self.rng = random.Random(schedule.seed)
        self.network = MemoryNetwork(random.Random(self.rng.getrandbits(64)), FAULTY if schedule.faulty_network else RELIABLE)
        self.checker = InvariantChecker()
        self.stats: Counter[str] = Counter()
        self.trace = hashlib.sha256()
        self.addresses = [f"v{number}:{PORT}" for number in range(schedule.voters)]
        self.voters = [SimVoter(f"v{number}", address, root / f"v{number}") for number, address in enumerate(self.addresses)]
        self.machines = [SimMachine(f"e{number}") for number in range(schedule.executors)]
        self.accepted: list[str] = []  # run ids the client got RunAccepted for
        self.config = ConsensusConfig()
        self.durations: dict[str, float] = {}
        self._nursery: trio.Nursery | None = None
        self.bundle_digest = ""
        self.bundle_data = b""
        self.healed_at = 0.0
        self.failure: ScheduleFailure | None = None

    # --- running -------------------------------------------------------------------------

    async def main(self) -> ScheduleResult:
        folder = self.root / "suite"
        folder.mkdir()
        (folder / "test_sim.py").write_text("def test_simulated():\n    pass\n")
        bundle = build_bundle(folder, self.root / "bundle")
        self.bundle_digest, self.bundle_data = bundle.digest, bundle.path.read_bytes()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for voter in self.voters:
                await self.start_voter(voter)
            for machine in self.machines:
                self.start_executor(machine)
            nursery.start_soon(self._client)
            try:
                await self._faults()
                self.heal()
                self.healed_at = trio.current_time()
                finished_s = await self._wait_until_finished()
                self.final_check()
            except ScheduleFailure as failure:
                self.stop_with(failure)
            else:
                self.stats.update({f"network_{name}": count for name, count in self.network.stats.items()})
                for voter in self.voters:
                    self.trace.update(self.database_digest(voter))
                nursery.cancel_scope.cancel()
        if self.failure is not None:
            raise self.failure
        return ScheduleResult(self.schedule.seed, self.trace.hexdigest(), finished_s, self.stats)

    def fail(self, reason: str) -> ScheduleFailure:
        return ScheduleFailure(self.schedule, trio.current_time(), reason)

    def stop_with(self, failure: ScheduleFailure) -> None:
        """Keep the first failure and stop the whole simulation; ``main`` raises it."""
        if self.failure is None:
            self.failure = failure
        self._nursery.cancel_scope.cancel()

    async def start_voter(self, voter: SimVoter) -> None:
        host, port = parse_address(voter.address)
        voter.replica = CheckedReplica(
            voter.data_dir, voter.address, self.addresses,
            make_coordinator=partial(self._make_coordinator, voter.data_dir),
            config=self.config, rng=random.Random(self.rng.getrandbits(64)), compact_every=COMPACT_EVERY,
            network=self.network.endpoint(host), simulation=self, voter=voter,
        )
        voter.scope, voter.stopped = trio.CancelScope(), trio.Event()

        async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
            try:
                with voter.scope:
                    await voter.replica.serve(host, port, task_status=task_status)
            finally:
                voter.stopped.set()

        await self._nursery.start(serve)
        self.stats["voter_starts"] += 1

    def _make_coordinator(self, data_dir: Path, **kwargs) -> Coordinator:
        self.stats["leaderships"] += 1
        return Coordinator(data_dir, clock=self.wall_clock, rng=random.Random(self.rng.getrandbits(64)), **kwargs)

    @staticmethod
    def wall_clock() -> float:
        return EPOCH + trio.current_time()

    async def crash_voter(self, voter: SimVoter) -> None:
        if not voter.up:
            return
        self.checker.forget_node(voter.address)
        voter.scope.cancel()
        self.network.crash(parse_address(voter.address)[0])
        await voter.stopped.wait()
        self.stats["voter_crashes"] += 1

    def start_executor(self, machine: SimMachine) -> None:
        machine.generation += 1
        name = f"{machine.host}-{machine.generation}"
        machine.executor = SimExecutor(
            name, [parse_address(address) for address in self.addresses], 2, self.root / name,
            rng=random.Random(self.rng.getrandbits(64)), network=self.network.endpoint(machine.host), duration=self.duration,
        )
        machine.executor.outbox.acknowledged = machine.acknowledged
        machine.scope = trio.CancelScope()

        async def run(executor: SimExecutor, scope: trio.CancelScope) -> None:
            with scope:
                await executor.run()

        self._nursery.start_soon(run, machine.executor, machine.scope)

    def crash_executor(self, machine: SimMachine) -> None:
        if machine.scope is not None and not machine.scope.cancel_called:
            machine.scope.cancel()
            self.network.crash(machine.host)
            self.stats["executor_crashes"] += 1

    def duration(self, case_id: str) -> float:
        if case_id not in self.durations:
            self.durations[case_id] = round(self.rng.uniform(0.1, 1.5), 3)
        return self.durations[case_id]

    def leader(self) -> SimVoter | None:
        leaders = [v for v in self.voters if v.up and v.replica.leading_coordinator() is not None]
        return leaders[0] if len(leaders) == 1 else None

    # --- faults --------------------------------------------------------------------------

    async def _faults(self) -> None:
        hosts = [parse_address(address)[0] for address in self.addresses] + [m.host for m in self.machines] + ["client"]
        for fault in self.schedule.faults:
            await trio.sleep_until(fault.at)
            self.trace.update(f"{trio.current_time():.6f} {fault.kind.value}".encode())
            match fault.kind:
                case FaultKind.CRASH_VOTER | FaultKind.CRASH_LEADER:
                    voter = self._target_voter(fault)
                    await self.crash_voter(voter)
                    self._nursery.start_soon(self._restart_voter_after, voter, fault.duration)
                case FaultKind.ISOLATE_VOTER | FaultKind.ISOLATE_LEADER:
                    voter = self._target_voter(fault)
                    self._isolate_for(parse_address(voter.address)[0], hosts, fault.duration)
                case FaultKind.ISOLATE_EXECUTOR:
                    self._isolate_for(self.machines[fault.target].host, hosts, fault.duration)
                case FaultKind.CRASH_EXECUTOR:
                    machine = self.machines[fault.target]
                    self.crash_executor(machine)
                    self._nursery.start_soon(self._restart_executor_after, machine, fault.duration)
                case FaultKind.TRANSFER:
                    leader = self.leader()
                    if leader is not None:
                        others = [v for v in self.voters if v is not leader]
                        target = others[fault.target % len(others)]
                        leader.replica.transfer(target.address)
                        self.stats["transfers"] += 1
        await trio.sleep_until(FAULT_PHASE_S + 6.0)

    def _target_voter(self, fault: Fault) -> SimVoter:
        if fault.kind in (FaultKind.CRASH_LEADER, FaultKind.ISOLATE_LEADER):
            leader = self.leader()
            if leader is not None:
                return leader
        return self.voters[fault.target]

    def _isolate_for(self, host: str, hosts: list[str], duration: float) -> None:
        self.network.isolate(host, hosts)
        self.stats["cuts"] += 1

        async def heal_later() -> None:
            await trio.sleep(duration)
            self.network.mend(host)

        self._nursery.start_soon(heal_later)

    async def _restart_voter_after(self, voter: SimVoter, delay: float) -> None:
        await trio.sleep(delay)
        if not voter.up:
            await self.start_voter(voter)

    async def _restart_executor_after(self, machine: SimMachine, delay: float) -> None:
        await trio.sleep(delay)
        if machine.scope.cancel_called:
            self.start_executor(machine)

    def heal(self) -> None:
        self.network.heal()
        self.network.profile = RELIABLE
        for voter in self.voters:
            if not voter.up:
                self._nursery.start_soon(self.start_voter, voter)
        for machine in self.machines:
            if machine.scope.cancel_called:
                self.start_executor(machine)

    # --- the client ----------------------------------------------------------------------

    async def _client(self) -> None:
        endpoint = self.network.endpoint("client")
        for number, (at, tests, retries) in enumerate(self.schedule.runs):
            await trio.sleep_until(at)
            suite = protocol.SuiteSpec("pytest", self.bundle_digest, f"{SUITE_PREFIX}{tests}").to_wire()
            while True:
                address = parse_address(self.rng.choice(self.addresses))
                try:
                    async with endpoint.connect([address]) as peer:
                        run_id = await self._submit(peer, protocol.SubmitRun(suite, retries=retries), number)
                except (ConnectionFailed, PeerGone, ProtocolError, trio.TooSlowError) as exc:
                    self.stats["client_retries"] += 1
                    self.trace.update(f"{trio.current_time():.6f} client {type(exc).__name__}".encode())
                    await trio.sleep(0.5)
                    continue
                if run_id:
                    self.accepted.append(run_id)
                    break
                await trio.sleep(0.5)

    async def _submit(self, peer: MemoryPeer, request: protocol.SubmitRun, number: int) -> str:
        """Submit one run on a new connection; return its id, or "" when the voter could not take it yet."""
        with trio.fail_after(REPLY_TIMEOUT_S):
            await peer.send(protocol.Hello(protocol.PROTOCOL_VERSION, protocol.ROLE_CLIENT, f"client-{number}"))
            if not isinstance(await peer.receive(), protocol.Welcome):
                return ""
            await peer.send(protocol.BundleQuery(self.bundle_digest))
            status = await self._reply(peer)
            if isinstance(status, protocol.BundleStatus) and not status.present:
                await peer.send(protocol.BundleChunk(self.bundle_digest, self.bundle_data, True))
                status = await self._reply(peer)
            if not (isinstance(status, protocol.BundleStatus) and status.present):
                return ""
            await peer.send(request)
            reply = await self._reply(peer)
        if isinstance(reply, protocol.RunAccepted):
            return reply.run_id
        return ""

    @staticmethod
    async def _reply(peer: MemoryPeer) -> protocol.Message:
        while True:
            message = await peer.receive()
            if not isinstance(message, (protocol.RunProgress, protocol.RunResults, protocol.ExecutorList)):
                return message

    # --- checks --------------------------------------------------------------------------

    def after_step(self, replica: CheckedReplica) -> None:
        node, voter = replica.node, replica.voter
        if voter.replica is not replica:
            return  # a crashed instance, cancelled
        try:
            self.checker.check_node(node)
            if replica.applied <= node.commit_index and replica.applied >= voter.checked_index + DATABASE_CHECK_EVERY:
                voter.checked_index = replica.applied
                self.checker.check_database(replica.node_id, replica.applied, self.database_digest(voter))
                self.stats["database_checks"] += 1
        except InvariantViolation as exc:
            self.stop_with(self.fail(str(exc)))
        self.trace.update(f"{trio.current_time():.6f} {voter.name} {node.role.value} {node.term} {node.commit_index} {replica.applied}".encode())

    @staticmethod
    def database_digest(voter: SimVoter) -> bytes:
        conn = voter.replica.machine.conn
        digest = hashlib.sha256()
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
            digest.update(table.encode())
            for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                digest.update(repr(row).encode())
        return digest.digest()

    def _all_finished(self) -> bool:
        leader = self.leader()
        if leader is None or len(self.accepted) < len(self.schedule.runs):
            return False
        commit = leader.replica.node.commit_index
        for voter in self.voters:
            replica = voter.replica
            if not voter.up or replica.applied != commit or replica.machine.runs:
                return False
        return True

    async def _wait_until_finished(self) -> float:
        deadline = trio.current_time() + FINISH_WITHIN_S
        while not self._all_finished():
            if trio.current_time() > deadline:
                raise self.fail(f"runs did not finish within {FINISH_WITHIN_S:g} s of healing: {self._describe_state()}")
            await trio.sleep(CHECK_EVERY_S)
        return trio.current_time() - self.healed_at

    def _describe_state(self) -> str:
        parts = [f"accepted {len(self.accepted)} of {len(self.schedule.runs)} runs"]
        for voter in self.voters:
            replica = voter.replica
            runs = {run_id: f"{run.status} {len(run.done)}/{run.total}" for run_id, run in replica.machine.runs.items()}
            parts.append(f"{voter.name}: {'up' if voter.up else 'down'} {replica.node.role.value} term {replica.node.term} "
                         f"commit {replica.node.commit_index} applied {replica.applied} active runs {runs}")
        return "; ".join(parts)

    def final_check(self) -> None:
        digests = {voter.name: self.database_digest(voter) for voter in self.voters}
        if len(set(digests.values())) != 1:
            raise self.fail(f"voters' databases differ after every run ended, at index {self.voters[0].replica.applied}")
        conn = self.voters[0].replica.machine.conn

        runs = dict(conn.execute("SELECT run_id, status FROM runs").fetchall())
        missing = [run_id for run_id in self.accepted if run_id not in runs]
        if missing:
            raise self.fail(f"accepted runs missing from the state: {missing}")
        for run_id, status in sorted(runs.items()):
            self._check_run(conn, run_id, status)
        self.stats["runs"] = len(runs)

        # Every acknowledged result is in a committed command. The state machine may still
        # leave it out of the results: a duplicate of a test that already has one, or a
        # result of an attempt that was taken back (fenced).
        committed, recorded = set(), set()
        for (body,) in conn.execute("SELECT body FROM log WHERE kind = 'results_recorded'"):
            command = cmd.decode_command("results_recorded", body)
            committed.update((item[0], item[4]["case_id"], item[3], item[4]["started_at"]) for item in command.items)
        for table in ("results", "case_attempts"):
            for run_id, body in conn.execute(f"SELECT run_id, body FROM {table}"):
                result = msgpack.unpackb(body, raw=False)
                recorded.add((run_id, result["case_id"], result["executor"], result["started_at"]))
        acknowledged = [item for machine in self.machines for item in machine.acknowledged]
        for run_id, shard_id, attempt, case_id, executor, started_at in acknowledged:
            key = (run_id, case_id, executor, started_at)
            if key not in committed:
                raise self.fail(
                    f"the result of {case_id} in run {run_id} from {executor} (shard {shard_id}, attempt {attempt}) "
                    "was acknowledged but is in no committed command"
                )
            if key not in recorded:
                self.stats["acknowledged_not_recorded"] += 1
        self.stats["acknowledged"] = len(acknowledged)

    def _check_run(self, conn: sqlite3.Connection, run_id: str, status: str) -> None:
        suite_tests = int(conn.execute("SELECT total FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])
        if status != "finished":
            raise self.fail(f"run {run_id} ended {status}, not finished")
        results = read_results(conn, run_id)
        got = Counter(result.case_id for result in results)
        expected = case_ids(suite_tests)
        if sorted(got) != sorted(expected) or any(count != 1 for count in got.values()):
            raise self.fail(f"run {run_id} has results for {dict(got)}, expected one for each of {len(expected)} tests")
        # A shard lost MAX_SHARD_ATTEMPTS times ends with an error for its tests, by design:
        # a test that keeps losing its executor must not hold the run forever.
        lost = [r for r in results if r.outcome == ERROR and r.message.startswith("not run: the shard was lost")]
        taken_back = conn.execute(
            "SELECT count(*) FROM attempts WHERE run_id = ? AND end_reason IS NOT NULL AND end_reason != 'finished'", (run_id,)
        ).fetchone()[0]
        # The last loss ends the shard with those errors instead of a requeue.
        if lost and taken_back < MAX_SHARD_ATTEMPTS - 1:
            raise self.fail(f"run {run_id} failed tests as lost {MAX_SHARD_ATTEMPTS} times, but took back only {taken_back} attempts")
        self.stats["lost_too_often"] += len(lost)
        wrong = [r.case_id for r in results if r.outcome != expected_outcome(r.case_id) and r not in lost]
        if wrong:
            raise self.fail(f"run {run_id} recorded unexpected outcomes for {wrong}")
        self.stats["results"] += len(results)


@contextlib.contextmanager
def deterministic_trio(seed: int) -> Iterator[None]:
    """Make trio's choice among runnable tasks depend on ``seed`` only, and run worker-thread calls inline.

    Trio orders the tasks that are ready at the same moment at random. Under Hypothesis it
    sorts them and shuffles them with its own generator instead. This switches that on
    through trio's private module, as its Hypothesis plugin does. Worker threads would let
    the virtual clock jump while they work, so their functions run on the loop here.
    """
    from trio._core import _run

    saved_flag, saved_state = _run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r.getstate()
    saved_run_sync = trio.to_thread.run_sync

    async def run_inline(function, *args, **_options):
        await trio.lowlevel.checkpoint()
        return function(*args)

    _run._ALLOW_DETERMINISTIC_SCHEDULING = True
    _run._r.seed(seed)
    trio.to_thread.run_sync = run_inline
    try:
        yield
    finally:
        _run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag
        _run._r.setstate(saved_state)
        trio.to_thread.run_sync = saved_run_sync


def _scratch_folder() -> str:
    """Return a folder for the voters' files: in memory where the system has one, as fsync is moot here."""
    shm = Path("/dev/shm")
    return tempfile.mkdtemp(prefix="swarmctl-sim-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None)


def run_schedule(seed: int, voters: int = 3, *, schedule: Schedule | None = None, verbose: bool = False) -> ScheduleResult:
    """Run one schedule; raise ScheduleFailure when it breaks an invariant or does not finish its runs."""
    schedule = schedule or generate_schedule(seed, voters)
    root = Path(_scratch_folder())
    quiet = logging.getLogger("swarmctl")
    level = quiet.level
    if not verbose:
        quiet.setLevel(logging.CRITICAL)
    try:
        simulation = CoordinatorSimulation(schedule, root)
        with deterministic_trio(seed):
            try:
                return trio.run(simulation.main, clock=trio.testing.MockClock(autojump_threshold=0))
            except BaseExceptionGroup as group:
                if simulation.failure is not None:
                    raise simulation.failure from group
                raise
    finally:
        quiet.setLevel(level)
        shutil.rmtree(root, ignore_errors=True)
