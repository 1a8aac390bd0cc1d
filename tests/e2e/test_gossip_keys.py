"""Gossip key rotation on real processes: install, use and remove a generation while executors gossip."""

from __future__ import annotations

import re
import time

from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator import store
from swarmctl.coordinator.state import StateMachine
from swarmctl.security import load_secret, write_secret
from swarmctl.tokens import Role, issue
from tests.conftest import run_swarmctl
from tests.e2e.nodes import cluster

BAD_PACKETS = "dropped .* bad packets"


def rotate(action: list[str], address: str, env: dict, timeout: float = 30) -> str:
    """Run `swarmctl gossip-key ACTION` until the coordinator accepts it (it waits for executors to apply the last step)."""
    deadline = time.monotonic() + timeout
    while True:
        process = run_swarmctl(["gossip-key", *action, "--cluster", address], env, timeout=60)
        if process.returncode == 0:
            return process.stdout
        assert "try again" in process.stderr, process.stderr
        assert time.monotonic() < deadline, process.stderr
        time.sleep(0.5)


def test_gossip_key_rotation_keeps_members(tmp_path, swarm_env):
    secret = tmp_path / "cluster.secret"
    write_secret(secret)
    env = {**swarm_env, "SWARMCTL_SECRET_FILE": str(secret)}
    with cluster(
        tmp_path, swarm_env, executors=2,
        coordinator_args=("--secret-file", str(secret)), executor_args=("--secret-file", str(secret)),
    ) as running:
        for executor in running.executors:
            executor.wait_for_log(r"gossip node .* listening on")

        assert "installed: 0; sealing with generation 0" in rotate(["list"], running.address, env)
        assert "installed: 0, 1; sealing with generation 0" in rotate(["install"], running.address, env)
        assert "installed: 0, 1; sealing with generation 1" in rotate(["use", "1"], running.address, env)
        refused = run_swarmctl(["gossip-key", "remove", "1", "--cluster", running.address], env)
        assert refused.returncode == 4
        assert "`use` another generation" in refused.stderr
        assert "installed: 1; sealing with generation 1" in rotate(["remove", "0"], running.address, env)
        for executor in running.executors:
            executor.wait_for_log(re.escape("gossip keys: generations [1], sealing with 1"))

        # Gossip goes on under the new key: a second round of probes, and no node dropped a packet.
        time.sleep(3)
        for node in running.nodes:
            assert not re.search(BAD_PACKETS, node.log()), node.log()[-3000:]
        assert "declared dead" not in running.coordinator.log()

        # An executor that starts later gets the keyring with its welcome.
        running.add_executor("exec-9", "--secret-file", str(secret))
        running.executors[-1].wait_for_log(re.escape("gossip keys: generations [1], sealing with 1"))

        unknown = run_swarmctl(["gossip-key", "use", "7", "--cluster", running.address], env)
        assert unknown.returncode == 4
        assert "generation 7 is not installed" in unknown.stderr
        read_only = run_swarmctl(["gossip-key", "install", "--cluster", running.address], {**swarm_env, "SWARMCTL_TOKEN": _read_token(secret)})
        assert read_only.returncode == 4
        assert "needs a token with role admin" in read_only.stderr


def test_gossip_keyring_survives_restart(tmp_path):
    machine = StateMachine(store.connect(tmp_path / "state.db"))
    machine.apply(cmd.GossipKeyringChanged([1, 2], 2, 0.0))
    machine.conn.close()

    reopened = StateMachine(store.connect(tmp_path / "state.db"))

    assert reopened.gossip_keyring == ([1, 2], 2)


def _read_token(secret) -> str:
    return issue(load_secret(secret), Role.READ, ttl_s=600)[0]
