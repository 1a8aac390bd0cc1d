"""A coordinator that takes over state from another: what it does with runs left open."""

from __future__ import annotations

import threading
from pathlib import Path

import trio

from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator import node as node_module
from swarmctl.coordinator import store
from swarmctl.coordinator.node import Coordinator
from swarmctl.coordinator.state import StateMachine


def record_run_without_its_end(data_dir: Path) -> None:
    """Store a run with a result for each of its cases, as a leader that died before ending it leaves it."""
    machine = StateMachine(store.connect(data_dir / "state.db"))
    suite = {"kind": "command", "bundle": "", "name": "suite"}
    machine.apply(cmd.RunSubmitted("run-1", 1.0, suite, "even", ["a", "b"]))
    machine.apply(cmd.ShardsPlanned("run-1", [[0, 1]]))
    machine.apply(cmd.ShardAssigned("run-1", 0, 1, "exec-0", 1, 2.0))
    results = [
        ["run-1", 0, 1, "exec-0", {"case_id": "a", "outcome": "passed", "duration": 0.1}],
        ["run-1", 0, 1, "exec-0", {"case_id": "b", "outcome": "failed", "duration": 0.1}],
    ]
    machine.apply(cmd.ResultsRecorded(3.0, results))
    machine.conn.close()


async def test_resumed_run_with_every_result_ends(tmp_path: Path) -> None:
    record_run_without_its_end(tmp_path)
    coordinator = Coordinator(tmp_path)
    assert coordinator.machine.runs["run-1"].status == "running"

    async with trio.open_nursery() as nursery:
        await coordinator.start_services(nursery, "127.0.0.1", 0)
        with trio.fail_after(10):  # its results are read in a worker thread first
            while "run-1" in coordinator.machine.runs:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()

    assert "run-1" not in coordinator.machine.runs
    complete = coordinator._finished_run("run-1")
    assert complete is not None
    assert complete.exit_code == 1  # one test failed
    assert complete.executors == ["exec-0"]


def test_applied_run_end_leaves_the_view(tmp_path: Path) -> None:
    """A follower applies the ends of runs too: its view keeps only unfinished runs, as a restart does."""
    record_run_without_its_end(tmp_path)
    machine = StateMachine(store.connect(tmp_path / "state.db"))
    machine.apply(cmd.RunFinished("run-1", 4.0, "finished", 1, ""))

    assert "run-1" not in machine.runs
    assert StateMachine(store.connect(tmp_path / "state.db")).runs.keys() == machine.runs.keys()


async def test_run_ended_during_read_ends_once(tmp_path: Path, monkeypatch) -> None:
    """A run complete when the coordinator starts is ended from a worker thread; an interrupt may come first."""
    record_run_without_its_end(tmp_path)
    coordinator = Coordinator(tmp_path)
    reading = threading.Event()
    release = threading.Event()
    read = node_module.read_final_results_from_file

    def slow_read(path, run_id):
        reading.set()
        release.wait(10)
        return read(path, run_id)

    monkeypatch.setattr(node_module, "read_final_results_from_file", slow_read)
    async with trio.open_nursery() as nursery:
        await coordinator.start_services(nursery, "127.0.0.1", 0)
        with trio.fail_after(10):
            while not reading.is_set():
                await trio.sleep(0.01)
        coordinator.interrupt_runs("the operator stopped it")
        release.set()
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()

    rows = coordinator.machine.conn.execute("SELECT status, exit_code FROM runs WHERE run_id = 'run-1'").fetchall()
    assert rows == [("interrupted", 2)]
    ends = coordinator.machine.conn.execute("SELECT count(*) FROM log WHERE kind = 'run_finished'").fetchone()[0]
    assert ends == 1
