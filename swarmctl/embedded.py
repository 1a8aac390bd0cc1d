"""The embedded default: a coordinator in this process and local executor processes.

``swarmctl run`` without ``--cluster`` uses this, like ``pytest -n auto``. Everything listens
on loopback and stops when the run ends, Ctrl-C included. State lives in the data folder, so
later commands can read past runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import platformdirs
import trio

from swarmctl.cluster.transport import listen
from swarmctl.errors import UsageError
from swarmctl.security import load_secret, write_secret

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
    processes: list[trio.Process]
    stopping: bool = False

    def stop_executors(self) -> None:
        """Send each executor SIGTERM so that it leaves. Leaving ``embedded_cluster`` waits for them to exit.

        Called when the run ends, so the executors stop while the client reads the results.
        Later calls send nothing, because a second SIGTERM makes an executor stop at once.
        """
        if self.stopping:
            return
        self.stopping = True
        for process in self.processes:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)


@asynccontextmanager
async def embedded_cluster(
    home: Path, executors: int, *, verbose: bool = False, labels: dict[str, str] | None = None
) -> AsyncIterator[EmbeddedCluster]:
    """Start a coordinator and ``executors`` local executor processes, and yield them."""
    home.mkdir(parents=True, exist_ok=True)
    with _exclusive(home), _log_to_file(home / "logs" / "coordinator.log"):
        secret_path = _cluster_secret(home)
        # The executors start before this process imports the coordinator, because they take
        # longer to start: they connect to the listening socket and wait in its backlog.
        sockets = listen(LOOPBACK, 0)
        port = sockets[0].getsockname()[1]
        cluster = EmbeddedCluster((LOOPBACK, port), [])
        try:
            for i in range(executors):
                cluster.processes.append(
                    await _start_executor(home, port, f"local-{i + 1}", verbose, labels or {}, secret_path)
                )
            async with _coordinator(home, port, sockets, secret_path) as coordinator:
                address_file = home / ADDRESS_FILE
                address_file.write_text(f"{LOOPBACK}:{port}\n")
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
            for sock in sockets:
                sock.close()


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


async def _start_executor(
    home: Path, port: int, executor_id: str, verbose: bool, labels: dict[str, str], secret_path: Path
) -> trio.Process:
    argv = [
        *swarmctl_command(), "up", "--role", "executor", "--join", f"{LOOPBACK}:{port}", "--slots", "1",
        "--id", executor_id, "--data-dir", str(home), "--secret-file", str(secret_path),
    ]
    if labels:
        argv += ["--labels", ",".join(f"{key}={value}" for key, value in labels.items())]
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{executor_id}.log", "ab") as log_file:
        return await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=None if verbose else log_file,
            # Its own process group: Ctrl-C in the terminal reaches this process only, which
            # then stops the executors in order instead of all of them dying mid-result.
            start_new_session=True,
        )


async def _stop_executors(cluster: EmbeddedCluster) -> None:
    cluster.stop_executors()
    processes = cluster.processes
    with trio.move_on_after(EXECUTOR_STOP_GRACE_S):
        for process in processes:
            await process.wait()
    for process in processes:
        if process.returncode is None:
            log.warning("executor pid %d did not stop within %.0fs; killing it", process.pid, EXECUTOR_STOP_GRACE_S)
            process.kill()
            await process.wait()
