"""``swarmctl dashboard`` against real coordinator and executor processes, and the live views in tmux."""

from __future__ import annotations

import re
import secrets
import shlex
import signal
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import generate_suite, run_swarmctl
from tests.e2e.nodes import cluster, start_run, wait_for_active_run, wait_for_results

TMUX_WIDTH, TMUX_HEIGHT = 120, 30
SCREEN_TIMEOUT_S = 60


def line_starting(text: str, start: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith(start)]
    assert lines, f"no line starts with {start!r} in:\n{text}"
    return lines[0]


def test_dashboard_once_shows_executors_and_run(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "suite", tests=40, files=2, sleep_ms=250, failed=2)
    db_path = tmp_path / "coordinator" / "state.db"
    with cluster(tmp_path, swarm_env, executors=2) as running:
        run = start_run(suite, running.address, tmp_path / "report.json", swarm_env)
        try:
            wait_for_results(db_path, at_least=4)
            run_id = wait_for_active_run(db_path)
            once = run_swarmctl(
                ["dashboard", "--cluster", running.address, "--once", "--log", str(running.coordinator.log_path)],
                swarm_env, timeout=60,
            )
            piped = run_swarmctl(["dashboard", "--cluster", running.address], swarm_env, timeout=60)
        finally:
            output, _ = run.communicate(timeout=120)

    assert once.returncode == 0, once.stderr
    assert once.stderr == ""
    assert "Executors (2 connected)" in once.stdout
    assert "active" in line_starting(once.stdout, "exec-0")
    assert "active" in line_starting(once.stdout, "exec-1")
    run_line = line_starting(once.stdout, run_id)
    assert "running" in run_line
    done, total = map(int, re.search(r"(\d+)/(\d+)", run_line).groups())
    assert total == 40
    assert 4 <= done < 40
    assert "ETA" in run_line
    assert f"Log {running.coordinator.log_path}" in once.stdout
    assert " INFO swarmctl." in once.stdout

    assert piped.returncode == 0, piped.stderr
    assert "stdout is not a terminal" in piped.stderr
    assert run_id in piped.stdout
    assert run.returncode == 1, output


def test_dashboard_once_finished_run_failures(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "suite", tests=6, files=1, sleep_ms=10, failed=2)
    with cluster(tmp_path, swarm_env, executors=1) as running:
        run = run_swarmctl(["run", str(suite), "--cluster", running.address], swarm_env)
        process = run_swarmctl(["dashboard", "--cluster", running.address, "--once"], swarm_env, timeout=60)

    assert run.returncode == 1, run.stdout + run.stderr
    run_id = re.search(r"swarmctl run (\S+)", run.stdout).group(1)
    assert process.returncode == 0, process.stderr
    assert "no active runs" in process.stdout
    finished = line_starting(process.stdout, run_id)
    assert "finished" in finished
    assert "4 passed, 2 failed" in finished
    failures = [line for line in process.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 2, process.stdout


def test_dashboard_once_unreachable_coordinator(tmp_path, swarm_env):
    process = run_swarmctl(["dashboard", "--cluster", "127.0.0.1:9", "--once"], swarm_env, timeout=60)

    assert process.returncode == 3
    assert "could not connect to 127.0.0.1:9" in process.stderr


def test_dashboard_without_run_or_cluster(tmp_path, swarm_env):
    process = run_swarmctl(["dashboard", "--once"], swarm_env, timeout=60)

    assert process.returncode == 4
    assert "pass --cluster HOST:PORT" in process.stderr


def test_dashboard_invalid_interval(tmp_path, swarm_env):
    process = run_swarmctl(["dashboard", "--interval", "soon"], swarm_env, timeout=60)

    assert process.returncode == 4
    assert "--interval 'soon' is invalid" in process.stderr


# --- on a terminal, in tmux ----------------------------------------------------------------


class Tmux:
    """A tmux server of its own (a private socket) running one command in a fixed-size pane."""

    def __init__(self, socket: str, env: dict) -> None:
        self.socket = socket
        self.env = env

    def tmux(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args], check=False, env=self.env, capture_output=True, text=True,
            timeout=30,
        )

    def start(self, command: list[str], script: Path) -> None:
        # The pane stays open after the command ends, so the screen it left can be read.
        script.write_text(f"{shlex.join(command)}\necho \"exit code $?\"\nsleep 600\n")
        started = self.tmux("new-session", "-d", "-s", "test", "-x", str(TMUX_WIDTH), "-y", str(TMUX_HEIGHT), f"bash {shlex.quote(str(script))}")
        assert started.returncode == 0, started.stderr

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "test").stdout

    def wait_for(self, pattern: str, timeout: float = SCREEN_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not on the screen within {timeout}s:\n{screen}")

    def send_keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "test", *keys)


