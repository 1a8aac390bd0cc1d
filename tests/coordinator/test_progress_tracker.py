"""Tests of ``ProgressTracker``: counts, executor activity and the ETA with its range."""

from __future__ import annotations

import pytest

from swarmctl.coordinator.progress_tracker import (
    BASIS_DURATIONS,
    BASIS_RATE,
    BASIS_UNKNOWN,
    UNKNOWN_ETA,
    Eta,
    ExecutorActivity,
    ProgressTracker,
)
from swarmctl.coordinator.state import ShardState, ShardStatus
from swarmctl.results import ERROR, FAILED, PASSED, SKIPPED


def case_ids(count: int) -> list[str]:
    return [f"tests/test_a.py::test_{i}" for i in range(count)]


def history_tracker(seconds: list[float], dependencies: dict[int, list[int]] | None = None) -> ProgressTracker:
    """Return a tracker of len(seconds) runnable tests whose history gives them these durations."""
    ids = case_ids(len(seconds))
    return ProgressTracker(ids, range(len(ids)), dict(zip(ids, seconds)), dependencies)


def test_tracker_eta_from_history_before_results() -> None:
    tracker = history_tracker([10.0] * 4)

    eta = tracker.estimate(now=0.0, free_slots=2)

    assert eta.basis == BASIS_DURATIONS
    assert eta.eta_s == pytest.approx(20.0)  # 40 s of work on 2 slots


def test_tracker_eta_counts_remainder_of_running_test() -> None:
    tracker = history_tracker([10.0, 10.0])
    tracker.shard_started(0, 1, "exec-1", [0, 1], now=100.0)

    eta = tracker.estimate(now=104.0, free_slots=0)

    # 6 s left of the running test, then 10 s for the next one of the same shard.
    assert eta.eta_s == pytest.approx(16.0)


def test_tracker_eta_after_result_restarts_test_clock() -> None:
    tracker = history_tracker([10.0, 10.0])
    tracker.shard_started(0, 1, "exec-1", [0, 1], now=0.0)
    tracker.record(tracker.case_ids[0], PASSED, 10.0, "exec-1", now=10.0)

    eta = tracker.estimate(now=13.0, free_slots=0)

    assert eta.eta_s == pytest.approx(7.0, rel=0.01)


def test_tracker_eta_never_below_longest_pending_test() -> None:
    tracker = history_tracker([60.0] + [1.0] * 10)

    eta = tracker.estimate(now=0.0, free_slots=10)

    assert eta.eta_s == pytest.approx(60.0)


def test_tracker_eta_fills_slots_as_they_free() -> None:
    tracker = history_tracker([20.0, 2.0, 2.0, 2.0, 2.0])
    tracker.shard_started(0, 1, "exec-1", [0], now=0.0)

    eta = tracker.estimate(now=0.0, free_slots=1)

    # The free slot runs the 8 s of short tests while the other slot runs the 20 s test.
    assert eta.eta_s == pytest.approx(20.0)


def test_tracker_calibrates_run_slower_than_history() -> None:
    tracker = history_tracker([1.0] * 100)
    now = 0.0
    for case_id in tracker.case_ids[:20]:
        now += 2.0
        tracker.record(case_id, PASSED, 2.0, "exec-1", now)

    eta = tracker.estimate(now, free_slots=1)

    # 80 tests left. History gives them 80 s, but this run takes twice as long per test.
    assert eta.eta_s == pytest.approx(80 * (40.0 + 3.0) / (20.0 + 3.0))
    assert 140.0 < eta.eta_s < 160.0


def test_tracker_calibrates_run_faster_than_history() -> None:
    tracker = history_tracker([4.0] * 50)
    for case_id in tracker.case_ids[:25]:
        tracker.record(case_id, PASSED, 1.0, "exec-1", now=0.0)

    eta = tracker.estimate(now=0.0, free_slots=1)

    assert 25.0 < eta.eta_s < 35.0  # 25 tests of about 1 s, not of 4 s


