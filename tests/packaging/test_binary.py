"""Tests of the single-file binary dist/swarmctl: what it contains, and every role it plays.

The binary is built with `make binary` (about 25 s on 2 cores, plus about a minute for
.venv-binary the first time) unless dist/swarmctl is newer than every source it is built from.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, load_json, outcomes_by_id, run_swarmctl
from tests.e2e.nodes import Node

# PyInstaller builds in a cache shared by every build of this user, so the build runs alone.
pytestmark = [pytest.mark.slow, pytest.mark.serial]

BINARY = REPO / "dist" / "swarmctl"
ARCHIVE_VIEWER = REPO / ".venv-binary" / "bin" / "pyi-archive_viewer"
EXAMPLE = REPO / "examples" / "pytest-suite"
BUILD_TIMEOUT_S = 900
STARTUP_TIMEOUT_S = 60
# Top-level modules of the test tools, which the runtime venv does not have and the spec excludes.
TEST_TOOLS = {"pytest", "_pytest", "hypothesis", "pytest_trio", "pytest_timeout", "xdist", "playwright", "setuptools", "pip"}
MAX_SIZE_BYTES = 35 * 1024**2


def newest_source_mtime() -> float:
    sources = [*(REPO / "swarmctl").rglob("*.py"), *(REPO / "packaging" / "pyinstaller").iterdir(), REPO / "pyproject.toml"]
    return max(path.stat().st_mtime for path in sources)


@pytest.fixture(scope="module")
def binary() -> Path:
    """Return dist/swarmctl, built first when it is missing or older than the sources."""
    if not BINARY.exists() or BINARY.stat().st_mtime < newest_source_mtime():
        completed = subprocess.run(
            ["make", "binary"], check=False, cwd=REPO, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
        )
        assert completed.returncode == 0, f"make binary failed:\n{completed.stdout}\n{completed.stderr}"
    return BINARY


def run_binary(binary: Path, args: list[str], env: dict, *, timeout: float = 180, cwd: Path | None = None):
    return subprocess.run([str(binary), *args], check=False, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def binary_node(binary: Path, args: list[str], log_path: Path, env: dict) -> Node:
    """Start `dist/swarmctl up ARGS`, with the longer stop timeout a binary's unpacking needs."""
    return Node(args, log_path, env, program=[str(binary)], stop_timeout=30)


@pytest.fixture
def binary_cluster(binary: Path, tmp_path: Path, swarm_env: dict) -> Iterator[tuple[str, list[Node]]]:
    """One coordinator and two executors, all dist/swarmctl, keyed by one secret file."""
    secret = tmp_path / "cluster.secret"
    secret.write_text("0123456789abcdef" * 4 + "\n")
    secret.chmod(0o600)
    nodes: list[Node] = []
    try:
        coordinator = binary_node(
            binary,
            ["--role", "coordinator", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "coordinator"),
             "--secret-file", str(secret)],
            tmp_path / "coordinator.log", swarm_env,
        )
        nodes.append(coordinator)
        host, port = coordinator.wait_for_log(r"listening on ([\d.]+):(\d+)", timeout=STARTUP_TIMEOUT_S).groups()
        address = f"{host}:{port}"
        for i in range(2):
            nodes.append(
                binary_node(
                    binary,
                    ["--role", "executor", "--join", address, "--slots", "1", "--id", f"exec-{i}",
                     "--data-dir", str(tmp_path / f"exec-{i}"), "--secret-file", str(secret)],
                    tmp_path / f"exec-{i}.log", swarm_env,
                )
            )
        for i in range(2):
            coordinator.wait_for_log(rf"executor exec-{i} joined", timeout=STARTUP_TIMEOUT_S)
        yield address, nodes
    finally:
        for node in reversed(nodes):
            node.stop()


def test_binary_size_and_version(binary) -> None:
    size = binary.stat().st_size
    assert size < MAX_SIZE_BYTES, f"dist/swarmctl is {size / 1024**2:.1f} MiB"

    completed = run_binary(binary, ["--version"], dict(os.environ))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("swarmctl ")


