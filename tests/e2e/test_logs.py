"""``swarmctl logs`` after a real embedded run: executor lines, one test's output, filters and --follow."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, run_swarmctl

# Its tests share a module-scoped fixture, so pytest-xdist keeps them on one worker.
pytestmark = pytest.mark.xdist_group("logs")

PRINTS = "test_output.py::test_prints"
WRITES_STDERR = "test_output.py::test_writes_stderr"
QUIET = "test_output.py::test_quiet"

SUITE = '''
import sys


def test_prints():
    print("hello from test")


def test_writes_stderr():
    sys.stderr.write("careful from test\\n")


def test_quiet():
    assert True
'''


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> dict[str, str]:
    """Run the three-test suite on two embedded executors; return the environment of its data folder."""
    folder = tmp_path_factory.mktemp("logs")
    env = dict(os.environ)
    env["SWARMCTL_HOME"] = str(folder / "swarm-home")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTEST_ADDOPTS", None)
    suite = folder / "suite"
    suite.mkdir()
    (suite / "test_output.py").write_text(SUITE)

    process = run_swarmctl(["run", str(suite), "-n", "2"], env)
    assert process.returncode == 0, process.stdout + process.stderr
    return env


def logs(args: list[str], env: dict[str, str]):
    return run_swarmctl(["logs", *args], env, timeout=60)


def test_logs_test_shows_stdout(finished_run) -> None:
    process = logs(["last", "--test", PRINTS], finished_run)

    assert process.returncode == 0, process.stderr
    assert "----- stdout -----" in process.stdout
    assert "hello from test" in process.stdout
    assert "----- stderr -----" not in process.stdout
    assert f"{PRINTS} PASSED" in process.stdout


def test_logs_test_shows_stderr(finished_run) -> None:
    process = logs(["last", "--test", WRITES_STDERR], finished_run)

    assert process.returncode == 0, process.stderr
    assert "----- stderr -----" in process.stdout
    assert "careful from test" in process.stdout


def test_logs_unknown_test(finished_run) -> None:
    process = logs(["last", "--test", "test_output.py::test_missing"], finished_run)

    assert process.returncode == 4
    assert "test 'test_output.py::test_missing' not found" in process.stderr


def test_logs_shows_executor_lines(finished_run) -> None:
    process = logs(["last"], finished_run)

    assert process.returncode == 0, process.stderr
    # The worker started before the run (the embedded default starts it early); the run's
    # logs show which worker ran it.
    worker_lines = [line for line in process.stdout.splitlines() if "uses pytest worker pid" in line]
    assert any(" local-1 INFO swarmctl.executor.slot: " in line for line in worker_lines)


def test_logs_lists_tests_with_output(finished_run) -> None:
    process = logs(["last"], finished_run)

    listed = process.stdout.partition("tests that printed output")[2]
    assert PRINTS in listed
    assert WRITES_STDERR in listed
    assert QUIET not in listed


def test_logs_executor_filter(finished_run) -> None:
    process = logs(["last", "--executor", "local-1"], finished_run)

    executor_lines = process.stdout.partition("\n\ntests that printed output")[0].splitlines()
    assert executor_lines
    assert all(line.split()[2] == "local-1" for line in executor_lines)


def test_logs_grep_filters(finished_run) -> None:
    process = logs(["last", "--grep", "uses pytest worker"], finished_run)

    assert process.returncode == 0, process.stderr
    executor_lines = process.stdout.partition("\n\ntests that printed output")[0].splitlines()
    assert executor_lines
    assert all("uses pytest worker" in line for line in executor_lines)


def test_logs_invalid_grep(finished_run) -> None:
    process = logs(["last", "--grep", "worker("], finished_run)

    assert process.returncode == 4
    assert "--grep 'worker(' is not a valid regular expression" in process.stderr


def test_logs_unknown_run(finished_run) -> None:
    process = logs(["no-such-run"], finished_run)

    assert process.returncode == 4
    assert "run 'no-such-run' not found" in process.stderr


def test_logs_follow_finished_run_exits(finished_run) -> None:
    started = time.monotonic()
    process = logs(["last", "--follow"], finished_run)

    assert process.returncode == 0, process.stderr
    assert time.monotonic() - started < 10
    assert "uses pytest worker" in process.stdout


def test_logs_without_logs_db(finished_run, tmp_path: Path) -> None:
    home = Path(finished_run["SWARMCTL_HOME"])
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "state.db").write_bytes((home / "state.db").read_bytes())

    process = logs(["last", "--data-dir", str(copy)], finished_run)

    assert process.returncode == 0, process.stderr
    assert "no executor logs were collected" in process.stderr
    assert PRINTS in process.stdout


# --- a test that is still running ------------------------------------------------------------

TALKS = "test_live.py::test_talks_until_released"

LIVE_SUITE = '''
import os
import sys
import time


def test_talks_until_released():
    release = os.environ["RELEASE_FILE"]
    deadline = time.monotonic() + 90
    tick = 0
    while not os.path.exists(release):
        assert time.monotonic() < deadline, "the test was never released"
        print(f"tick {tick}", flush=True)
        sys.stderr.write(f"still waiting {tick}\\n")
        tick += 1
        time.sleep(0.2)
'''


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_logs_test_streams_running_output(swarm_env, tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_live.py").write_text(LIVE_SUITE)
    release = tmp_path / "release"
    env = {**swarm_env, "RELEASE_FILE": str(release)}
    run = subprocess.Popen(
        [sys.executable, "-m", "swarmctl", "run", str(suite), "-n", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    follower = None
    try:
        # While the test runs, the command prints its output so far and reports that it has no result yet.
        snapshot = wait_for(
            lambda: (p := logs(["last", "--test", TALKS], env)).returncode == 0 and "tick 1" in p.stdout and p,
            "live output of the running test",
        )
        assert "----- stdout (live) -----" in snapshot.stdout
        assert "----- stderr (live) -----" in snapshot.stdout
        assert "no result yet" in snapshot.stdout

        grep = logs(["last", "--test", TALKS, "--grep", "^still waiting 0$"], env)
        assert grep.returncode == 0, grep.stderr
        assert "still waiting 0" in grep.stdout
        assert "tick 0" not in grep.stdout

        follower = subprocess.Popen(
            [sys.executable, "-m", "swarmctl", "logs", "last", "--test", TALKS, "--follow"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(follower.stdout), daemon=True)
        reader.start()
        wait_for(lambda: "tick 0\n" in lines, "the follower to print live output")
        release.touch()
        assert follower.wait(timeout=60) == 0, follower.stderr.read()
        reader.join(timeout=10)
        out = "".join(lines)
        assert out.startswith("----- stdout (live) -----\ntick 0\n")
        assert f"{TALKS} PASSED" in out
        assert run.wait(timeout=60) == 0
    finally:
        release.touch()
        for process in (run, follower):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
