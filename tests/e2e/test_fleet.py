"""The executor fleet with real processes: labels, cordon, drain, and executors that die or freeze."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import psutil

from swarmctl.security import write_secret
from tests.conftest import generate_suite, load_json, outcomes_by_id, run_swarmctl
from tests.e2e.nodes import Cluster, cluster, start_run, wait_for_results, wait_until_running

LABELLED_SUITE = '''
import time
import pytest

@pytest.mark.swarm_requires(browser="chromium")
@pytest.mark.parametrize("i", range(3))
def test_browser(i):
    time.sleep(0.05)

@pytest.mark.parametrize("i", range(3))
def test_plain(i):
    pass

@pytest.mark.swarm_requires(gpu=True)
def test_gpu():
    pass
'''


def write_labelled_suite(folder: Path) -> Path:
    folder.mkdir()
    (folder / "test_labels.py").write_text(LABELLED_SUITE)
    return folder


def executors_json(address: str, env: dict) -> dict[str, dict]:
    process = run_swarmctl(["executors", "--cluster", address, "--json"], env)
    assert process.returncode == 0, process.stderr
    return {row["id"]: row for row in json.loads(process.stdout)}


def test_fleet_embedded_labels_meet_requirements(tmp_path, swarm_env):
    suite = write_labelled_suite(tmp_path / "suite")
    report = tmp_path / "report.json"

    process = run_swarmctl(["run", str(suite), "-n", "2", "--labels", "browser=chromium", "--json", str(report)], swarm_env)

    assert process.returncode == 1, process.stdout + process.stderr
    cases = {case["id"]: case for case in load_json(report)["cases"]}
    assert len(cases) == 7
    assert [cid for cid, case in cases.items() if case["outcome"] != "passed"] == ["test_labels.py::test_gpu"]
    gpu = cases["test_labels.py::test_gpu"]
    assert gpu["outcome"] == "error"
    assert "no active executor has the labels gpu=true" in gpu["message"]
    assert "--labels gpu=true" in gpu["message"]


def test_fleet_manifest_requires_builtin_labels(tmp_path, swarm_env):
    suite = tmp_path / "commands"
    suite.mkdir()
    (suite / "swarm.toml").write_text(
        '[[case]]\nid = "on-linux"\ncmd = "true"\nrequires = { os = "linux" }\n\n'
        '[[case]]\nid = "on-plan9"\ncmd = "true"\nrequires = { os = "plan9" }\n'
    )
    report = tmp_path / "report.json"

    process = run_swarmctl(["run", str(suite), "-n", "1", "--json", str(report)], swarm_env)

    assert process.returncode == 1, process.stdout + process.stderr
    assert outcomes_by_id(load_json(report)) == {"on-linux": "passed", "on-plan9": "error"}


def test_fleet_cordon_uncordon_drain(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "suite", tests=12, files=2, sleep_ms=10)
    with cluster(tmp_path, swarm_env, executors=2) as running:
        listed = executors_json(running.address, swarm_env)
        assert sorted(listed) == ["exec-0", "exec-1"]
        assert listed["exec-0"]["state"] == "active"
        assert listed["exec-0"]["labels"]["os"] == "linux"
        assert "cpu_percent" in listed["exec-0"]["resources"]

        # --cluster may come before the subcommand as well as after it.
        cordon = run_swarmctl(["executors", "--cluster", running.address, "cordon", "exec-0"], swarm_env)
        assert cordon.returncode == 0, cordon.stderr
        assert cordon.stdout.strip() == "executor exec-0 is cordoned"
        report = tmp_path / "cordoned.json"
        run_swarmctl(["run", str(suite), "--cluster", running.address, "--json", str(report)], swarm_env)
        assert {case["executor"] for case in load_json(report)["cases"]} == {"exec-1"}

        uncordon = run_swarmctl(["executors", "uncordon", "exec-0", "--cluster", running.address], swarm_env)
        assert uncordon.stdout.strip() == "executor exec-0 is active"

        drain = run_swarmctl(["executors", "drain", "exec-0", "--cluster", running.address], swarm_env)
        assert drain.stdout.strip() == "executor exec-0 is draining"
        assert running.executors[0].process.wait(timeout=30) == 0
        assert executors_json(running.address, swarm_env)["exec-0"]["state"] == "left"


def test_fleet_frozen_executor_listed_silent(tmp_path, swarm_env):
    with cluster(tmp_path, swarm_env, executors=1, coordinator_args=("--lease", "30s")) as running:
        frozen = running.executors[0]
        frozen.process.send_signal(signal.SIGSTOP)
        try:
            time.sleep(3.0)
            row = executors_json(running.address, swarm_env)["exec-0"]
        finally:
            frozen.process.send_signal(signal.SIGCONT)

    assert row["state"] == "silent"
    assert row["last_seen_s"] >= 2.0


def test_fleet_killed_executor_worker_exits(tmp_path, swarm_env):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_long.py").write_text("import time\n\ndef test_long():\n    time.sleep(120)\n")
    with cluster(tmp_path, swarm_env, executors=1) as running:
        run = start_run(suite, running.address, tmp_path / "report.json", swarm_env)
        wait_until_running(tmp_path / "coordinator" / "state.db", "exec-0")
        executor = psutil.Process(running.executors[0].process.pid)
        deadline = time.monotonic() + 30
        while not executor.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = executor.children()
        assert workers

        running.executors[0].process.send_signal(signal.SIGKILL)
        # The worker is in the middle of a 2-minute test; it must not run it to the end.
        _, alive = psutil.wait_procs(workers, timeout=10)
        run.kill()
        run.wait()

    assert alive == []


def test_fleet_unknown_executor_rejected(tmp_path, swarm_env):
    with cluster(tmp_path, swarm_env, executors=1) as running:
        process = run_swarmctl(["executors", "cordon", "nope", "--cluster", running.address], swarm_env)

    assert process.returncode == 4
    assert "executor 'nope' is not connected (connected: exec-0)" in process.stderr


def test_fleet_duplicate_executor_id_rejected(tmp_path, swarm_env):
    with cluster(tmp_path, swarm_env, executors=1) as running:
        twin = running.add_executor("exec-0-twin", wait=False)
        twin.stop()
        impostor = running.add_executor("exec-0", wait=False)
        impostor.wait_for_log(r"executor id 'exec-0' is in use by pid \d+")
        assert running.executors[0].process.poll() is None


def test_fleet_sigterm_drains_executor(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "suite", tests=40, files=2, sleep_ms=150)
    with cluster(tmp_path, swarm_env, executors=2) as running:
        report = tmp_path / "report.json"
        run = start_run(suite, running.address, report, swarm_env)
        wait_until_running(tmp_path / "coordinator" / "state.db", "exec-0")

        running.executors[0].process.send_signal(signal.SIGTERM)
        exit_code = running.executors[0].process.wait(timeout=60)
        output, _ = run.communicate(timeout=120)

        assert exit_code == 0
        assert len(outcomes_by_id(load_json(report))) == 40, output
        assert set(outcomes_by_id(load_json(report)).values()) == {"passed"}
        assert "executor exec-0 draining" in running.coordinator.log()
        assert "executor exec-0 leaves: drained" in running.coordinator.log()


def test_fleet_half_of_executors_killed(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "suite", tests=80, files=4, sleep_ms=150, failed=3, skipped=2)
    expected = load_json(suite / "expected_counts.json")["counts"]
    with cluster(tmp_path, swarm_env, executors=4) as running:
        report_path = tmp_path / "report.json"
        run = start_run(suite, running.address, report_path, swarm_env)
        wait_for_results(tmp_path / "coordinator" / "state.db", at_least=8)
        workers = [child for node in running.executors[:2] for child in psutil.Process(node.process.pid).children()]
        assert workers
        for node in running.executors[:2]:
            node.process.send_signal(signal.SIGKILL)
        output, _ = run.communicate(timeout=120)
        # Their pytest workers notice and exit, instead of running tests that moved elsewhere.
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert alive == []

    report = load_json(report_path)
    assert len(outcomes_by_id(report)) == 80, output
    assert report["summary"]["counts"] == expected
    reassigned = [case for case in report["cases"] if case["reassigned_from"]]
    assert report["summary"]["reassigned"] == len(reassigned) >= 1
    assert {executor for case in reassigned for executor in case["reassigned_from"]} <= {"exec-0", "exec-1"}
    assert {case["executor"] for case in reassigned} <= {"exec-2", "exec-3"}


def test_fleet_frozen_executor_fenced(tmp_path, swarm_env):
    # Long enough that the run is still going when the frozen executor resumes, so its late
    # results reach an active run and are fenced there.
    suite = generate_suite(tmp_path / "suite", tests=150, files=3, sleep_ms=200)
    with cluster(tmp_path, swarm_env, executors=3, coordinator_args=("--lease", "1.5s")) as running:
        report_path = tmp_path / "report.json"
        run = start_run(suite, running.address, report_path, swarm_env)
        frozen = running.executors[0]
        wait_until_running(tmp_path / "coordinator" / "state.db", "exec-0")

        frozen.process.send_signal(signal.SIGSTOP)
        running.coordinator.wait_for_log(r"lease on executor exec-0 lapsed", timeout=30)
        time.sleep(1.0)
        frozen.process.send_signal(signal.SIGCONT)
        output, _ = run.communicate(timeout=120)
        # The frozen executor's worker kept running tests. After SIGCONT, the coordinator fences
        # the results it sends, or counts them as duplicates when the run has ended. The attempt
        # may also be stopped before it sends any, by the CancelShard queued at the lapse or by
        # the one sent when the executor reconnects still holding it.
        ended_attempt = wait_for_any_log(
            (running.coordinator, r"results from ended shard attempts fenced|duplicate results ignored|has ended here"),
            (frozen, r"stopping shard \d+ of run \S+: its lease on executor exec-0 lapsed"),
        )

    report = load_json(report_path)
    assert len(outcomes_by_id(report)) == 150, output
    assert set(outcomes_by_id(report).values()) == {"passed"}
    assert report["summary"]["reassigned"] >= 1
    assert ended_attempt is not None, "the frozen executor's ended attempt was neither fenced nor stopped"


def wait_for_any_log(*watched: tuple, timeout: float = 30) -> re.Match | None:
    """Return the first match of a pattern in its node's log, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node, pattern in watched:
            match = re.search(pattern, node.log())
            if match:
                return match
        time.sleep(0.2)
    return None


