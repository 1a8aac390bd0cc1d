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
    GIANTS_MAX_SHARE,
    SHAPES,
    SimulationStalled,
    Suite,
    assign_shards,
    finish_shard,
    lower_bound,
    make_case_ids,
    make_executors,
    make_run,
    make_suite,
    run_simulation,
    simulate,
)

GRID = [(strategy, shape) for strategy in STRATEGY_NAMES for shape in SHAPES]


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
    with pytest.raises(ValueError, match="unknown suite shape 'chains'"):
        make_suite("chains", 10, 2, 0.0, random.Random(0))


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
