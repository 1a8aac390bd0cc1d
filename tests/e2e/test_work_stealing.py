"""An idle slot takes the unstarted end of a busy slot's shard."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, load_json, outcomes_by_id, run_swarmctl


def test_idle_slot_takes_unstarted_tests(tmp_path, swarm_env):
    # One file and --group module make a single shard, so without stealing one slot idles.
    suite = tmp_path / "one-file"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gen_suite.py"), str(suite), "--tests", "30", "--files", "1",
         "--sleep-ms", "200", "--failed", "0", "--skipped", "0"],
        check=True, capture_output=True,
    )
    report_path = tmp_path / "report.json"

    process = run_swarmctl(
        ["run", str(suite), "-n", "2", "--group", "module", "--json", str(report_path)], swarm_env
    )

    report = load_json(report_path)
    assert len(outcomes_by_id(report)) == 30  # each test once
    executors = [case["executor"] for case in report["cases"]]
    assert set(executors) == {"local-1", "local-2"}
    assert min(executors.count("local-1"), executors.count("local-2")) >= 5
    assert process.returncode == 0
