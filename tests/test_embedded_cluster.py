"""Tests for stopping the embedded default's executor processes."""

from __future__ import annotations

import signal

from swarmctl.embedded import EmbeddedCluster


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
