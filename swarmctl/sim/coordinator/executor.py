"""Executors for the cluster simulation: the real ``Executor`` with slots that run tests on the virtual clock.

The executor's own code connects, follows redirects to the leader, resends unacknowledged
result batches to a new leader, heartbeats and reports held shards. Only its slots are
simulated: a slot "runs" a test by sleeping for the test's duration and reports the outcome
that the test's index decides, so the final results of a run are known in advance.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from swarmctl import protocol
from swarmctl.cluster.transport import Network
from swarmctl.executor.node import Executor, Outbox
from swarmctl.executor.resource_monitor import Resources
from swarmctl.executor.slot import Job
from swarmctl.results import ERROR, FAILED, PASSED, CaseResult

SUITE_PREFIX = "simulated-suite-"
EPOCH = 1_800_000_000.0  # the Unix time at which the virtual clock starts


def case_ids(tests: int) -> list[str]:
    return [f"tests/test_sim.py::test_{number}" for number in range(tests)]


def tests_of(suite: dict) -> int:
    return int(str(suite.get("name", "")).removeprefix(SUITE_PREFIX))


def case_number(case_id: str) -> int:
    return int(case_id.rpartition("_")[2])


def expected_outcome(case_id: str) -> str:
    return FAILED if case_number(case_id) % 5 == 4 else PASSED


@dataclass
class RecordingOutbox(Outbox):
    """The real outbox, which also records every result the coordinator acknowledged."""

    # (run_id, shard_id, attempt, case_id, executor, started_at) of every acknowledged result
    acknowledged: list[tuple[str, int, int, str, str, float]] = field(default_factory=list)

    def acknowledge(self, seq: int) -> None:
        batch = self.unacked.get(seq)
        if batch is not None:
            self.acknowledged.extend(
                (run_id, shard_id, attempt, result["case_id"], result["executor"], result["started_at"])
                for run_id, shard_id, attempt, result in batch.items
            )
        super().acknowledge(seq)


class _SteadyMonitor:
    """Resource readings that do not depend on the machine running the simulation."""

    def sample(self) -> Resources:
        return Resources(cpus=4, cpu_percent=10.0, memory_percent=20.0, memory_available_mb=4096.0,
                         load_1m=0.4, disk_free_mb=50_000.0)


class SimExecutor(Executor):
    def __init__(
        self,
        executor_id: str,
        join: list[tuple[str, int]],
        slots: int,
        data_dir: Path,
        *,
        rng: random.Random,
        network: Network,
        duration: Callable[[str], float],
    ) -> None:
        super().__init__(executor_id=executor_id, join=join, slots=0, labels={}, data_dir=data_dir, rng=rng, network=network)
        self.slots = [SimSlot(self, index, duration) for index in range(slots)]
        self.monitor = _SteadyMonitor()
        self.outbox = RecordingOutbox()

    async def run(self) -> None:
        # No subreaper and no log shipping: the whole simulated cluster is one process.
        await self._serve()


class SimSlot:
    """A slot of ``SimExecutor``, with the interface of ``swarmctl.executor.slot.Slot``."""

    def __init__(self, executor: SimExecutor, index: int, duration: Callable[[str], float]) -> None:
        self.executor = executor
        self.index = index
        self.duration = duration
        self.busy = False
        self._shard: tuple[str, int, int] | None = None
        self._unstarted: deque[str] = deque()
        self._scope: trio.CancelScope | None = None
        self._interrupt = ""

    async def serve(self, jobs: trio.MemoryReceiveChannel) -> None:
        async for job in jobs:
            self.busy = True
            try:
                await self._run_job(job)
            finally:
                self.busy = False

    async def shutdown(self) -> None:
        pass

    async def _run_job(self, job: Job) -> None:
        executor = self.executor
        if job.kind == "prepare":
            if job.collect:
                executor.send(protocol.Collected(job.run_id, case_ids(tests_of(job.suite)), []))
            return
        assign = job.assign
        if not executor.holds(assign.run_id, assign.shard_id, assign.attempt):
            return  # cancelled while it waited in the queue
        self._shard, self._interrupt = (assign.run_id, assign.shard_id, assign.attempt), ""
        self._unstarted = deque(assign.case_ids)
        release = executor.pending_releases.pop((assign.run_id, assign.shard_id), 0)
        if release:
            self.release_tests(assign.run_id, assign.shard_id, release)
        with trio.CancelScope() as scope:
            self._scope = scope
            while self._unstarted:
                await self._run_case(assign, self._unstarted.popleft())
        self._shard = self._scope = None
        if scope.cancelled_caught and not self._interrupt:
            executor.forget(assign.run_id, assign.shard_id, assign.attempt)
            return
        executor.shard_done(protocol.ShardDone(assign.run_id, assign.shard_id, assign.attempt))

    async def _run_case(self, assign: protocol.Assign, case_id: str) -> None:
        started = trio.current_time()
        try:
            await trio.sleep(self.duration(case_id))
        except trio.Cancelled:
            if self._interrupt:
                self._report(assign, CaseResult(case_id, ERROR, trio.current_time() - started, self.executor.executor_id,
                                                assign.attempt, message=self._interrupt, started_at=EPOCH + started))
            raise
        self._report(assign, CaseResult(case_id, expected_outcome(case_id), self.duration(case_id),
                                        self.executor.executor_id, assign.attempt, started_at=EPOCH + started))

    def _report(self, assign: protocol.Assign, result: CaseResult) -> None:
        self.executor.send_result(assign.run_id, assign.shard_id, assign.attempt, result.to_wire())

    def release_tests(self, run_id: str, shard_id: int, count: int) -> bool:
        if self._shard is None or self._shard[:2] != (run_id, shard_id):
            return False
        count = max(0, min(count, len(self._unstarted)))
        if count:
            released = [self._unstarted.pop() for _ in range(count)][::-1]
            self.executor.send(protocol.TestsReleased(run_id, shard_id, self._shard[2], released))
        return True

    def cancel_shard(self, run_id: str, shard_id: int, attempt: int, reason: str, *, interrupt: bool = False) -> None:
        if self._shard != (run_id, shard_id, attempt) or self._scope is None:
            return
        if interrupt:
            self._interrupt = reason
            self._unstarted.clear()
        self._scope.cancel()
