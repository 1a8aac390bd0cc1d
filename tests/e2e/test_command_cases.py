"""The hard command cases, each run end to end with `swarmctl run` on a swarm.toml manifest."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest

from tests.conftest import CASES, copy_case, load_json, run_swarmctl

COMMAND_CASES = sorted(p.name for p in (CASES / "command").iterdir() if p.is_dir())


def write_manifest(folder: Path) -> None:
    """Convert the case's manifest.json into swarmctl's swarm.toml format."""
    entries = json.loads((folder / "manifest.json").read_text())
    lines = []
    for entry in entries:
        lines += [
            "[[case]]",
            f"id = {json.dumps(entry['name'])}",
            f"cmd = {json.dumps(entry['cmd'], ensure_ascii=False)}",
            f"timeout = {entry['timeout_s']}",
            "",
        ]
    (folder / "swarm.toml").write_text("\n".join(lines), encoding="utf-8")


def leftover_sleeps(seconds: set[str]) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if len(cmdline) == 2 and cmdline[0].endswith("sleep") and cmdline[1] in seconds:
            found.append(process)
    return found


@pytest.mark.parametrize("name", COMMAND_CASES)
def test_command_case(name, tmp_path, swarm_env):
    suite = copy_case("command", name, tmp_path)
    write_manifest(suite)
    expected = load_json(suite / "expected.json")["expected"]["results_in_manifest_order"]
    report_path = tmp_path / "report.json"

    process = run_swarmctl(["run", str(suite), "-n", "2", "--json", str(report_path)], swarm_env)

    assert report_path.exists(), process.stdout + process.stderr
    cases = {case["id"]: case for case in load_json(report_path)["cases"]}
    assert list(cases) == [entry["name"] for entry in expected]  # manifest order, once each
    for entry in expected:
        case = cases[entry["name"]]
        assert case["outcome"] == entry["outcome"], entry["name"]
        if "exit_code" in entry:
            assert case["exit_code"] == entry["exit_code"], entry["name"]
        if "signal" in entry:
            assert case["signal"] == entry["signal"], entry["name"]
        assert case["duration"] <= entry["max_duration_s"], entry["name"]
    assert process.returncode == 1


def test_command_case_leaves_no_children(tmp_path, swarm_env):
    suite = copy_case("command", "006_daemon_holds_output", tmp_path)
    write_manifest(suite)
    seconds = {"61", "62", "63", "64"}
    before = {p.pid for p in leftover_sleeps(seconds)}

    run_swarmctl(["run", str(suite), "-n", "2"], swarm_env)

    left = [p for p in leftover_sleeps(seconds) if p.pid not in before]
    for process in left:
        process.kill()
    assert left == []