def test_binary_contains_no_test_tools(binary) -> None:
    # Checked here, not in a skipif mark: the binary fixture runs make binary, which creates
    # .venv-binary, after the marks of this file were evaluated.
    if not ARCHIVE_VIEWER.exists():
        pytest.skip("needs .venv-binary, which make binary creates")
    listing = subprocess.run(
        [str(ARCHIVE_VIEWER), "--recursive", "--brief", str(binary)], check=False, capture_output=True, text=True, timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    names = {line.strip().split("/")[0].split(".")[0] for line in listing.stdout.splitlines() if line.strip()}
    assert "swarmctl" in names
    assert "trio" in names
    assert not names & TEST_TOOLS, f"test tools in the binary: {sorted(names & TEST_TOOLS)}"


def test_binary_doctor_reads_build_glibc(binary, tmp_path, swarm_env) -> None:
    completed = run_binary(binary, ["doctor", "--json", "--data-dir", str(tmp_path), "--port", "1"], swarm_env)

    checks = {check["name"]: check for check in json.loads(completed.stdout)["checks"]}
    assert checks["glibc"]["ok"] is True
    assert "this swarmctl binary" in checks["glibc"]["detail"]


def test_binary_embedded_run_matches_plain_swarmctl(binary, tmp_path, swarm_env) -> None:
    plain_report, binary_report = tmp_path / "plain.json", tmp_path / "binary.json"
    plain = run_swarmctl(["run", str(EXAMPLE), "-n", "2", "--json", str(plain_report)], swarm_env)
    swarm_env["SWARMCTL_HOME"] = str(tmp_path / "binary-home")
    frozen = run_binary(binary, ["run", str(EXAMPLE), "-n", "2", "--json", str(binary_report)], swarm_env)

    assert plain.returncode == 1, plain.stdout + plain.stderr
    assert frozen.returncode == 1, frozen.stdout + frozen.stderr
    assert "3 failed, 51 passed, 4 skipped, 1 xfailed in" in frozen.stdout
    assert load_json(binary_report)["summary"]["counts"] == load_json(plain_report)["summary"]["counts"]
    assert outcomes_by_id(load_json(binary_report)) == outcomes_by_id(load_json(plain_report))


@pytest.mark.parametrize("library_path", ["/opt/suite-libs", None])
def test_binary_children_get_caller_library_path(binary, tmp_path, swarm_env, library_path) -> None:
    # A command case runs in the environment the executor gives the suite, which must not
    # point the loader at the binary's bundled libraries.
    suite = tmp_path / "env-suite"
    suite.mkdir()
    (suite / "swarm.toml").write_text(
        f'[[case]]\nid = "library-path"\ncmd = \'test "${{LD_LIBRARY_PATH-unset}}" = "{library_path or "unset"}"\'\n'
    )
    swarm_env.pop("LD_LIBRARY_PATH", None)
    if library_path is not None:
        swarm_env["LD_LIBRARY_PATH"] = library_path
    completed = run_binary(binary, ["run", str(suite), "-n", "1", "--json", str(tmp_path / "report.json")], swarm_env)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert outcomes_by_id(load_json(tmp_path / "report.json")) == {"library-path": "passed"}


def test_binary_cluster_of_three_processes(binary, binary_cluster, tmp_path, swarm_env) -> None:
    address, nodes = binary_cluster
    swarm_env["SWARMCTL_SECRET_FILE"] = str(tmp_path / "cluster.secret")  # the client's credential
    report = tmp_path / "cluster.json"
    completed = run_binary(binary, ["run", str(EXAMPLE), "--cluster", address, "--json", str(report)], swarm_env)
    coordinator_status = run_binary(binary, ["status", "--local", "--address", address], swarm_env, timeout=60)
    executor_status = run_binary(binary, ["status", "--local", "--address", address, "--executor", "exec-1"], swarm_env, timeout=60)

    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "3 failed, 51 passed, 4 skipped, 1 xfailed in" in completed.stdout
    cases = load_json(report)["cases"]
    assert {case["executor"] for case in cases} == {"exec-0", "exec-1"}
    assert coordinator_status.returncode == 0, coordinator_status.stderr
    assert coordinator_status.stdout.strip() == f"coordinator {address} responds: 2 executors connected"
    assert executor_status.returncode == 0, executor_status.stderr
    # With the secret, the coordinator learns of each executor through gossip as well.
    assert "no --secret-file" not in nodes[0].log()

    exit_codes = [node.stop() for node in reversed(nodes)]
    assert exit_codes == [0, 0, 0]
