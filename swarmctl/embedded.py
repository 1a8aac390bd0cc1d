"""The embedded default: a coordinator in this process and local executor processes.

``swarmctl run`` without ``--cluster`` uses this, like ``pytest -n auto``. Everything listens
on loopback and stops when the run ends, Ctrl-C included. State lives in the data folder, so
later commands can read past runs.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
import trio

from swarmctl.bundle import Bundle, BundleCache, iter_chunks
from swarmctl.cluster.transport import listen
from swarmctl.errors import UsageError
from swarmctl.security import load_secret, write_secret

if TYPE_CHECKING:
    from swarmctl.protocol import SuiteSpec

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
EXECUTOR_STOP_GRACE_S = 5.0
ADDRESS_FILE = "coordinator.address"  # where `swarmctl cancel` finds the embedded coordinator
EMBEDDED_SECRET = "cluster.secret"  # in the data folder; clients on this machine make their tokens from it
# Local executors all have the same labels, so once one has joined, waiting longer for a
# test whose requirements they do not meet only delays its error.
UNMATCHED_TIMEOUT_S = 2.0


def data_home() -> Path:
    """Return the data folder: ``$SWARMCTL_HOME``, else the user's data folder."""
    configured = os.environ.get("SWARMCTL_HOME")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(platformdirs.user_data_dir("swarmctl"))


def swarmctl_command() -> list[str]:
    """Return the command line that starts this same swarmctl, frozen binary or not."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "swarmctl"]


@dataclass
class EmbeddedCluster:
    """The coordinator's address and the local executor processes of a running embedded default."""

    address: tuple[str, int]
    processes: list  # trio.Process or ForkedProcess
    stopping: bool = False

    def stop_executors(self, *, at_once: bool = False) -> None:
        """Send each executor SIGTERM so that it leaves. Leaving ``embedded_cluster`` waits for them to exit.

        Called when the run ends, so the executors stop while the client reads the results.
        With ``at_once`` (the run was interrupted), SIGINT stops their running tests instead
        of letting them finish their shards. Later calls send nothing, because a second
        SIGTERM makes an executor stop at once.
        """
        if self.stopping:
            return
        self.stopping = True
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGINT if at_once else signal.SIGTERM)


