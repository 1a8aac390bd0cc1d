"""Tests of the sharding strategies: the ``even`` plan, what every strategy guarantees, and the lookup."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmctl.coordinator.strategies import PlanInput, SHARDS_PER_SLOT, STRATEGY_NAMES, get_strategy, group_key, shard_count
from swarmctl.coordinator.strategies.even import EvenStrategy
from swarmctl.coordinator.strategies.time_balanced import TimeBalancedStrategy
from swarmctl.errors import UsageError


@st.composite
def collections(draw: st.DrawFn) -> tuple[list[str], list[int]]:
    """Draw case ids and the sorted indexes among them that are runnable."""
    total = draw(st.integers(min_value=0, max_value=300))
    case_ids = [f"tests/test_m{i // 7}.py::test_{i}" for i in range(total)]
    runnable = sorted(draw(st.sets(st.integers(min_value=0, max_value=max(total - 1, 0)), max_size=total)))
    return case_ids, runnable


@given(collection=collections(), slots=st.integers(min_value=1, max_value=40))
def test_even_plan_properties(collection: tuple[list[str], list[int]], slots: int) -> None:
    case_ids, runnable = collection

    shards = EvenStrategy().plan(PlanInput(case_ids, runnable, slots))

    flattened = [index for shard in shards for index in shard]
    assert flattened == runnable
    if not runnable:
        assert shards == []
        return
    assert len(shards) == min(len(runnable), slots * SHARDS_PER_SLOT)
    sizes = [len(shard) for shard in shards]
    assert min(sizes) >= 1
    assert max(sizes) - min(sizes) <= 1


@given(
    name=st.sampled_from(STRATEGY_NAMES),
    collection=collections(),
    slots=st.integers(min_value=1, max_value=40),
    seconds=st.lists(st.floats(min_value=0, max_value=100), max_size=300),
)
def test_every_strategy_plans_each_case_once(
    name: str, collection: tuple[list[str], list[int]], slots: int, seconds: list[float]
) -> None:
    case_ids, runnable = collection
    durations = dict(zip(case_ids, seconds))

    shards = get_strategy(name).plan(PlanInput(case_ids, runnable, slots, durations))

    flattened = [index for shard in shards for index in shard]
    assert sorted(flattened) == runnable
    assert len(flattened) == len(set(flattened))
    assert all(shard for shard in shards)


def test_even_plan_example() -> None:
    shards = EvenStrategy().plan(PlanInput([f"t{i}" for i in range(11)], list(range(1, 11)), slots=1))

    assert shards == [[1, 2, 3], [4, 5, 6], [7, 8], [9, 10]]


def test_even_plan_fewer_cases_than_shards() -> None:
    shards = EvenStrategy().plan(PlanInput(["a", "b", "c"], [0, 2], slots=8))

    assert shards == [[0], [2]]


def test_even_plan_no_runnable_cases() -> None:
    assert EvenStrategy().plan(PlanInput(["skip_mod.py"], [], slots=4)) == []


@pytest.mark.parametrize(("cases", "slots", "expected"), [(0, 4, 1), (1, 4, 1), (100, 0, 4), (100, 3, 12), (5, 3, 5)])
def test_shard_count(cases: int, slots: int, expected: int) -> None:
    assert shard_count(cases, slots) == expected


def test_get_strategy_even() -> None:
    strategy = get_strategy("even")

    assert isinstance(strategy, EvenStrategy)
    assert strategy.name == "even"


def test_get_strategy_time_balanced() -> None:
    strategy = get_strategy("time-balanced")

    assert isinstance(strategy, TimeBalancedStrategy)
    assert strategy.name == "time-balanced"


def test_strategy_names() -> None:
    assert STRATEGY_NAMES == ("even", "time-balanced", "dependency-aware")


def test_get_strategy_names_all_resolve() -> None:
    assert [get_strategy(name).name for name in STRATEGY_NAMES] == list(STRATEGY_NAMES)


@pytest.mark.parametrize("name", ["fastest", "", "Even", "time_balanced"])
def test_get_strategy_unknown(name: str) -> None:
    with pytest.raises(UsageError) as caught:
        get_strategy(name)

    message = str(caught.value)
    assert f"unknown strategy {name!r}" in message
    for choice in STRATEGY_NAMES:
        assert choice in message
    assert caught.value.exit_code == 4


@pytest.mark.parametrize(
    ("case_id", "grouping", "key"),
    [
        ("tests/test_a.py::test_x", "module", "tests/test_a.py"),
        ("tests/test_a.py::TestK::test_x[1]", "file", "tests/test_a.py"),
        ("tests/test_a.py::TestK::test_x[a::b]", "class", "tests/test_a.py::TestK"),
        ("tests/test_a.py::TestK::TestInner::test_x", "class", "tests/test_a.py::TestK::TestInner"),
        ("tests/test_a.py::test_x[p]", "class", "tests/test_a.py::test_x[p]"),
        ("tests/test_a.py::test_x", "none", "tests/test_a.py::test_x"),
        ("lint", "module", "lint"),
    ],
)
def test_group_key(case_id: str, grouping: str, key: str) -> None:
    assert group_key(case_id, grouping) == key


@pytest.mark.parametrize("name", STRATEGY_NAMES[:2])
@pytest.mark.parametrize("grouping", ["module", "class"])
def test_grouped_plan_keeps_groups_together(name: str, grouping: str) -> None:
    case_ids = [f"test_{m}.py::Test{c}::test_{t}" for m in range(6) for c in range(3) for t in range(4)]
    durations = {case_id: float(len(case_id) % 7 + 1) for case_id in case_ids}
    request = PlanInput(case_ids, list(range(len(case_ids))), 4, durations, group=grouping)

    shards = get_strategy(name).plan(request)

    assert sorted(i for shard in shards for i in shard) == list(range(len(case_ids)))
    shard_of_group: dict[str, int] = {}
    for n, shard in enumerate(shards):
        for index in shard:
            key = group_key(case_ids[index], grouping)
            assert shard_of_group.setdefault(key, n) == n, key
