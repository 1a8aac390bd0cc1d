"""A real library's own test suite, from its sdist: swarmctl must agree with plain pytest."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import REPO, load_json, outcomes_by_id, run_swarmctl

LIBRARY = "more-itertools==11.2.1"


def fetch_sdist(dest: Path) -> Path:
    """Download and unpack the library's sdist; return the unpacked folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps", "-d", str(dest), LIBRARY],
        check=True,
        capture_output=True,
    )
    (archive,) = dest.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (folder,) = [p for p in dest.iterdir() if p.is_dir()]
    return folder


def plain_pytest_outcomes(suite: Path, tmp_path: Path) -> dict[str, str]:
    out = tmp_path / "plain.json"
    env = dict(os.environ, PYTHONPATH=str(REPO / "bench" / "plugins"), OUTCOME_RECORDER_FILE=str(out))
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "swarmctl_outcome_recorder", "-p", "no:cacheprovider"],
        cwd=suite, env=env, capture_output=True, timeout=600,
    )
    return load_json(out)


def test_real_library_matches_plain_pytest(tmp_path, swarm_env):
    suite = fetch_sdist(tmp_path / "sdist")
    expected = plain_pytest_outcomes(suite, tmp_path)
    assert len(expected) > 500  # the suite really ran

    json_path, junit_path = tmp_path / "swarm.json", tmp_path / "swarm.xml"
    process = run_swarmctl(
        ["run", str(suite), "-n", "2", "--python", sys.executable, "--json", str(json_path), "--junitxml", str(junit_path)],
        swarm_env,
        timeout=600,
    )

    actual = outcomes_by_id(load_json(json_path))
    assert sorted(actual) == sorted(expected)
    mismatches = {node_id: (actual[node_id], outcome) for node_id, outcome in expected.items() if actual[node_id] != outcome}
    assert mismatches == {}
    assert len(ET.parse(junit_path).getroot().findall(".//testcase")) == len(expected)
    assert process.returncode == (1 if {"failed", "error"} & set(expected.values()) else 0)