class LocalNodes:
    """The parts of an embedded default that exist from before its coordinator starts until it ends.

    They are the data folder's lock, the cluster secret, the coordinator's listening socket
    and the executor processes. ``swarmctl run`` forks the executors before its event loop
    starts, so they need no imports of their own and start the suite's pytest worker at once.
    When they were not forked, ``embedded_cluster`` starts them as new processes.
    """

    def __init__(self, home: Path, executors: int, *, verbose: bool = False, labels: dict[str, str] | None = None) -> None:
        self.home = home
        self.count = executors
        self.verbose = verbose
        self.labels = labels or {}
        self.processes: list = []  # trio.Process or ForkedProcess

    def executor_ids(self) -> list[str]:
        return [f"local-{i + 1}" for i in range(self.count)]

    def __enter__(self) -> LocalNodes:
        self.home.mkdir(parents=True, exist_ok=True)
        self._lock = _exclusive(self.home).__enter__()
        try:
            self.secret_path = _cluster_secret(self.home)
            # The executors connect to this socket as soon as they start and wait in its
            # backlog until the coordinator serves it.
            self.sockets = listen(LOOPBACK, 0)
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise
        self.port = self.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        try:
            # Only an error before the event loop stopped them leaves executors running.
            for process in self.processes:
                if process.returncode is None and isinstance(process, ForkedProcess):
                    process.stop_now()
        finally:
            for sock in self.sockets:
                sock.close()
            self._lock.__exit__(None, None, None)

    def store_bundle(self, bundle: Bundle) -> None:
        """Put a suite's bundle where the coordinator and the executors look for it."""
        cache = BundleCache(self.home / "bundles")
        if not cache.has_archive(bundle.digest):
            cache.write_archive(bundle.digest, iter_chunks(bundle.path))

    def fork_executors(self, prestart: SuiteSpec | None = None) -> bool:
        """Start the executors as copies of this process; return False, starting none, where that is unsafe.

        Forking is safe only before any thread or event loop starts. With ``prestart``, each
        executor starts that suite's pytest worker before it connects; the bundle must be
        stored already.
        """
        if not hasattr(os, "fork") or threading.active_count() > 1:
            return False
        # Frozen objects are left out of garbage collection: a collection in a copy would
        # otherwise write to every page it shares with this process.
        gc.freeze()
        try:
            for executor_id in self.executor_ids():
                self.processes.append(ForkedProcess(self._fork_executor(executor_id, prestart)))
        finally:
            gc.unfreeze()
        return True

    def _fork_executor(self, executor_id: str, prestart: SuiteSpec | None) -> int:
        # Imported before the fork, so that the executors inherit the modules instead of importing them.
        import swarmctl.executor.node  # noqa: F401
        from swarmctl.cli import exit_now
        from swarmctl.cli.up import executor_main

        log_path = self._log_path(executor_id)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # else the copy would print again what this process buffered
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self._become_executor(log_path)
                code = executor_main(
                    self.home, f"{LOOPBACK}:{self.port}", executor_id, self.labels, self.secret_path,
                    verbose=self.verbose, prestart=prestart,
                )
            except BaseException:
                traceback.print_exc()
            finally:
                # Never return into this process's code: its cleanup (the lock, the
                # temporary bundle folder) belongs to the parent.
                exit_now(code)
        return pid

    def _become_executor(self, log_path: Path) -> None:
        """Give a forked executor a session of its own and its log file, and close the parent's sockets."""
        # As for a started executor: Ctrl-C reaches the parent only, which then stops the
        # executors in order instead of all of them dying mid-result.
        os.setsid()
        os.chdir(self.home)  # as a daemon does, it keeps no other folder in use
        with open(log_path, "ab") as log_file, open(os.devnull, "rb") as devnull:
            os.dup2(devnull.fileno(), 0)
            os.dup2(log_file.fileno(), 1)
            if not self.verbose:
                os.dup2(log_file.fileno(), 2)
        for sock in self.sockets:
            sock.close()
        # This closes this process's descriptor only: the lock stays the parent's.
        self._lock.file.close()
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)

    async def spawn_executors(self) -> None:
        """Start the executors as new ``swarmctl up --role executor`` processes."""
        for executor_id in self.executor_ids():
            self.processes.append(await self._start_executor(executor_id))

    async def _start_executor(self, executor_id: str) -> trio.Process:
        argv = [
            *swarmctl_command(), "up", "--role", "executor", "--join", f"{LOOPBACK}:{self.port}", "--slots", "1",
            "--id", executor_id, "--data-dir", str(self.home), "--secret-file", str(self.secret_path),
        ]
        if self.labels:
            argv += ["--labels", ",".join(f"{key}={value}" for key, value in self.labels.items())]
        with open(self._log_path(executor_id), "ab") as log_file:
            return await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=None if self.verbose else log_file,
                start_new_session=True,  # see _become_executor
            )

    def _log_path(self, executor_id: str) -> Path:
        log_dir = self.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        return log_dir / f"{executor_id}.log"


class ForkedProcess:
    """A forked executor, with the part of ``trio.Process`` that the embedded default uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        while not self._reap():
            await _exited(self.pid)
        return self.returncode

    def stop_now(self) -> None:
        """Stop it without an event loop: SIGINT, which stops its pytest worker too, then SIGKILL."""
        self.send_signal(signal.SIGINT)
        deadline = time.monotonic() + EXECUTOR_STOP_GRACE_S
        while not self._reap():
            if time.monotonic() > deadline:
                self.kill()
                os.waitpid(self.pid, 0)
                self.returncode = -signal.SIGKILL
                return
            time.sleep(0.02)

    def _reap(self) -> bool:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == 0:
                return False
            self.returncode = os.waitstatus_to_exitcode(status)
        return True


async def _exited(pid: int) -> None:
    """Return once the child ``pid`` has exited (it stays a zombie until reaped), or soon."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        await trio.sleep(0.02)  # no pidfd on this system: poll
        return
    try:
        await trio.lowlevel.wait_readable(fd)
    finally:
        os.close(fd)


