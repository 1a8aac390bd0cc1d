"""time-balanced planning through real runs: durations learnt from history or imported."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import REPO, load_json, outcomes_by_id, run_swarmctl

EXAMPLE = REPO / "examples" / "pytest-suite"


def stored_durations(home: str) -> dict[str, float]:
    with sqlite3.connect(Path(home) / "state.db") as conn:
        return dict(conn.execute("SELECT case_id, seconds FROM durations").fetchall())


def test_time_balanced_learns_durations(tmp_path, swarm_env):
    first = run_swarmctl(["run", str(EXAMPLE), "-n", "2", "--strategy", "time-balanced"], swarm_env)
    learnt = stored_durations(swarm_env["SWARMCTL_HOME"])
    report_path = tmp_path / "second.json"
    second = run_swarmctl(
        ["run", str(EXAMPLE), "-n", "2", "--strategy", "time-balanced", "--json", str(report_path)], swarm_env
    )

    assert first.returncode == second.returncode == 1
    assert len(learnt) >= 50  # every test that passed or failed, not the skipped ones
    assert all(seconds >= 0 for seconds in learnt.values())
    assert "3 failed, 51 passed, 4 skipped, 1 xfailed in" in second.stdout
    assert len(outcomes_by_id(load_json(report_path))) == 59


def test_time_balanced_imports_durations(tmp_path, swarm_env):
    durations_file = tmp_path / ".test_durations"
    durations_file.write_text(json.dumps({"tests/test_counting.py::TestWordFrequencies::test_counts_words": 5.0}))

    process = run_swarmctl(
        ["run", str(EXAMPLE), "-n", "2", "--strategy", "time-balanced", "--durations-from", str(durations_file)],
        swarm_env,
    )
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    rejected = run_swarmctl(["run", str(EXAMPLE), "--durations-from", str(broken)], swarm_env)

    assert process.returncode == 1, process.stdout + process.stderr
    assert rejected.returncode == 4
    assert str(broken) in rejected.stderr
