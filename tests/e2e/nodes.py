"""Real `swarmctl up` processes for cluster tests: a coordinator and executors on loopback."""

from __future__ import annotations

import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 30


class Node:
    """A `swarmctl up` process whose log goes to a file.

    ``program`` is the swarmctl to start, this venv's by default; ``prefix`` runs it under
    another command, such as `ip netns exec NAME`.
    """

    def __init__(
        self, args: list[str], log_path: Path, env: dict, *, prefix: list[str] = (), program: list[str] | None = None,
        stop_timeout: float = 15,
    ) -> None:
        self.log_path = log_path
        self.stop_timeout = stop_timeout
        self._log = open(log_path, "w")
        program = program or [sys.executable, "-m", "swarmctl"]
        self.process = subprocess.Popen([*prefix, *program, "up", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, timeout: float = STARTUP_TIMEOUT_S) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            assert self.process.poll() is None, f"node exited early:\n{self.log()}"
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not logged within {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=self.stop_timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()


class Cluster:
    """A coordinator process and the executor processes added to it; everything stops on exit."""

    def __init__(self, tmp_path: Path, env: dict) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.nodes: list[Node] = []
        self.executors: list[Node] = []
        self.coordinator: Node | None = None
        self.address = ""

    def start_coordinator(self, *args: str, listen: str = "127.0.0.1:0", prefix: list[str] = ()) -> Node:
        self.coordinator = Node(
            ["--role", "coordinator", "--listen", listen, "--data-dir", str(self.tmp_path / "coordinator"), *args],
            self.tmp_path / "coordinator.log", self.env, prefix=list(prefix),
        )
        self.nodes.append(self.coordinator)
        host, port = self.coordinator.wait_for_log(r"listening on ([\d.]+):(\d+)").groups()
        self.address = f"{host}:{port}"
        return self.coordinator

    def add_executor(self, executor_id: str, *args: str, slots: int = 1, prefix: list[str] = (), wait: bool = True) -> Node:
        node = Node(
            ["--role", "executor", "--join", self.address, "--slots", str(slots), "--id", executor_id,
             "--data-dir", str(self.tmp_path / executor_id), *args],
            self.tmp_path / f"{executor_id}.log", self.env, prefix=list(prefix),
        )
        self.nodes.append(node)
        self.executors.append(node)
        if wait:
            self.coordinator.wait_for_log(rf"executor {re.escape(executor_id)} joined")
        return node

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


@contextmanager
def cluster(
    tmp_path: Path, env: dict, executors: int = 2, coordinator_args: tuple[str, ...] = (),
    executor_args: tuple[str, ...] = (),
) -> Iterator[Cluster]:
    running = Cluster(tmp_path, env)
    try:
        running.start_coordinator(*coordinator_args)
        for i in range(executors):
            running.add_executor(f"exec-{i}", *executor_args, wait=False)
        for i in range(executors):
            running.coordinator.wait_for_log(rf"executor exec-{i} joined")
        yield running
    finally:
        running.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """Return ``count`` different free loopback ports: each stays bound until all are chosen."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class Voters:
    """Coordinator-eligible `swarmctl up` processes started with the same --peers, and executors joining all of them."""

    def __init__(self, tmp_path: Path, env: dict, count: int = 3) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.addresses = [f"127.0.0.1:{port}" for port in free_ports(count)]
        self.peers = ",".join(self.addresses)
        self.voters: dict[str, Node] = {}
        self.executors: list[Node] = []

    def data_dir(self, address: str) -> Path:
        return self.tmp_path / f"voter-{address.rsplit(':', 1)[1]}"

    def start_voter(self, address: str) -> Node:
        port = address.rsplit(":", 1)[1]
        node = Node(
            ["--role", "coordinator", "--listen", address, "--peers", self.peers, "--data-dir", str(self.data_dir(address))],
            self.tmp_path / f"voter-{port}-{len(self.voters)}.log", self.env,
        )
        self.voters[address] = node
        return node

    def add_executor(self, executor_id: str, *args: str, slots: int = 1) -> Node:
        node = Node(
            ["--role", "executor", "--join", self.peers, "--slots", str(slots), "--id", executor_id,
             "--data-dir", str(self.tmp_path / executor_id), *args],
            self.tmp_path / f"{executor_id}.log", self.env,
        )
        self.executors.append(node)
        return node

    def status(self, timeout: float = 30) -> dict:
        """Return ``swarmctl status --cluster --json`` once a leader is known."""
        deadline = time.monotonic() + timeout
        while True:
            process = subprocess.run(
                [sys.executable, "-m", "swarmctl", "status", "--cluster", self.peers, "--json", "--timeout", "2s"],
                env=self.env, capture_output=True, text=True, timeout=60,
            )
            if process.returncode == 0:
                return json.loads(process.stdout)
            assert time.monotonic() < deadline, f"no leader within {timeout}s:\n{process.stdout}{process.stderr}"
            time.sleep(0.2)

    def wait_for_executors(self, leader: str, count: int, timeout: float = STARTUP_TIMEOUT_S) -> None:
        for i in range(count):
            self.voters[leader].wait_for_log(rf"executor exec-{i} joined", timeout)

    def stop(self) -> None:
        for node in [*self.executors, *self.voters.values()]:
            node.stop()


@contextmanager
def voters(tmp_path: Path, env: dict, count: int = 3) -> Iterator[Voters]:
    running = Voters(tmp_path, env, count)
    try:
        for address in running.addresses:
            running.start_voter(address)
        yield running
    finally:
        running.stop()


def start_run(suite: Path, address: str, report: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "swarmctl", "run", str(suite), "--cluster", address, "--json", str(report), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def wait_for_results(db_path: Path, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db_path.exists():
            with sqlite3.connect(db_path, timeout=5) as conn:
                try:
                    (count,) = conn.execute("SELECT count(*) FROM results").fetchone()
                except sqlite3.OperationalError:
                    count = 0
            if count >= at_least:
                return
        time.sleep(0.1)
    pytest.fail(f"fewer than {at_least} results recorded in {db_path} within {timeout}s")


def running_shards(db_path: Path, executor_id: str) -> int:
    """Return how many shard attempts the coordinator has assigned to an executor and not ended."""
    with sqlite3.connect(db_path, timeout=5) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM attempts WHERE executor = ? AND ended_at IS NULL", (executor_id,)
        ).fetchone()
    return count


def wait_for_active_run(db_path: Path, timeout: float = 60) -> str:
    """Return the id of the run the coordinator's state.db lists as running, waiting for one to start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db_path.exists():
            with sqlite3.connect(db_path, timeout=5) as conn:
                try:
                    row = conn.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchone()
                except sqlite3.OperationalError:
                    row = None
            if row:
                return row[0]
        time.sleep(0.1)
    pytest.fail(f"no running run in {db_path} within {timeout}s")


def wait_until_running(db_path: Path, executor_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db_path.exists() and running_shards(db_path, executor_id):
            return
        time.sleep(0.05)
    pytest.fail(f"executor {executor_id} got no shard within {timeout}s")
