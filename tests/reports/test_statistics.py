"""Tests for the run figures: counts, pass rate, percentiles, flaky tests and utilization."""

from __future__ import annotations

import pytest

from swarmctl.reports.statistics import (
    compute_statistics,
    duration_summary,
    executor_usage,
    failing_count,
    format_duration,
    lower_bound,
    max_overlap,
    outcome_counts,
    pass_rate,
    percentile,
    retried_tests,
    slowest_tests,
)
from swarmctl.results import CaseResult, RunSummary

T0 = 1_700_000_000.0


def case(
    name: str, outcome: str = "passed", *, duration: float = 1.0, executor: str = "exec-a",
    start: float | None = 0.0, **fields,
) -> CaseResult:
    """Build a result that started ``start`` seconds after T0, or has no start time for None."""
    started_at = 0.0 if start is None else T0 + start
    return CaseResult(f"test_s.py::{name}", outcome, duration=duration, executor=executor, started_at=started_at, **fields)


def test_outcome_counts_in_outcome_order():
    results = [case("a", "failed"), case("b"), case("c", "skipped"), case("d"), case("e", "weird")]

    assert list(outcome_counts(results).items()) == [("passed", 2), ("failed", 1), ("skipped", 1), ("weird", 1)]


def test_outcome_counts_empty():
    assert outcome_counts([]) == {}


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"passed": 3, "failed": 1}, 0.75),
        ({"passed": 3, "failed": 1, "skipped": 4}, 0.75),
        ({"passed": 1, "error": 1, "timed_out": 1, "xfailed": 1}, 0.5),
        ({"xpassed": 2}, 1.0),
        ({"skipped": 5}, None),
        ({}, None),
    ],
)
def test_pass_rate(counts, expected):
    assert pass_rate(counts) == expected


def test_failing_count_sums_failing_outcomes():
    assert failing_count({"passed": 9, "failed": 2, "error": 1, "timed_out": 3, "skipped": 4}) == 6


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.5, 0.0),
        ([7.0], 0.95, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0.0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 1.0, 4.0),
        (list(range(1, 101)), 0.95, 95.05),
    ],
)
def test_percentile_interpolates(values, fraction, expected):
    assert percentile([float(v) for v in values], fraction) == pytest.approx(expected)


def test_percentile_rejects_fraction_outside_range():
    with pytest.raises(ValueError, match="outside 0..1"):
        percentile([1.0], 95)


def test_duration_summary_skips_coordinator_results():
    results = [case("a", duration=1.0), case("b", duration=3.0), case("c", "error", duration=99.0, executor="")]

    summary = duration_summary(results)

    assert summary.p50 == 2.0
    assert summary.max == 3.0
    assert summary.total == 4.0


def test_slowest_tests_longest_first():
    results = [case("a", duration=1.0), case("b", duration=5.0), case("c", duration=3.0), case("d", duration=3.0)]

    slowest = slowest_tests(results, 3)

    assert [result.case_id for result in slowest] == ["test_s.py::b", "test_s.py::c", "test_s.py::d"]


def test_retried_tests_by_attempt_or_reassignment():
    results = [
        case("first"),
        case("second_try", attempt=2, flaky=True),
        case("moved", reassigned_from=("exec-gone",)),
    ]

    assert [result.case_id for result in retried_tests(results)] == ["test_s.py::second_try", "test_s.py::moved"]


def test_max_overlap_counts_parallel_tests():
    sequential = [case("a", duration=1.0, start=0.0), case("b", duration=1.0, start=1.0)]
    parallel = [case("a", duration=2.0, start=0.0), case("b", duration=2.0, start=1.0), case("c", duration=0.5, start=1.2)]

    assert max_overlap(sequential) == 1
    assert max_overlap(parallel) == 3
    assert max_overlap([]) == 1
    assert max_overlap([case("unplaced", start=None)]) == 1


def test_executor_usage_per_executor():
    attempts = [
        case("a", duration=2.0, executor="exec-a", start=0.0),
        case("b", duration=3.0, executor="exec-a", start=2.0),
        case("c", duration=4.0, executor="exec-b", start=0.0),
        case("d", duration=4.0, executor="exec-b", start=1.0),
        case("e", "error", duration=5.0, executor=""),
    ]

    usage = {entry.executor: entry for entry in executor_usage(attempts, wall_s=10.0)}

    assert set(usage) == {"exec-a", "exec-b"}
    assert usage["exec-a"].busy_s == 5.0
    assert usage["exec-a"].slots == 1
    assert usage["exec-a"].utilization == 0.5
    assert usage["exec-b"].slots == 2
    assert usage["exec-b"].utilization == pytest.approx(8.0 / 20.0)


def test_executor_usage_zero_wall_time():
    assert executor_usage([case("a")], wall_s=0.0)[0].utilization is None


def test_lower_bound_is_max_of_spread_and_longest():
    assert lower_bound(busy_s=12.0, slots=4, longest_s=1.0) == 3.0
    assert lower_bound(busy_s=12.0, slots=4, longest_s=5.0) == 5.0
    assert lower_bound(busy_s=0.0, slots=0, longest_s=0.0) == 0.0


def test_compute_statistics_counts_earlier_attempts():
    summary = RunSummary("run-1", 1, wall_s=10.0, started_at=T0, suite="tests")
    results = [
        case("flaky", duration=1.0, executor="exec-a", start=4.0, attempt=2, flaky=True),
        case("slow", duration=6.0, executor="exec-b", start=0.0),
        case("broken", "failed", duration=1.0, executor="exec-a", start=6.0),
    ]
    earlier = [case("flaky", "failed", duration=2.0, executor="exec-a", start=0.0)]

    statistics = compute_statistics(summary, results, earlier)

    assert statistics.total == 3
    assert statistics.counts == {"passed": 2, "failed": 1}
    assert statistics.pass_rate == pytest.approx(2 / 3)
    assert [result.case_id for result in statistics.flaky] == ["test_s.py::flaky"]
    assert [result.case_id for result in statistics.retried] == ["test_s.py::flaky"]
    assert statistics.busy_s == 10.0
    assert statistics.slots == 2
    assert statistics.utilization == pytest.approx(10.0 / 20.0)
    assert statistics.lower_bound_s == 6.0
    assert statistics.efficiency == pytest.approx(0.6)
    assert statistics.durations.max == 6.0


def test_compute_statistics_empty_run():
    summary = RunSummary("run-0", 5, wall_s=0.0, started_at=T0, suite="tests")

    statistics = compute_statistics(summary, [])

    assert statistics.total == 0
    assert statistics.pass_rate is None
    assert statistics.utilization is None
    assert statistics.efficiency is None
    assert statistics.slowest == ()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.00042, "420 µs"), (0.0123, "12.3 ms"), (4.561, "4.56 s"), (0.0, "0 µs")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
