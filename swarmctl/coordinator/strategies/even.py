"""``even``: the same number of cases per shard, in collection order.

Contiguous runs of the collection order keep a module's tests together, so module- and
class-scoped fixtures are set up once per shard rather than once per test.
"""

from __future__ import annotations

from swarmctl.coordinator.strategies import PlanInput, plan_by_groups, shard_count


class EvenStrategy:
    name = "even"

    def plan(self, request: PlanInput) -> list[list[int]]:
        if request.group != "none":
            return plan_by_groups(request)
        runnable = request.runnable
        if not runnable:
            return []
        count = shard_count(len(runnable), request.slots)
        size, extra = divmod(len(runnable), count)
        shards = []
        start = 0
        for i in range(count):
            end = start + size + (1 if i < extra else 0)
            shards.append(list(runnable[start:end]))
            start = end
        return shards
