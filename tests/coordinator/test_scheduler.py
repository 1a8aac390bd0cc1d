"""Tests of ``pick_assignments``: which queued shard goes to which executor."""

from __future__ import annotations

from collections import Counter, deque

from hypothesis import given
from hypothesis import strategies as st

from swarmctl.coordinator.executor_registry import ExecutorRecord
from swarmctl.coordinator.scheduler import pick_assignments
from swarmctl.coordinator.state import RunState, RunStatus, ShardState


def make_run(run_id: str, submitted_at: float, queued: list[int], status: RunStatus = RunStatus.RUNNING) -> RunState:
    run = RunState(run_id, submitted_at, suite={}, strategy="even", status=status)
    run.shards = {shard_id: ShardState(run_id, shard_id, [shard_id]) for shard_id in queued}
    run.queue = deque(queued)
    return run


def make_executor(executor_id: str, slots: int, joined_at: float, running: int = 0) -> ExecutorRecord:
    busy = {("earlier-run", shard_id) for shard_id in range(running)}
    return ExecutorRecord(executor_id, slots, joined_at, busy)


def test_pick_assignments_fair_share_then_age() -> None:
    newer = make_run("run-new", 200.0, [0, 1])
    older = make_run("run-old", 100.0, [0, 1])

    picks = pick_assignments([newer, older], [make_executor("exec-a", 3, 1.0)])

    # Runs of equal priority take turns; the older run goes first in each turn.
    assert picks == [("run-old", 0, "exec-a"), ("run-new", 0, "exec-a"), ("run-old", 1, "exec-a")]


def test_pick_assignments_priority_first() -> None:
    nightly = make_run("run-nightly", 100.0, [0, 1, 2])
    urgent = make_run("run-urgent", 200.0, [0, 1])
    urgent.priority = 10

    picks = pick_assignments([nightly, urgent], [make_executor("exec-a", 3, 1.0)])

    assert [run_id for run_id, _, _ in picks] == ["run-urgent", "run-urgent", "run-nightly"]


def test_pick_assignments_fair_share_counts_running() -> None:
    busy = make_run("run-busy", 100.0, [5, 6])
    idle = make_run("run-idle", 200.0, [0])
    executor = ExecutorRecord("exec-a", 4, 1.0, {("run-busy", 1), ("run-busy", 2)})

    picks = pick_assignments([busy, idle], [executor])

    assert picks[0] == ("run-idle", 0, "exec-a")


def test_pick_assignments_waits_for_backoff_and_start() -> None:
    retry = make_run("run-retry", 100.0, [0, 1])
    retry.shards[0].not_before = 50.0
    delayed = make_run("run-delayed", 90.0, [0])
    delayed.start_at = 60.0

    early = pick_assignments([retry, delayed], [make_executor("exec-a", 4, 1.0)], now=40.0)
    later = pick_assignments([retry, delayed], [make_executor("exec-a", 4, 1.0)], now=70.0)

    assert early == [("run-retry", 1, "exec-a")]
    assert sorted(later) == [("run-delayed", 0, "exec-a"), ("run-retry", 0, "exec-a"), ("run-retry", 1, "exec-a")]


def test_pick_assignments_retry_avoids_failed_executor() -> None:
    run = make_run("run-1", 100.0, [0])
    run.shards[0].avoid = "exec-a"
    executors = [make_executor("exec-a", 4, 1.0), make_executor("exec-b", 1, 2.0)]

    assert pick_assignments([run], executors) == [("run-1", 0, "exec-b")]
    assert pick_assignments([run], executors[:1]) == [("run-1", 0, "exec-a")]


def test_pick_assignments_queue_order_within_run() -> None:
    run = make_run("run-1", 100.0, [3, 0, 2])

    picks = pick_assignments([run], [make_executor("exec-a", 8, 1.0)])

    assert [shard_id for _, shard_id, _ in picks] == [3, 0, 2]


def test_pick_assignments_most_free_slots_first() -> None:
    run = make_run("run-1", 100.0, [0, 1, 2, 3])
    executors = [
        make_executor("exec-small", 2, 1.0),
        make_executor("exec-busy", 4, 2.0, running=3),
        make_executor("exec-big", 4, 3.0),
    ]

    picks = pick_assignments([run], executors)

    assert picks == [
        ("run-1", 0, "exec-big"),
        ("run-1", 1, "exec-big"),
        ("run-1", 2, "exec-small"),
        ("run-1", 3, "exec-big"),
    ]


