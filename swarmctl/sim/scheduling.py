"""A deterministic discrete-event simulation of planning and assigning one run's shards.

The simulation calls the coordinator's real code: ``get_strategy(name).plan`` cuts the
shards from history durations, and ``pick_assignments`` hands queued shards to executors.
Between those calls it updates ``RunState``, ``ShardState`` and ``ExecutorRecord`` the way
the coordinator's state machine does, but in memory only: no SQLite, no network, no
requeues, no retries and no work stealing (an idle slot taking the unstarted end of a busy
shard). Time is a simulated clock advanced by an event heap, and the same seed always
gives the same result. A run of 100,000 independent tests takes under a second. With
dependencies it takes longer, because each ``pick_assignments`` call checks the
dependencies of every queued test.

A shard runs for the sum of its tests' true durations plus a fixed overhead,
``SHARD_OVERHEAD_S`` unless the caller passes another. The strategy never receives the
true durations. It plans from history durations, which are the true ones times a factor
drawn uniformly from [1 - noise, 1 + noise].

A suite may declare dependencies between its tests (the ``chains`` shape does). The
simulation stores them in ``RunState.deps``, so ``pick_assignments`` keeps a shard queued
until every test its tests depend on is in ``RunState.done``. A shard's tests enter
``done`` together when the shard finishes.
NOTE: the coordinator records results in batches while a shard is still running, so it can
open a dependent shard before the shard it waits for has ended. The simulation opens it
only at that shard's end, so on suites with dependencies its makespan may be longer than
the coordinator's.
"""

from __future__ import annotations

import graphlib
import heapq
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from swarmctl.coordinator.executor_registry import ExecutorRecord
from swarmctl.coordinator.scheduler import pick_assignments
from swarmctl.coordinator.state import RunState, RunStatus, ShardState, ShardStatus
from swarmctl.coordinator.strategies import PlanInput, get_strategy

# Fixed cost of one shard on an executor, in seconds: receiving the assignment and
# reporting the shard done. An assumed value, not a measured one. The comment on
# MIN_SHARD_SECONDS in swarmctl.coordinator.strategies reports about 30 ms per shard for
# trivial pytest tests, and callers can pass that as ``shard_overhead_s``.
SHARD_OVERHEAD_S = 0.005

UNIFORM_MEAN_S = 1.0
UNIFORM_SPREAD = 0.1  # durations drawn from [mean * (1 - spread), mean * (1 + spread)]

LONG_TAIL_MEDIAN_S = 0.5
LONG_TAIL_SIGMA = 1.2  # of the underlying normal distribution, so the mean is about 1.03 s

GIANTS_BASE_S = 0.2
GIANTS_BASE_SPREAD = 0.1
# One giant per GIANTS_SLOTS_PER_GIANT slots, each taking between the two fractions of the
# per-slot share of the other tests. A giant is longer than a whole shard of an even plan
# with 4 shards per slot, so where it lands matters, but shorter than the per-slot share,
# so the lower bound stays total duration / slots.
GIANTS_SLOTS_PER_GIANT = 10
GIANTS_MIN_SHARE = 0.3
GIANTS_MAX_SHARE = 0.6

RUN_ID = "sim-run"


def uniform_durations(tests: int, slots: int, rng: random.Random) -> list[float]:
    """Draw ``tests`` durations close to ``UNIFORM_MEAN_S`` seconds."""
    low = UNIFORM_MEAN_S * (1 - UNIFORM_SPREAD)
    high = UNIFORM_MEAN_S * (1 + UNIFORM_SPREAD)
    return [rng.uniform(low, high) for _ in range(tests)]


def long_tail_durations(tests: int, slots: int, rng: random.Random) -> list[float]:
    """Draw ``tests`` lognormal durations: most tests are short, a few run for a minute or more."""
    mu = math.log(LONG_TAIL_MEDIAN_S)
    return [rng.lognormvariate(mu, LONG_TAIL_SIGMA) for _ in range(tests)]


