"""The leading coordinator cut off by the network, made with network namespaces.

Each of the three voters runs in its own namespace, and the executor and the client in a
fourth. Every namespace has a veth link to a bridge in a fifth, so taking one link down
isolates one node while it keeps running with its sockets open. Needs root and iproute2;
skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import generate_suite, load_json, outcomes_by_id, run_swarmctl
from tests.e2e.nodes import Node

NODES = ("v1", "v2", "v3", "clients")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def star() -> Iterator[dict[str, tuple[list[str], str, str]]]:
    """Yield, per node name, its command prefix, its IP address, and the name of its link on the bridge."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (.ci/run installs iproute2)")
    tag = secrets.token_hex(3)
    hub = f"swarm-hub-{tag}"
    subnet = f"10.232.{int(tag[:2], 16)}"
    namespaces = [hub]
    try:
        ip("netns", "add", hub)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.strip()}")
    try:
        try:
            ip("-n", hub, "link", "add", "br0", "type", "bridge")
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot create a bridge in a network namespace here: {exc.stderr.strip()}")
        ip("-n", hub, "link", "set", "br0", "up")
        nodes = {}
        for i, name in enumerate(NODES, 1):
            namespace, inner, outer = f"swarm-{name}-{tag}", f"sv{i}{tag}i", f"sv{i}{tag}o"  # at most 15 characters
            ip("netns", "add", namespace)
            namespaces.append(namespace)
            ip("link", "add", inner, "type", "veth", "peer", "name", outer)
            ip("link", "set", inner, "netns", namespace)
            ip("link", "set", outer, "netns", hub)
            ip("-n", hub, "link", "set", outer, "master", "br0")
            ip("-n", hub, "link", "set", outer, "up")
            ip("-n", namespace, "addr", "add", f"{subnet}.{i}/24", "dev", inner)
            ip("-n", namespace, "link", "set", inner, "up")
            ip("-n", namespace, "link", "set", "lo", "up")
            nodes[name] = (["ip", "netns", "exec", namespace], f"{subnet}.{i}", outer)
        nodes["hub"] = (["ip", "netns", "exec", hub], "", "")
        yield nodes
    finally:
        for namespace in namespaces:
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)


def cluster_status(prefix: list[str], peers: str, env: dict) -> dict | None:
    process = subprocess.run(
        [*prefix, sys.executable, "-m", "swarmctl", "status", "--cluster", peers, "--json", "--timeout", "2s"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    return json.loads(process.stdout) if process.stdout.strip() else None


def wait_for_leader(prefix: list[str], peers: str, env: dict, *, not_in: tuple[str, ...] = (), timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = cluster_status(prefix, peers, env)
        if status and status["leader"] and status["leader"] not in not_in:
            return status
        assert time.monotonic() < deadline, f"no leader outside {not_in} within {timeout}s: {status}"
        time.sleep(0.2)


def test_isolated_leader_steps_down_and_rejoins_quietly(tmp_path: Path, swarm_env, star):
    credentials = tmp_path / "credentials"
    assert run_swarmctl(["init", str(credentials)], swarm_env).returncode == 0
    secret = ("--secret-file", str(credentials / "cluster.secret"))
    peers = ",".join(f"{star[name][1]}:7400" for name in NODES[:3])
    in_clients = star["clients"][0]
    env = {**swarm_env, "SWARMCTL_SECRET_FILE": str(credentials / "cluster.secret")}
    nodes: dict[str, Node] = {}
    try:
        for name in NODES[:3]:
            prefix, address, _ = star[name]
            nodes[name] = Node(
                ["--role", "coordinator", "--listen", f"{address}:7400", "--peers", peers, *secret,
                 "--data-dir", str(tmp_path / name)],
                tmp_path / f"{name}.log", swarm_env, prefix=prefix,
            )
        nodes["executor"] = Node(
            ["--role", "executor", "--join", peers, "--slots", "2", "--id", "exec-0", *secret,
             "--data-dir", str(tmp_path / "exec-0")],
            tmp_path / "exec-0.log", swarm_env, prefix=in_clients,
        )
        first = wait_for_leader(in_clients, peers, env)
        leader_address = first["leader"]
        leader = next(name for name in NODES[:3] if f"{star[name][1]}:7400" == leader_address)
        nodes[leader].wait_for_log(r"executor exec-0 joined")

        # Cut the leader off while a run goes on.
        suite = generate_suite(tmp_path / "suite", tests=40, files=2, sleep_ms=250)
        expected = {outcome: count for outcome, count in load_json(suite / "expected_counts.json")["counts"].items() if count}
        report_path = tmp_path / "report.json"
        run = subprocess.Popen(
            [*in_clients, sys.executable, "-m", "swarmctl", "run", str(suite), "--cluster", peers,
             "--json", str(report_path)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        nodes[leader].wait_for_log(r"run \S+ submitted")
        time.sleep(1)
        hub = star["hub"][0]
        subprocess.run([*hub, "ip", "link", "set", star[leader][2], "down"], check=True)

        # The majority elects a new leader; the old one steps down by itself.
        second = wait_for_leader(in_clients, peers, env, not_in=(leader_address,))
        assert second["term"] > first["term"]
        nodes[leader].wait_for_log(r"stepped down after hearing from only 1 of 3 voters")
        nodes[leader].wait_for_log(r"stops leading")

        output, _ = run.communicate(timeout=180)
        assert report_path.exists(), output
        report = load_json(report_path)
        assert len(outcomes_by_id(report)) == 40, output
        assert report["summary"]["counts"] == expected, output

        # Cut off, the old leader requests only pre-votes, so its term stays where it was,
        # and when the link is back it follows the new leader without another election.
        time.sleep(3)
        subprocess.run([*hub, "ip", "link", "set", star[leader][2], "up"], check=True)
        deadline = time.monotonic() + 30
        while True:
            third = cluster_status(in_clients, peers, env)
            rows = {row["address"]: row for row in third["voters"]} if third else {}
            if rows.get(leader_address, {}).get("lag") == 0:
                break
            assert time.monotonic() < deadline, f"the old leader did not catch up: {third}"
            time.sleep(0.2)
        assert third["leader"] == second["leader"]
        assert third["term"] == second["term"]
        terms = [int(term) for term in re.findall(r"became candidate, term (\d+)", nodes[leader].log())]
        assert all(term <= first["term"] for term in terms), terms
    finally:
        for node in nodes.values():
            node.stop()
