"""Tests of packaging/scripts/setup.sh and deploy.sh that need neither Docker nor systemd."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SETUP = REPO / "packaging" / "scripts" / "setup.sh"
DEPLOY = REPO / "packaging" / "scripts" / "deploy.sh"


@pytest.fixture
def swarmctl_wrapper(tmp_path: Path) -> Path:
    """An executable that runs this checkout's swarmctl, for the scripts' SWARMCTL."""
    path = tmp_path / "swarmctl"
    path.write_text(f'#!/bin/sh\nexec {sys.executable} -m swarmctl "$@"\n')
    path.chmod(0o755)
    return path


def run_script(script: Path, args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], check=False, env=env, capture_output=True, text=True, timeout=120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_setup_binary_creates_secret(swarm_env, tmp_path, swarmctl_wrapper) -> None:
    secret = tmp_path / "etc" / "cluster.secret"
    swarm_env["SWARMCTL"] = str(swarmctl_wrapper)
    completed = run_script(
        SETUP,
        ["binary", "--secret-file", str(secret), "--data-dir", str(tmp_path / "data"), "--python", sys.executable,
         "--port", str(free_port())],
        swarm_env,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"created the cluster secret {secret}" in completed.stdout
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert len(secret.read_text().strip()) == 64
    assert "no problems found" in completed.stdout


def test_setup_binary_keeps_existing_secret(swarm_env, tmp_path, swarmctl_wrapper) -> None:
    secret = tmp_path / "cluster.secret"
    secret.write_text("b" * 64 + "\n")
    secret.chmod(0o644)
    swarm_env["SWARMCTL"] = str(swarmctl_wrapper)
    completed = run_script(
        SETUP, ["binary", "--secret-file", str(secret), "--python", sys.executable, "--port", str(free_port())], swarm_env,
    )

    assert completed.returncode == 1
    assert secret.read_text() == "b" * 64 + "\n"
    assert f"chmod 600 {secret}" in completed.stdout


def test_setup_binary_port_in_use(swarm_env, tmp_path, swarmctl_wrapper) -> None:
    swarm_env["SWARMCTL"] = str(swarmctl_wrapper)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        completed = run_script(
            SETUP,
            ["binary", "--secret-file", str(tmp_path / "cluster.secret"), "--python", sys.executable,
             "--port", str(sock.getsockname()[1])],
            swarm_env,
        )

    assert completed.returncode == 1
    assert "problem  port:" in completed.stdout


def test_setup_without_mode_prints_usage(swarm_env) -> None:
    completed = run_script(SETUP, [], swarm_env)

    assert completed.returncode == 2
    assert "setup.sh binary" in completed.stderr


def test_deploy_systemd_into_destdir(swarm_env, tmp_path, swarmctl_wrapper) -> None:
    destdir = tmp_path / "root"
    swarm_env.update(DESTDIR=str(destdir), SWARMCTL_BINARY=str(swarmctl_wrapper))
    coordinator = run_script(DEPLOY, ["systemd", "coordinator", "--listen", "127.0.0.1:7500"], swarm_env)
    secret = destdir / "etc" / "swarmctl" / "cluster.secret"
    executor = run_script(
        DEPLOY, ["systemd", "executor", "--join", "127.0.0.1:7500", "--id", "runner-1", "--secret-file", str(secret)],
        swarm_env,
    )

    assert coordinator.returncode == 0, coordinator.stderr
    assert executor.returncode == 0, executor.stderr
    assert os.access(destdir / "usr" / "local" / "bin" / "swarmctl", os.X_OK)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    units = destdir / "etc" / "systemd" / "system"
    coordinator_unit = (units / "swarmctl-coordinator.service").read_text()
    executor_unit = (units / "swarmctl-executor.service").read_text()
    assert (
        "ExecStart=/usr/local/bin/swarmctl up --role coordinator --listen 127.0.0.1:7500 "
        "--data-dir /var/lib/swarmctl/coordinator\n"
    ) in coordinator_unit
    assert "--join 127.0.0.1:7500 --id runner-1 " in executor_unit
    exec_start = next(line for line in executor_unit.splitlines() if line.startswith("ExecStart="))
    assert "COORDINATOR_HOST" not in exec_start
    assert "Environment=SWARMCTL_SECRET_FILE=/etc/swarmctl/cluster.secret" in executor_unit


def test_deploy_systemd_executor_needs_join(swarm_env, tmp_path, swarmctl_wrapper) -> None:
    swarm_env.update(DESTDIR=str(tmp_path / "root"), SWARMCTL_BINARY=str(swarmctl_wrapper))
    completed = run_script(DEPLOY, ["systemd", "executor"], swarm_env)

    assert completed.returncode == 1
    assert "an executor needs --join HOST:PORT" in completed.stderr
