"""An idle slot takes the unstarted end of a busy slot's shard."""

from __future__ import annotations

import json

from tests.conftest import generate_suite, load_json, outcomes_by_id, run_swarmctl


def test_idle_slot_takes_unstarted_tests(tmp_path, swarm_env):
    suite = generate_suite(tmp_path / "one-file", tests=30, files=1, sleep_ms=200)
    # Durations that claim every test is instant make time-balanced plan one shard, so
    # without stealing the second slot would idle while the first runs all 30 tests.
    durations = tmp_path / ".test_durations"
    durations.write_text(json.dumps({f"test_gen_0.py::test_case_{i:02d}": 0.001 for i in range(30)}))
    report_path = tmp_path / "report.json"

    process = run_swarmctl(
        ["run", str(suite), "-n", "2", "--strategy", "time-balanced", "--durations-from", str(durations),
         "--json", str(report_path)],
        swarm_env,
    )

    report = load_json(report_path)
    assert len(outcomes_by_id(report)) == 30  # each test once
    executors = [case["executor"] for case in report["cases"]]
    assert set(executors) == {"local-1", "local-2"}
    assert min(executors.count("local-1"), executors.count("local-2")) >= 5
    assert process.returncode == 0


def test_group_module_sets_fixture_up_once(tmp_path, swarm_env):
    suite = tmp_path / "modules"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    setups = tmp_path / "setups.txt"
    for name in "abc":
        (suite / f"test_{name}.py").write_text(
            "import time\n\nimport pytest\n\n\n"
            "@pytest.fixture(scope='module')\n"
            "def resource():\n"
            f"    with open({str(setups)!r}, 'a') as f:\n"
            f"        f.write('{name}\\n')\n\n\n"
            + "".join(f"def test_{i}(resource):\n    time.sleep(0.2)\n\n\n" for i in range(6))
        )

    process = run_swarmctl(["run", str(suite), "-n", "2", "--group", "module"], swarm_env)

    assert process.returncode == 0, process.stdout + process.stderr
    assert sorted(setups.read_text().split()) == ["a", "b", "c"]  # once per module, never split