@asynccontextmanager
async def embedded_cluster(nodes: LocalNodes) -> AsyncIterator[EmbeddedCluster]:
    """Serve a coordinator on ``nodes``' socket, with its executors, and yield them.

    The executors are started here unless ``nodes`` forked them already.
    """
    with _log_to_file(nodes.home / "logs" / "coordinator.log"):
        cluster = EmbeddedCluster((LOOPBACK, nodes.port), nodes.processes)
        try:
            if not nodes.processes:
                # They start before this process imports the coordinator, because they take longer to start.
                await nodes.spawn_executors()
            async with _coordinator(nodes.home, nodes.port, nodes.sockets, nodes.secret_path) as coordinator:
                address_file = nodes.home / ADDRESS_FILE
                address_file.write_text(f"{LOOPBACK}:{nodes.port}\n")
                try:
                    yield cluster
                finally:
                    # A run still active here was interrupted (Ctrl-C); record that before the
                    # executors leave, so that its shards are not requeued with no executor left.
                    coordinator.interrupt_runs("swarmctl run was stopped")
                    address_file.unlink(missing_ok=True)
                    with trio.CancelScope(shield=True):
                        await _stop_executors(cluster)
        finally:
            # Also when the coordinator failed to start: the executors must not outlive this process.
            with trio.CancelScope(shield=True):
                await _stop_executors(cluster)


@asynccontextmanager
async def _coordinator(home: Path, port: int, sockets: list[socket.socket], secret_path: Path) -> AsyncIterator:
    """Serve a coordinator on the listening ``sockets`` until the block ends, and yield it."""
    # Imported here: executors and clients import this module for data_home and need no coordinator.
    from swarmctl.coordinator.node import Coordinator
    from swarmctl.coordinator.settings import CoordinatorSettings

    coordinator = Coordinator(
        home, resume_runs=False, settings=CoordinatorSettings(unmatched_timeout_s=UNMATCHED_TIMEOUT_S),
        secret=load_secret(secret_path),
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(coordinator.serve, LOOPBACK, port, sockets=sockets))
            try:
                yield coordinator
            finally:
                nursery.cancel_scope.cancel()
    finally:
        coordinator.close()


@contextmanager
def _log_to_file(path: Path) -> Iterator[None]:
    """Keep the embedded coordinator's log in the data folder, whatever the terminal shows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    if root.level > logging.INFO:
        # The terminal handler keeps its own, higher threshold.
        for other in root.handlers:
            if other is not handler and other.level < root.level:
                other.setLevel(root.level)
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()


def embedded_address(home: Path) -> tuple[str, int] | None:
    """Return the address of the coordinator a running ``swarmctl run`` embeds, or None."""
    lock_path = home / "embedded.lock"
    if not lock_path.exists():
        return None
    with open(lock_path) as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a run is active, so its address file is current
        else:
            fcntl.flock(lock, fcntl.LOCK_UN)
            return None
    try:
        host, _, port = (home / ADDRESS_FILE).read_text().strip().rpartition(":")
        return host, int(port)
    except (OSError, ValueError):
        return None


class _exclusive:
    """Hold an exclusive lock on the data folder, so two embedded runs do not share state."""

    def __init__(self, home: Path) -> None:
        self.path = home / "embedded.lock"

    def __enter__(self):
        self.file = open(self.path, "w")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise UsageError(
                f"another `swarmctl run` is using the data folder {self.path.parent}; wait for it to end, "
                "or set SWARMCTL_HOME to another folder for this run"
            ) from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def _cluster_secret(home: Path) -> Path:
    """Return the embedded cluster's secret file, created with mode 0600 on first use."""
    path = home / EMBEDDED_SECRET
    if not path.exists():
        try:
            write_secret(path)
        except FileExistsError:
            pass  # another process created it first
    return path


async def _stop_executors(cluster: EmbeddedCluster) -> None:
    # The run ended normally once every test had its result, and the executors have been
    # asked to leave already. Otherwise it was interrupted: nothing of theirs is wanted.
    cluster.stop_executors(at_once=True)
    processes = cluster.processes
    with trio.move_on_after(EXECUTOR_STOP_GRACE_S):
        for process in processes:
            await process.wait()
    for process in processes:
        if process.returncode is None:
            log.warning("executor pid %d did not stop within %.0fs; killing it", process.pid, EXECUTOR_STOP_GRACE_S)
            process.kill()
            await process.wait()
