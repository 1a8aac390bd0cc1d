"""A deterministic discrete-event simulation of planning and assigning one run's shards.

The simulation calls the coordinator's real code: ``get_strategy(name).plan`` cuts the
shards from history durations, and ``pick_assignments`` hands queued shards to executors.
Between those calls it updates ``RunState``, ``ShardState`` and ``ExecutorView`` the way
the coordinator's state machine does, but in memory only: no SQLite, no network, no
requeues and no retries. Time is a simulated clock advanced by an event heap, so a run of 100,000 tests
takes a fraction of a second and the same seed always gives the same result.

A shard runs for the sum of its tests' true durations plus a fixed overhead,
``SHARD_OVERHEAD_S`` unless the caller passes another. The strategy never receives the
true durations. It plans from history durations, which are the true ones times a factor
drawn uniformly from [1 - noise, 1 + noise].
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from swarmctl.coordinator.scheduler import ExecutorView, pick_assignments
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


# NOTE: a "chains" shape, tests that must run in a given order on one executor, is left
# out. Its plans need the dependency-aware strategy, which does not exist yet.
SHAPES: dict[str, Callable[[int, int, random.Random], list[float]]] = {
    "uniform": uniform_durations,
    "long-tail": long_tail_durations,
    "giants": giant_durations,
}


@dataclass(frozen=True)
class Suite:
    """A generated suite: case ids, the durations they really take, and their history."""

    case_ids: list[str]
    true_durations: list[float]  # seconds, by case index
    history: dict[str, float]  # case id -> seconds, what the strategy plans from


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
    true_durations = SHAPES[shape](tests, slots, rng)
    history = {
        case_id: duration * rng.uniform(1 - noise, 1 + noise)
        for case_id, duration in zip(case_ids, true_durations)
    }
    return Suite(case_ids, true_durations, history)


def lower_bound(true_durations: Sequence[float], slots: int) -> float:
    """Return the makespan no schedule can beat: max(total / slots, longest test), in seconds."""
    if not true_durations:
        return 0.0
    return max(sum(true_durations) / slots, max(true_durations))


class SimulationStalled(RuntimeError):
    """The event heap ran empty while the run still had tests without a result."""


@dataclass(frozen=True)
class SimulationResult:
    makespan_s: float
    lower_bound_s: float
    shards: int
    executed: list[int]  # case indexes in the order their shards started, so a case run twice appears twice

    @property
    def efficiency(self) -> float:
        """lower_bound_s / makespan_s: 1.0 is a perfect schedule."""
        return self.lower_bound_s / self.makespan_s if self.makespan_s > 0 else 1.0


def make_executors(executors: int, slots_per_executor: int) -> list[ExecutorView]:
    """Return executor views that joined one simulated second apart, all idle."""
    return [ExecutorView(f"executor-{i:04d}", slots_per_executor, float(i)) for i in range(executors)]


def make_run(strategy: str, case_ids: list[str], shards: list[list[int]]) -> RunState:
    """Return a running run with ``shards`` queued in plan order, as ShardsPlanned leaves it."""
    run = RunState(RUN_ID, 0.0, suite={}, strategy=strategy, status=RunStatus.RUNNING, case_ids=case_ids)
    for shard_id, cases in enumerate(shards):
        run.shards[shard_id] = ShardState(RUN_ID, shard_id, list(cases))
        run.queue.append(shard_id)
    return run


def assign_shards(run: RunState, executors: list[ExecutorView], now: float) -> list[tuple[int, ExecutorView]]:
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


def finish_shard(run: RunState, shard_id: int, executor: ExecutorView, runnable: int, now: float) -> None:
    """Record a shard's results, free its slot and finish the run once every test has a result."""
    shard = run.shards[shard_id]
    executor.running.discard((run.run_id, shard_id))
    shard.status = ShardStatus.DONE
    run.done.update(shard.cases)
    if len(run.done) >= runnable:
        run.status = RunStatus.FINISHED
        run.finished_at = now
        run.queue.clear()


def simulate(
    strategy: str,
    suite: Suite,
    executors: int,
    slots_per_executor: int = 1,
    runnable: Sequence[int] | None = None,
    shard_overhead_s: float = SHARD_OVERHEAD_S,
) -> SimulationResult:
    """Plan ``suite`` with the named strategy and run it on simulated executors.

    ``runnable`` defaults to every case index. Raises SimulationStalled if the run cannot
    finish, for example because the plan left out a runnable test.
    """
    if runnable is None:
        runnable = range(len(suite.case_ids))
    runnable = list(runnable)
    slots = executors * slots_per_executor
    request = PlanInput(suite.case_ids, runnable, slots, suite.history)
    shards = get_strategy(strategy).plan(request)

    run = make_run(strategy, suite.case_ids, shards)
    views = make_executors(executors, slots_per_executor)
    true_durations = suite.true_durations
    executed: list[int] = []

    # Heap entries are (finish time, sequence number, shard id, executor). The sequence
    # number breaks ties in start order, so equal finish times never compare executors.
    events: list[tuple[float, int, int, ExecutorView]] = []
    sequence = 0
    now = 0.0

    if not runnable:
        run.status = RunStatus.FINISHED
    while run.status is RunStatus.RUNNING:
        for shard_id, executor in assign_shards(run, views, now):
            cases = run.shards[shard_id].cases
            executed.extend(cases)
            run_time = sum(true_durations[i] for i in cases) + shard_overhead_s
            heapq.heappush(events, (now + run_time, sequence, shard_id, executor))
            sequence += 1
        if not events:
            missing = len(runnable) - len(run.done)
            raise SimulationStalled(
                f"strategy {strategy!r}: no shard is running or queued, but {missing} runnable tests have no result"
            )
        now, _, shard_id, executor = heapq.heappop(events)
        finish_shard(run, shard_id, executor, len(runnable), now)

    return SimulationResult(
        makespan_s=now,
        lower_bound_s=lower_bound([true_durations[i] for i in runnable], slots),
        shards=len(shards),
        executed=executed,
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
