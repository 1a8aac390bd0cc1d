"""The pytest runner: one warm pytest worker process per executor slot.

A worker collects the suite once and then runs the node ids it is sent, so a shard costs no
interpreter start and no collection. The worker runs in its own session (process group), with
stdout and stderr in a log file rather than a pipe: a test that forks, or leaves a daemon
behind, can hold a pipe open for minutes, and the runner must not wait for that.

A test is finished when its result arrives or when the worker exits. When the worker dies in
the middle of a test (segfault, ``os._exit``, SIGKILL from the OOM killer), that test gets an
``error`` naming the signal or exit code, with the worker's last output (faulthandler prints
the crashing stack there), and the caller restarts the worker for the rest of the shard.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import math
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from swarmctl.executor import processes
from swarmctl.results import ERROR, FAILED, CaseResult

log = logging.getLogger(__name__)

OUTPUT_CAP_CHARS = 256 * 1024  # per stream and test; the start and the end are kept
CRASH_LOG_TAIL_BYTES = 64 * 1024
KILL_GRACE_S = 2.0
STACK_DUMP_WAIT_S = 0.5
PLUGIN_TIMEOUT_GRACE_S = 2.0

_WORKER_SOURCE = importlib.resources.files("swarmctl.executor.runners").joinpath("pytest_worker.py").read_text()


class WorkerStartFailed(Exception):
    """The worker exited before it finished collecting; ``output`` contains what it printed."""

    def __init__(self, exit_code: int | None, output: str) -> None:
        super().__init__(f"pytest worker exited with {describe_exit(exit_code)} before collecting")
        self.exit_code = exit_code
        self.output = output


@dataclass(frozen=True, slots=True)
class Collection:
    case_ids: list[str]
    collect_results: list[dict]
    deselected: int
    timeout_plugin: bool = False  # pytest-timeout is active in the worker
    dependencies: dict[str, list[str]] | None = None  # node id -> node ids it depends on
    requirements: dict[str, dict[str, str]] | None = None  # node id -> labels its executor must have

    @property
    def digest(self) -> str:
        return collection_digest(self.case_ids)


def collection_digest(case_ids: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for case_id in case_ids:
        digest.update(case_id.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def describe_exit(returncode: int | None) -> str:
    """Name how a process ended: ``signal SIGSEGV (11)`` or ``exit code 3``."""
    if returncode is None:
        return "an unknown status"
    if returncode < 0:
        number = -returncode
        try:
            return f"signal {signal.Signals(number).name} ({number})"
        except ValueError:
            return f"signal {number}"
    return f"exit code {returncode}"


def crash_hint(returncode: int | None) -> str:
    if returncode == -signal.SIGKILL:
        return (
            " SIGKILL is often sent by the kernel's out-of-memory killer (see `dmesg`), "
            "but any process may have sent it."
        )
    return ""


class PytestWorker:
    """A pytest process that collected the suite once and runs batches of node ids."""

    def __init__(self, process: trio.Process, commands_fd: int, events: trio.MemoryReceiveChannel, log_path: Path):
        self.process = process
        self._commands_fd = commands_fd
        self._events = events
        self.log_path = log_path
        self.collection: Collection | None = None
        self.exit_code: int | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._interrupt_reason: str | None = None
        self.released: list[str] = []  # tests of the last batch given back unstarted

    @classmethod
    async def start(
        cls,
        nursery: trio.Nursery,
        *,
        python: str,
        suite_dir: Path,
        pytest_args: Sequence[str],
        log_path: Path,
        bytecode_dir: Path | None = None,
    ) -> PytestWorker:
        """Start a worker and wait until it has collected the suite.

        Where bytecode writing is turned off, the worker keeps the modules it compiles while
        collecting under ``bytecode_dir`` (``BytecodeCache`` in the worker).
        """
        commands_read, commands_write = os.pipe()
        events_read, events_write = os.pipe()
        argv = [
            python,
            "-c",
            _WORKER_SOURCE,
            "--events-fd",
            str(events_write),
            "--commands-fd",
            str(commands_read),
            "--output-cap",
            str(OUTPUT_CAP_CHARS),
            *(["--bytecode-dir", str(bytecode_dir)] if bytecode_dir is not None else []),
            "--",
            *pytest_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(log_path, "wb") as log_file:
                process = await trio.lowlevel.open_process(
                    argv,
                    cwd=suite_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    pass_fds=(events_write, commands_read),
                    start_new_session=True,
                    env=env,
                )
        except OSError as exc:
            for fd in (commands_read, commands_write, events_read, events_write):
                os.close(fd)
            raise WorkerStartFailed(None, f"cannot start {python!r}: {exc}") from exc
        processes.track(process.pid)
        os.close(commands_read)
        os.close(events_write)
        os.set_blocking(events_read, False)

        send, receive = trio.open_memory_channel(math.inf)
        worker = cls(process, commands_write, receive, log_path)
        nursery.start_soon(_pump_events, process, events_read, send)
        log.info("started pytest worker pid %d in %s", process.pid, suite_dir)

        try:
            event = await receive.receive()
        except BaseException:
            # Cancelled while the worker collects (the executor is stopping): do not leave it running.
            with trio.CancelScope(shield=True):
                await worker.kill()
            raise
        if event.get("op") != "collected":
            worker.exit_code = event.get("code")
            await worker.kill()
            raise WorkerStartFailed(worker.exit_code, read_tail(log_path, CRASH_LOG_TAIL_BYTES))
        worker.collection = Collection(
            event["ids"], event["collect_results"], event["deselected"], event.get("timeout_plugin", False),
            event.get("dependencies") or {}, event.get("requirements") or {},
        )
        return worker

    @property
    def alive(self) -> bool:
        return self.exit_code is None and self.process.returncode is None

    async def run(
        self,
        case_ids: Sequence[str],
        on_result: Callable[[dict], None],
        *,
        timeout: float | None = None,
        release: int = 0,
        on_release: Callable[[list[str]], None] = lambda ids: None,
        on_output: Callable[[str, str, str], None] = lambda case_id, stream, text: None,
    ) -> list[str]:
        """Run ``case_ids`` in order and return the ids that did not run.

        ``on_output`` receives ``(case_id, stream, text)`` pieces of a running test's
        captured output as the worker reads them, before the test's result.

        ``on_result`` receives each result in its wire form (``CaseResult.to_wire()``); the
        worker already sends that form, and re-encoding it per test costs more than the test
        in a suite of tiny tests.

        A test that crashes the worker or runs past ``timeout`` seconds gets its result here;
        the tests after it are returned so the caller can run them on a new worker.
        """
        self.released = []
        self._send_command({"op": "run", "ids": list(case_ids)})
        if release:
            self.release(release)  # asked for before the batch started
        finished = 0
        current: str | None = None
        log_offset = 0
        deadline = math.inf
        limit: tuple[float, float, str] | None = None  # the running test's, set at its start

        while True:
            with trio.move_on_at(deadline) as scope:
                self._wait_scope = scope
                if self._interrupt_reason is not None:
                    scope.cancel()
                event = await self._events.receive()
            self._wait_scope = None
            if scope.cancelled_caught and self._interrupt_reason is not None:
                if current is not None:
                    on_result((await self._stop_interrupted_test(current, log_offset)).to_wire())
                    return list(case_ids[finished + 1 :])
                return list(case_ids[finished:])
            if scope.cancelled_caught:
                assert current is not None
                on_result((await self._stop_hung_test(current, limit, log_offset)).to_wire())
                return list(case_ids[finished + 1 :])

            match event["op"]:
                case "start":
                    current = event["id"]
                    log_offset = event.get("log_offset", 0)
                    limit = self._limit(event.get("timeout"), timeout)
                    deadline = trio.current_time() + limit[1] if limit else math.inf
                case "result":
                    on_result(event["result"])
                    finished += 1
                    current, deadline = None, math.inf
                case "output":
                    on_output(event["id"], event["stream"], event["text"])
                case "released":
                    on_release(event["ids"])
                case "batch_done":
                    self.released = event.get("released") or []
                    return []
                case "exit":
                    self.exit_code = event["code"]
                    if current is None:
                        # Died between tests (in a fixture teardown or at exit); nothing ran.
                        return list(case_ids[finished:])
                    on_result(self._crash_result(current, log_offset).to_wire())
                    return list(case_ids[finished + 1 :])

    def _limit(self, test_timeout: float | None, run_timeout: float | None) -> tuple[float, float, str] | None:
        """Return (limit, seconds to wait, source) for a test, or None when it has no limit.

        The test's own timeout marker or ini setting wins over the run's --timeout, as in
        pytest-timeout. When pytest-timeout is active in the worker it enforces the test's own
        limit from inside the test process, with a gentler failure; the executor then waits a
        grace period longer, so it only steps in when pytest-timeout could not.
        """
        if test_timeout is not None:
            if not test_timeout:
                return None
            grace = PLUGIN_TIMEOUT_GRACE_S if self.collection is not None and self.collection.timeout_plugin else 0.0
            return test_timeout, test_timeout + grace, "the test's timeout setting"
        if run_timeout:
            return run_timeout, run_timeout, "swarmctl --timeout"
        return None

    def _crash_result(self, case_id: str, log_offset: int) -> CaseResult:
        how = describe_exit(self.exit_code)
        output = read_from(self.log_path, log_offset, CRASH_LOG_TAIL_BYTES)
        message = f"worker crashed with {how} while running this test.{crash_hint(self.exit_code)}"
        log.warning("%s: %s", case_id, message)
        return CaseResult(
            case_id=case_id,
            outcome=ERROR,
            when="call",
            message=message,
            longrepr=message + ("\n\nworker output before the crash:\n" + output if output else ""),
        )

    def release(self, count: int) -> None:
        """Ask the worker to give back the last ``count`` tests of its batch that it has not started."""
        if self.alive:
            self._send_command({"op": "release", "count": count})

    def interrupt(self, reason: str) -> None:
        """Stop the running test as if it timed out, reporting it as an error with ``reason``."""
        self._interrupt_reason = reason
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def _stop_interrupted_test(self, case_id: str, log_offset: int) -> CaseResult:
        stacks = await self._dump_stacks_and_kill(log_offset)
        reason = self._interrupt_reason or "interrupted"
        log.warning("%s: %s; worker pid %d stopped", case_id, reason, self.process.pid)
        return CaseResult(
            case_id=case_id,
            outcome=ERROR,
            when="call",
            message=reason,
            longrepr=reason + ("\n\nstacks of the worker when it was stopped:\n" + stacks if stacks else ""),
        )

    async def _dump_stacks_and_kill(self, log_offset: int) -> str:
        """Ask faulthandler for every thread's stack, then stop the worker; return the stacks."""
        try:
            os.kill(self.process.pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass
        await trio.sleep(STACK_DUMP_WAIT_S)
        stacks = read_from(self.log_path, log_offset, CRASH_LOG_TAIL_BYTES)
        await self.kill()
        # pytest's progress output may precede the dump in the log; the dump starts at a thread.
        start = min((i for i in (stacks.find("Thread 0x"), stacks.find("Current thread 0x")) if i >= 0), default=0)
        return stacks[start:]

    async def _stop_hung_test(self, case_id: str, limit: tuple[float, float, str], log_offset: int) -> CaseResult:
        stacks = await self._dump_stacks_and_kill(log_offset)
        timeout, _, source = limit
        message = f"Timeout (>{timeout:.1f}s) from {source}, enforced by swarmctl"
        log.warning("%s: %s; worker pid %d stopped", case_id, message, self.process.pid)
        return CaseResult(
            case_id=case_id,
            outcome=FAILED,
            when="call",
            duration=timeout or 0.0,
            message=message,
            longrepr=message + ("\n\nstacks of the worker when the limit passed:\n" + stacks if stacks else ""),
        )

    def _send_command(self, command: dict) -> None:
        data = (json.dumps(command) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._commands_fd, view) :]

    async def stop(self) -> None:
        """Ask the worker to finish its session, then make sure its process group is gone."""
        if self.alive:
            try:
                self._send_command({"op": "stop"})
            except OSError:
                pass
            with trio.move_on_after(KILL_GRACE_S):
                await self.process.wait()
        await self.kill()

    async def kill(self) -> None:
        """Stop the worker's whole process group: SIGTERM, then SIGKILL after a grace period."""
        await kill_process_group(self.process, KILL_GRACE_S)
        if self._commands_fd >= 0:
            os.close(self._commands_fd)
            self._commands_fd = -1