@contextmanager
def tmux_session(env: dict) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed; it is needed to run swarmctl on a terminal")
    # COLUMNS and LINES, which pytest-xdist workers may have, would override the pane's size.
    env = {name: value for name, value in env.items() if name not in ("COLUMNS", "LINES")}
    session = Tmux(f"swarmctl-test-{secrets.token_hex(4)}", env)
    try:
        yield session
    finally:
        session.tmux("kill-server")


def test_run_live_bar_on_terminal(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "suite", tests=30, files=3, sleep_ms=300)
    with tmux_session(swarm_env) as tmux:
        tmux.start([sys.executable, "-m", "swarmctl", "run", str(suite), "-n", "2"], tmp_path / "run.sh")

        live = tmux.wait_for(r"ETA \d")
        assert re.search(r"running .* \d+/30 ", live), live
        # Without --cluster the dashboard finds the embedded coordinator and its log.
        dashboard = run_swarmctl(["dashboard", "--once"], swarm_env, timeout=60)
        final = tmux.wait_for(r"exit code \d+")

    assert re.search(r"=+ 30 passed in [\d.]+s", final), final
    assert "exit code 0" in final
    assert dashboard.returncode == 0, dashboard.stderr
    assert "local-1" in dashboard.stdout
    assert "local-2" in dashboard.stdout
    assert re.search(r"running .* \d+/30 ", dashboard.stdout), dashboard.stdout
    assert f"Log {Path(swarm_env['SWARMCTL_HOME']) / 'logs' / 'coordinator.log'}" in dashboard.stdout


def suite_kept_running(folder: Path, release: Path, tests: int) -> Path:
    """Write a suite whose first test waits (at most 120 s) until ``release`` exists, so the run stays active."""
    folder.mkdir()
    waiting_test = (
        "import pathlib, time\n\n"
        "def test_held():\n"
        "    deadline = time.monotonic() + 120\n"
        f"    while not pathlib.Path({str(release)!r}).exists() and time.monotonic() < deadline:\n"
        "        time.sleep(0.1)\n"
    )
    quick = "".join(f"\n\ndef test_quick_{i}():\n    pass\n" for i in range(tests - 1))
    (folder / "test_held.py").write_text(waiting_test + quick)
    return folder


def test_dashboard_live_reconnect_and_ctrl_c(tmp_path, swarm_env):
    # One test waits until the end, so the run is live however slowly the dashboard starts.
    suite = suite_kept_running(tmp_path / "suite", tmp_path / "release", tests=40)
    with cluster(tmp_path, swarm_env, executors=2) as running, tmux_session(swarm_env) as tmux:
        run = start_run(suite, running.address, tmp_path / "report.json", swarm_env)
        try:
            command = [sys.executable, "-m", "swarmctl", "dashboard", "--cluster", running.address, "--interval", "0.5s"]
            tmux.start(command, tmp_path / "dashboard.sh")
            live = tmux.wait_for(r"\d+/40")
            assert "exec-0" in live
            assert "exec-1" in live

            running.coordinator.stop()
            lost = tmux.wait_for(r"Reconnecting every 0.5s")
            assert "last update" in lost
            assert "exec-0" in lost

            tmux.send_keys("C-c")
            ended = tmux.wait_for(r"exit code \d+")
        finally:
            (tmp_path / "release").touch()
            run.kill()
            run.communicate(timeout=30)
            # Their coordinator is gone, so a drain would wait for acknowledgements in vain.
            for executor in running.executors:
                executor.stop(signal.SIGKILL)

    assert "exit code 0" in ended
    assert "Traceback" not in ended
