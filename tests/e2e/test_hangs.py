"""Hung tests, run deadlines and leftover processes, through real runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import psutil

from tests.conftest import copy_case, generate_suite, load_json, run_swarmctl
from tests.e2e.nodes import Cluster
from tests.e2e.test_command_cases import write_manifest


def test_deadline_reports_every_test(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "minute-suite", tests=60, files=2, sleep_ms=2000)
    report_path = tmp_path / "report.json"

    started = time.monotonic()
    process = run_swarmctl(["run", str(suite), "-n", "2", "--deadline", "8s", "--json", str(report_path)], swarm_env)
    elapsed = time.monotonic() - started

    cases = load_json(report_path)["cases"]
    assert len(cases) == 60
    not_run = [case for case in cases if case["outcome"] == "error"]
    assert len(not_run) >= 40  # 2 executors finish at most a handful of 2-second tests in 8 s
    assert {case["message"] for case in not_run} == {"not run: run deadline reached"}
    assert {case["outcome"] for case in cases} <= {"passed", "error"}
    assert process.returncode == 1
    assert "Stopped: run deadline reached" in process.stdout
    assert elapsed < 8 + 20  # the suite needs a minute; the run ends a few seconds past the deadline


def test_timeout_marker_and_ini_without_plugin(tmp_path, swarm_env):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\ntimeout = 2\n")
    (suite / "test_slow.py").write_text(textwrap.dedent("""
        import signal
        import time

        import pytest


        @pytest.mark.timeout(1)
        def test_marker_limit():
            time.sleep(30)


        def test_ini_limit():
            time.sleep(30)


        @pytest.mark.timeout(1)
        def test_ignores_sigterm():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(30)


        @pytest.mark.timeout(0)
        def test_marker_zero_means_no_limit():
            time.sleep(2.5)


        def test_fast():
            pass
    """))
    report_path = tmp_path / "report.json"

    # -p no:timeout disables pytest-timeout, so only swarmctl enforces the limits.
    process = run_swarmctl(["run", str(suite), "-n", "2", "--json", str(report_path), "--", "-p", "no:timeout"], swarm_env)

    cases = {case["id"]: case for case in load_json(report_path)["cases"]}
    assert cases["test_slow.py::test_marker_limit"]["outcome"] == "failed"
    assert "Timeout (>1.0s) from the test's timeout setting" in cases["test_slow.py::test_marker_limit"]["message"]
    assert cases["test_slow.py::test_ini_limit"]["outcome"] == "failed"
    assert "Timeout (>2.0s)" in cases["test_slow.py::test_ini_limit"]["message"]
    assert "in test_ini_limit" in cases["test_slow.py::test_ini_limit"]["longrepr"]  # the stack dump
    assert cases["test_slow.py::test_ignores_sigterm"]["outcome"] == "failed"  # SIGKILL followed
    assert cases["test_slow.py::test_marker_zero_means_no_limit"]["outcome"] == "passed"
    assert cases["test_slow.py::test_fast"]["outcome"] == "passed"
    assert process.returncode == 1


SLOTS = 4  # the executor's pytest workers stay between runs, one per slot at most


def test_executor_process_count_unchanged(tmp_path, swarm_env):
    """Hangs, crashes and leftover children leave an executor with its slots' warm pytest workers only."""
    suites = {}
    for name in ("001_segfault_mid_file", "003_sigkill_self", "004_hang_forever", "024_child_outlives_test"):
        suites[name] = copy_case("pytest", name, tmp_path / "pytest")
    for name in ("002_signals", "003_timeouts", "006_daemon_holds_output"):
        suites[f"command-{name}"] = copy_case("command", name, tmp_path / "command")
        write_manifest(suites[f"command-{name}"])
    swarm_env["CASE024_PIDFILE"] = str(tmp_path / "case024_pids.txt")

    (tmp_path / "cluster").mkdir()
    running = Cluster(tmp_path / "cluster", swarm_env)
    try:
        running.start_coordinator()
        executor = psutil.Process(running.add_executor("exec-0", slots=SLOTS).process.pid)
        # The runs share the executor's slots, so each slot gets several kinds of fault.
        runs = {
            name: subprocess.Popen(
                [sys.executable, "-m", "swarmctl", "run", str(suite), "--cluster", running.address,
                 *(["--timeout", "3"] if not name.startswith("command-") else [])],
                env=swarm_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for name, suite in suites.items()
        }
        for name, run in runs.items():
            output, _ = run.communicate(timeout=180)
            assert run.returncode in (0, 1), (name, output)
        children = [(child.pid, child.status(), child.cmdline()) for child in executor.children(recursive=True)]
    finally:
        running.stop()

    others = [child for child in children if "--commands-fd" not in child[2]]
    assert others == []
    assert 1 <= len(children) <= SLOTS, children
