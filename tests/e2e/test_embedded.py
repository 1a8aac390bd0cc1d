"""The embedded default: state that outlives the run, and a clean stop on Ctrl-C or a closed terminal."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO, generate_suite, run_swarmctl
from tests.e2e.nodes import wait_for_results


def processes_using(folder: str) -> list[psutil.Process]:
    """Processes whose command line or working directory mentions ``folder``."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        text = " ".join(process.info["cmdline"] or []) + " " + (process.info["cwd"] or "")
        if folder in text and process.pid != psutil.Process().pid:
            found.append(process)
    return found


def leftover_processes(folder: str, grace_s: float = 5.0) -> list[psutil.Process]:
    """Return the processes of ``folder`` still there after ``grace_s``: one that just exited may not be reaped yet."""
    _, alive = psutil.wait_procs(processes_using(folder), timeout=grace_s)
    return alive


def make_slow_suite(folder: Path) -> Path:
    return generate_suite(folder, tests=60, files=3, sleep_ms=200)


def run_rows(home: str) -> list[tuple]:
    with sqlite3.connect(Path(home) / "state.db") as conn:
        return conn.execute("SELECT status, exit_code FROM runs").fetchall()


def test_embedded_state_persists(tmp_path, swarm_env):
    process = run_swarmctl(["run", str(REPO / "examples" / "pytest-suite"), "-n", "2"], swarm_env)

    assert process.returncode == 1
    assert run_rows(swarm_env["SWARMCTL_HOME"]) == [("finished", 1)]
    assert leftover_processes(swarm_env["SWARMCTL_HOME"]) == []


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "terminal-closed"])
def test_embedded_ctrl_c_stops_everything(tmp_path, swarm_env, stop):
    suite = make_slow_suite(tmp_path / "slow-suite")
    home = swarm_env["SWARMCTL_HOME"]
    run = subprocess.Popen(
        [sys.executable, "-m", "swarmctl", "run", str(suite), "-n", "2"],
        env=swarm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    wait_for_results(Path(home) / "state.db", at_least=3)

    run.send_signal(stop)
    output, _ = run.communicate(timeout=60)

    assert run.returncode == 2, output
    assert "Interrupted" in output
    assert run_rows(home) == [("interrupted", 2)]
    for executor in ("local-1", "local-2"):
        # Stopped at once, instead of finishing the shards of a run that was interrupted.
        log = (Path(home) / "logs" / f"{executor}.log").read_text()
        assert "received SIGINT; stopping" in log, log
        assert "draining" not in log, log
    leftovers = leftover_processes(home)
    for process in leftovers:
        process.kill()
    assert leftovers == []


def test_embedded_workers_start_before_the_coordinator(tmp_path, swarm_env):
    """Each executor starts its pytest worker before it connects, and the run uses that worker."""
    suite = generate_suite(tmp_path / "suite", tests=20, files=2, sleep_ms=0)
    collections = tmp_path / "collections.txt"
    (suite / "conftest.py").write_text(
        "import os\n\n\n"
        "def pytest_collection_finish(session):\n"
        f"    with open({str(collections)!r}, 'a') as record:\n"
        "        record.write(f'{os.getpid()}\\n')\n"
    )

    process = run_swarmctl(["run", str(suite), "-n", "2"], swarm_env)

    assert process.returncode == 0, process.stdout + process.stderr
    assert "20 passed" in process.stdout
    pids = collections.read_text().split()
    assert len(pids) == len(set(pids)) == 2  # one worker per executor: none collected twice
    for executor in ("local-1", "local-2"):
        log = (Path(swarm_env["SWARMCTL_HOME"]) / "logs" / f"{executor}.log").read_text()
        assert log.index("started pytest worker") < log.index("connected to"), log
    assert leftover_processes(swarm_env["SWARMCTL_HOME"]) == []
