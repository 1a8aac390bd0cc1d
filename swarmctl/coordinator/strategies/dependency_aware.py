"""``dependency-aware``: tests that depend on others run after them, longest chain first.

Cases are grouped into levels: a case's dependencies all lie in earlier levels, so a shard
never holds a case together with one it depends on. Within a level the cases are ordered by
the expected length of the longest chain of work that starts with them (their own
duration plus the longest chain of their dependents), and each level is cut into shards
that shrink toward its end. All shards are then ordered by the longest chain they start,
so the chains that bound the run go first. The scheduler holds a shard back until every
case its cases depend on has a final result.

NOTE: ``--group`` is not applied here; dependencies decide which tests share a shard.
"""

from __future__ import annotations

from swarmctl.coordinator.dependencies import dependents_of, levels
from swarmctl.coordinator.strategies import PlanInput, cut_shards, expected_durations


class DependencyAwareStrategy:
    name = "dependency-aware"

    def plan(self, request: PlanInput) -> list[list[int]]:
        expected = expected_durations(request)
        graph = {case: list(needs) for case, needs in request.dependencies.items()}
        chain = critical_path(graph, expected, request.runnable)

        shards: list[list[int]] = []
        for level in levels(graph, request.runnable):
            order = sorted(level, key=lambda index: -chain[index])
            shards.extend(cut_shards(order, expected, request.slots))
        # Slots take ready shards in this order, so the shards that start the longest remaining
        # chains go first, whatever their level: a chain's next test must not wait behind
        # independent work. A later level's shards are held back until their tests' needs
        # are done, so putting them early costs nothing while they wait.
        shards.sort(key=lambda shard: -max(chain[index] for index in shard))
        return shards


def critical_path(graph: dict[int, list[int]], expected: dict[int, float], cases) -> dict[int, float]:
    """Return, per case, its expected seconds plus the longest chain of its dependents'."""
    dependents = dependents_of(graph)
    memo: dict[int, float] = {}
    for case in reversed([c for level in levels(graph, cases) for c in level]):
        after = max((memo[d] for d in dependents.get(case, ()) if d in memo), default=0.0)
        memo[case] = expected.get(case, 0.0) + after
    return memo
