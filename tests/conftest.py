"""Fixtures shared by the tests: the case library, a private data folder, and the CLI."""

from __future__ import annotations

import json
from collections import Counter
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CASES = REPO.parent / "shared" / "cases"
BIN = Path(sys.executable).parent


@pytest.fixture
def swarm_env(tmp_path: Path) -> dict[str, str]:
    """Environment for a swarmctl process: its own data folder, this venv first on PATH."""
    env = dict(os.environ)
    env["SWARMCTL_HOME"] = str(tmp_path / "swarm-home")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTEST_ADDOPTS", None)
    return env


def run_swarmctl(args: list[str], env: dict[str, str], *, timeout: float = 180, cwd: Path | None = None):
    """Run the swarmctl CLI in a child process and return the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "swarmctl", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def generate_suite(
    folder: Path, *, tests: int, files: int, sleep_ms: int, failed: int = 0, skipped: int = 0
) -> Path:
    """Write a synthetic pytest suite with bench/gen_suite.py and return its folder."""
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "gen_suite.py"), str(folder), "--tests", str(tests),
         "--files", str(files), "--sleep-ms", str(sleep_ms), "--failed", str(failed), "--skipped", str(skipped)],
        check=True,
        capture_output=True,
    )
    return folder


def copy_case(kind: str, name: str, dest: Path) -> Path:
    """Copy a case folder (read-only in the library) to ``dest`` and make it writable."""
    target = dest / name
    shutil.copytree(CASES / kind / name, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return target


def load_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def outcomes_by_id(report: dict) -> dict[str, str]:
    """Map each case id of a swarmctl JSON report to its outcome, failing on duplicates."""
    counts = Counter(case["id"] for case in report["cases"])
    duplicates = {case_id for case_id, count in counts.items() if count > 1}
    assert not duplicates, f"case ids reported more than once: {sorted(duplicates)}"
    return {case["id"]: case["outcome"] for case in report["cases"]}