async def kill_process_group(process: trio.Process, grace: float) -> None:
    pgid = process.pid  # the worker leads its own session, so its pid is the group id
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break
        with trio.move_on_after(grace):
            await process.wait()
        if sig == signal.SIGTERM and process.returncode is not None and not group_alive(pgid):
            break
    with trio.CancelScope(shield=True):
        await process.wait()
    processes.untrack(process.pid)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _pump_events(process: trio.Process, fd: int, send: trio.MemorySendChannel) -> None:
    """Forward the worker's event lines, then its exit, to ``send``.

    Reads until the process exits rather than until end-of-file, then drains what is left
    in the pipe without blocking.
    """
    buffer = bytearray()
    try:
        async with trio.open_nursery() as nursery:

            async def watch_exit() -> None:
                await process.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_exit)
            while True:
                await trio.lowlevel.wait_readable(fd)
                chunk = read_available(fd)
                if chunk is None:
                    # End of file: every writer is gone, so the process has exited or soon will.
                    await process.wait()
                    break
                buffer += chunk
                _forward_lines(buffer, send)

        chunk = read_available(fd)
        if chunk:
            buffer += chunk
            _forward_lines(buffer, send)
        send.send_nowait({"op": "exit", "code": process.returncode})
    finally:
        os.close(fd)


def read_available(fd: int) -> bytes | None:
    """Read what the pipe contains now; return ``None`` at end of file."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            return b"".join(chunks) if chunks else None
        chunks.append(chunk)
    return b"".join(chunks)


def _forward_lines(buffer: bytearray, send: trio.MemorySendChannel) -> None:
    while True:
        end = buffer.find(b"\n")
        if end < 0:
            return
        line = bytes(buffer[:end])
        del buffer[: end + 1]
        if line:
            send.send_nowait(json.loads(line))


def read_from(path: Path, offset: int, limit: int) -> str:
    """Read what was written to ``path`` after ``offset``, keeping the last ``limit`` bytes."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def read_tail(path: Path, limit: int) -> str:
    return read_from(path, 0, limit)
