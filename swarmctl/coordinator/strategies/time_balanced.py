"""``time-balanced``: longest expected cases first, in shards that shrink toward the end.

Ordering by expected duration (longest processing time first) starts the slow tests early
and leaves the quick ones to fill the gaps at the end. ``cut_shards`` then makes the last
shards small, so no slot is left running a long shard while the others are idle. The
price is fixture reuse: a module's tests are spread over many shards, so module- and
class-scoped fixtures are set up more often than with ``even``.
"""

from __future__ import annotations

from swarmctl.coordinator.strategies import PlanInput, plan_by_groups, cut_shards, expected_durations


class TimeBalancedStrategy:
    name = "time-balanced"

    def plan(self, request: PlanInput) -> list[list[int]]:
        if request.group != "none":
            return plan_by_groups(request)
        expected = expected_durations(request)
        # sorted() is stable, so cases with equal expected durations keep collection order.
        order = sorted(request.runnable, key=lambda index: -expected[index])
        return cut_shards(order, expected, request.slots)