def test_pick_assignments_tie_goes_to_earliest_joined() -> None:
    run = make_run("run-1", 100.0, [0, 1])
    executors = [make_executor("exec-late", 1, 9.0), make_executor("exec-early", 1, 2.0)]

    picks = pick_assignments([run], executors)

    assert picks == [("run-1", 0, "exec-early"), ("run-1", 1, "exec-late")]


def test_pick_assignments_never_beyond_free_slots() -> None:
    run = make_run("run-1", 100.0, list(range(10)))
    executors = [make_executor("exec-a", 2, 1.0), make_executor("exec-b", 3, 2.0, running=1)]

    picks = pick_assignments([run], executors)

    assert Counter(executor for _, _, executor in picks) == {"exec-a": 2, "exec-b": 2}
    assert [shard_id for _, shard_id, _ in picks] == [0, 1, 2, 3]


def test_pick_assignments_full_or_overbooked_executors() -> None:
    run = make_run("run-1", 100.0, [0])
    executors = [make_executor("exec-full", 2, 1.0, running=2), make_executor("exec-over", 1, 2.0, running=3)]

    assert pick_assignments([run], executors) == []


def test_pick_assignments_only_running_runs() -> None:
    runs = [
        make_run("run-collecting", 10.0, [0], RunStatus.COLLECTING),
        make_run("run-finished", 20.0, [0], RunStatus.FINISHED),
        make_run("run-interrupted", 30.0, [0], RunStatus.INTERRUPTED),
        make_run("run-failed", 40.0, [0], RunStatus.FAILED),
        make_run("run-running", 50.0, [0]),
    ]

    picks = pick_assignments(runs, [make_executor("exec-a", 8, 1.0)])

    assert picks == [("run-running", 0, "exec-a")]


def test_pick_assignments_nothing_queued_or_no_executors() -> None:
    assert pick_assignments([make_run("run-1", 100.0, [])], [make_executor("exec-a", 2, 1.0)]) == []
    assert pick_assignments([make_run("run-1", 100.0, [0])], []) == []


@given(
    queues=st.lists(st.integers(min_value=0, max_value=6), max_size=4),
    executors=st.lists(st.tuples(st.integers(min_value=0, max_value=4), st.integers(min_value=0, max_value=5)), max_size=4),
)
def test_pick_assignments_capacity_properties(queues: list[int], executors: list[tuple[int, int]]) -> None:
    runs = [make_run(f"run-{i}", float(i), list(range(length))) for i, length in enumerate(queues)]
    views = [make_executor(f"exec-{i}", slots, float(i), running) for i, (slots, running) in enumerate(executors)]
    free = {view.executor_id: max(view.free, 0) for view in views}

    picks = pick_assignments(runs, views)

    per_executor = Counter(executor for _, _, executor in picks)
    for executor_id, count in per_executor.items():
        assert count <= free[executor_id], executor_id
    assert len(picks) == min(sum(queues), sum(free.values()))
    assert len(set((run_id, shard_id) for run_id, shard_id, _ in picks)) == len(picks)
    for run in runs:  # within a run, shards leave the queue in order
        taken = [shard_id for run_id, shard_id, _ in picks if run_id == run.run_id]
        assert taken == list(run.queue)[: len(taken)]
    counts = Counter(run_id for run_id, _, _ in picks)
    for run in runs:  # fair share: no run with work left gets more than one pick fewer than another
        if counts[run.run_id] < len(run.queue):
            assert all(counts[run.run_id] >= counts[other] - 1 for other in counts), counts


def test_pick_assignments_accepts_generator() -> None:
    run = make_run("run-1", 100.0, [0])
    views = [make_executor("exec-a", 1, 1.0)]

    picks = pick_assignments([run], (view for view in views))

    assert picks == [("run-1", 0, "exec-a")]


def test_pick_assignments_matches_required_labels() -> None:
    run = make_run("r1", 1.0, [0, 1, 2])
    run.requires = {0: {"browser": "chromium"}, 2: {"gpu": "true"}}
    plain = make_executor("plain", 2, 0.0)
    browser = make_executor("browser", 1, 1.0)
    browser.labels = {"browser": "chromium"}

    picks = pick_assignments([run], [plain, browser])

    # Shard 2 needs a GPU no executor has: it waits, and does not hold back shard 1.
    assert sorted(picks) == [("r1", 0, "browser"), ("r1", 1, "plain")]