def test_tracker_calibration_ignores_skips_and_coordinator_results() -> None:
    tracker = history_tracker([5.0] * 10)
    tracker.record(tracker.case_ids[0], SKIPPED, 0.0, "exec-1", now=0.0)
    tracker.record(tracker.case_ids[1], ERROR, 0.0, "", now=0.0)

    eta = tracker.estimate(now=0.0, free_slots=1)

    assert eta.eta_s == pytest.approx(40.0)  # 8 tests left at their history of 5 s


def test_tracker_without_history_unknown_before_results() -> None:
    ids = case_ids(10)
    tracker = ProgressTracker(ids, range(10))

    eta = tracker.estimate(now=0.0, free_slots=2)

    assert eta.basis == BASIS_UNKNOWN
    assert eta.eta_s is None
    assert eta.low_s is None
    assert eta.high_s is None


def test_tracker_without_history_uses_mean_of_this_run() -> None:
    ids = case_ids(10)
    tracker = ProgressTracker(ids, range(10), {})
    for case_id in ids[:4]:
        tracker.record(case_id, PASSED, 3.0, "exec-1", now=12.0)

    eta = tracker.estimate(now=12.0, free_slots=2)

    assert eta.basis == BASIS_RATE
    assert eta.eta_s == pytest.approx(6 * 3.0 / 2)


def test_tracker_without_history_counts_time_of_running_tests() -> None:
    ids = case_ids(6)
    tracker = ProgressTracker(ids, range(6))
    tracker.shard_started(0, 1, "exec-1", [0, 1, 2], now=0.0)
    tracker.record(ids[0], PASSED, 1.0, "exec-1", now=1.0)

    eta = tracker.estimate(now=4.0, free_slots=0)

    # One test done in 1 s, and the next has run for 3 s: 4 s of slot time per finished
    # test. The running test has 1 s left, then the shard's last test and the 3 pending
    # tests take 4 s each on the one slot.
    assert eta.eta_s == pytest.approx(1.0 + 4.0 + 3 * 4.0)


def test_tracker_range_contains_estimate() -> None:
    tracker = history_tracker([1.0, 2.0, 4.0, 8.0] * 25)
    durations = [0.5, 3.0, 2.5, 12.0] * 5
    for case_id, seconds in zip(tracker.case_ids, durations):
        tracker.record(case_id, PASSED, seconds, "exec-1", now=0.0)

    eta = tracker.estimate(now=0.0, free_slots=4)

    assert eta.low_s < eta.eta_s < eta.high_s
    assert eta.low_s >= 0.0


def test_tracker_range_wider_when_durations_scatter() -> None:
    steady = history_tracker([2.0] * 100)
    scattered = history_tracker([2.0] * 100)
    for index, case_id in enumerate(steady.case_ids[:40]):
        steady.record(case_id, PASSED, 2.0, "exec-1", now=0.0)
        scattered.record(case_id, PASSED, 0.5 if index % 2 else 3.5, "exec-1", now=0.0)

    steady_eta = steady.estimate(now=0.0, free_slots=2)
    scattered_eta = scattered.estimate(now=0.0, free_slots=2)

    assert scattered_eta.eta_s == pytest.approx(steady_eta.eta_s)
    assert scattered_eta.high_s - scattered_eta.low_s > 1.5 * (steady_eta.high_s - steady_eta.low_s)


def test_tracker_range_contains_estimate_without_history() -> None:
    ids = case_ids(50)
    tracker = ProgressTracker(ids, range(50))
    for index, case_id in enumerate(ids[:10]):
        tracker.record(case_id, PASSED, 0.2 + index, "exec-1", now=0.0)

    eta = tracker.estimate(now=0.0, free_slots=5)

    assert eta.low_s < eta.eta_s < eta.high_s


def test_tracker_dependency_chain_bounds_eta() -> None:
    # Tests 0 -> 1 -> 2 form a chain of 30 s; the other 7 tests of 1 s would fit in 1 s on 10 slots.
    tracker = history_tracker([10.0, 10.0, 10.0] + [1.0] * 7, dependencies={1: [0], 2: [1]})

    eta = tracker.estimate(now=0.0, free_slots=10)

    assert eta.eta_s == pytest.approx(30.0)


