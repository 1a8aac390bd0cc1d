"""Seeded fault schedules against the Raft consensus core.

Each schedule runs 20 simulated seconds of faults with clients proposing throughout,
heals, and then must recover within 20 simulated seconds; see
``swarmctl.sim.consensus.schedule``. Even seeds run 3 voters and odd seeds 5. Each seed
runs twice: with a hash chain as the state machine, and with the coordinator's own state
machine on SQLite while test runs go through it. The number of schedules is
SWARMCTL_CONSENSUS_SCHEDULES (default 300); ``make test-campaign`` runs 2,000.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from swarmctl.cluster.consensus.log import RaftLog
from swarmctl.coordinator.state import StateMachine
from swarmctl.sim.consensus import ScheduleFailure, generate_schedule, run_schedule

SCHEDULES = int(os.environ.get("SWARMCTL_CONSENSUS_SCHEDULES", "300"))


def voters_for(seed: int) -> int:
    return 3 if seed % 2 == 0 else 5


@pytest.mark.parametrize("seed", range(SCHEDULES))
def test_schedule_keeps_invariants(seed: int) -> None:
    try:
        result = run_schedule(seed, voters_for(seed))
    except ScheduleFailure as failure:
        pytest.fail(str(failure), pytrace=False)
    assert result.recovery_s > 0


def test_same_seed_replays_same_trace() -> None:
    for seed in (0, 1, 17):
        first = run_schedule(seed, voters_for(seed))
        second = run_schedule(seed, voters_for(seed))
        assert first.trace_digest == second.trace_digest, f"seed {seed} did not replay identically"
        assert first.stats == second.stats
    assert run_schedule(2, 3).trace_digest != run_schedule(4, 3).trace_digest


def test_schedules_exercise_every_fault() -> None:
    totals: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for seed in range(20):
        kinds.update(fault.kind.value for fault in generate_schedule(seed, voters_for(seed)).faults)
        totals.update(run_schedule(seed, voters_for(seed)).stats)
    for name in ("crashes", "restarts", "pauses", "transfers", "compactions", "snapshots_installed", "rejected"):
        assert totals[name] > 0, name
    assert totals["acknowledged"] > 1000
    assert len(kinds) == 10


def test_checker_catches_election_of_incomplete_log(monkeypatch: pytest.MonkeyPatch) -> None:
    # Voters that ignore how complete a candidate's log is elect leaders that lack
    # committed entries; the checker must notice within a few schedules.
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, last_index, last_term: True)
    failures = []
    for seed in range(10):
        try:
            run_schedule(seed, voters_for(seed))
        except ScheduleFailure as failure:
            failures.append(failure)
    assert failures
    assert f"--seed {failures[0].schedule.seed}" in str(failures[0])
    assert any("without the entry committed" in failure.reason for failure in failures)


def test_failure_message_names_seed_and_replay() -> None:
    failure = ScheduleFailure(generate_schedule(42, 5), 12.5, "InvariantViolation: two leaders in term 3")
    message = str(failure)
    assert "seed 42 and 5 voters failed at 12.500 s" in message
    assert "python -m swarmctl.sim.consensus --seed 42 --voters 5" in message


@pytest.mark.parametrize("seed", range(SCHEDULES))
def test_coordinator_state_schedule(seed: int) -> None:
    """The coordinator's own state machine on SQLite, with test runs proposed through the faults."""
    try:
        result = run_schedule(seed, voters_for(seed), coordinator_state=True)
    except ScheduleFailure as failure:
        pytest.fail(str(failure), pytrace=False)
    assert result.recovery_s > 0


def test_coordinator_state_replays_and_exercises_faults() -> None:
    first = run_schedule(3, voters_for(3), coordinator_state=True)
    assert run_schedule(3, voters_for(3), coordinator_state=True).trace_digest == first.trace_digest
    totals: Counter[str] = Counter()
    for seed in range(20):
        totals.update(run_schedule(seed, voters_for(seed), coordinator_state=True).stats)
    for name in ("crashes", "snapshots_installed", "shards_lost", "stale_results"):
        assert totals[name] > 0, name


def test_checker_catches_diverging_databases(monkeypatch: pytest.MonkeyPatch) -> None:
    # A state machine whose effects depend on something other than the log (here, which
    # object applies it) makes voters' databases differ at the same index.
    recorded = StateMachine._results_recorded

    def by_object(self, at, items):
        if id(self) % 3 == 0:
            items = [[*item[:4], {**item[4], "duration": 9.0}] for item in items]
        return recorded(self, at, items)

    monkeypatch.setattr(StateMachine, "_results_recorded", by_object)
    failures = []
    for seed in range(6):
        try:
            run_schedule(seed, voters_for(seed), coordinator_state=True)
        except ScheduleFailure as failure:
            failures.append(failure)
    assert failures
    assert "--coordinator-state" in str(failures[0])
    assert any("databases differ" in failure.reason for failure in failures)
