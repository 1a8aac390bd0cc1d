"""Tests of the scheduling simulator, run against the real strategies and ``pick_assignments``."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmctl.coordinator.state import ShardStatus
from swarmctl.coordinator.strategies import STRATEGY_NAMES, PlanInput
from swarmctl.sim import scheduling
from swarmctl.sim.scheduling import (
    CHAIN_LONG_MAX_SHARE,
    CHAIN_LONG_MIN_SHARE,
    CHAIN_MAX_LENGTH,
    CHAIN_MIN_LENGTH,
    CHAINS_LONG,
    CHAINS_SHARE,
    DEPENDENCY_STRATEGY,
    GIANTS_MAX_SHARE,
    SHAPES,
    SHAPES_WITH_DEPENDENCIES,
    ShardRun,
    SimulationResult,
    SimulationStalled,
    Suite,
    assign_shards,
    finish_shard,
    longest_chain,
    lower_bound,
    make_case_ids,
    make_executors,
    make_run,
    make_suite,
    run_simulation,
    runnable_dependencies,
    simulate,
)

# The coordinator plans every run with dependencies with DEPENDENCY_STRATEGY, so the other
# strategies are not simulated on those shapes.
GRID = [
    (strategy, shape)
    for strategy in STRATEGY_NAMES
    for shape in SHAPES
    if shape not in SHAPES_WITH_DEPENDENCIES or strategy == DEPENDENCY_STRATEGY
]
INDEPENDENT_SHAPES = [shape for shape in SHAPES if shape not in SHAPES_WITH_DEPENDENCIES]


def dependency_violations(result: SimulationResult, dependencies: dict[int, list[int]]) -> list[tuple[int, int]]:
    """Return (case, need) for every case whose shard started before the shard of a case it needs finished."""
    started = {case: shard_run.started_s for shard_run in result.trace for case in shard_run.cases}
    finished = {case: shard_run.finished_s for shard_run in result.trace for case in shard_run.cases}
    return [
        (case, need)
        for case, needs in dependencies.items()
        if case in started
        for need in needs
        if need not in finished or started[case] < finished[need]
    ]


def chains_of(dependencies: dict[int, list[int]]) -> list[list[int]]:
    """Return the chains of a suite whose cases each depend on at most one case, head first."""
    dependent = {needs[0]: case for case, needs in dependencies.items()}
    heads = sorted(set(dependent) - set(dependencies))
    chains = []
    for head in heads:
        chain = [head]
        while chain[-1] in dependent:
            chain.append(dependent[chain[-1]])
        chains.append(chain)
    return chains


@pytest.mark.parametrize(("strategy", "shape"), GRID)
def test_simulation_same_seed_same_result(strategy: str, shape: str) -> None:
    first = run_simulation(strategy, shape, executors=20, tests=2000, noise=0.3, seed=7)
    second = run_simulation(strategy, shape, executors=20, tests=2000, noise=0.3, seed=7)

    assert first == second


def test_simulation_other_seed_other_result() -> None:
    first = run_simulation("even", "long-tail", executors=20, tests=2000, noise=0.3, seed=7)
    second = run_simulation("even", "long-tail", executors=20, tests=2000, noise=0.3, seed=8)

    assert first.makespan_s != second.makespan_s


@pytest.mark.parametrize(("strategy", "shape"), GRID)
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_simulation_runs_every_test_once(strategy: str, shape: str, noise: float) -> None:
    result = run_simulation(strategy, shape, executors=30, tests=3000, noise=noise, seed=1)

    assert len(result.executed) == 3000
    assert sorted(result.executed) == list(range(3000))


@pytest.mark.parametrize(("strategy", "shape"), GRID)
@pytest.mark.parametrize("executors", [1, 7, 100])
def test_makespan_not_below_lower_bound(strategy: str, shape: str, executors: int) -> None:
    result = run_simulation(strategy, shape, executors=executors, tests=1500, noise=0.3, seed=3)

    assert result.lower_bound_s > 0
    assert result.makespan_s >= result.lower_bound_s
    assert 0 < result.efficiency <= 1


def test_lower_bound_is_average_or_longest_test() -> None:
    assert lower_bound([1.0, 1.0, 1.0, 1.0], slots=2) == 2.0
    assert lower_bound([1.0, 1.0, 4.0], slots=2) == 4.0
    assert lower_bound([], slots=3) == 0.0


def test_lower_bound_counts_longest_chain() -> None:
    durations = [1.0, 2.0, 3.0, 1.0, 1.0]
    dependencies = {1: [0], 2: [1], 4: [3]}

    assert lower_bound(durations, slots=4, dependencies=dependencies) == 6.0
    assert lower_bound(durations, slots=1, dependencies=dependencies) == 8.0
    assert lower_bound({0: 1.0, 2: 3.0}, slots=4, dependencies=dependencies) == 3.0


def test_longest_chain_follows_heaviest_branch() -> None:
    # 3 needs both 1 and 2, and 0 -> 2 -> 3 is the heavier branch: 1 + 5 + 1.
    durations = {0: 1.0, 1: 4.0, 2: 5.0, 3: 1.0, 4: 6.5}
    dependencies = {1: [0], 2: [0], 3: [1, 2]}

    assert longest_chain(durations, dependencies) == 7.0
    assert longest_chain(durations, {}) == 6.5
    assert longest_chain({}, dependencies) == 0.0


def test_one_slot_makespan_is_total_plus_overheads() -> None:
    suite = Suite(["a", "b", "c"], [1.0, 2.0, 3.0], {"a": 1.0, "b": 2.0, "c": 3.0})

    result = simulate("even", suite, executors=1)

    assert result.makespan_s == pytest.approx(6.0 + result.shards * scheduling.SHARD_OVERHEAD_S)
    assert result.lower_bound_s == 6.0


def test_multi_slot_executors_match_single_slot_ones() -> None:
    suite = make_suite("long-tail", 500, 12, 0.3, random.Random(5))

    wide = simulate("time-balanced", suite, executors=4, slots_per_executor=3)
    narrow = simulate("time-balanced", suite, executors=12)

    assert sorted(wide.executed) == list(range(500))
    assert wide.makespan_s == pytest.approx(narrow.makespan_s)


def test_history_within_noise_of_true_durations() -> None:
    suite = make_suite("uniform", 1000, 10, 0.3, random.Random(2))

    for case_id, true_seconds in zip(suite.case_ids, suite.true_durations):
        assert 0.7 * true_seconds <= suite.history[case_id] <= 1.3 * true_seconds


def test_history_equals_true_durations_without_noise() -> None:
    suite = make_suite("long-tail", 1000, 10, 0.0, random.Random(2))

    assert [suite.history[case_id] for case_id in suite.case_ids] == suite.true_durations


@pytest.mark.parametrize("slots", [1, 10, 100, 200])
def test_giants_shorter_than_slot_share(slots: int) -> None:
    durations = make_suite("giants", 10_000, slots, 0.0, random.Random(4)).true_durations

    giants = [seconds for seconds in durations if seconds > 1.0]
    assert len(giants) == max(1, slots // scheduling.GIANTS_SLOTS_PER_GIANT)
    assert max(giants) <= GIANTS_MAX_SHARE * sum(durations) / slots
    assert lower_bound(durations, slots) == sum(durations) / slots


def test_make_suite_rejects_unknown_shape() -> None:
    with pytest.raises(ValueError, match="unknown suite shape 'bursty'"):
        make_suite("bursty", 10, 2, 0.0, random.Random(0))


@pytest.mark.parametrize("shape", INDEPENDENT_SHAPES)
def test_independent_shapes_have_no_dependencies(shape: str) -> None:
    assert make_suite(shape, 1000, 10, 0.3, random.Random(0)).dependencies == {}


@pytest.mark.parametrize("slots", [1, 10, 100, 200])
def test_chains_shape_links_five_percent(slots: int) -> None:
    suite = make_suite("chains", 10_000, slots, 0.0, random.Random(6))
    chains = chains_of(suite.dependencies)
    chained = [case for chain in chains for case in chain]

    assert len(chained) == len(set(chained))
    assert int(10_000 * CHAINS_SHARE) - CHAIN_MIN_LENGTH < len(chained) <= int(10_000 * CHAINS_SHARE)
    assert all(CHAIN_MIN_LENGTH <= len(chain) <= CHAIN_MAX_LENGTH for chain in chains)
    for case, needs in suite.dependencies.items():
        assert len(needs) == 1
        assert needs[0] < case, "a test depends on one collected before it"


@pytest.mark.parametrize("slots", [1, 10, 100, 200])
def test_chains_shape_long_chains_near_slot_share(slots: int) -> None:
    suite = make_suite("chains", 10_000, slots, 0.0, random.Random(6))
    durations = suite.true_durations
    chains = chains_of(suite.dependencies)
    chain_seconds = sorted((sum(durations[case] for case in chain), chain) for chain in chains)
    long_chains = [chain for _, chain in chain_seconds[-CHAINS_LONG:]]
    in_long_chain = {case for chain in long_chains for case in chain}
    per_slot_s = sum(seconds for case, seconds in enumerate(durations) if case not in in_long_chain) / max(1, slots - CHAINS_LONG)

    for chain in long_chains:
        assert len(chain) == CHAIN_MAX_LENGTH
        chain_s = sum(durations[case] for case in chain)
        assert CHAIN_LONG_MIN_SHARE * per_slot_s <= chain_s <= CHAIN_LONG_MAX_SHARE * per_slot_s
    assert lower_bound(durations, slots, suite.dependencies) >= max(durations)


def test_chains_shape_chain_often_sets_lower_bound() -> None:
    # Each long chain takes 0.8 to 1.2 times a slot's share, so in about 3 of 4 suites one
    # of the two is above the average, and in the others both are below it.
    chain_above_average = 0
    for seed in range(10):
        suite = make_suite("chains", 10_000, 100, 0.0, random.Random(seed))
        average_s = sum(suite.true_durations) / 100
        if longest_chain(dict(enumerate(suite.true_durations)), suite.dependencies) > average_s:
            chain_above_average += 1

    assert 2 <= chain_above_average <= 9


@pytest.mark.parametrize("strategy", [name for name in STRATEGY_NAMES if name != DEPENDENCY_STRATEGY])
def test_simulate_rejects_other_strategies_on_chains(strategy: str) -> None:
    suite = make_suite("chains", 200, 4, 0.0, random.Random(0))

    with pytest.raises(ValueError, match=f"strategy {strategy!r} cannot be simulated on a suite with dependencies"):
        simulate(strategy, suite, executors=4)


@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("executors", [1, 7, 50, 200])
def test_chains_no_case_before_its_dependencies(noise: float, executors: int) -> None:
    suite = make_suite("chains", 3000, executors, noise, random.Random(11))

    result = simulate(DEPENDENCY_STRATEGY, suite, executors)

    assert suite.dependencies
    assert dependency_violations(result, suite.dependencies) == []
    assert sorted(result.executed) == list(range(3000))
    assert result.makespan_s >= result.lower_bound_s
    assert result.longest_chain_s >= max(suite.true_durations)


def test_dependency_violations_finds_early_start() -> None:
    result = SimulationResult(
        makespan_s=3.0,
        lower_bound_s=3.0,
        longest_chain_s=3.0,
        shards=3,
        trace=[
            ShardRun(0, "executor-0000", 0.0, 2.0, (0,)),
            ShardRun(1, "executor-0001", 1.0, 3.0, (1, 3)),
            ShardRun(2, "executor-0000", 3.0, 3.0, (2,)),
        ],
    )

    assert dependency_violations(result, {1: [0]}) == [(1, 0)]
    assert dependency_violations(result, {3: [1]}) == [(3, 1)]
    assert dependency_violations(result, {2: [0, 1]}) == []
    assert dependency_violations(result, {2: [4]}) == [(2, 4)]


@pytest.mark.parametrize("shape", INDEPENDENT_SHAPES)
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_dependency_aware_matches_time_balanced_without_dependencies(shape: str, noise: float) -> None:
    dependency_aware = run_simulation(DEPENDENCY_STRATEGY, shape, executors=40, tests=4000, noise=noise, seed=9)
    time_balanced = run_simulation("time-balanced", shape, executors=40, tests=4000, noise=noise, seed=9)

    assert dependency_aware == time_balanced


def test_chains_runnable_subset_drops_missing_dependencies() -> None:
    suite = make_suite("chains", 1000, 10, 0.3, random.Random(8))
    heads = {chain[0] for chain in chains_of(suite.dependencies)}
    runnable = [case for case in range(1000) if case not in heads]
    runnable_deps = runnable_dependencies(suite.dependencies, runnable)

    result = simulate(DEPENDENCY_STRATEGY, suite, executors=10, runnable=runnable)

    assert sorted(result.executed) == runnable
    assert len(runnable_deps) == len(suite.dependencies) - len(heads)
    assert all(need not in heads for needs in runnable_deps.values() for need in needs)
    assert dependency_violations(result, runnable_deps) == []
    assert result.makespan_s >= result.lower_bound_s


def test_make_suite_rejects_noise_of_one() -> None:
    with pytest.raises(ValueError, match="noise 1.0 is invalid"):
        make_suite("uniform", 10, 2, 1.0, random.Random(0))


def test_assign_shards_updates_queue_and_executors() -> None:
    run = make_run("even", make_case_ids(6), [[0, 1], [2, 3], [4, 5]])
    executors = make_executors(2, 1)

    started = assign_shards(run, executors, now=0.0)

    assert [(shard_id, executor.executor_id) for shard_id, executor in started] == [(0, "executor-0000"), (1, "executor-0001")]
    assert list(run.queue) == [2]
    assert run.shards[0].status is ShardStatus.ASSIGNED
    assert run.shards[0].attempt == 1
    assert executors[0].running == {(run.run_id, 0)}

    finish_shard(run, 0, executors[0], runnable=6, now=1.0)
    started = assign_shards(run, executors, now=1.0)

    assert [(shard_id, executor.executor_id) for shard_id, executor in started] == [(2, "executor-0000")]
    assert not run.queue
    assert run.done == {0, 1}
    assert executors[0].running == {(run.run_id, 2)}


def test_assign_shards_holds_back_dependent_shard() -> None:
    run = make_run(DEPENDENCY_STRATEGY, make_case_ids(3), [[0], [1], [2]], dependencies={1: [0], 2: [0]})
    executors = make_executors(3, 1)

    started = assign_shards(run, executors, now=0.0)

    assert [shard_id for shard_id, _ in started] == [0]
    assert run.deps == {1: [0], 2: [0]}

    finish_shard(run, 0, started[0][1], runnable=3, now=1.0)
    started = assign_shards(run, executors, now=1.0)

    assert sorted(shard_id for shard_id, _ in started) == [1, 2]


def test_simulation_raises_when_plan_drops_a_test(monkeypatch: pytest.MonkeyPatch) -> None:
    class DroppingStrategy:
        name = "dropping"

        def plan(self, request: PlanInput) -> list[list[int]]:
            return [list(request.runnable[1:])]

    monkeypatch.setattr(scheduling, "get_strategy", lambda name: DroppingStrategy())
    suite = make_suite("uniform", 5, 2, 0.0, random.Random(0))

    with pytest.raises(SimulationStalled, match="1 runnable tests have no result"):
        simulate("dropping", suite, executors=2)


@st.composite
def small_suites(draw: st.DrawFn) -> tuple[Suite, list[int]]:
    """Draw a suite of up to 60 tests, a partial history, and the sorted runnable indexes."""
    tests = draw(st.integers(min_value=0, max_value=60))
    case_ids = [f"tests/test_m{i // 7}.py::test_{i}" for i in range(tests)]
    seconds = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
    true_durations = draw(st.lists(seconds, min_size=tests, max_size=tests))
    known = draw(st.lists(st.booleans(), min_size=tests, max_size=tests))
    history = {case_id: draw(seconds) for case_id, is_known in zip(case_ids, known) if is_known}
    runnable = sorted(draw(st.sets(st.integers(min_value=0, max_value=max(tests - 1, 0)), max_size=tests)))
    return Suite(case_ids, true_durations, history), runnable


@settings(max_examples=150, deadline=None)
@given(drawn=small_suites(), executors=st.integers(min_value=1, max_value=12), slots_per_executor=st.integers(1, 3))
def test_strategies_plan_and_finish_small_suites(
    drawn: tuple[Suite, list[int]], executors: int, slots_per_executor: int
) -> None:
    suite, runnable = drawn
    slots = executors * slots_per_executor

    for strategy in STRATEGY_NAMES:
        shards = scheduling.get_strategy(strategy).plan(PlanInput(suite.case_ids, runnable, slots, suite.history))
        planned = [index for shard in shards for index in shard]
        assert sorted(planned) == runnable, strategy

        result = simulate(strategy, suite, executors, slots_per_executor, runnable)
        assert sorted(result.executed) == runnable, strategy
        assert result.makespan_s >= result.lower_bound_s, strategy


@st.composite
def small_suites_with_dependencies(draw: st.DrawFn) -> tuple[Suite, list[int]]:
    """Draw a small suite as ``small_suites`` does, where each case may depend on earlier ones."""
    suite, runnable = draw(small_suites())
    dependencies = {}
    for case in range(1, len(suite.case_ids)):
        needs = draw(st.sets(st.integers(min_value=0, max_value=case - 1), max_size=3))
        if needs:
            dependencies[case] = sorted(needs)
    return Suite(suite.case_ids, suite.true_durations, suite.history, dependencies), runnable


@settings(max_examples=150, deadline=None)
@given(drawn=small_suites_with_dependencies(), executors=st.integers(min_value=1, max_value=12))
def test_dependency_aware_finishes_small_dags(drawn: tuple[Suite, list[int]], executors: int) -> None:
    suite, runnable = drawn

    result = simulate(DEPENDENCY_STRATEGY, suite, executors, runnable=runnable)

    assert sorted(result.executed) == runnable
    assert dependency_violations(result, runnable_dependencies(suite.dependencies, runnable)) == []
    assert result.makespan_s >= result.lower_bound_s
