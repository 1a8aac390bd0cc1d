"""Figures that describe one run, computed from its results.

Every function here is pure: results and the run's summary in, numbers out. The figures
and their definitions:

- **counts**: final results per outcome, in the order of ``results.OUTCOMES``.
- **pass rate**: the share of tests that ran and did not fail,
  ``(total - skipped - failing) / (total - skipped)``, where failing means failed, error
  or timed_out. An xfailed or xpassed test counts as passing, because pytest's exit code
  treats it as a success. It is None when every test was skipped or there were none.
- **durations** (p50, p95, max): over the final results of tests that ran on an executor.
  Results the coordinator recorded itself (a test not run before the deadline, say) have
  no executor and are left out. Percentiles interpolate linearly between the two nearest
  ranks, as ``numpy.percentile`` does by default.
- **slowest**: the final results with the longest durations, longest first.
- **flaky**: final results that passed after failing on an earlier attempt.
- **retried**: final results with ``attempt > 1`` or a non-empty ``reassigned_from``,
  that is tests that were run again after a failure or after their executor was lost.
- **busy seconds** of an executor: the sum of the durations of every attempt it ran,
  earlier failed attempts included.
- **slots** of an executor: the maximum number of its tests whose
  ``[started_at, started_at + duration]`` intervals overlap, at least 1. The state
  database does not store slot counts, so this is an estimate from below.
- **utilization**: busy seconds divided by ``wall seconds x slots``, per executor and
  for the whole run.
- **lower bound**: ``max(total busy seconds / total slots, longest attempt)``, the
  shortest wall time the run could have had with its slots. It leaves out collection,
  worker start-up and dependency chains, so a real run always takes longer.
- **efficiency**: lower bound divided by wall seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from swarmctl.results import FAILING_OUTCOMES, OUTCOMES, SKIPPED, CaseResult, RunSummary

SLOWEST_COUNT = 10


@dataclass(frozen=True, slots=True)
class DurationSummary:
    """Percentiles and total of test durations in seconds, all zero when no test ran."""

    p50: float
    p95: float
    max: float
    total: float


@dataclass(frozen=True, slots=True)
class ExecutorUsage:
    """How much of the run's wall time one executor spent running tests."""

    executor: str
    attempts: int  # test attempts it ran, earlier failed attempts included
    busy_s: float
    slots: int  # estimated from overlapping tests, see the module docstring
    utilization: float | None  # None when the wall time is zero


@dataclass(frozen=True, slots=True)
class RunStatistics:
    """Every figure of one run, as the module docstring defines them."""

    total: int
    counts: dict[str, int]
    pass_rate: float | None
    durations: DurationSummary
    slowest: tuple[CaseResult, ...]
    flaky: tuple[CaseResult, ...]
    retried: tuple[CaseResult, ...]
    executors: tuple[ExecutorUsage, ...]
    wall_s: float
    busy_s: float
    slots: int
    utilization: float | None
    lower_bound_s: float
    efficiency: float | None


def compute_statistics(
    summary: RunSummary,
    results: Sequence[CaseResult],
    earlier_attempts: Iterable[CaseResult] = (),
    *,
    slowest: int = SLOWEST_COUNT,
) -> RunStatistics:
    """Compute every figure of a run from its final results and its earlier failed attempts."""
    counts = outcome_counts(results)
    attempts = [*results, *earlier_attempts]
    usage = executor_usage(attempts, summary.wall_s)

    busy = sum(entry.busy_s for entry in usage)
    slots = sum(entry.slots for entry in usage)
    longest = max((attempt.duration for attempt in _ran(attempts)), default=0.0)
    bound = lower_bound(busy, slots, longest)

    return RunStatistics(
        total=len(results),
        counts=counts,
        pass_rate=pass_rate(counts),
        durations=duration_summary(results),
        slowest=slowest_tests(results, slowest),
        flaky=flaky_tests(results),
        retried=retried_tests(results),
        executors=tuple(usage),
        wall_s=summary.wall_s,
        busy_s=busy,
        slots=slots,
        utilization=_ratio(busy, summary.wall_s * slots),
        lower_bound_s=bound,
        efficiency=_ratio(bound, summary.wall_s),
    )


