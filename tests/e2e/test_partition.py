"""A network cut between an executor and the coordinator, made with network namespaces.

The test builds two namespaces joined by a veth pair: the coordinator, one executor and the
client live in the first, a second executor in the other. Taking the link down cuts the
second executor off without killing it, which neither a SIGKILL nor a closed socket imitates:
its TCP connection stays open and silent. Needs root and iproute2; skipped otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import generate_suite, load_json, outcomes_by_id, run_swarmctl
from tests.e2e.nodes import Cluster, wait_until_running


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def two_hosts() -> Iterator[tuple[list[str], list[str], str, str]]:
    """Yield the command prefixes of two namespaces, their veth link in the second, and the first's address."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (.ci/run installs iproute2)")
    tag = secrets.token_hex(3)
    host_a, host_b = f"swarm-a-{tag}", f"swarm-b-{tag}"
    link_a, link_b = f"swa{tag}", f"swb{tag}"
    subnet = f"10.231.{int(tag[:2], 16)}"
    try:
        ip("netns", "add", host_a)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.strip()}")
    try:
        ip("netns", "add", host_b)
        ip("link", "add", link_a, "type", "veth", "peer", "name", link_b)
        ip("link", "set", link_a, "netns", host_a)
        ip("link", "set", link_b, "netns", host_b)
        for host, link, address in ((host_a, link_a, f"{subnet}.1"), (host_b, link_b, f"{subnet}.2")):
            ip("-n", host, "addr", "add", f"{address}/24", "dev", link)
            ip("-n", host, "link", "set", link, "up")
            ip("-n", host, "link", "set", "lo", "up")
        yield ["ip", "netns", "exec", host_a], ["ip", "netns", "exec", host_b], link_b, f"{subnet}.1"
    finally:
        for host in (host_a, host_b):
            subprocess.run(["ip", "netns", "delete", host], capture_output=True)


def test_partition_cut_executor_work_moves(tmp_path, swarm_env, two_hosts):
    in_a, in_b, link_b, address_a = two_hosts
    host_b = in_b[-1]
    suite = generate_suite(tmp_path / "suite", tests=40, files=2, sleep_ms=250)
    # A coordinator on a non-loopback address needs the secret. The executors get only a join
    # token, so they do not gossip and the cut is found by the lease alone.
    credentials = tmp_path / "credentials"
    assert run_swarmctl(["init", str(credentials)], swarm_env).returncode == 0
    join = ("--token-file", str(credentials / "join.token"))
    running = Cluster(tmp_path, swarm_env)
    try:
        running.start_coordinator(
            "--lease", "2s", "--secret-file", str(credentials / "cluster.secret"), listen=f"{address_a}:7400", prefix=in_a
        )
        running.add_executor("near", *join, prefix=in_a)
        far = running.add_executor("far", *join, prefix=in_b)

        report_path = tmp_path / "report.json"
        run = subprocess.Popen(
            [*in_a, sys.executable, "-m", "swarmctl", "run", str(suite), "--cluster", running.address,
             "--json", str(report_path)],
            env={**swarm_env, "SWARMCTL_TOKEN_FILE": str(credentials / "admin.token")},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        wait_until_running(tmp_path / "coordinator" / "state.db", "far")

        ip("-n", host_b, "link", "set", link_b, "down")
        running.coordinator.wait_for_log(r"lease on executor far lapsed", timeout=30)
        output, _ = run.communicate(timeout=120)

        ip("-n", host_b, "link", "set", link_b, "up")
        far.wait_for_log(r"no message from the coordinator", timeout=60)
        running.coordinator.wait_for_log(r"executor far joined(.|\n)*executor far joined", timeout=60)
    finally:
        running.stop()

    report = load_json(report_path)
    assert run.returncode == 0, output
    assert len(outcomes_by_id(report)) == 40
    reassigned = [case for case in report["cases"] if case["reassigned_from"]]
    assert reassigned
    assert {case["executor"] for case in reassigned} == {"near"}