def test_tracker_dependency_chain_shrinks_as_links_finish() -> None:
    tracker = history_tracker([10.0, 10.0, 10.0], dependencies={1: [0], 2: [1]})
    tracker.record(tracker.case_ids[0], PASSED, 10.0, "exec-1", now=10.0)
    tracker.shard_started(1, 1, "exec-1", [1], now=10.0)

    eta = tracker.estimate(now=14.0, free_slots=9)

    assert eta.eta_s == pytest.approx(16.0, rel=0.01)


def test_tracker_done_run_eta_zero() -> None:
    tracker = history_tracker([3.0, 3.0])
    for case_id in tracker.case_ids:
        tracker.record(case_id, PASSED, 3.0, "exec-1", now=3.0)

    eta = tracker.estimate(now=3.0, free_slots=0)

    assert eta.eta_s == 0.0
    assert eta.low_s == 0.0
    assert eta.high_s == 0.0


def test_tracker_no_slots_unknown() -> None:
    tracker = history_tracker([3.0, 3.0])

    eta = tracker.estimate(now=0.0, free_slots=0)

    assert eta.basis == BASIS_UNKNOWN
    assert eta.eta_s is None


def test_tracker_counts_outcomes() -> None:
    # Index 0 is a collection error: counted, but not one of the runnable tests.
    ids = ["tests/test_broken.py", *case_ids(4)]
    tracker = ProgressTracker(ids, range(1, 5), {})
    tracker.record(ids[0], ERROR, 0.0, "exec-1", now=0.0)
    tracker.record(ids[1], PASSED, 1.0, "exec-1", now=1.0)
    tracker.record(ids[2], FAILED, 1.0, "exec-2", now=1.0)
    tracker.record(ids[3], PASSED, 1.0, "exec-2", now=2.0)
    tracker.record(ids[3], FAILED, 1.0, "exec-2", now=2.0)  # a duplicate: the first result counts

    assert dict(tracker.counts) == {ERROR: 1, PASSED: 2, FAILED: 1}
    assert tracker.done == 3
    assert tracker.total == 4


def test_tracker_ignores_unknown_case() -> None:
    tracker = history_tracker([1.0])

    tracker.record("tests/test_gone.py::test_x", PASSED, 1.0, "exec-1", now=0.0)

    assert tracker.done == 0
    assert not tracker.counts


def test_tracker_executor_activity() -> None:
    tracker = history_tracker([1.0] * 5)
    tracker.shard_started(0, 1, "exec-1", [0, 1, 2], now=0.0)
    tracker.shard_started(1, 1, "exec-2", [3, 4], now=0.0)
    tracker.record(tracker.case_ids[0], PASSED, 1.0, "exec-1", now=1.0)

    activity = tracker.executors()

    assert activity == {
        "exec-1": ExecutorActivity(running=1, queued=1, done=1),
        "exec-2": ExecutorActivity(running=1, queued=1, done=0),
    }


def test_tracker_executor_activity_after_shard_finishes() -> None:
    tracker = history_tracker([1.0] * 2)
    tracker.shard_started(0, 1, "exec-1", [0, 1], now=0.0)
    for case_id in tracker.case_ids:
        tracker.record(case_id, PASSED, 1.0, "exec-1", now=1.0)
    tracker.shard_ended(0)

    assert tracker.executors() == {"exec-1": ExecutorActivity(running=0, queued=0, done=2)}


def test_tracker_released_tests_move_to_new_shard() -> None:
    tracker = history_tracker([1.0] * 6)
    tracker.shard_started(0, 1, "exec-1", range(6), now=0.0)

    tracker.shard_started(1, 1, "exec-2", [4, 5], now=0.5)

    assert tracker.executors() == {
        "exec-1": ExecutorActivity(running=1, queued=3, done=0),
        "exec-2": ExecutorActivity(running=1, queued=1, done=0),
    }
    assert tracker.estimate(now=0.5, free_slots=0).eta_s == pytest.approx(3.5)