def outcome_counts(results: Iterable[CaseResult]) -> dict[str, int]:
    """Count final results per outcome: known outcomes in ``OUTCOMES`` order, then others."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return {outcome: count for outcome, count in counts.items() if count > 0}


def failing_count(counts: Mapping[str, int]) -> int:
    """Return how many results of these counts fail a run (failed, error, timed_out)."""
    return sum(count for outcome, count in counts.items() if outcome in FAILING_OUTCOMES)


def pass_rate(counts: Mapping[str, int]) -> float | None:
    """Return the share of tests that ran and did not fail, or None when none ran."""
    ran = sum(counts.values()) - counts.get(SKIPPED, 0)
    if ran <= 0:
        return None
    return (ran - failing_count(counts)) / ran


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the ``fraction`` (0 to 1) percentile of ``values``, interpolating between ranks.

    Returns 0.0 for no values.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"percentile fraction {fraction} is outside 0..1")
    ordered = sorted(values)
    if not ordered:
        return 0.0
    position = fraction * (len(ordered) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    weight = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * weight


def duration_summary(results: Iterable[CaseResult]) -> DurationSummary:
    """Summarize the durations of the tests that ran on an executor."""
    durations = [result.duration for result in _ran(results)]
    return DurationSummary(
        p50=percentile(durations, 0.50),
        p95=percentile(durations, 0.95),
        max=max(durations, default=0.0),
        total=sum(durations),
    )


def slowest_tests(results: Iterable[CaseResult], count: int = SLOWEST_COUNT) -> tuple[CaseResult, ...]:
    """Return up to ``count`` tests that ran, longest first. Ties keep the run's order."""
    ran = list(_ran(results))
    ran.sort(key=lambda result: result.duration, reverse=True)
    return tuple(ran[: max(count, 0)])


def flaky_tests(results: Iterable[CaseResult]) -> tuple[CaseResult, ...]:
    """Return the results that passed after failing on an earlier attempt."""
    return tuple(result for result in results if result.flaky)


def retried_tests(results: Iterable[CaseResult]) -> tuple[CaseResult, ...]:
    """Return the results that took more than one attempt or were moved off a lost executor."""
    return tuple(result for result in results if is_retried(result))


def is_retried(result: CaseResult) -> bool:
    return result.attempt > 1 or bool(result.reassigned_from)


def executor_usage(attempts: Iterable[CaseResult], wall_s: float) -> list[ExecutorUsage]:
    """Return the busy seconds, estimated slots and utilization of each executor, by id."""
    by_executor: dict[str, list[CaseResult]] = {}
    for attempt in _ran(attempts):
        by_executor.setdefault(attempt.executor, []).append(attempt)

    usage = []
    for executor in sorted(by_executor):
        ran = by_executor[executor]
        busy = sum(max(attempt.duration, 0.0) for attempt in ran)
        slots = max_overlap(ran)
        usage.append(ExecutorUsage(executor, len(ran), busy, slots, _ratio(busy, wall_s * slots)))
    return usage


def max_overlap(attempts: Iterable[CaseResult]) -> int:
    """Return the maximum number of attempts running at the same moment, at least 1.

    Attempts without a start time (``started_at`` 0) cannot be placed and are left out.
    An attempt that ends exactly when another starts does not overlap it.
    """
    events: list[tuple[float, int]] = []
    for attempt in attempts:
        if attempt.started_at > 0:
            events.append((attempt.started_at, 1))
            events.append((attempt.started_at + max(attempt.duration, 0.0), -1))
    # At equal times the end (-1) sorts before the start (+1).
    events.sort()
    running = peak = 0
    for _time, change in events:
        running += change
        peak = max(peak, running)
    return max(peak, 1)


def lower_bound(busy_s: float, slots: int, longest_s: float) -> float:
    """Return ``max(busy_s / slots, longest_s)``, the shortest possible wall time."""
    spread = busy_s / slots if slots > 0 else busy_s
    return max(spread, longest_s)


def format_duration(seconds: float) -> str:
    """Format a test duration for people: ``850 µs``, ``12.3 ms``, ``4.56 s``."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _ran(results: Iterable[CaseResult]) -> Iterable[CaseResult]:
    return (result for result in results if result.executor)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None
