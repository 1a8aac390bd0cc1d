"""Tests of ``swarmctl status``, the health check, against real ``swarmctl up`` nodes."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from tests.conftest import run_swarmctl
from tests.e2e.nodes import cluster

pytestmark = pytest.mark.slow


def status(env: dict, *args: str):
    return run_swarmctl(["status", "--local", *args], env, timeout=60)


def test_status_of_running_coordinator(swarm_env, tmp_path) -> None:
    with cluster(tmp_path, swarm_env, executors=1) as running:
        completed = status(swarm_env, "--address", running.address)
        with_executor = status(swarm_env, "--address", running.address, "--executor", "exec-0")
        unknown = status(swarm_env, "--address", running.address, "--executor", "no-such-executor")

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"coordinator {running.address} responds: 1 executor connected"
    assert with_executor.returncode == 0, with_executor.stderr
    assert with_executor.stdout.strip() == f"executor exec-0 is active at the coordinator {running.address}"
    assert unknown.returncode == 1
    assert "does not list executor 'no-such-executor'" in unknown.stderr


def test_status_after_executor_left(swarm_env, tmp_path) -> None:
    with cluster(tmp_path, swarm_env, executors=1) as running:
        running.executors[0].stop()
        running.coordinator.wait_for_log(r"executor exec-0 leaves")
        completed = status(swarm_env, "--address", running.address, "--executor", "exec-0")

    assert completed.returncode == 1
    assert "executor exec-0 is left" in completed.stderr or "executor exec-0 is lost" in completed.stderr


def test_status_without_coordinator(swarm_env) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    completed = status(swarm_env, "--address", f"127.0.0.1:{port}")

    assert completed.returncode == 1
    assert completed.stderr.startswith(f"swarmctl: error: could not connect to 127.0.0.1:{port}")


def test_status_of_frozen_coordinator_times_out(swarm_env, tmp_path) -> None:
    with cluster(tmp_path, swarm_env, executors=0) as running:
        running.coordinator.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            completed = status(swarm_env, "--address", running.address, "--timeout", "1s")
            elapsed = time.monotonic() - started
        finally:
            running.coordinator.process.send_signal(signal.SIGCONT)

    assert completed.returncode == 1
    assert "timed out: no response within 1s" in completed.stderr
    assert elapsed < 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--address", "no-port"], "invalid address 'no-port'"),
        (["--timeout", "0s"], "--timeout '0s' is invalid"),
    ],
)
def test_status_invalid_option_is_usage_error(swarm_env, args, message) -> None:
    completed = status(swarm_env, *args)

    assert completed.returncode == 4
    assert message in completed.stderr
