"""Run-level scheduling through real runs: delayed starts and cancelling."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, run_swarmctl
from tests.e2e.nodes import wait_for_results
from tests.e2e.test_embedded import make_slow_suite


def run_row(home: str) -> tuple:
    with sqlite3.connect(Path(home) / "state.db") as conn:
        return conn.execute("SELECT run_id, status, exit_code, submitted_at, start_at FROM runs").fetchone()


def test_delay_starts_run_later(tmp_path, swarm_env):
    suite = REPO / "examples" / "pytest-suite"

    started = time.monotonic()
    process = run_swarmctl(["run", str(suite), "-n", "1", "--delay", "3s", "--", "-k", "slugify"], swarm_env)
    elapsed = time.monotonic() - started

    _, status, exit_code, submitted_at, start_at = run_row(swarm_env["SWARMCTL_HOME"])
    assert (status, exit_code) == ("finished", 1)
    assert 2.5 <= start_at - submitted_at <= 3.5
    assert elapsed >= 3  # nothing ran before the start time
    assert process.returncode == 1


def test_cancel_stops_embedded_run(tmp_path, swarm_env):
    suite = make_slow_suite(tmp_path / "slow-suite")
    home = swarm_env["SWARMCTL_HOME"]
    run = subprocess.Popen(
        [sys.executable, "-m", "swarmctl", "run", str(suite), "-n", "2"],
        env=swarm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for_results(Path(home) / "state.db", at_least=2)
        run_id = run_row(home)[0]

        cancelled = run_swarmctl(["cancel", run_id], swarm_env)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
            run.wait(timeout=30)

    assert cancelled.returncode == 0, cancelled.stderr
    assert f"run {run_id} cancelled" in cancelled.stdout
    assert run.returncode == 2, output
    assert f"swarmctl run {run_id}" in output
    assert "Interrupted: cancelled with swarmctl cancel" in output
    assert run_row(home)[1:3] == ("interrupted", 2)

    again = run_swarmctl(["cancel", run_id], swarm_env)
    assert again.returncode == 4
    assert "no swarmctl run is running" in again.stderr
