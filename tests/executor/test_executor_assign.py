"""How an executor queues the shard attempts it is assigned."""

from __future__ import annotations

import trio

from swarmctl import protocol
from swarmctl.executor.node import Executor


def make_executor(tmp_path) -> Executor:
    return Executor(executor_id="exec-1", join=[("127.0.0.1", 1)], slots=1, labels={}, data_dir=tmp_path)


def assign(attempt: int, case_ids: list[str]) -> protocol.Assign:
    return protocol.Assign("run-1", 3, attempt, 1, {"kind": "pytest"}, case_ids, "digest")


def queued_attempts(executor: Executor) -> list[int]:
    attempts = []
    while True:
        try:
            job = executor.jobs_receive.receive_nowait()
        except trio.WouldBlock:
            return attempts
        attempts.append(job.assign.attempt)


def test_repeated_attempt_queued_once(tmp_path):
    executor = make_executor(tmp_path)

    executor._on_assign(assign(2, ["t.py::a", "t.py::b"]))
    executor._on_assign(assign(2, ["t.py::a", "t.py::b"]))

    assert queued_attempts(executor) == [2]
    assert executor.held == {("run-1", 3): 2}


def test_later_attempt_queued_again(tmp_path):
    executor = make_executor(tmp_path)

    executor._on_assign(assign(2, ["t.py::a"]))
    executor._on_assign(assign(3, ["t.py::a"]))

    assert queued_attempts(executor) == [2, 3]
    assert executor.held == {("run-1", 3): 3}
