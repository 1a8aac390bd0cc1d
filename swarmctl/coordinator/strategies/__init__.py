"""Sharding strategies: turn a run's cases into shards.

A strategy is a small pure object behind the ``Strategy`` protocol. What every strategy
shares, such as how many shards a run gets, lives here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from swarmctl.errors import UsageError

# Shards per slot: more shards even out the tail (a slot that drew slow tests takes fewer
# shards), fewer shards keep module fixtures shared longer. Four is a middle ground until
# durations drive the plan.
SHARDS_PER_SLOT = 4


class Strategy(Protocol):
    name: str

    def plan(self, case_ids: Sequence[str], runnable: Sequence[int], slots: int) -> list[list[int]]:
        """Split the case indexes in ``runnable`` into shards for ``slots`` slots."""
        ...


def shard_count(cases: int, slots: int) -> int:
    return max(1, min(cases, max(1, slots) * SHARDS_PER_SLOT))


def get_strategy(name: str) -> Strategy:
    from swarmctl.coordinator.strategies.even import EvenStrategy

    strategies: dict[str, Strategy] = {"even": EvenStrategy()}
    try:
        return strategies[name]
    except KeyError:
        raise UsageError(f"unknown strategy {name!r}: choose one of {', '.join(sorted(strategies))}") from None


STRATEGY_NAMES = ("even",)
