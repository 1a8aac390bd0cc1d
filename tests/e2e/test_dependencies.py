"""Declared dependencies between tests, through real runs."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import msgpack

from tests.conftest import load_json, run_swarmctl

SUITE = """
    import time

    import pytest


    def test_setup_db():
        time.sleep(0.5)


    @pytest.mark.swarm_depends_on("test_deps.py::test_setup_db")
    def test_query():
        pass


    def test_broken_base():
        assert False


    @pytest.mark.swarm_depends_on("test_deps.py::test_broken_base")
    def test_needs_broken():
        pass


    @pytest.mark.swarm_depends_on("test_deps.py::test_needs_broken")
    def test_needs_needs_broken():
        pass


    def test_independent():
        pass
"""


def write_suite(folder: Path, source: str) -> Path:
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "test_deps.py").write_text(textwrap.dedent(source))
    return folder


def timings(home: str) -> dict[str, tuple[float, float]]:
    """Start time and duration of each recorded result, by case id."""
    with sqlite3.connect(Path(home) / "state.db") as conn:
        rows = conn.execute("SELECT body FROM results").fetchall()
    bodies = [msgpack.unpackb(body, raw=False) for (body,) in rows]
    return {b["case_id"]: (b["started_at"], b["duration"]) for b in bodies}


def test_dependencies_order_and_skip(tmp_path, swarm_env):
    suite = write_suite(tmp_path / "suite", SUITE)
    report_path = tmp_path / "report.json"

    process = run_swarmctl(["run", str(suite), "-n", "2", "--json", str(report_path)], swarm_env)

    cases = {case["id"]: case for case in load_json(report_path)["cases"]}
    assert {case_id: case["outcome"] for case_id, case in cases.items()} == {
        "test_deps.py::test_setup_db": "passed",
        "test_deps.py::test_query": "passed",
        "test_deps.py::test_broken_base": "failed",
        "test_deps.py::test_needs_broken": "skipped",
        "test_deps.py::test_needs_needs_broken": "skipped",
        "test_deps.py::test_independent": "passed",
    }
    assert "depends on test_deps.py::test_broken_base, which failed" in cases["test_deps.py::test_needs_needs_broken"]["message"]
    started = timings(swarm_env["SWARMCTL_HOME"])
    setup_start, setup_duration = started["test_deps.py::test_setup_db"]
    assert started["test_deps.py::test_query"][0] >= setup_start + setup_duration
    assert process.returncode == 1


def test_dependency_cycle_is_usage_error(tmp_path, swarm_env):
    suite = write_suite(tmp_path / "suite", """
        import pytest


        @pytest.mark.swarm_depends_on("test_deps.py::test_b")
        def test_a():
            pass


        @pytest.mark.swarm_depends_on("test_deps.py::test_a")
        def test_b():
            pass
    """)

    process = run_swarmctl(["run", str(suite), "-n", "1"], swarm_env)

    assert process.returncode == 4
    assert "cycle" in process.stdout + process.stderr
    assert "test_deps.py::test_a" in process.stdout + process.stderr


def test_manifest_dependencies(tmp_path, swarm_env):
    suite = tmp_path / "commands"
    suite.mkdir()
    (suite / "swarm.toml").write_text(textwrap.dedent("""
        [[case]]
        id = "build"
        cmd = "sleep 0.5"

        [[case]]
        id = "test"
        cmd = "true"
        depends_on = ["build"]

        [[case]]
        id = "lint"
        cmd = "false"

        [[case]]
        id = "publish"
        cmd = "true"
        depends_on = ["test", "lint"]
    """))
    report_path = tmp_path / "report.json"

    process = run_swarmctl(["run", str(suite), "-n", "2", "--json", str(report_path)], swarm_env)

    outcomes = {case["id"]: case["outcome"] for case in load_json(report_path)["cases"]}
    assert outcomes == {"build": "passed", "test": "passed", "lint": "failed", "publish": "skipped"}
    started = timings(swarm_env["SWARMCTL_HOME"])
    assert started["test"][0] >= started["build"][0] + started["build"][1]
    assert process.returncode == 1


def test_manifest_cycle_rejected_before_upload(tmp_path, swarm_env):
    suite = tmp_path / "commands"
    suite.mkdir()
    (suite / "swarm.toml").write_text(
        '[[case]]\nid = "a"\ncmd = "true"\ndepends_on = ["b"]\n\n[[case]]\nid = "b"\ncmd = "true"\ndepends_on = ["a"]\n'
    )

    process = run_swarmctl(["run", str(suite), "-n", "1"], swarm_env)

    assert process.returncode == 4
    assert "dependencies form a cycle" in process.stderr
