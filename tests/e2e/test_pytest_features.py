"""pytest features that a distributed runner must report as plain pytest does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO, load_json, outcomes_by_id, run_swarmctl

SUITE = {
    "pytest.ini": """
        [pytest]
        addopts = --doctest-modules
    """,
    "mathutil.py": '''
        def double(x):
            """
            >>> double(2)
            4
            >>> double("a")
            'aa'
            """
            return x * 2


        def broken(x):
            """
            >>> broken(1)
            3
            """
            return x
    ''',
    "test_subtests.py": """
        import unittest


        def test_fixture_subtests(subtests):
            for i in range(4):
                with subtests.test(msg="even", i=i):
                    assert i % 2 == 0


        def test_fixture_subtests_all_pass(subtests):
            for i in range(3):
                with subtests.test(i=i):
                    assert i >= 0


        class TestUnittestSubtests(unittest.TestCase):
            def test_sub(self):
                for i in range(3):
                    with self.subTest(i=i):
                        self.assertLess(i, 2)


        def test_teardown_error(broken_teardown):
            pass
    """,
    "conftest.py": """
        import pytest


        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("teardown failed")
    """,
}


def write_suite(folder: Path) -> Path:
    folder.mkdir()
    for name, text in SUITE.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    return folder


def plain_pytest(suite: Path, tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "plain.json"
    env = dict(os.environ, PYTHONPATH=str(REPO / "bench" / "plugins"), OUTCOME_RECORDER_FILE=str(out))
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "swarmctl_outcome_recorder", "-p", "no:cacheprovider", *args],
        cwd=suite, env=env, capture_output=True, text=True,
    )
    return load_json(out), process.stdout.strip().splitlines()[-1]


def summary_line(stdout: str) -> str:
    return stdout.strip().splitlines()[-1].strip("= ").rsplit(" in ", 1)[0]


def test_doctests_subtests_teardown_match_plain(tmp_path, swarm_env):
    suite = write_suite(tmp_path / "suite")
    expected, plain_line = plain_pytest(suite, tmp_path)
    report_path = tmp_path / "report.json"

    process = run_swarmctl(["run", str(suite), "-n", "2", "--json", str(report_path)], swarm_env)

    assert outcomes_by_id(load_json(report_path)) == expected
    assert "mathutil.py::mathutil.double" in expected
    assert summary_line(process.stdout) == summary_line(plain_line)


def test_quiet_counts_passed_subtests_like_plain(tmp_path, swarm_env):
    """With -q pytest counts passed subtests in its summary line; so must swarmctl."""
    suite = write_suite(tmp_path / "suite")
    _, plain_line = plain_pytest(suite, tmp_path, "-q")

    process = run_swarmctl(["run", str(suite), "-n", "2", "--", "-q"], swarm_env)

    assert "subtests passed" in plain_line
    assert summary_line(process.stdout) == summary_line(plain_line)


def test_collection_difference_reported_with_ids(tmp_path, swarm_env):
    """Parameters that differ per process make workers collect different node ids."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_random.py").write_text(
        "import uuid\nimport pytest\n\n\n"
        "@pytest.mark.parametrize('token', [uuid.uuid4().hex for _ in range(4)])\n"
        "def test_token(token):\n    assert token\n"
    )
    report_path = tmp_path / "report.json"

    process = run_swarmctl(["run", str(suite), "-n", "2", "--json", str(report_path)], swarm_env)

    cases = load_json(report_path)["cases"]
    assert len(cases) == 4
    errors = [case for case in cases if case["outcome"] == "error"]
    assert errors, "the second executor's worker collected other ids; its shards must be reported"
    for case in errors:
        assert "not collected on executor" in case["message"]
        assert case["id"] in case["longrepr"]
    assert process.returncode == 1


def test_strict_suite_without_timeout_plugin(tmp_path, swarm_env):
    """A suite that turns warnings into errors must not trip over swarmctl's own hooks."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings = error\naddopts = --strict-markers -p no:timeout\ntimeout = 30\n"
    )
    (suite / "test_strict.py").write_text(
        "import pytest\n\n\n"
        "@pytest.mark.timeout(20)\n"
        "def test_marked():\n    pass\n\n\n"
        "def test_plain():\n    pass\n"
    )

    process = run_swarmctl(["run", str(suite), "-n", "2"], swarm_env, timeout=90)

    assert process.returncode == 0, process.stdout + process.stderr
    assert "2 passed" in process.stdout


FAILING_METHOD = """
class TestTotals:
    def test_sum(self):
        values = [1, 2]
        assert sum(values) == 4
"""


def failures_section(stdout: str) -> str:
    """Return the FAILURES section of a pytest-style report, with object addresses blanked."""
    section = stdout.split("= FAILURES =", 1)[1].split("= short test summary info =", 1)[0]
    return re.sub(r"0x[0-9a-f]+", "0x?", section)


def test_failure_text_matches_plain(tmp_path, swarm_env):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_totals.py").write_text(FAILING_METHOD)
    plain = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rf"], cwd=suite, capture_output=True, text=True,
    )

    process = run_swarmctl(["run", str(suite), "-n", "1"], swarm_env)

    assert process.returncode == 1, process.stdout + process.stderr
    assert failures_section(process.stdout) == failures_section(plain.stdout)
    assert "\n\nself = <test_totals.TestTotals object at 0x?>\n" in failures_section(process.stdout)
