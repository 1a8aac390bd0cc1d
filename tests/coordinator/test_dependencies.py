"""Dependency validation and the dependency-aware strategy."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmctl.coordinator.dependencies import DependencyError, dependents_of, levels, resolve
from swarmctl.coordinator.strategies import PlanInput
from swarmctl.coordinator.strategies.dependency_aware import DependencyAwareStrategy, critical_path

IDS = ["a", "b", "c", "d"]


def test_resolve_maps_ids_to_indexes():
    assert resolve(IDS, {"c": ["a", "b"], "d": ["c"]}) == {2: [0, 1], 3: [2]}


def test_resolve_unknown_dependency():
    with pytest.raises(DependencyError, match="'c' depends on 'x', which is not in this run"):
        resolve(IDS, {"c": ["x"]})


def test_resolve_cycle_names_cases():
    with pytest.raises(DependencyError, match="cycle") as caught:
        resolve(IDS, {"a": ["b"], "b": ["c"], "c": ["a"]})
    assert all(name in str(caught.value) for name in ("a", "b", "c"))


def test_resolve_ignores_deselected_dependents():
    assert resolve(IDS, {"gone": ["a"]}) == {}


def test_levels_and_dependents():
    graph = {2: [0, 1], 3: [2]}

    assert levels(graph, [0, 1, 2, 3]) == [[0, 1], [2], [3]]
    assert dependents_of(graph) == {0: [2], 1: [2], 2: [3]}


def test_critical_path_includes_dependents():
    graph = {1: [0], 2: [1]}
    expected = {0: 1.0, 1: 2.0, 2: 3.0, 3: 5.0}

    chain = critical_path(graph, expected, [0, 1, 2, 3])

    assert chain == {0: 6.0, 1: 5.0, 2: 3.0, 3: 5.0}


@given(
    size=st.integers(min_value=1, max_value=40),
    edges=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 39)), max_size=60),
    slots=st.integers(min_value=1, max_value=8),
)
def test_dependency_aware_never_before_dependency(size, edges, slots):
    # Edges only from a later case to an earlier one, so the graph is acyclic.
    graph: dict[int, list[int]] = {}
    for a, b in edges:
        if a < size and b < size and a > b:
            graph.setdefault(a, []).append(b)
    request = PlanInput([f"t{i}" for i in range(size)], list(range(size)), slots, {}, graph)

    shards = DependencyAwareStrategy().plan(request)

    planned = [case for shard in shards for case in shard]
    assert sorted(planned) == list(range(size))  # every case exactly once
    position = {case: n for n, shard in enumerate(shards) for case in shard}
    for case, needs in graph.items():
        for need in needs:
            assert position[need] < position[case]  # in an earlier shard, never the same one