def test_fleet_gossip_finds_frozen_executor(tmp_path, swarm_env):
    secret = tmp_path / "cluster.secret"
    write_secret(secret)
    suite = generate_suite(tmp_path / "suite", tests=60, files=3, sleep_ms=200)
    with cluster(
        tmp_path, swarm_env, executors=3,
        coordinator_args=("--secret-file", str(secret), "--lease", "60s"), executor_args=("--secret-file", str(secret)),
    ) as running:
        report_path = tmp_path / "report.json"
        run = start_run(suite, running.address, report_path, {**swarm_env, "SWARMCTL_SECRET_FILE": str(secret)})
        frozen = running.executors[0]
        wait_until_running(tmp_path / "coordinator" / "state.db", "exec-0")

        frozen.process.send_signal(signal.SIGSTOP)
        # The lease is a minute long: only the gossip verdict can move the work this soon.
        running.coordinator.wait_for_log(r"executor exec-0 declared dead by gossip", timeout=30)
        output, _ = run.communicate(timeout=50)
        frozen.process.send_signal(signal.SIGCONT)

    report = load_json(report_path)
    assert len(outcomes_by_id(report)) == 60, output
    assert set(outcomes_by_id(report).values()) == {"passed"}
    assert report["summary"]["reassigned"] >= 1


def test_fleet_fifty_executors(tmp_path, swarm_env):
    suite = tmp_path / "commands"
    suite.mkdir()
    cases = "".join(f'[[case]]\nid = "case-{i:03d}"\ncmd = "sleep 0.2"\n\n' for i in range(150))
    (suite / "swarm.toml").write_text(cases)
    running = Cluster(tmp_path, swarm_env)
    try:
        running.start_coordinator()
        for i in range(50):
            running.add_executor(f"exec-{i:02d}", wait=False)
        for i in range(50):
            running.coordinator.wait_for_log(rf"executor exec-{i:02d} joined", timeout=120)
        report_path = tmp_path / "report.json"
        process = run_swarmctl(["run", str(suite), "--cluster", running.address, "--json", str(report_path)], swarm_env)
        listed = executors_json(running.address, swarm_env)
    finally:
        running.stop()

    report = load_json(report_path)
    assert process.returncode == 0, process.stdout + process.stderr
    assert len(outcomes_by_id(report)) == 150
    assert len(listed) == 50
    assert len({case["executor"] for case in report["cases"]}) >= 45
