"""A real cluster: `swarmctl up` coordinator and executor processes, `swarmctl run --cluster`."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import REPO, generate_suite, load_json, outcomes_by_id, run_swarmctl

EXAMPLE = REPO / "examples" / "pytest-suite"
STARTUP_TIMEOUT_S = 20


class Node:
    def __init__(self, args: list[str], log_path: Path, env: dict) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "swarmctl", "up", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str) -> re.Match:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            assert self.process.poll() is None, f"node exited early:\n{self.log()}"
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not logged within {STARTUP_TIMEOUT_S}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=15)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._log.close()


@contextmanager
def cluster(tmp_path: Path, env: dict, executors: int = 2) -> Iterator[tuple[str, Node, list[Node]]]:
    coordinator = Node(
        ["--role", "coordinator", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "coordinator")],
        tmp_path / "coordinator.log",
        env,
    )
    nodes = [coordinator]
    try:
        port = coordinator.wait_for_log(r"listening on 127\.0\.0\.1:(\d+)").group(1)
        address = f"127.0.0.1:{port}"
        workers = []
        for i in range(executors):
            node = Node(
                ["--role", "executor", "--join", address, "--slots", "1", "--id", f"exec-{i}",
                 "--data-dir", str(tmp_path / f"exec-{i}")],
                tmp_path / f"exec-{i}.log",
                env,
            )
            nodes.append(node)
            workers.append(node)
        for i in range(executors):
            coordinator.wait_for_log(rf"executor exec-{i} joined")
        yield address, coordinator, workers
    finally:
        for node in reversed(nodes):
            node.stop()


def test_cluster_matches_embedded_run(tmp_path, swarm_env):
    embedded_report = tmp_path / "embedded.json"
    run_swarmctl(["run", str(EXAMPLE), "-n", "2", "--json", str(embedded_report)], swarm_env)

    with cluster(tmp_path, swarm_env) as (address, coordinator, executors):
        cluster_report = tmp_path / "cluster.json"
        process = run_swarmctl(["run", str(EXAMPLE), "--cluster", address, "--json", str(cluster_report)], swarm_env)

        assert process.returncode == 1, process.stdout + process.stderr
        assert "3 failed, 51 passed, 4 skipped, 1 xfailed in" in process.stdout
        assert outcomes_by_id(load_json(cluster_report)) == outcomes_by_id(load_json(embedded_report))
        assert {case["executor"] for case in load_json(cluster_report)["cases"]} == {"exec-0", "exec-1"}

        exit_codes = [node.stop() for node in [*executors, coordinator]]
        assert exit_codes == [0, 0, 0]
        assert "stopped" in coordinator.log()


def test_cluster_survives_executor_sigkill(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "slow-suite", tests=60, files=3, sleep_ms=200, failed=2, skipped=2)
    expected = load_json(suite / "expected_counts.json")["counts"]

    with cluster(tmp_path, swarm_env) as (address, coordinator, executors):
        report_path = tmp_path / "report.json"
        run = subprocess.Popen(
            [sys.executable, "-m", "swarmctl", "run", str(suite), "--cluster", address, "--json", str(report_path)],
            env=swarm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        wait_for_results(tmp_path / "coordinator" / "state.db", at_least=6)
        executors[0].process.send_signal(signal.SIGKILL)
        output, _ = run.communicate(timeout=120)

        report = load_json(report_path)
        outcomes = outcomes_by_id(report)
        assert len(outcomes) == 60
        assert report["summary"]["counts"] == expected, output
        assert 2 in {case["attempt"] for case in report["cases"]}  # the lost shard ran again
        assert "executor exec-0 lost" in coordinator.log()


def wait_for_results(db_path: Path, at_least: int) -> None:
    deadline = time.monotonic() + 60
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
    pytest.fail(f"fewer than {at_least} results recorded in {db_path} within 60s")