def test_tracker_ended_shard_returns_tests_to_pending() -> None:
    tracker = history_tracker([5.0] * 3)
    tracker.shard_started(0, 1, "exec-1", [0, 1, 2], now=0.0)
    tracker.record(tracker.case_ids[0], PASSED, 5.0, "exec-1", now=5.0)

    tracker.shard_ended(0)  # its executor was lost

    assert tracker.executors() == {"exec-1": ExecutorActivity(running=0, queued=0, done=1)}
    assert tracker.estimate(now=6.0, free_slots=2).eta_s == pytest.approx(5.0)


def test_tracker_sync_shards_ends_requeued_attempt() -> None:
    tracker = history_tracker([1.0] * 4)
    tracker.shard_started(0, 1, "exec-1", [0, 1], now=0.0)
    tracker.shard_started(1, 1, "exec-2", [2, 3], now=0.0)
    shards = {
        0: ShardState("run", 0, [0, 1], attempt=1, status=ShardStatus.ASSIGNED, executor="exec-1"),
        1: ShardState("run", 1, [2, 3], attempt=1, status=ShardStatus.QUEUED),
    }

    tracker.sync_shards(shards)

    assert set(tracker.executors()) == {"exec-1"}


def test_tracker_sync_shards_ends_older_attempt() -> None:
    tracker = history_tracker([1.0] * 2)
    tracker.shard_started(0, 1, "exec-1", [0, 1], now=0.0)
    shards = {0: ShardState("run", 0, [0, 1], attempt=2, status=ShardStatus.ASSIGNED, executor="exec-2")}

    tracker.sync_shards(shards)

    assert tracker.executors() == {}


def test_tracker_running_by_executor() -> None:
    tracker = history_tracker([1.0] * 8)
    tracker.shard_started(2, 1, "exec-b", [5, 6, 7], now=0.0)
    tracker.shard_started(0, 1, "exec-a", [0, 1, 2], now=0.0)
    tracker.shard_started(1, 1, "exec-a", [3, 4], now=0.0)
    tracker.record(tracker.case_ids[0], PASSED, 1.0, "exec-a", now=1.0)
    tracker.record(tracker.case_ids[3], PASSED, 1.0, "exec-a", now=1.0)
    tracker.record(tracker.case_ids[4], FAILED, 1.0, "exec-a", now=2.0)
    tracker.shard_started(3, 1, "exec-c", [7], now=2.0)  # given back by shard 2 for an idle slot

    assert tracker.running_by_executor() == [
        {"executor": "exec-a", "shards": 2, "current": [tracker.case_ids[1]], "remaining": 2},
        {"executor": "exec-b", "shards": 1, "current": [tracker.case_ids[5]], "remaining": 2},
        {"executor": "exec-c", "shards": 1, "current": [tracker.case_ids[7]], "remaining": 1},
    ]
    assert [tracker.tests_left(shard_id) for shard_id in range(5)] == [2, 0, 2, 1, 0]


def test_tracker_recent_estimate_ages() -> None:
    tracker = history_tracker([10.0] * 4)
    tracker.shard_started(0, 1, "exec-1", [0, 1, 2, 3], now=0.0)
    first = tracker.recent_estimate(0.0, free_slots=0, max_age_s=1.0)
    assert first.eta_s == pytest.approx(40.0)

    tracker.record(tracker.case_ids[0], PASSED, 30.0, "exec-1", now=0.5)  # much slower than history
    aged = tracker.recent_estimate(0.5, free_slots=0, max_age_s=1.0)
    assert (aged.eta_s, aged.low_s, aged.high_s) == pytest.approx(
        (first.eta_s - 0.5, first.low_s - 0.5, first.high_s - 0.5)
    )
    assert aged.basis == first.basis

    fresh = tracker.recent_estimate(1.0, free_slots=0, max_age_s=1.0)
    assert fresh == tracker.estimate(1.0, free_slots=0)
    assert fresh.eta_s > first.eta_s  # the slow result counts once a new estimate is made


def test_eta_aged_floors_at_zero() -> None:
    assert Eta(2.0, 1.0, 3.0, BASIS_RATE).aged(2.5) == Eta(0.0, 0.0, 0.5, BASIS_RATE)
    assert UNKNOWN_ETA.aged(5.0) == UNKNOWN_ETA
