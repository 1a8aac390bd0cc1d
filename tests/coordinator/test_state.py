"""Tests of the coordinator state: commands applied to a real SQLite file, and the view rebuilt from it."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest

from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator import store
from swarmctl.coordinator.state import RunState, RunStatus, ShardStatus, StateMachine
from swarmctl.errors import StoreError
from swarmctl.results import CaseResult

SUITE = {"kind": "pytest", "bundle": "0" * 64, "name": "suite", "python": "python3", "pytest_args": [], "timeout": None}
CASE_IDS = ["t.py::a", "t.py::b", "t.py::c", "t.py::d", "t.py::e"]
SKIPPED_MODULE = {"case_id": "skip_mod.py", "outcome": "skipped", "when": "collect", "message": "no gpu"}

# Fields of RunState that a reopened StateMachine rebuilds from the tables.
REBUILT_FIELDS = [
    "run_id", "submitted_at", "suite", "strategy", "status", "case_ids", "collect_only",
    "done", "shards", "index", "deselected", "duplicates",
]


def open_machine(path: Path) -> StateMachine:
    return StateMachine(store.connect(path))


def result(case_id: str, outcome: str = "passed", **fields: Any) -> dict[str, Any]:
    """Return a result in the wire form a worker sends, without the executor and attempt."""
    data = CaseResult(case_id=case_id, outcome=outcome, **fields).to_wire()
    del data["executor"], data["attempt"]
    return data


def start_run(machine: StateMachine, run_id: str = "run-1", at: float = 100.0) -> RunState:
    """Submit, collect and plan a run: one module skipped at collection, five cases in two shards."""
    machine.apply(cmd.RunSubmitted(run_id, at, SUITE, "even", None), term=1)
    machine.apply(cmd.RunCollected(run_id, at + 1, CASE_IDS, [SKIPPED_MODULE], 2, "exec-a"), term=1)
    machine.apply(cmd.ShardsPlanned(run_id, [[1, 2, 3], [4, 5]]), term=1)
    return machine.runs[run_id]


def recorded(machine: StateMachine, run_id: str) -> dict[str, tuple[str, str, int]]:
    """Return (outcome, executor, attempt) of each recorded result of a run, by case id."""
    return {r.case_id: (r.outcome, r.executor, r.attempt) for r in machine.results(run_id)}


def table(machine: StateMachine, sql: str, *args: Any) -> list[tuple]:
    return machine.conn.execute(sql, args).fetchall()


# --- applying commands ---------------------------------------------------------------------


def test_state_run_submitted_without_cases(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")

    machine.apply(cmd.RunSubmitted("run-1", 100.0, SUITE, "even", None), term=1)

    run = machine.runs["run-1"]
    assert run.status is RunStatus.COLLECTING
    assert run.case_ids == []
    assert run.suite == SUITE
    assert table(machine, "SELECT status, total, strategy FROM runs") == [("collecting", 0, "even")]


def test_state_run_submitted_with_cases(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")

    machine.apply(cmd.RunSubmitted("run-1", 100.0, SUITE, "even", ["echo", "false"]), term=1)

    run = machine.runs["run-1"]
    assert run.status is RunStatus.RUNNING
    assert run.case_ids == ["echo", "false"]
    assert run.runnable_ids() == [0, 1]
    assert table(machine, "SELECT idx, case_id, collect_only FROM cases ORDER BY idx") == [(0, "echo", 0), (1, "false", 0)]


def test_state_run_collected(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    machine.apply(cmd.RunSubmitted("run-1", 100.0, SUITE, "even", None), term=1)

    new = machine.apply(cmd.RunCollected("run-1", 101.0, CASE_IDS, [SKIPPED_MODULE], 2, "exec-a"), term=1)

    run = machine.runs["run-1"]
    assert run.status is RunStatus.RUNNING
    assert run.case_ids == ["skip_mod.py", *CASE_IDS]
    assert run.collect_only == {0}
    assert run.runnable_ids() == [1, 2, 3, 4, 5]
    assert run.done == {0}
    assert run.deselected == 2
    assert run.index["t.py::c"] == 3
    assert new == [("run-1", {**SKIPPED_MODULE, "executor": "exec-a", "attempt": 1})]
    assert table(machine, "SELECT status, total, deselected FROM runs") == [("running", 6, 2)]
    assert recorded(machine, "run-1") == {"skip_mod.py": ("skipped", "exec-a", 1)}


def test_state_shards_planned(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")

    run = start_run(machine)

    assert list(run.queue) == [0, 1]
    assert run.shards[0].cases == [1, 2, 3]
    assert run.shards[1].cases == [4, 5]
    assert run.shards[0].status is ShardStatus.QUEUED
    assert run.shards[0].attempt == 0
    rows = table(machine, "SELECT shard_id, cases, attempt, state, executor FROM shards ORDER BY shard_id")
    assert [(s, msgpack.unpackb(c), a, st, e) for s, c, a, st, e in rows] == [
        (0, [1, 2, 3], 0, "queued", None),
        (1, [4, 5], 0, "queued", None),
    ]


def test_state_shard_assigned(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)

    machine.apply(cmd.ShardAssigned("run-1", 1, 1, "exec-b", 3, 102.0), term=3)

    shard = run.shards[1]
    assert shard.status is ShardStatus.ASSIGNED
    assert shard.attempt == 1
    assert shard.executor == "exec-b"
    assert list(run.queue) == [0]
    assert "exec-b" in run.executors
    assert table(machine, "SELECT state, attempt, executor FROM shards WHERE shard_id = 1") == [("assigned", 1, "exec-b")]
    assert table(machine, "SELECT shard_id, attempt, executor, term, assigned_at, ended_at FROM attempts") == [
        (1, 1, "exec-b", 3, 102.0, None)
    ]


def test_state_results_recorded(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)

    new = machine.apply(
        cmd.ResultsRecorded(
            103.0,
            [
                ["run-1", 0, 1, "exec-a", result("t.py::a", duration=0.5)],
                ["run-1", 0, 1, "exec-a", result("t.py::b", "failed", message="assert 1 == 2")],
            ],
        ),
        term=1,
    )

    assert [(run_id, data["case_id"], data["executor"], data["attempt"]) for run_id, data in new] == [
        ("run-1", "t.py::a", "exec-a", 1),
        ("run-1", "t.py::b", "exec-a", 1),
    ]
    assert run.done == {0, 1, 2}
    assert recorded(machine, "run-1") == {
        "skip_mod.py": ("skipped", "exec-a", 1),
        "t.py::a": ("passed", "exec-a", 1),
        "t.py::b": ("failed", "exec-a", 1),
    }
    assert table(machine, "SELECT idx, outcome, duration, recorded_at FROM results WHERE idx > 0 ORDER BY idx") == [
        (1, "passed", 0.5, 103.0),
        (2, "failed", 0.0, 103.0),
    ]
    assert machine.results("run-1")[2].message == "assert 1 == 2"


def test_state_executor_and_attempt_stamped(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    start_run(machine)
    claimed = {**result("t.py::a"), "executor": "someone-else", "attempt": 99}
    machine.apply(cmd.ShardAssigned("run-1", 0, 2, "exec-b", 1, 102.0), term=1)

    machine.apply(cmd.ResultsRecorded(103.0, [["run-1", 0, 2, "exec-b", claimed]]), term=1)

    assert recorded(machine, "run-1")["t.py::a"] == ("passed", "exec-b", 2)


def test_state_shard_finished(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)
    machine.apply(cmd.ShardAssigned("run-1", 1, 1, "exec-a", 1, 102.0), term=1)

    machine.apply(cmd.ShardFinished("run-1", 1, 1, 104.0), term=1)

    assert run.shards[1].status is ShardStatus.DONE
    assert table(machine, "SELECT state FROM shards WHERE shard_id = 1") == [("done",)]
    assert table(machine, "SELECT ended_at, end_reason FROM attempts WHERE shard_id = 1") == [(104.0, "finished")]


def test_state_run_finished(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)

    machine.apply(cmd.RunFinished("run-1", 110.0, "interrupted", 2, "cancelled by the user"), term=1)

    assert run.status is RunStatus.INTERRUPTED
    assert not run.active
    assert list(run.queue) == []
    assert run.exit_code == 2
    assert run.error == "cancelled by the user"
    assert run.finished_at == 110.0
    assert table(machine, "SELECT status, exit_code, error, finished_at FROM runs") == [
        ("interrupted", 2, "cancelled by the user", 110.0)
    ]


def test_state_first_result_wins(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)
    machine.apply(cmd.ResultsRecorded(103.0, [["run-1", 0, 1, "exec-a", result("t.py::a", "failed")]]), term=1)
    machine.apply(cmd.ShardRequeued("run-1", 0, 1, "executor exec-a lost", 103.5), term=1)
    machine.apply(cmd.ShardAssigned("run-1", 0, 2, "exec-b", 1, 103.6), term=1)

    new = machine.apply(
        cmd.ResultsRecorded(
            104.0,
            [
                ["run-1", 0, 2, "exec-b", result("t.py::a", "passed")],
                ["run-1", 0, 2, "exec-b", result("t.py::b", "passed")],
                ["run-1", 0, 2, "exec-b", result("t.py::b", "failed")],
            ],
        ),
        term=1,
    )

    assert [data["case_id"] for _, data in new] == ["t.py::b"]
    assert recorded(machine, "run-1")["t.py::a"] == ("failed", "exec-a", 1)
    assert recorded(machine, "run-1")["t.py::b"] == ("passed", "exec-b", 2)
    assert run.duplicates == 2
    assert table(machine, "SELECT duplicates FROM runs") == [(2,)]


def test_state_ended_attempt_fenced(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)
    machine.apply(cmd.ShardRequeued("run-1", 0, 1, "lease lapsed", 103.0), term=1)
    machine.apply(cmd.ShardAssigned("run-1", 0, 2, "exec-b", 1, 103.5), term=1)

    late = machine.apply(cmd.ResultsRecorded(104.0, [["run-1", 0, 1, "exec-a", result("t.py::a")]]), term=1)
    current = machine.apply(cmd.ResultsRecorded(105.0, [["run-1", 0, 2, "exec-b", result("t.py::a", "failed")]]), term=1)

    assert late == []
    assert [data["case_id"] for _, data in current] == ["t.py::a"]
    assert recorded(machine, "run-1")["t.py::a"] == ("failed", "exec-b", 2)
    assert run.fenced == 1
    assert run.duplicates == 0
    assert table(machine, "SELECT fenced FROM runs") == [(1,)]


def test_state_reassigned_from_recorded(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    machine = open_machine(path)
    start_run(machine)
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)
    machine.apply(cmd.ShardRequeued("run-1", 0, 1, "executor exec-a lost", 103.0), term=1)
    reopened = open_machine(path)
    reopened.apply(cmd.ShardAssigned("run-1", 0, 2, "exec-b", 1, 103.5), term=1)

    reopened.apply(cmd.ResultsRecorded(104.0, [["run-1", 0, 2, "exec-b", result("t.py::a")]]), term=1)

    assert reopened.runs["run-1"].shards[0].lost_on == ["exec-a"]
    assert reopened.results("run-1")[1].reassigned_from == ("exec-a",)


def test_state_given_back_shard_not_reassigned(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)

    machine.apply(cmd.ShardRequeued("run-1", 0, 1, "tests given back", 103.0, lost=False), term=1)

    assert run.shards[0].lost_on == []


def test_state_cordon_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    machine = open_machine(path)
    machine.apply(cmd.ExecutorCordoned("exec-a", True, 100.0), term=1)
    machine.apply(cmd.ExecutorCordoned("exec-b", True, 101.0), term=1)
    machine.apply(cmd.ExecutorCordoned("exec-b", False, 102.0), term=1)

    assert open_machine(path).cordoned == {"exec-a"}


def test_state_collection_result_not_overwritten(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)

    new = machine.apply(cmd.ResultsRecorded(103.0, [["run-1", 0, 1, "exec-b", result("skip_mod.py", "error")]]), term=1)

    assert new == []
    assert recorded(machine, "run-1")["skip_mod.py"] == ("skipped", "exec-a", 1)
    assert run.duplicates == 1


@pytest.mark.parametrize(
    "data",
    [
        result("t.py::not_collected"),
        result("t.py::a", "exploded"),
        {"outcome": "passed"},
        {"case_id": "t.py::a"},
    ],
    ids=["unknown-case", "invalid-outcome", "missing-case-id", "missing-outcome"],
)
def test_state_invalid_result_ignored(tmp_path: Path, data: dict[str, Any]) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)

    new = machine.apply(cmd.ResultsRecorded(103.0, [["run-1", 0, 1, "exec-a", data]]), term=1)

    assert new == []
    assert run.done == {0}
    assert run.duplicates == 0
    assert list(recorded(machine, "run-1")) == ["skip_mod.py"]


def test_state_result_for_unknown_run_ignored(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    start_run(machine)

    new = machine.apply(cmd.ResultsRecorded(103.0, [["run-404", 0, 1, "exec-a", result("t.py::a")]]), term=1)

    assert new == []
    assert machine.results("run-404") == []


def test_state_requeue_keeps_cases_without_results(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)
    machine.apply(cmd.ShardAssigned("run-1", 1, 1, "exec-b", 1, 102.0), term=1)
    machine.apply(cmd.ResultsRecorded(103.0, [["run-1", 0, 1, "exec-a", result("t.py::b")]]), term=1)

    machine.apply(cmd.ShardRequeued("run-1", 0, 1, "executor exec-a left", 104.0), term=1)

    shard = run.shards[0]
    assert shard.cases == [1, 3]
    assert shard.status is ShardStatus.QUEUED
    assert shard.executor is None
    assert shard.attempt == 1
    assert list(run.queue) == [0]
    rows = table(machine, "SELECT cases, attempt, state, executor FROM shards WHERE shard_id = 0")
    assert [(msgpack.unpackb(c), a, st, e) for c, a, st, e in rows] == [([1, 3], 1, "queued", None)]
    assert table(machine, "SELECT ended_at, end_reason FROM attempts WHERE shard_id = 0 AND attempt = 1") == [
        (104.0, "executor exec-a left")
    ]


def test_state_requeue_then_next_assignment(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)
    machine.apply(cmd.ShardRequeued("run-1", 0, 1, "timed out", 104.0), term=1)

    machine.apply(cmd.ShardAssigned("run-1", 0, 2, "exec-b", 1, 105.0), term=1)

    assert run.shards[0].attempt == 2
    assert run.shards[0].executor == "exec-b"
    assert run.shards[0].cases == [1, 2, 3]
    assert table(machine, "SELECT attempt, executor, end_reason FROM attempts WHERE shard_id = 0 ORDER BY attempt") == [
        (1, "exec-a", "timed out"),
        (2, "exec-b", None),
    ]


def test_state_requeue_goes_ahead_of_unstarted(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    machine.apply(cmd.RunSubmitted("run-1", 100.0, SUITE, "even", CASE_IDS), term=1)
    machine.apply(cmd.ShardsPlanned("run-1", [[0], [1], [2]]), term=1)
    run = machine.runs["run-1"]
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)

    machine.apply(cmd.ShardRequeued("run-1", 0, 1, "executor exec-a left", 104.0), term=1)

    assert list(run.queue) == [0, 1, 2]


def test_state_requeue_with_all_results_is_done(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    run = start_run(machine)
    machine.apply(cmd.ShardAssigned("run-1", 1, 1, "exec-a", 1, 102.0), term=1)
    machine.apply(
        cmd.ResultsRecorded(
            103.0,
            [["run-1", 1, 1, "exec-a", result("t.py::d")], ["run-1", 1, 1, "exec-a", result("t.py::e")]],
        ),
        term=1,
    )

    machine.apply(cmd.ShardRequeued("run-1", 1, 1, "executor exec-a left", 104.0), term=1)

    assert run.shards[1].cases == []
    assert run.shards[1].status is ShardStatus.DONE
    assert list(run.queue) == [0]


def test_state_sqlite_error_rolls_back(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    machine.apply(cmd.RunSubmitted("run-1", 100.0, SUITE, "even", None), term=1)

    with pytest.raises(StoreError, match="cannot apply run_submitted command"):
        machine.apply(cmd.RunSubmitted("run-1", 101.0, SUITE, "even", None), term=1)

    assert machine.last_index == 1
    assert table(machine, "SELECT count(*) FROM log") == [(1,)]
    assert table(machine, "SELECT submitted_at FROM runs") == [(100.0,)]
    assert machine.runs["run-1"].submitted_at == 100.0


def test_state_failed_apply_leaves_store_usable(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    start_run(machine)
    with pytest.raises(KeyError):
        machine.apply(cmd.ShardAssigned("run-404", 0, 1, "exec-a", 1, 102.0), term=1)

    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)

    assert machine.runs["run-1"].shards[0].status is ShardStatus.ASSIGNED


# --- command log -----------------------------------------------------------------------


def test_state_command_log_one_row_per_command(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    applied: list[tuple[cmd.Command, int]] = [
        (cmd.RunSubmitted("run-1", 100.0, SUITE, "even", None), 1),
        (cmd.RunCollected("run-1", 101.0, CASE_IDS, [SKIPPED_MODULE], 2, "exec-a"), 1),
        (cmd.ShardsPlanned("run-1", [[1, 2, 3], [4, 5]]), 1),
        (cmd.ShardAssigned("run-1", 0, 1, "exec-a", 2, 102.0), 2),
        (cmd.ResultsRecorded(103.0, [["run-1", 0, 1, "exec-a", result("t.py::a")]]), 2),
        (cmd.ShardRequeued("run-1", 0, 1, "executor exec-a left", 104.0), 2),
        (cmd.ShardAssigned("run-1", 0, 2, "exec-b", 2, 105.0), 2),
        (cmd.ShardFinished("run-1", 0, 2, 106.0), 2),
        (cmd.RunFinished("run-1", 107.0, "failed", 3, "collection crashed"), 2),
    ]

    for command, term in applied:
        machine.apply(command, term=term)

    rows = table(machine, "SELECT idx, term, kind, body FROM log ORDER BY idx")
    assert [idx for idx, _, _, _ in rows] == list(range(1, len(applied) + 1))
    assert [term for _, term, _, _ in rows] == [term for _, term in applied]
    assert [kind for _, _, kind, _ in rows] == [command.KIND for command, _ in applied]
    assert [cmd.decode_command(kind, body) for _, _, kind, body in rows] == [command for command, _ in applied]
    assert machine.last_index == len(applied)


def test_state_command_log_continues_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    first = open_machine(path)
    start_run(first)
    first.conn.close()

    second = open_machine(path)
    second.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)

    assert second.last_index == 4
    assert table(second, "SELECT idx, kind FROM log ORDER BY idx")[-1] == (4, "shard_assigned")


def test_commands_decode_unknown_kind() -> None:
    with pytest.raises(StoreError, match="unknown command kind 'run_paused'"):
        cmd.decode_command("run_paused", msgpack.packb({"run_id": "run-1"}))


# --- reopening -------------------------------------------------------------------------


def build_unfinished_state(path: Path) -> StateMachine:
    """Apply a run half-way through (results, a duplicate, a requeue) next to a finished run."""
    machine = open_machine(path)
    start_run(machine, "run-old", at=50.0)
    machine.apply(cmd.RunFinished("run-old", 60.0, "finished", 0, ""), term=1)

    start_run(machine, "run-1", at=100.0)
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)
    machine.apply(cmd.ShardAssigned("run-1", 1, 1, "exec-b", 1, 102.0), term=1)
    machine.apply(
        cmd.ResultsRecorded(
            103.0,
            [
                ["run-1", 0, 1, "exec-a", result("t.py::a")],
                ["run-1", 1, 1, "exec-b", result("t.py::d", "failed")],
                ["run-1", 1, 1, "exec-b", result("t.py::d", "passed")],
            ],
        ),
        term=1,
    )
    machine.apply(cmd.ShardRequeued("run-1", 0, 1, "executor exec-a left", 104.0), term=1)
    machine.apply(cmd.RunSubmitted("run-2", 120.0, SUITE, "even", None), term=1)
    return machine


def test_state_reopen_rebuilds_unfinished_runs(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    before = build_unfinished_state(path)

    after = open_machine(path)

    assert sorted(after.runs) == ["run-1", "run-2"]
    assert after.last_index == before.last_index
    for run_id in ("run-1", "run-2"):
        for name in REBUILT_FIELDS:
            assert getattr(after.runs[run_id], name) == getattr(before.runs[run_id], name), f"{run_id}.{name}"
        assert list(after.runs[run_id].queue) == list(before.runs[run_id].queue), f"{run_id}.queue"
    assert after.runs["run-1"].duplicates == 1
    assert after.runs["run-1"].shards[0].cases == [2, 3]
    assert after.results("run-old") == before.results("run-old")


def test_state_reopen_continues_run(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    build_unfinished_state(path).conn.close()
    machine = open_machine(path)

    machine.apply(cmd.ShardAssigned("run-1", 0, 2, "exec-c", 1, 105.0), term=1)
    new = machine.apply(
        cmd.ResultsRecorded(
            106.0,
            [
                ["run-1", 0, 2, "exec-c", result("t.py::a", "failed")],
                ["run-1", 0, 2, "exec-c", result("t.py::b")],
                ["run-1", 0, 2, "exec-c", result("t.py::c")],
            ],
        ),
        term=1,
    )

    assert [data["case_id"] for _, data in new] == ["t.py::b", "t.py::c"]
    assert machine.runs["run-1"].duplicates == 2
    assert recorded(machine, "run-1")["t.py::a"] == ("passed", "exec-a", 1)


def test_state_reopen_keeps_executors(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    before = build_unfinished_state(path)

    after = open_machine(path)

    assert before.runs["run-1"].executors == {"exec-a", "exec-b"}
    assert after.runs["run-1"].executors == before.runs["run-1"].executors


def test_state_reopen_keeps_queue_order(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    before = open_machine(path)
    before.apply(cmd.RunSubmitted("run-1", 100.0, SUITE, "even", CASE_IDS), term=1)
    before.apply(cmd.ShardsPlanned("run-1", [[0], [1], [2], [3]]), term=1)
    before.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)
    before.apply(cmd.ShardAssigned("run-1", 1, 1, "exec-b", 1, 102.0), term=1)
    before.apply(cmd.ShardRequeued("run-1", 0, 1, "executor exec-a left", 103.0), term=1)
    before.apply(cmd.ShardRequeued("run-1", 1, 1, "executor exec-b left", 104.0), term=1)

    after = open_machine(path)

    assert list(before.runs["run-1"].queue) == [0, 1, 2, 3]
    assert list(after.runs["run-1"].queue) == list(before.runs["run-1"].queue)


# --- store ---------------------------------------------------------------------------


def test_store_connect_creates_database(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "folder" / "state.db"

    conn = store.connect(path)

    assert path.exists()
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(store.SCHEMA_VERSION),)


def test_store_schema_version_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store.connect(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(store.SCHEMA_VERSION + 1),))
    conn.close()

    with pytest.raises(StoreError, match=f"schema version {store.SCHEMA_VERSION + 1}") as caught:
        store.connect(path)

    assert str(path) in str(caught.value)


def test_store_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, it is a text file" * 100)

    with pytest.raises(StoreError, match="cannot open the state database"):
        store.connect(path)


def test_state_results_decode_to_case_results(tmp_path: Path) -> None:
    machine = open_machine(tmp_path / "state.db")
    start_run(machine)
    full = result("t.py::a", "failed", message="boom", stdout="out", counted_as=("failed", "error"))
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-a", 1, 102.0), term=1)

    machine.apply(cmd.ResultsRecorded(103.0, [["run-1", 0, 1, "exec-a", full]]), term=1)

    stored = machine.results("run-1")[1]
    assert stored == CaseResult.from_wire({**full, "executor": "exec-a", "attempt": 1})
    assert stored.counted_as == ("failed", "error")


def start_retry_run(path: Path, retries: int) -> StateMachine:
    machine = open_machine(path)
    machine.apply(cmd.RunSubmitted("run-r", 100.0, SUITE, "even", CASE_IDS[:2], retries=retries), term=1)
    machine.apply(cmd.ShardsPlanned("run-r", [[0, 1]]), term=1)
    machine.apply(cmd.ShardAssigned("run-r", 0, 1, "exec-a", 1, 101.0), term=1)
    return machine


def test_state_failed_try_waits_for_retry(tmp_path: Path) -> None:
    machine = start_retry_run(tmp_path / "state.db", retries=1)

    new = machine.apply(cmd.ResultsRecorded(102.0, [["run-r", 0, 1, "exec-a", result("t.py::a", "failed")]]), term=1)

    run = machine.runs["run-r"]
    assert new == []
    assert run.retry_pending == [0]
    assert run.failed_on == {0: "exec-a"}
    assert run.shards[0].cases == [1]  # the failed case left its shard
    assert 0 not in run.done


def test_state_retry_pass_is_flaky(tmp_path: Path) -> None:
    machine = start_retry_run(tmp_path / "state.db", retries=2)
    machine.apply(cmd.ResultsRecorded(102.0, [["run-r", 0, 1, "exec-a", result("t.py::a", "error")]]), term=1)
    machine.apply(cmd.RetryPlanned("run-r", 1, [0], 105.0, "exec-a"), term=1)
    machine.apply(cmd.ShardAssigned("run-r", 1, 1, "exec-b", 1, 106.0), term=1)

    new = machine.apply(cmd.ResultsRecorded(107.0, [["run-r", 1, 1, "exec-b", result("t.py::a", "passed")]]), term=1)

    assert [(data["outcome"], data["attempt"], data["flaky"]) for _, data in new] == [("passed", 2, True)]
    assert machine.runs["run-r"].retry_pending == []
    assert machine.runs["run-r"].shards[1].avoid == "exec-a"
    assert table(machine, "SELECT idx, try, outcome FROM case_attempts ORDER BY try") == [(0, 1, "error"), (0, 2, "passed")]


def test_state_retries_are_bounded(tmp_path: Path) -> None:
    machine = start_retry_run(tmp_path / "state.db", retries=1)
    machine.apply(cmd.ResultsRecorded(102.0, [["run-r", 0, 1, "exec-a", result("t.py::a", "failed")]]), term=1)
    machine.apply(cmd.RetryPlanned("run-r", 1, [0], 105.0, "exec-a"), term=1)
    machine.apply(cmd.ShardAssigned("run-r", 1, 1, "exec-b", 1, 106.0), term=1)

    new = machine.apply(cmd.ResultsRecorded(107.0, [["run-r", 1, 1, "exec-b", result("t.py::a", "failed")]]), term=1)

    assert [(data["outcome"], data["attempt"]) for _, data in new] == [("failed", 2)]
    assert not new[0][1].get("flaky")
    assert 0 in machine.runs["run-r"].done


def test_state_stale_failure_does_not_retry_twice(tmp_path: Path) -> None:
    machine = start_retry_run(tmp_path / "state.db", retries=3)
    machine.apply(cmd.ResultsRecorded(102.0, [["run-r", 0, 1, "exec-a", result("t.py::a", "failed")]]), term=1)

    # The same failure again, as a resent batch would bring it: ignored, not a second try.
    machine.apply(cmd.ResultsRecorded(103.0, [["run-r", 0, 1, "exec-a", result("t.py::a", "failed")]]), term=1)

    assert machine.runs["run-r"].tries == {0: 1}
    assert machine.runs["run-r"].duplicates == 1


def test_state_reopen_keeps_pending_retry(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    machine = start_retry_run(path, retries=2)
    machine.apply(cmd.ResultsRecorded(102.0, [["run-r", 0, 1, "exec-a", result("t.py::a", "failed")]]), term=1)

    after = open_machine(path)

    run = after.runs["run-r"]
    assert run.retries == 2
    assert run.tries == {0: 1}
    assert run.retry_pending == [0]
    assert run.failed_on == {0: "exec-a"}
