"""``swarmctl logs`` after a real embedded run: executor lines, one test's output, filters and --follow."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, run_swarmctl

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
    worker_lines = [line for line in process.stdout.splitlines() if "started pytest worker" in line]
    assert any(" local-1 INFO swarmctl.executor.runners.pytest_runner: " in line for line in worker_lines)


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
    process = logs(["last", "--grep", "started pytest worker"], finished_run)

    assert process.returncode == 0, process.stderr
    executor_lines = process.stdout.partition("\n\ntests that printed output")[0].splitlines()
    assert executor_lines
    assert all("started pytest worker" in line for line in executor_lines)


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
    assert "started pytest worker" in process.stdout


def test_logs_without_logs_db(finished_run, tmp_path: Path) -> None:
    home = Path(finished_run["SWARMCTL_HOME"])
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "state.db").write_bytes((home / "state.db").read_bytes())

    process = logs(["last", "--data-dir", str(copy)], finished_run)

    assert process.returncode == 0, process.stderr
    assert "no executor logs were collected" in process.stderr
    assert PRINTS in process.stdout
