"""One executor slot: runs jobs one at a time and keeps a warm pytest worker between them."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from swarmctl import protocol
from swarmctl.errors import SwarmError
from swarmctl.executor.runners.command import run_command_case
from swarmctl.executor.runners.pytest_runner import (
    CRASH_LOG_TAIL_BYTES,
    PytestWorker,
    WorkerStartFailed,
    describe_exit,
    read_tail,
)
from swarmctl.manifest import load_manifest
from swarmctl.results import ERROR, CaseResult

if TYPE_CHECKING:
    from swarmctl.executor.node import Executor

log = logging.getLogger(__name__)

MAX_WORKER_STARTS_PER_SHARD = 20  # a suite whose worker cannot start must not loop forever


@dataclass
class Job:
    kind: str  # "prepare" (warm the worker; collect if asked) or "shard"
    run_id: str
    suite: dict[str, Any]
    collect: bool = False
    assign: protocol.Assign | None = None


class Slot:
    def __init__(self, executor: Executor, index: int) -> None:
        self.executor = executor
        self.index = index
        self.name = f"{executor.executor_id}/{index}"
        self.busy = False
        self._worker: PytestWorker | None = None
        self._worker_key: tuple | None = None
        self._suite_dir: Path | None = None
        self._worker_nursery: trio.Nursery | None = None
        self._shard: tuple[str, int, int] | None = None  # (run_id, shard_id, attempt)
        self._shard_scope: trio.CancelScope | None = None
        self._interrupt_reason: str | None = None
        self._case_scope: trio.CancelScope | None = None  # the running command case
        self._batch_running = False
        self._pending_release = 0  # tests to give back once the shard's batch starts

    async def serve(self, jobs: trio.MemoryReceiveChannel) -> None:
        async with trio.open_nursery() as nursery:
            self._worker_nursery = nursery
            async for job in jobs:
                self.busy = True
                try:
                    await self._run_job(job)
                except SwarmError as exc:
                    log.error("slot %s: job %s of run %s failed: %s", self.name, job.kind, job.run_id, exc)
                    if job.assign is not None:
                        # Tell the coordinator, which requeues the shard, instead of leaving it held.
                        assign = job.assign
                        error = f"executor {self.executor.executor_id} could not run the shard: {exc}"
                        self.executor.shard_done(protocol.ShardDone(assign.run_id, assign.shard_id, assign.attempt, error))
                    elif job.collect:
                        # The run waits for this collection: end it with the reason rather than leave it waiting.
                        error = f"executor {self.executor.executor_id} could not prepare the suite: {exc}"
                        self.executor.send(protocol.Collected(job.run_id, [], [], 0, exc.exit_code, error))
                finally:
                    self.busy = False

    async def _run_job(self, job: Job) -> None:
        suite = protocol.SuiteSpec.from_wire(job.suite)
        if job.kind == "prepare":
            await self._prepare(job.run_id, suite, job.collect)
            return

        assign = job.assign
        if not self.executor.holds(assign.run_id, assign.shard_id, assign.attempt):
            return  # cancelled while it waited in the queue
        self._shard = (assign.run_id, assign.shard_id, assign.attempt)
        self._interrupt_reason = None
        # A release request may have come before this job left the executor's queue.
        self._pending_release = self.executor.pending_releases.pop((assign.run_id, assign.shard_id), 0)
        with trio.CancelScope() as scope:
            self._shard_scope = scope
            if suite.kind == "command":
                await self._run_commands(suite, assign)
            else:
                await self._run_tests(suite, assign)
        self._shard = self._shard_scope = None
        if scope.cancelled_caught:
            log.info("slot %s: shard %d of run %s cancelled", self.name, assign.shard_id, assign.run_id)
            await self._discard_worker()  # it may be in the middle of a test
            self.executor.forget(assign.run_id, assign.shard_id, assign.attempt)
            return
        self.executor.shard_done(protocol.ShardDone(assign.run_id, assign.shard_id, assign.attempt))

    def release_tests(self, run_id: str, shard_id: int, count: int) -> bool:
        """Give back the end of the shard this slot runs; return False if it runs another.

        The coordinator hands the tests to an idle slot. Between the start of the shard's job
        and the start of its batch, the request is kept and sent right after the batch starts.
        """
        if self._shard is None or self._shard[:2] != (run_id, shard_id):
            return False
        log.info("slot %s: releasing up to %d tests of shard %d of run %s", self.name, count, shard_id, run_id)
        if self._worker is not None and self._batch_running:
            self._worker.release(count)
        else:
            self._pending_release = count
        return True

    def cancel_shard(self, run_id: str, shard_id: int, attempt: int, reason: str, *, interrupt: bool = False) -> None:
        """Stop the shard if this slot runs it.

        With ``interrupt``, the running test is stopped with a stack dump and reported as an
        error with ``reason``, and the shard ends normally; otherwise the shard is dropped.
        """
        if self._shard != (run_id, shard_id, attempt) or self._shard_scope is None:
            return
        log.info("slot %s: stopping shard %d of run %s: %s", self.name, shard_id, run_id, reason)
        if interrupt:
            self._interrupt_reason = reason
            if self._worker is not None:
                self._worker.interrupt(reason)
            if self._case_scope is not None:
                self._case_scope.cancel()
        else:
            self._shard_scope.cancel()

    # --- pytest suites -----------------------------------------------------------------

    async def _prepare(self, run_id: str, suite: protocol.SuiteSpec, collect: bool) -> None:
        if suite.kind == "command":
            return
        warm = self._warm_for(suite)
        if warm is not None and run_id:
            # Its start is logged before the run began (the embedded default starts it early):
            # this line shows in the run's logs which worker runs it.
            log.info(
                "slot %s: run %s uses pytest worker pid %d, started before the run in %s",
                self.name, run_id, warm.process.pid, self._suite_dir,
            )
        try:
            worker = await self._warm_worker(suite)
        except WorkerStartFailed as exc:
            if collect:
                self.executor.send(
                    protocol.Collected(run_id, [], [], 0, exc.exit_code if exc.exit_code not in (None, 0) else 3,
                                       collection_failure_text(suite, exc, self._suite_dir))
                )
            return
        if collect:
            collection = worker.collection
            self.executor.send(
                protocol.Collected(
                    run_id, collection.case_ids, collection.collect_results, collection.deselected,
                    dependencies=collection.dependencies, requirements=collection.requirements,
                )
            )

    def _warm_for(self, suite: protocol.SuiteSpec) -> PytestWorker | None:
        """Return this slot's worker if it is alive and was started for ``suite``, else None."""
        if self._worker is not None and self._worker.alive and self._worker_key == _key(suite):
            return self._worker
        return None

    async def _warm_worker(self, suite: protocol.SuiteSpec) -> PytestWorker:
        warm = self._warm_for(suite)
        if warm is not None:
            return warm
        await self._discard_worker()
        suite_dir = self._suite_dir = await self.executor.suite_dir(suite.bundle)
        log_path = self.executor.data_dir / "logs" / f"{self.executor.executor_id}-slot{self.index}.log"
        self._worker = await PytestWorker.start(
            self._worker_nursery,
            python=suite.python,
            suite_dir=suite_dir,
            pytest_args=pytest_argv(suite_dir, suite.pytest_args, self.executor.data_dir),
            log_path=log_path,
            bytecode_dir=self.executor.bundles.bytecode_dir,
        )
        self._worker_key = _key(suite)
        return self._worker

    async def _discard_worker(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            with trio.CancelScope(shield=True):
                await worker.stop()
            for orphan in self.executor.kill_orphans():
                log.warning("slot %s: killed %s, left by a test of the stopped worker", self.name, orphan)

    async def _run_tests(self, suite: protocol.SuiteSpec, assign: protocol.Assign) -> None:
        remaining = list(assign.case_ids)
        starts = 0
        while remaining and self._interrupt_reason is None:
            try:
                worker = await self._warm_worker(suite)
            except WorkerStartFailed as exc:
                starts += 1
                if starts >= MAX_WORKER_STARTS_PER_SHARD or exc.exit_code != 0:
                    self._fail_all(assign, remaining, collection_failure_text(suite, exc, self._suite_dir))
                    return
                continue
            starts += 1
            if worker.collection.digest != assign.collection_digest:
                remaining = self._drop_uncollected(assign, worker, remaining)
                if not remaining:
                    return

            def report(result: dict) -> None:
                self.executor.send_result(assign.run_id, assign.shard_id, assign.attempt, result)

            before = len(remaining)
            self._batch_running = True
            try:
                remaining = await worker.run(
                    remaining, report, timeout=suite.timeout, release=self._take_pending_release(),
                    on_release=lambda ids: self.executor.send(
                        protocol.TestsReleased(assign.run_id, assign.shard_id, assign.attempt, ids)
                    ),
                    on_output=lambda case_id, stream, text: self.executor.send_output(
                        assign.run_id, assign.shard_id, assign.attempt, case_id, stream, text
                    ),
                )
            finally:
                self._batch_running = False
            if self._interrupt_reason is not None:
                await self._discard_worker()
                return
            if remaining and not worker.alive and len(remaining) == before:
                # The worker died without finishing a single test: another worker would too.
                output = read_tail(worker.log_path, CRASH_LOG_TAIL_BYTES)
                self._fail_all(
                    assign, remaining,
                    f"the pytest worker ended with {describe_exit(worker.exit_code)} before running "
                    f"{remaining[0]}; its output:\n{output.strip()}",
                )
                await self._discard_worker()
                return
            if remaining and not worker.alive:
                log.warning("slot %s: worker ended with %s; restarting it for %d remaining tests",
                            self.name, describe_exit(worker.exit_code), len(remaining))
                await self._discard_worker()

    def _take_pending_release(self) -> int:
        count, self._pending_release = self._pending_release, 0
        return count

    def _drop_uncollected(self, assign: protocol.Assign, worker: PytestWorker, case_ids: list[str]) -> list[str]:
        """Report the shard's tests this worker did not collect as errors; return the others.

        A suite whose collection differs between processes (random or time-based parameters,
        an environment-dependent conftest) cannot be distributed safely, so the difference is
        reported with the ids instead of running whatever happens to share a name.
        """
        collected = set(worker.collection.case_ids)
        missing = [case_id for case_id in case_ids if case_id not in collected]
        if not missing:
            return case_ids
        shown = "\n  ".join(missing[:50]) + ("\n  ..." if len(missing) > 50 else "")
        message = (
            f"not collected on executor {self.executor.executor_id}: its collection of "
            f"{len(worker.collection.case_ids)} tests differs from the run's"
        )
        longrepr = (
            f"{message}. Node ids of this shard that it did not collect ({len(missing)}):\n  {shown}\n"
            "Make the suite collect the same node ids in every process (no random or time-based parameters)."
        )
        log.error("slot %s: run %s shard %d: %s; missing: %s", self.name, assign.run_id, assign.shard_id, message, missing[:20])
        for case_id in missing:
            result = CaseResult(case_id, ERROR, when="collect", message=message, longrepr=longrepr)
            self.executor.send_result(assign.run_id, assign.shard_id, assign.attempt, result.to_wire())
        return [case_id for case_id in case_ids if case_id in collected]

    def _fail_all(self, assign: protocol.Assign, case_ids: list[str], message: str) -> None:
        first_line = message.splitlines()[0] if message else "pytest worker failed to start"
        for case_id in case_ids:
            result = CaseResult(case_id, ERROR, when="setup", message=first_line, longrepr=message)
            self.executor.send_result(assign.run_id, assign.shard_id, assign.attempt, result.to_wire())

    # --- command suites -----------------------------------------------------------------

    async def _run_commands(self, suite: protocol.SuiteSpec, assign: protocol.Assign) -> None:
        suite_dir = await self.executor.suite_dir(suite.bundle)
        manifest = _manifest(suite_dir)
        cases = {case.id: case for case in manifest.cases}
        for case_id in assign.case_ids:
            if self._interrupt_reason is not None:
                return
            case = cases.get(case_id)
            if case is None:
                result = CaseResult(case_id, ERROR, when="setup", message=f"case {case_id!r} is not in this bundle's swarm.toml")
            else:
                with trio.CancelScope() as scope:
                    self._case_scope = scope
                    result = await run_command_case(case, suite_dir, executor=self.executor.executor_id, attempt=assign.attempt)
                self._case_scope = None
                if scope.cancelled_caught:
                    # The command's process group was killed when its task was cancelled.
                    reason = self._interrupt_reason or "interrupted"
                    result = CaseResult(case_id, ERROR, when="call", message=reason, longrepr=reason)
            self.executor.send_result(assign.run_id, assign.shard_id, assign.attempt, result.to_wire())

    async def shutdown(self) -> None:
        await self._discard_worker()


@functools.lru_cache(maxsize=16)
def _manifest(suite_dir: Path):
    """Read a bundle's manifest once: an extracted bundle never changes (it is named by its digest)."""
    return load_manifest(suite_dir)


def _key(suite: protocol.SuiteSpec) -> tuple:
    """What a warm worker must have been started with to run ``suite``."""
    return suite.bundle, suite.python, suite.pytest_args


def pytest_argv(suite_dir: Path, user_args: tuple[str, ...], data_dir: Path) -> list[str]:
    """Arguments that make node ids relative to the suite folder, plus the user's arguments.

    ``--rootdir`` pins node ids to the suite folder. When the folder has no pytest
    configuration file of its own, an empty one keeps pytest from picking up a configuration
    file from a folder above the bundle cache, and ``--confcutdir`` keeps conftest.py
    discovery inside the suite.
    """
    args = list(user_args)
    if not any(a == "--rootdir" or a.startswith("--rootdir=") for a in args):
        args = [f"--rootdir={suite_dir}", *args]
    has_config = any((suite_dir / name).is_file() for name in ("pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg"))
    if not has_config and not any(a in ("-c", "--config-file") or a.startswith(("-c", "--config-file=")) for a in args):
        empty = data_dir / "empty-pytest.ini"
        if not empty.exists():
            empty.parent.mkdir(parents=True, exist_ok=True)
            empty.write_text("[pytest]\n")
        args = ["-c", str(empty), f"--confcutdir={suite_dir}", *args]
    return args


def collection_failure_text(suite: protocol.SuiteSpec, exc: WorkerStartFailed, suite_dir: Path | None = None) -> str:
    output = exc.output.strip()
    if suite_dir is not None:
        output = output.replace(str(suite_dir), suite.name)  # show the user's folder, not the cache
    if exc.exit_code is None:
        return f"could not start the suite's Python {suite.python!r}: {output}"
    return f"pytest could not collect the suite under {suite.python!r} (it ended with {describe_exit(exc.exit_code)}):\n{output}"
