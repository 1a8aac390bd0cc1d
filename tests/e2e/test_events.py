"""``swarmctl events`` against real coordinator and executor processes: the subscription stream."""

from __future__ import annotations

import json

from tests.conftest import run_swarmctl
from tests.e2e.nodes import cluster, start_run, wait_for_active_run, wait_for_results

TESTS = 12
FAILED = {3, 8}

SUITE = """
import time

import pytest


@pytest.mark.parametrize("number", range({tests}))
def test_case(number):
    print(f"case {{number}} says hello", flush=True)
    time.sleep(0.4)
    assert number not in {failed}
"""


def test_events_stream_of_a_run(tmp_path, swarm_env):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_events.py").write_text(SUITE.format(tests=TESTS, failed=FAILED))
    db_path = tmp_path / "coordinator" / "state.db"
    case_ids = {f"test_events.py::test_case[{n}]" for n in range(TESTS)}

    with cluster(tmp_path, swarm_env, executors=2) as running:
        run = start_run(suite, running.address, tmp_path / "report.json", swarm_env)
        try:
            wait_for_results(db_path, at_least=1)
            run_id = wait_for_active_run(db_path)
            events = run_swarmctl(
                ["events", "--cluster", running.address, "--run", run_id, "--output", "--logs", "--interval", "0.5s"],
                swarm_env, timeout=120,
            )
        finally:
            output, _ = run.communicate(timeout=120)

    assert events.returncode == 0, events.stderr
    frames = [json.loads(line) for line in events.stdout.splitlines()]
    kinds = {frame["kind"] for frame in frames}
    assert {"runs", "executors", "progress", "complete"} <= kinds, kinds

    progress = [frame for frame in frames if frame["kind"] == "progress"]
    assert all(frame["run_id"] == run_id for frame in progress)
    outcomes = {case_id: outcome for frame in progress for case_id, outcome in frame["outcomes"]}
    assert set(outcomes) <= case_ids
    assert progress[-1]["done"] == TESTS
    activity = [row for frame in progress for row in frame["activity"]]
    assert activity, "no progress frame named a running shard"
    assert {row["executor"] for row in activity} <= {"exec-0", "exec-1"}
    assert {case_id for row in activity for case_id in row["current"]} <= case_ids
    assert all(row["shards"] >= 1 and row["remaining"] >= len(row["current"]) for row in activity)

    executors = next(frame for frame in frames if frame["kind"] == "executors")
    assert {row["id"] for row in executors["executors"]} == {"exec-0", "exec-1"}
    runs = next(frame for frame in frames if frame["kind"] == "runs")
    assert run_id in {row["run_id"] for row in runs["runs"]}

    pieces = [chunk for frame in frames if frame["kind"] == "case_output" for chunk in frame["chunks"]]
    assert pieces, "no live output arrived"
    for run_of_piece, _shard, _attempt, case_id, stream, _time, text in pieces:
        assert run_of_piece == run_id
        assert case_id in case_ids
        assert stream == "stdout"
        assert "says hello" in text

    complete = frames[-1]
    assert complete["kind"] == "complete"
    assert complete["run_id"] == run_id
    assert complete["exit_code"] == 1
    assert f"{len(FAILED)} failed" in output


def test_events_run_not_active(tmp_path, swarm_env):
    with cluster(tmp_path, swarm_env, executors=1) as running:
        events = run_swarmctl(["events", "--cluster", running.address, "--run", "no-such-run"], swarm_env, timeout=60)

    assert events.returncode == 4, events.stderr
    assert "run 'no-such-run' is not active on" in events.stderr
    assert events.stdout == ""


def test_events_count_limit(tmp_path, swarm_env):
    with cluster(tmp_path, swarm_env, executors=1) as running:
        events = run_swarmctl(["events", "--cluster", running.address, "--count", "2", "--interval", "0.2s"], swarm_env, timeout=60)

    assert events.returncode == 0, events.stderr
    assert [json.loads(line)["kind"] for line in events.stdout.splitlines()] == ["runs", "executors"]


def test_events_invalid_count(swarm_env):
    events = run_swarmctl(["events", "--count", "-1"], swarm_env, timeout=60)

    assert events.returncode == 4
    assert "--count -1 is invalid" in events.stderr
