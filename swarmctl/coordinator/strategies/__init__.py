"""Sharding strategies: turn a run's cases into shards.

A strategy is a small pure object behind the ``Strategy`` protocol. What every strategy
shares, such as how many shards a run gets, lives here once.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from swarmctl.errors import UsageError

# Shards per slot: more shards even out the tail (a slot that drew slow tests takes fewer
# shards), fewer shards keep module fixtures shared longer. Four is a middle ground until
# durations drive the plan.
SHARDS_PER_SLOT = 4


@dataclass(frozen=True)
class PlanInput:
    """What a strategy plans from.

    ``runnable`` contains indexes into ``case_ids`` in collection order. ``durations`` maps case
    ids to expected seconds, from the suite's history or an imported file; it may lack cases.
    """

    case_ids: Sequence[str]
    runnable: Sequence[int]
    slots: int
    durations: Mapping[str, float] = field(default_factory=dict)
    dependencies: Mapping[int, Sequence[int]] = field(default_factory=dict)  # case index -> indexes it needs
    group: str = "none"  # keep tests of one module, class or file in one shard (see group_key)


class Strategy(Protocol):
    name: str

    def plan(self, request: PlanInput) -> list[list[int]]:
        """Split the case indexes in ``request.runnable`` into shards."""
        ...


def shard_count(cases: int, slots: int) -> int:
    return max(1, min(cases, max(1, slots) * SHARDS_PER_SLOT))


# Expected seconds of a case when no duration at all is known. Any positive constant works,
# because only the ratios between expected durations shape a plan.
UNKNOWN_CASE_SECONDS = 1.0


def expected_durations(request: PlanInput) -> dict[int, float]:
    """Estimate the seconds of every runnable case and return them by case index.

    A case gets its own duration from ``request.durations`` when there is one. Otherwise it
    gets the median of the known durations in its file (the node id up to the first "::"),
    then the median of all known durations, then ``UNKNOWN_CASE_SECONDS``. Durations that
    are negative, NaN or infinite count as unknown. The medians use every entry of
    ``request.durations``, including cases that this run did not collect, because a file's
    removed tests still show how slow its tests tend to be.
    """
    known = {case_id: float(seconds) for case_id, seconds in request.durations.items() if _is_valid_duration(seconds)}
    by_file: dict[str, list[float]] = {}
    for case_id, seconds in known.items():
        by_file.setdefault(_file_of(case_id), []).append(seconds)
    file_medians = {file: statistics.median(values) for file, values in by_file.items()}
    overall = statistics.median(known.values()) if known else UNKNOWN_CASE_SECONDS

    expected = {}
    for index in request.runnable:
        case_id = request.case_ids[index]
        if case_id in known:
            expected[index] = known[case_id]
        else:
            expected[index] = file_medians.get(_file_of(case_id), overall)
    return expected


def _is_valid_duration(seconds: object) -> bool:
    return isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds) and seconds >= 0


def _file_of(case_id: str) -> str:
    return case_id.partition("::")[0]


# Shard sizing for ``cut_shards``, a form of guided self-scheduling. Each shard aims at
# remaining / (SHARD_SPLIT_FACTOR * slots) expected seconds, so shards shrink as the run
# goes on and the last ones are small. With a factor of 1 (classic guided self-scheduling)
# the first shard is a slot's whole fair share, so a slot whose estimate was too low ends
# late with nothing left to balance. With 2, no shard is more than half a fair share.
# A simulation estimated the effect: LPT order, 2 to 128 slots, six duration distributions,
# 30 ms per shard, and actual durations = expected * lognormal noise with sigma 0.5. On the
# worst lognormal suite the makespan was 1.96 * max(total / slots, longest test) with a
# factor of 1, 1.36 with 1.5 and 1.03 with 2 or 3. Runs got 4.1, 7.1 and 9.4 shards per slot
# with factors 1, 2 and 3, so factors above 2 only add shards.
SHARD_SPLIT_FACTOR = 2.0
# The target never drops below a floor, so the tail is not one tiny test per shard. The
# floor is the larger of MIN_SHARD_SECONDS and total / (slots * TAIL_SHARDS_PER_SLOT).
# The second term bounds the shard count. Guided shards cover all but
# SHARD_SPLIT_FACTOR / TAIL_SHARDS_PER_SLOT of the work in about
# SHARD_SPLIT_FACTOR * slots * ln(TAIL_SHARDS_PER_SLOT / SHARD_SPLIT_FACTOR) shards, and
# floor-sized shards take the rest, about 7 shards per slot in all. The first
# term is about three times the cost of one shard: 2000 trivial tests on one slot took 4.4 s
# as 1 shard and 11.7 s as 250 shards, about 30 ms per shard (2-core AMD EPYC). That cost
# varies with the machine and grows with module fixtures.
MIN_SHARD_SECONDS = 0.1
TAIL_SHARDS_PER_SLOT = 32


def cut_shards(order: Sequence[int], expected: Mapping[int, float], slots: int) -> list[list[int]]:
    """Cut ``order`` into consecutive shards whose expected durations shrink toward the end.

    A shard takes cases from ``order`` while their expected seconds fit its target, which is
    ``remaining / (SHARD_SPLIT_FACTOR * slots)`` but never below the floor described at
    ``MIN_SHARD_SECONDS``. A case longer than the target becomes a shard of its own. Every
    index of ``order`` ends up in exactly one shard, in the given order. When ``order``
    is sorted longest first, every shard but the last is longer than half its target.
    """
    if not order:
        return []
    slots = max(1, slots)
    remaining = math.fsum(expected[index] for index in order)
    floor = max(MIN_SHARD_SECONDS, remaining / (slots * TAIL_SHARDS_PER_SLOT))

    shards: list[list[int]] = []
    current: list[int] = []
    current_seconds = 0.0
    target = max(floor, remaining / (SHARD_SPLIT_FACTOR * slots))
    for index in order:
        seconds = expected[index]
        if current and current_seconds + seconds > target:
            shards.append(current)
            remaining -= current_seconds
            target = max(floor, remaining / (SHARD_SPLIT_FACTOR * slots))
            current = []
            current_seconds = 0.0
        current.append(index)
        current_seconds += seconds
    shards.append(current)
    return shards


GROUPINGS = ("none", "module", "class", "file")


def group_key(case_id: str, grouping: str) -> str:
    """Name the group a case belongs to: its file, its class, or itself.

    ``module`` and ``file`` both group by the file part of the node id; they differ only for
    files that are not Python modules, such as doctest text files, which are one group each
    either way. With ``class``, a test outside any class is a group of its own.
    """
    path, sep, rest = case_id.partition("::")
    if grouping == "none" or not sep:
        return case_id if grouping == "none" else path
    if grouping in ("module", "file"):
        return path
    names = rest.partition("[")[0].split("::")
    return f"{path}::{'::'.join(names[:-1])}" if len(names) > 1 else case_id


def plan_by_groups(request: PlanInput) -> list[list[int]]:
    """Plan whole groups (``request.group``) as units, balanced by their expected durations.

    Tests of one group share module- or class-scoped fixtures, so keeping them in one shard
    sets each fixture up once. Groups are ordered longest first and cut like single tests.
    """
    expected = expected_durations(request)
    groups: dict[str, list[int]] = {}
    for index in request.runnable:
        groups.setdefault(group_key(request.case_ids[index], request.group), []).append(index)
    units = list(groups.values())
    unit_expected = {n: sum(expected[index] for index in unit) for n, unit in enumerate(units)}
    order = sorted(range(len(units)), key=lambda n: -unit_expected[n])
    return [[index for n in shard for index in units[n]] for shard in cut_shards(order, unit_expected, request.slots)]


def get_strategy(name: str) -> Strategy:
    from swarmctl.coordinator.strategies.dependency_aware import DependencyAwareStrategy
    from swarmctl.coordinator.strategies.even import EvenStrategy
    from swarmctl.coordinator.strategies.time_balanced import TimeBalancedStrategy

    strategies: dict[str, Strategy] = {
        "even": EvenStrategy(),
        "time-balanced": TimeBalancedStrategy(),
        "dependency-aware": DependencyAwareStrategy(),
    }
    try:
        return strategies[name]
    except KeyError:
        raise UsageError(f"unknown strategy {name!r}: choose one of {', '.join(sorted(strategies))}") from None


STRATEGY_NAMES = ("even", "time-balanced", "dependency-aware")
