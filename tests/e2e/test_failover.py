"""Three coordinator-eligible processes on loopback: election, redirects, and a run that outlives its leader."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

from tests.conftest import generate_suite, load_json, outcomes_by_id, run_swarmctl
from tests.e2e.nodes import start_run, voters, wait_for_results


def final_results(db_path: Path) -> list[tuple]:
    with sqlite3.connect(db_path, timeout=5) as conn:
        return conn.execute("SELECT run_id, idx, case_id, outcome, executor, attempt FROM results ORDER BY run_id, idx").fetchall()


def applied_index(db_path: Path) -> int:
    """Return the last log index in a voter's state.db; 0 while the voter rebuilds it."""
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT coalesce(max(idx), 0) FROM log").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_until_caught_up(db_path: Path, index: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while applied_index(db_path) < index:
        assert time.monotonic() < deadline, f"{db_path} applied {applied_index(db_path)} of {index} entries"
        time.sleep(0.1)


def test_run_survives_leader_sigkill(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "suite", tests=60, files=3, sleep_ms=200, failed=2, skipped=2)
    expected = load_json(suite / "expected_counts.json")["counts"]

    with voters(tmp_path, swarm_env) as cluster:
        first = cluster.status()
        leader = first["leader"]
        assert leader in cluster.addresses
        assert {row["address"] for row in first["voters"]} == set(cluster.addresses)
        assert {row["state"] for row in first["voters"]} == {"leader", "follower"}
        for i in range(2):
            cluster.add_executor(f"exec-{i}", slots=2)
        cluster.wait_for_executors(leader, 2)
        # Executors try the addresses in order; all but the leader's sent them on.
        follower = next(address for address in cluster.addresses if address != leader)
        if cluster.addresses[0] != leader:
            assert "redirected this executor" in cluster.executors[0].log()

        report_path = tmp_path / "report.json"
        # The client starts at a follower, which relays its frames to the leader.
        run = start_run(suite, f"{follower},{leader}", report_path, swarm_env)
        wait_for_results(cluster.data_dir(leader) / "state.db", at_least=8)
        cluster.voters[leader].process.send_signal(signal.SIGKILL)
        output, _ = run.communicate(timeout=180)

        assert report_path.exists(), output
        report = load_json(report_path)
        assert len(outcomes_by_id(report)) == 60, output
        assert report["summary"]["counts"] == expected, output
        assert run.returncode == 1, output

        second = cluster.status()
        assert second["leader"] != leader
        assert second["term"] > first["term"]
        dead = next(row for row in second["voters"] if row["address"] == leader)
        assert dead["state"] == "unreachable"
        survivors = [address for address in cluster.addresses if address != leader]
        new_leader = cluster.voters[second["leader"]]
        assert "leads term" in new_leader.log()

        # Every surviving voter has the same final results, one per test.
        index = applied_index(cluster.data_dir(second["leader"]) / "state.db")
        for address in survivors:
            wait_until_caught_up(cluster.data_dir(address) / "state.db", index)
        tables = [final_results(cluster.data_dir(address) / "state.db") for address in survivors]
        assert tables[0] == tables[1]
        assert len(tables[0]) == 60

        # The killed voter comes back, drops what it never got committed, and catches up.
        cluster.voters[leader].stop()
        cluster.start_voter(leader)
        wait_until_caught_up(cluster.data_dir(leader) / "state.db", index)
        assert final_results(cluster.data_dir(leader) / "state.db") == tables[0]
        third = cluster.status()
        assert third["leader"] == second["leader"]  # its return deposes no one
        assert third["term"] == second["term"]

        # Leadership goes back to the restarted voter on request, in the next term.
        process = run_swarmctl(["leader", "transfer", leader, "--cluster", cluster.peers], swarm_env)
        assert process.returncode == 0, process.stdout + process.stderr
        assert f"{leader} leads term {third['term'] + 1}" in process.stdout
        fourth = cluster.status()
        assert fourth["leader"] == leader
        assert "hands leadership to" in cluster.voters[second["leader"]].log()


def test_no_majority_means_no_leader(tmp_path, swarm_env):
    with voters(tmp_path, swarm_env, count=3) as cluster:
        for address in cluster.addresses[1:]:
            cluster.voters[address].stop()
        lone = cluster.voters[cluster.addresses[0]]
        lone.wait_for_log(r"serving on")
        time.sleep(3)  # several election timeouts

        process = run_swarmctl(["status", "--cluster", cluster.peers, "--timeout", "2s"], swarm_env)
        assert process.returncode == 1, process.stdout + process.stderr
        assert "leader none" in process.stdout
        assert process.stdout.count("unreachable") == 2
        assert "leads term" not in lone.log()


def test_second_coordinator_on_data_folder_rejected(tmp_path, swarm_env):
    with voters(tmp_path, swarm_env) as cluster:
        address = cluster.addresses[0]
        cluster.voters[address].wait_for_log(r"serving on")
        process = run_swarmctl(
            ["up", "--role", "coordinator", "--listen", "127.0.0.1:0", "--data-dir", str(cluster.data_dir(address))],
            swarm_env, timeout=30,
        )

    assert process.returncode == 4, process.stdout + process.stderr
    assert f"the data folder {cluster.data_dir(address)} is in use by the coordinator with pid" in process.stderr
