"""A real cluster: `swarmctl up` coordinator and executor processes, `swarmctl run --cluster`."""

from __future__ import annotations

import signal

from tests.conftest import REPO, generate_suite, load_json, outcomes_by_id, run_swarmctl
from tests.e2e.nodes import cluster, start_run, wait_for_results

EXAMPLE = REPO / "examples" / "pytest-suite"


def test_cluster_matches_embedded_run(tmp_path, swarm_env):
    embedded_report = tmp_path / "embedded.json"
    run_swarmctl(["run", str(EXAMPLE), "-n", "2", "--json", str(embedded_report)], swarm_env)

    with cluster(tmp_path, swarm_env) as running:
        address, coordinator, executors = running.address, running.coordinator, running.executors
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

    with cluster(tmp_path, swarm_env) as running:
        coordinator, executors = running.coordinator, running.executors
        report_path = tmp_path / "report.json"
        run = start_run(suite, running.address, report_path, swarm_env)
        wait_for_results(tmp_path / "coordinator" / "state.db", at_least=6)
        executors[0].process.send_signal(signal.SIGKILL)
        output, _ = run.communicate(timeout=120)

        report = load_json(report_path)
        outcomes = outcomes_by_id(report)
        assert len(outcomes) == 60
        assert report["summary"]["counts"] == expected, output
        assert 2 in {case["attempt"] for case in report["cases"]}  # the lost shard ran again
        reassigned = [case for case in report["cases"] if case["reassigned_from"]]
        assert reassigned
        assert {tuple(case["reassigned_from"]) for case in reassigned} == {("exec-0",)}
        assert {case["executor"] for case in reassigned} == {"exec-1"}
        assert "executor exec-0 lost" in coordinator.log()
        assert "exec-0's connection closed and it did not reconnect within 1s" in coordinator.log()
