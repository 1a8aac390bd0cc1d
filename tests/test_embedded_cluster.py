"""Tests for stopping the embedded default's executor processes."""

from __future__ import annotations

import signal

import psutil
import pytest

from swarmctl.embedded import ADDRESS_FILE, EmbeddedCluster, embedded_cluster
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


async def test_failed_coordinator_stops_started_executors(tmp_path) -> None:
    """The executors start before the coordinator, so its failure must stop them too."""
    (tmp_path / "state.db").mkdir()  # a folder where the state database belongs: the coordinator cannot open it

    with pytest.raises(SwarmError):
        async with embedded_cluster(tmp_path, 2):
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