def giant_durations(tests: int, slots: int, rng: random.Random) -> list[float]:
    """Draw short tests of about ``GIANTS_BASE_S`` seconds, a few of them replaced by giants.

    The giants sit at random positions in collection order. Their number grows with
    ``slots`` (see ``GIANTS_SLOTS_PER_GIANT``), and their length is a share of what each slot
    gets of the short tests.
    """
    low = GIANTS_BASE_S * (1 - GIANTS_BASE_SPREAD)
    high = GIANTS_BASE_S * (1 + GIANTS_BASE_SPREAD)
    durations = [rng.uniform(low, high) for _ in range(tests)]
    giants = min(tests, max(1, slots // GIANTS_SLOTS_PER_GIANT))
    per_slot_s = GIANTS_BASE_S * (tests - giants) / max(1, slots)
    for index in rng.sample(range(tests), giants):
        durations[index] = per_slot_s * rng.uniform(GIANTS_MIN_SHARE, GIANTS_MAX_SHARE)
    return durations


# The chains shape: long-tail tests, of which CHAINS_SHARE are linked into chains of
# CHAIN_MIN_LENGTH to CHAIN_MAX_LENGTH tests, each test depending on the one before it.
# The first CHAINS_LONG chains have CHAIN_MAX_LENGTH tests, and their durations are
# replaced so that each chain takes between the two fractions below of a slot's share of
# the other tests. With more than CHAINS_LONG slots, a chain whose fraction is the larger
# one and above 1.0 is longer than total duration / slots, so it sets the lower bound.
CHAINS_SHARE = 0.05
CHAIN_MIN_LENGTH = 3
CHAIN_MAX_LENGTH = 20
CHAINS_LONG = 2
CHAIN_LONG_MIN_SHARE = 0.8
CHAIN_LONG_MAX_SHARE = 1.2
# Spread of a long chain's tests: each gets a share of the chain's duration in proportion
# to a weight drawn from this range.
CHAIN_LONG_WEIGHTS = (0.5, 1.5)

# Strategy that the coordinator uses for every run that declares dependencies, whatever
# strategy the run requested.
DEPENDENCY_STRATEGY = "dependency-aware"

Dependencies = dict[int, list[int]]  # case index -> indexes of the cases it depends on


def chain_durations(tests: int, slots: int, rng: random.Random) -> tuple[list[float], Dependencies]:
    """Draw long-tail durations and link some of the tests into dependency chains.

    Chain members sit at random positions in collection order, and each depends on the
    previous member in collection order. Tests left over after the last whole chain stay
    independent. Returns the durations and the dependencies.
    """
    durations = long_tail_durations(tests, slots, rng)
    members = rng.sample(range(tests), int(tests * CHAINS_SHARE))

    chains: list[list[int]] = []
    position = 0
    while len(members) - position >= CHAIN_MIN_LENGTH:
        if len(chains) < CHAINS_LONG:
            length = CHAIN_MAX_LENGTH
        else:
            length = rng.randint(CHAIN_MIN_LENGTH, CHAIN_MAX_LENGTH)
        chain = sorted(members[position : position + length])
        chains.append(chain)
        position += len(chain)

    long_chains = chains[:CHAINS_LONG]
    in_long_chain = {index for chain in long_chains for index in chain}
    others_s = math.fsum(seconds for index, seconds in enumerate(durations) if index not in in_long_chain)
    # Dividing by the slots left to the other tests makes a share factor above 1.0 put the
    # chain above total / slots, with the chains' own durations counted in the total.
    per_slot_s = others_s / max(1, slots - len(long_chains))
    for chain in long_chains:
        chain_s = per_slot_s * rng.uniform(CHAIN_LONG_MIN_SHARE, CHAIN_LONG_MAX_SHARE)
        weights = [rng.uniform(*CHAIN_LONG_WEIGHTS) for _ in chain]
        total_weight = math.fsum(weights)
        for index, weight in zip(chain, weights):
            durations[index] = chain_s * weight / total_weight

    dependencies = {chain[k]: [chain[k - 1]] for chain in chains for k in range(1, len(chain))}
    return durations, dependencies


def without_dependencies(
    draw_durations: Callable[[int, int, random.Random], list[float]],
) -> Callable[[int, int, random.Random], tuple[list[float], Dependencies]]:
    """Wrap a duration generator as a shape whose tests are all independent."""

    def draw(tests: int, slots: int, rng: random.Random) -> tuple[list[float], Dependencies]:
        return draw_durations(tests, slots, rng), {}

    return draw


# Each shape draws (durations by case index, dependencies) from (tests, slots, rng).
SHAPES: dict[str, Callable[[int, int, random.Random], tuple[list[float], Dependencies]]] = {
    "uniform": without_dependencies(uniform_durations),
    "long-tail": without_dependencies(long_tail_durations),
    "giants": without_dependencies(giant_durations),
    "chains": chain_durations,
}
# Shapes whose suites declare dependencies. The coordinator plans them with
# DEPENDENCY_STRATEGY only, so the simulation rejects other strategies for them.
SHAPES_WITH_DEPENDENCIES = frozenset({"chains"})


@dataclass(frozen=True)
class Suite:
    """A generated suite: case ids, the durations they really take, their history and dependencies."""

    case_ids: list[str]
    true_durations: list[float]  # seconds, by case index
    history: dict[str, float]  # case id -> seconds, what the strategy plans from
    dependencies: Dependencies = field(default_factory=dict)


def make_case_ids(tests: int) -> list[str]:
    """Return pytest-style node ids, 100 tests per module."""
    return [f"tests/test_m{i // 100:04d}.py::test_{i}" for i in range(tests)]


def make_suite(shape: str, tests: int, slots: int, noise: float, rng: random.Random) -> Suite:
    """Generate a suite of ``tests`` tests of the named shape for a run on ``slots`` slots.

    Raises ValueError for an unknown shape or a noise outside [0, 1).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown suite shape {shape!r}: choose one of {', '.join(SHAPES)}")
    if not 0 <= noise < 1:
        raise ValueError(f"noise {noise!r} is invalid: it must be at least 0 and below 1")
    case_ids = make_case_ids(tests)
    true_durations, dependencies = SHAPES[shape](tests, slots, rng)
    history = {
        case_id: duration * rng.uniform(1 - noise, 1 + noise)
        for case_id, duration in zip(case_ids, true_durations)
    }
    return Suite(case_ids, true_durations, history, dependencies)


def longest_chain(durations: Mapping[int, float], dependencies: Mapping[int, Sequence[int]]) -> float:
    """Return the seconds of the longest dependency chain among the cases in ``durations``.

    A chain's length is the sum of its cases' durations, and a case without dependencies is
    a chain of one. Dependencies on cases missing from ``durations`` are ignored.
    Raises graphlib.CycleError if the dependencies form a cycle.
    """
    longest_s = max(durations.values(), default=0.0)
    # Only cases with a dependency, or with a dependent, can be part of a longer chain.
    graph: dict[int, list[int]] = {}
    for case, needs in dependencies.items():
        if case in durations:
            known_needs = [need for need in needs if need in durations]
            if known_needs:
                graph[case] = known_needs
    if not graph:
        return longest_s
    finish: dict[int, float] = {}
    for case in graphlib.TopologicalSorter(graph).static_order():
        finish[case] = durations[case] + max((finish[need] for need in graph.get(case, ())), default=0.0)
    return max(longest_s, max(finish.values()))


def lower_bound(
    true_durations: Sequence[float] | Mapping[int, float],
    slots: int,
    dependencies: Mapping[int, Sequence[int]] | None = None,
) -> float:
    """Return the makespan no schedule can beat, in seconds.

    That is max(total / slots, longest test, longest dependency chain). ``true_durations``
    is indexed by case index, as a list or a mapping, and ``dependencies`` maps a case index
    to the indexes it depends on.
    """
    if not isinstance(true_durations, Mapping):
        true_durations = dict(enumerate(true_durations))
    if not true_durations:
        return 0.0
    average_s = sum(true_durations.values()) / slots
    return max(average_s, longest_chain(true_durations, dependencies or {}))


class SimulationStalled(RuntimeError):
    """The event heap ran empty while the run still had tests without a result."""


@dataclass(frozen=True)
class ShardRun:
    """One shard's run on an executor, in simulated seconds since the run started."""

    shard_id: int
    executor_id: str
    started_s: float
    finished_s: float  # when the shard's tests entered RunState.done
    cases: tuple[int, ...]


@dataclass(frozen=True)
class SimulationResult:
    makespan_s: float
    lower_bound_s: float
    longest_chain_s: float  # the longest test when the suite has no dependencies
    shards: int
    trace: list[ShardRun]  # in start order

    @property
    def executed(self) -> list[int]:
        """Case indexes in the order their shards started, so a case run twice appears twice."""
        return [case for shard_run in self.trace for case in shard_run.cases]

    @property
    def efficiency(self) -> float:
        """lower_bound_s / makespan_s: 1.0 is a perfect schedule."""
        return self.lower_bound_s / self.makespan_s if self.makespan_s > 0 else 1.0


def make_executors(executors: int, slots_per_executor: int) -> list[ExecutorRecord]:
    """Return executor views that joined one simulated second apart, all idle."""
    return [ExecutorRecord(f"executor-{i:04d}", slots_per_executor, float(i)) for i in range(executors)]


def make_run(
    strategy: str, case_ids: list[str], shards: list[list[int]], dependencies: Dependencies | None = None
) -> RunState:
    """Return a running run with ``shards`` queued in plan order, as ShardsPlanned leaves it."""
    run = RunState(RUN_ID, 0.0, suite={}, strategy=strategy, status=RunStatus.RUNNING, case_ids=case_ids)
    run.deps = dict(dependencies or {})
    for shard_id, cases in enumerate(shards):
        run.shards[shard_id] = ShardState(RUN_ID, shard_id, list(cases))
        run.queue.append(shard_id)
    return run


def assign_shards(run: RunState, executors: list[ExecutorRecord], now: float) -> list[tuple[int, ExecutorRecord]]:
    """Ask ``pick_assignments`` which shards start now and record each assignment.

    The updates mirror the coordinator: the shard leaves ``run.queue`` and is marked
    assigned with a new attempt, and the executor's ``running`` set gains it.
    """
    by_id = {executor.executor_id: executor for executor in executors}
    started = []
    for run_id, shard_id, executor_id in pick_assignments([run], executors, now=now):
        shard = run.shards[shard_id]
        shard.attempt += 1
        shard.status = ShardStatus.ASSIGNED
        shard.executor = executor_id
        run.queue.remove(shard_id)
        run.executors.add(executor_id)
        executor = by_id[executor_id]
        executor.running.add((run_id, shard_id))
        started.append((shard_id, executor))
    return started


def finish_shard(run: RunState, shard_id: int, executor: ExecutorRecord, runnable: int, now: float) -> None:
    """Record a shard's results, free its slot and finish the run once every test has a result."""
    shard = run.shards[shard_id]
    executor.running.discard((run.run_id, shard_id))
    shard.status = ShardStatus.DONE
    run.done.update(shard.cases)
    if len(run.done) >= runnable:
        run.status = RunStatus.FINISHED
        run.finished_at = now
        run.queue.clear()


def runnable_dependencies(dependencies: Mapping[int, Sequence[int]], runnable: Sequence[int]) -> Dependencies:
    """Keep the dependencies between runnable cases only.

    A case left out of ``runnable`` never gets a result in the simulation, so it is treated
    as already settled, like a case with a collection-time result in the coordinator.
    """
    runnable_set = set(runnable)
    between_runnable = {}
    for case, needs in dependencies.items():
        if case in runnable_set:
            runnable_needs = [need for need in needs if need in runnable_set]
            if runnable_needs:
                between_runnable[case] = runnable_needs
    return between_runnable


def simulate(
    strategy: str,
    suite: Suite,
    executors: int,
    slots_per_executor: int = 1,
    runnable: Sequence[int] | None = None,
    shard_overhead_s: float = SHARD_OVERHEAD_S,
) -> SimulationResult:
    """Plan ``suite`` with the named strategy and run it on simulated executors.

    ``runnable`` defaults to every case index. Raises ValueError if the suite declares
    dependencies and ``strategy`` is not DEPENDENCY_STRATEGY, because the coordinator would
    plan that run with DEPENDENCY_STRATEGY instead. Raises SimulationStalled if the run
    cannot finish, for example because the plan left out a runnable test or put a test in
    the same shard as a test it depends on.
    """
    if runnable is None:
        runnable = range(len(suite.case_ids))
    runnable = list(runnable)
    dependencies = runnable_dependencies(suite.dependencies, runnable)
    if dependencies and strategy != DEPENDENCY_STRATEGY:
        raise ValueError(
            f"strategy {strategy!r} cannot be simulated on a suite with dependencies: the coordinator "
            f"plans such runs with {DEPENDENCY_STRATEGY!r}, so simulate that strategy"
        )
    slots = executors * slots_per_executor
    request = PlanInput(suite.case_ids, runnable, slots, suite.history, dependencies)
    shards = get_strategy(strategy).plan(request)

    run = make_run(strategy, suite.case_ids, shards, dependencies)
    views = make_executors(executors, slots_per_executor)
    true_durations = suite.true_durations
    # The simulation never requeues, so each shard starts and finishes once.
    start_order: list[int] = []
    start_times: dict[int, float] = {}
    finished: dict[int, ShardRun] = {}

    # Heap entries are (finish time, sequence number, shard id, executor). The sequence
    # number breaks ties in start order, so equal finish times never compare executors.
    events: list[tuple[float, int, int, ExecutorRecord]] = []
    sequence = 0
    now = 0.0

    if not runnable:
        run.status = RunStatus.FINISHED
    while run.status is RunStatus.RUNNING:
        for shard_id, executor in assign_shards(run, views, now):
            cases = run.shards[shard_id].cases
            run_time = sum(true_durations[i] for i in cases) + shard_overhead_s
            start_order.append(shard_id)
            start_times[shard_id] = now
            heapq.heappush(events, (now + run_time, sequence, shard_id, executor))
            sequence += 1
        if not events:
            missing = len(runnable) - len(run.done)
            raise SimulationStalled(
                f"strategy {strategy!r}: no shard is running or ready, but {missing} runnable tests have no result"
            )
        now, _, shard_id, executor = heapq.heappop(events)
        finish_shard(run, shard_id, executor, len(runnable), now)
        cases = tuple(run.shards[shard_id].cases)
        finished[shard_id] = ShardRun(shard_id, executor.executor_id, start_times[shard_id], now, cases)

    # A plan that contains a case twice can leave shards running after every case has a
    # result. They go into the trace with the time they would end, after the makespan.
    for end_s, _, shard_id, executor in events:
        cases = tuple(run.shards[shard_id].cases)
        finished[shard_id] = ShardRun(shard_id, executor.executor_id, start_times[shard_id], end_s, cases)

    runnable_durations = {i: true_durations[i] for i in runnable}
    return SimulationResult(
        makespan_s=now,
        lower_bound_s=lower_bound(runnable_durations, slots, dependencies),
        longest_chain_s=longest_chain(runnable_durations, dependencies),
        shards=len(shards),
        trace=[finished[shard_id] for shard_id in start_order],
    )


def run_simulation(
    strategy: str,
    shape: str,
    executors: int,
    tests: int,
    noise: float,
    seed: int,
    slots_per_executor: int = 1,
    shard_overhead_s: float = SHARD_OVERHEAD_S,
) -> SimulationResult:
    """Generate a suite from ``seed`` and simulate it: the same arguments give the same result."""
    rng = random.Random(seed)
    suite = make_suite(shape, tests, executors * slots_per_executor, noise, rng)
    return simulate(strategy, suite, executors, slots_per_executor, shard_overhead_s=shard_overhead_s)
