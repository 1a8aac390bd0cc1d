"""Bundle limits set with --limit on real coordinator and executor processes."""

from __future__ import annotations

import os

from tests.conftest import generate_suite, run_swarmctl
from tests.e2e.nodes import cluster


def test_limit_bundle_bytes_on_coordinator(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "suite", tests=4, files=1, sleep_ms=0)
    (suite / "data.bin").write_bytes(os.urandom(20_000))  # incompressible: the archive stays over 20 kB

    with cluster(tmp_path, swarm_env, executors=1, coordinator_args=("--limit", "bundle_max_bytes=10000")) as running:
        rejected = run_swarmctl(["run", str(suite), "--cluster", running.address], swarm_env)
        (suite / "data.bin").unlink()
        accepted = run_swarmctl(["run", str(suite), "--cluster", running.address], swarm_env)

    assert rejected.returncode == 3, rejected.stdout + rejected.stderr
    assert "larger than the limit of 9.8 KiB; raise bundle_max_bytes" in rejected.stderr
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_limit_bundle_files_on_executor(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "suite", tests=6, files=6, sleep_ms=0)

    with cluster(tmp_path, swarm_env, executors=1, executor_args=("--limit", "bundle_max_files=3")) as running:
        process = run_swarmctl(["run", str(suite), "--cluster", running.address], swarm_env)

    assert process.returncode == 3, process.stdout + process.stderr
    assert "more than 3 members" in process.stdout + process.stderr


def test_limit_option_invalid(tmp_path, swarm_env):
    process = run_swarmctl(["up", "--role", "coordinator", "--listen", "127.0.0.1:0", "--limit", "bundle_max_files=0"], swarm_env, timeout=60)

    assert process.returncode == 4
    assert "bundle_max_files = 0 is invalid" in process.stderr
