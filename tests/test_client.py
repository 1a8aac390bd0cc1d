"""Tests for following a run from the client side."""

from __future__ import annotations

from swarmctl import protocol
from swarmctl.client import RunWatch, _follow
from swarmctl.results import CaseResult


class ScriptedStream:
    """An event stream that returns the given frames in order."""

    name = "coordinator"

    def __init__(self, frames: list[protocol.Message]) -> None:
        self.frames = list(frames)

    async def receive(self) -> protocol.Message:
        return self.frames.pop(0)


async def test_follow_on_ended_before_results() -> None:
    results = [CaseResult(f"t.py::test_{i}", "passed").to_wire() for i in range(3)]
    stream = ScriptedStream([
        protocol.RunProgress("run-1", "running", 3, 1, 2, [["t.py::test_0", "passed"]]),
        protocol.RunResults("run-1", results[:2]),
        protocol.RunResults("run-1", results[2:]),
        protocol.RunComplete("run-1", 0, 1.5, 1_700_000_000.0, 0, "", ["exec-1"]),
    ])
    watch = RunWatch(run_id="run-1")
    progress: list[int] = []
    ended: list[int] = []  # results received before each on_ended call

    complete = await _follow(stream, watch, lambda w, new: progress.append(w.done), lambda: ended.append(len(watch.results)))

    assert complete.exit_code == 0
    assert progress == [1]
    assert ended[0] == 0  # before the first results frame is read
    assert [result.case_id for result in watch.results] == [f"t.py::test_{i}" for i in range(3)]


async def test_follow_on_ended_without_results() -> None:
    stream = ScriptedStream([protocol.RunComplete("run-2", 5, 0.1, 1_700_000_000.0, 0, "", [])])
    ended: list[bool] = []

    await _follow(stream, RunWatch(run_id="run-2"), lambda w, new: None, lambda: ended.append(True))

    assert ended == [True]


async def test_follow_on_ended_at_last_progress() -> None:
    """The last progress frame ends the run for the caller before the results are sent."""
    stream = ScriptedStream([
        protocol.RunProgress("run-3", "running", 2, 1, 2, [["t.py::test_0", "passed"]]),
        protocol.RunProgress("run-3", "running", 2, 2, 2, [["t.py::test_1", "passed"]]),
        protocol.RunComplete("run-3", 0, 0.5, 1_700_000_000.0, 0, "", ["exec-1"]),
    ])
    watch = RunWatch(run_id="run-3")
    ended: list[int] = []  # tests done at each on_ended call

    await _follow(stream, watch, lambda w, new: None, lambda: ended.append(watch.done))

    assert ended == [2, 2]  # at the last progress frame, then at the end
