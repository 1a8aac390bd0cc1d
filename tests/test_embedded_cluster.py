"""Tests for stopping the embedded default's executor processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import psutil
import pytest

from swarmctl.embedded import ADDRESS_FILE, EmbeddedCluster, ForkedProcess, LocalNodes, embedded_cluster
from swarmctl.errors import SwarmError


class RecordingProcess:
    def __init__(self, returncode: int | None = None) -> None:
        self.returncode = returncode
        self.signals: list[int] = []

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)


def test_stop_executors_signals_once() -> None:
    """A second SIGTERM would make an executor stop at once instead of leaving in order."""
    running, exited = RecordingProcess(), RecordingProcess(returncode=0)
    cluster = EmbeddedCluster(("127.0.0.1", 1), [running, exited])

    cluster.stop_executors()
    cluster.stop_executors()

    assert running.signals == [signal.SIGTERM]
    assert exited.signals == []


def test_stop_executors_at_once_interrupts() -> None:
    """An interrupted run's executors stop their tests instead of finishing their shards."""
    running = RecordingProcess()
    cluster = EmbeddedCluster(("127.0.0.1", 1), [running])

    cluster.stop_executors(at_once=True)

    assert running.signals == [signal.SIGINT]


async def test_failed_coordinator_stops_started_executors(tmp_path) -> None:
    """The executors start before the coordinator, so its failure must stop them too."""
    (tmp_path / "state.db").mkdir()  # a folder where the state database belongs: the coordinator cannot open it

    with pytest.raises(SwarmError), LocalNodes(tmp_path, 2) as nodes:
        async with embedded_cluster(nodes):
            pass

    assert executors_using(tmp_path) == []
    assert not (tmp_path / ADDRESS_FILE).exists()


def executors_using(home) -> list[psutil.Process]:
    """Return the running executor processes whose data folder is ``home``.

    Matched by command line rather than as this process's children, because under
    pytest-xdist other tests in the same worker process start children too.
    """
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        command = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and "executor" in command and str(home) in command:
            found.append(process)
    return found


def test_no_fork_once_threads_run(tmp_path) -> None:
    """A forked copy of a process with threads could hang on a lock one of them held."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with LocalNodes(tmp_path, 2) as nodes:
            assert nodes.fork_executors() is False
            assert nodes.processes == []
    finally:
        stop.set()
        thread.join()


async def test_forked_process_wait_returns_exit_code() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2); raise SystemExit(3)"])
    process = ForkedProcess(child.pid)

    assert await process.wait() == 3
    assert process.returncode == 3
    process.send_signal(signal.SIGTERM)  # after the exit: sends nothing, to a pid that may be reused


def test_forked_process_stop_now() -> None:
    """Without an event loop, an executor left running is interrupted and reaped."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    process = ForkedProcess(child.pid)

    process.stop_now()

    assert process.returncode not in (None, 0)
    assert not psutil.pid_exists(child.pid)
