"""Tokens and roles against real coordinator and executor processes with a cluster secret."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jwt
import pytest

from swarmctl.security import load_secret, write_secret
from swarmctl.tokens import Role, issue
from tests.conftest import generate_suite, run_swarmctl
from tests.e2e.nodes import Cluster, Node, free_port, start_run, wait_for_active_run

SLOW_SUITE = "import time\n\ndef test_slow():\n    time.sleep(60)\n"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.secret"
    write_secret(path)
    return path


def token_file(folder: Path, secret: Path, role: Role, name: str, **options) -> Path:
    text, _ = issue(load_secret(secret), role, subject=name, **{"ttl_s": 3600, **options})
    path = folder / f"{name}.token"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def with_token(env: dict, path: Path) -> dict:
    return {**env, "SWARMCTL_TOKEN_FILE": str(path)}


@pytest.fixture
def secured(tmp_path: Path, swarm_env: dict, secret: Path):
    """A coordinator with the secret, and one executor that joins with a join token only."""
    join = token_file(tmp_path, secret, Role.JOIN, "join")
    running = Cluster(tmp_path, swarm_env)
    try:
        running.start_coordinator("--secret-file", str(secret))
        running.add_executor("exec-0", "--token-file", str(join))
        yield running
    finally:
        running.stop()


def test_auth_submit_token_runs_suite(tmp_path, swarm_env, secret, secured):
    suite = generate_suite(tmp_path / "suite", tests=6, files=1, sleep_ms=10, failed=1)
    submit = token_file(tmp_path, secret, Role.SUBMIT, "ci")

    process = run_swarmctl(["run", str(suite), "--cluster", secured.address], with_token(swarm_env, submit))

    assert process.returncode == 1, process.stdout + process.stderr
    assert "1 failed, 5 passed" in process.stdout


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, "no token given"),
        ("other-secret", "signature is invalid"),
        ("expired", "token expired"),
        ("garbage", "token is invalid"),
    ],
)
def test_auth_bad_token_rejected(tmp_path, swarm_env, secret, secured, token, message):
    env = dict(swarm_env)
    if token is None:
        # A finished embedded run leaves its own secret here, which must not sign tokens for other clusters.
        home = Path(env["SWARMCTL_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        write_secret(home / "cluster.secret")
    if token == "other-secret":
        other = tmp_path / "other.secret"
        write_secret(other)
        env = with_token(env, token_file(tmp_path, other, Role.ADMIN, "other"))
    elif token == "expired":
        env = with_token(env, token_file(tmp_path, secret, Role.ADMIN, "old", ttl_s=60, now=time.time() - 3600))
    elif token == "garbage":
        env["SWARMCTL_TOKEN"] = "not.a.token"

    process = run_swarmctl(["executors", "--cluster", secured.address], env, timeout=60)

    assert process.returncode == 4, process.stderr
    assert "authentication failed" in process.stderr
    assert message in process.stderr
    assert "not.a.token" not in secured.coordinator.log()


def test_auth_read_token_limits(tmp_path, swarm_env, secret, secured):
    read = with_token(swarm_env, token_file(tmp_path, secret, Role.READ, "viewer"))
    suite = generate_suite(tmp_path / "suite", tests=2, files=1, sleep_ms=10)

    listing = run_swarmctl(["executors", "--cluster", secured.address, "--json"], read, timeout=60)
    events = run_swarmctl(["events", "--cluster", secured.address, "--count", "1"], read, timeout=60)
    drain = run_swarmctl(["executors", "drain", "exec-0", "--cluster", secured.address], read, timeout=60)
    submit = run_swarmctl(["run", str(suite), "--cluster", secured.address], read, timeout=60)

    assert listing.returncode == 0, listing.stderr
    assert [row["id"] for row in json.loads(listing.stdout)] == ["exec-0"]
    assert events.returncode == 0, events.stderr
    assert drain.returncode == 4
    assert "permission denied: POST /v1/executors/{executor_id}/drain needs a token with role admin" in drain.stderr
    assert "Set SWARMCTL_TOKEN_FILE to a file with a token of that role" in drain.stderr
    assert submit.returncode == 4
    assert "needs a token with role submit" in submit.stdout + submit.stderr


def test_auth_cancel_own_runs_only(tmp_path, swarm_env, secret, secured):
    suite = tmp_path / "slow"
    suite.mkdir()
    (suite / "test_slow.py").write_text(SLOW_SUITE)
    alice = with_token(swarm_env, token_file(tmp_path, secret, Role.SUBMIT, "alice"))
    bob = with_token(swarm_env, token_file(tmp_path, secret, Role.SUBMIT, "bob"))
    admin = with_token(swarm_env, token_file(tmp_path, secret, Role.ADMIN, "admin"))

    run = start_run(suite, secured.address, tmp_path / "report.json", alice)
    try:
        db_path = tmp_path / "coordinator" / "state.db"
        run_id = wait_for_active_run(db_path)
        by_bob = run_swarmctl(["cancel", run_id, "--cluster", secured.address], bob, timeout=60)
        by_admin = run_swarmctl(["cancel", run_id, "--cluster", secured.address], admin, timeout=60)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()

    assert by_bob.returncode == 4
    assert "submitted with another token" in by_bob.stderr
    assert by_admin.returncode == 0, by_admin.stderr
    assert run.returncode == 2, output


def test_auth_revoke_closes_connections(tmp_path, swarm_env, secret, secured):
    viewer_file = token_file(tmp_path, secret, Role.READ, "viewer")
    viewer = with_token(swarm_env, viewer_file)
    admin = with_token(swarm_env, token_file(tmp_path, secret, Role.ADMIN, "admin"))
    watcher = subprocess.Popen(
        [sys.executable, "-m", "swarmctl", "events", "--cluster", secured.address, "--interval", "0.2s"],
        env=viewer, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert watcher.stdout.readline().startswith('{"kind": "runs"')
        token_id = decode_claims(viewer_file.read_text().strip())["jti"]

        mistyped = run_swarmctl(["token", "revoke", "nosuchid", "--cluster", secured.address], admin, timeout=60)
        revoked = run_swarmctl(["token", "revoke", token_id, "--cluster", secured.address], admin, timeout=60)
        watcher.communicate(timeout=30)
        again = run_swarmctl(["executors", "--cluster", secured.address], viewer, timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()

    assert mistyped.returncode == 4
    assert "token id 'nosuchid' is invalid" in mistyped.stderr
    assert revoked.returncode == 0, revoked.stderr
    assert f"token {token_id} revoked; 1 connections closed" in revoked.stdout
    assert watcher.returncode != 0
    assert again.returncode == 4
    assert f"token {token_id} was revoked" in again.stderr


def test_auth_executor_with_read_token_exits(tmp_path, swarm_env, secret, secured):
    read = token_file(tmp_path, secret, Role.READ, "viewer")
    node = Node(
        ["--role", "executor", "--join", secured.address, "--id", "exec-read", "--data-dir", str(tmp_path / "exec-read"),
         "--token-file", str(read)],
        tmp_path / "exec-read.log", swarm_env,
    )
    try:
        code = node.process.wait(timeout=60)
    finally:
        node.stop()

    assert code == 4, node.log()
    assert "a token with role read cannot connect as executor" in node.log()


def test_auth_token_cli_create(tmp_path, swarm_env, secret):
    created = run_swarmctl(["token", "create", "--role", "submit", "--ttl", "2h", "--name", "ci", "--secret-file", str(secret)], swarm_env)

    assert created.returncode == 0, created.stderr
    claims = decode_claims(created.stdout.strip())
    assert claims["role"] == "submit"
    assert claims["sub"] == "ci"
    assert claims["exp"] - claims["iat"] == 7200
    assert f"token {claims['jti']}: role submit, expires" in created.stderr
    assert f"signed with the secret in {secret}" in created.stderr


def test_auth_token_cli_invalid_role(tmp_path, swarm_env, secret):
    created = run_swarmctl(["token", "create", "--role", "owner", "--secret-file", str(secret)], swarm_env)

    assert created.returncode == 4
    assert "invalid role 'owner'" in created.stderr
    assert created.stdout == ""


def test_auth_init_writes_credentials(tmp_path, swarm_env):
    folder = tmp_path / "cluster"

    first = run_swarmctl(["init", str(folder)], swarm_env)
    second = run_swarmctl(["init", str(folder)], swarm_env)

    assert first.returncode == 0, first.stderr
    for name in ("cluster.secret", "admin.token", "join.token", "ca.key"):
        assert (folder / name).stat().st_mode & 0o777 == 0o600
    assert decode_claims((folder / "admin.token").read_text().strip())["role"] == "admin"
    assert decode_claims((folder / "join.token").read_text().strip())["role"] == "join"
    assert f"swarmctl up --role executor --config {folder.resolve() / 'swarm.toml'}" in first.stdout
    config = (folder / "swarm.toml").read_text()
    assert 'coordinators = ["127.0.0.1:7400"]' in config
    assert 'token_file = "join.token"' in config
    assert second.returncode == 4
    assert "already exists" in second.stderr


def test_auth_open_coordinator_needs_loopback(tmp_path, swarm_env):
    process = run_swarmctl(
        ["up", "--role", "coordinator", "--listen", "0.0.0.0:0", "--data-dir", str(tmp_path / "c")], swarm_env, timeout=60
    )

    assert process.returncode == 4
    assert "--listen 0.0.0.0 is not a loopback address" in process.stderr
    assert "--secret-file" in process.stderr


def decode_claims(text: str) -> dict:
    return jwt.decode(text, options={"verify_signature": False})




# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def credentials(tmp_path: Path, swarm_env: dict) -> Path:
    folder = tmp_path / "credentials"
    assert run_swarmctl(["init", str(folder)], swarm_env).returncode == 0
    return folder


def test_tls_cluster_runs_suite(tmp_path, swarm_env, credentials):
    suite = generate_suite(tmp_path / "suite", tests=6, files=1, sleep_ms=10, failed=1)
    tls = ("--ca-file", str(credentials / "ca.pem"))
    client = {**swarm_env, "SWARMCTL_TOKEN_FILE": str(credentials / "admin.token"), "SWARMCTL_CA_FILE": str(credentials / "ca.pem")}
    running = Cluster(tmp_path, swarm_env)
    try:
        running.start_coordinator(
            "--secret-file", str(credentials / "cluster.secret"), *tls, "--ca-key-file", str(credentials / "ca.key")
        )
        running.add_executor("exec-0", "--token-file", str(credentials / "join.token"), *tls)
        process = run_swarmctl(["run", str(suite), "--cluster", running.address], client)
        plain = run_swarmctl(["executors", "--cluster", running.address], {**client, "SWARMCTL_CA_FILE": ""}, timeout=60)
        other = tmp_path / "other"
        assert run_swarmctl(["init", str(other)], swarm_env).returncode == 0
        foreign = run_swarmctl(
            ["executors", "--cluster", running.address], {**client, "SWARMCTL_CA_FILE": str(other / "ca.pem")}, timeout=60
        )
        coordinator_log = running.coordinator.log()
    finally:
        running.stop()

    assert process.returncode == 1, process.stdout + process.stderr
    assert "1 failed, 5 passed" in process.stdout
    assert "TLS certificate issued by" in coordinator_log
    assert plain.returncode != 0
    assert "TLS is used on both sides or neither" in plain.stderr
    assert foreign.returncode != 0
    assert "could not connect" in foreign.stderr
    assert "exec-0" not in foreign.stdout


def test_tls_coordinator_needs_ca_key(tmp_path, swarm_env, credentials):
    process = run_swarmctl(
        ["up", "--role", "coordinator", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "c"),
         "--ca-file", str(credentials / "ca.pem")],
        swarm_env, timeout=60,
    )

    assert process.returncode == 4
    assert "needs --ca-key-file too" in process.stderr


def test_auth_token_cli_needs_named_secret(tmp_path, swarm_env):
    # An embedded run leaves its own secret in SWARMCTL_HOME; it must not sign tokens silently.
    home = Path(swarm_env["SWARMCTL_HOME"])
    home.mkdir(parents=True)
    write_secret(home / "cluster.secret")
    env = {key: value for key, value in swarm_env.items() if key != "SWARMCTL_SECRET_FILE"}

    created = run_swarmctl(["token", "create", "--role", "read"], env)

    assert created.returncode == 4
    assert "no cluster secret to sign the token with" in created.stderr
    assert created.stdout == ""


# --- the configuration file -----------------------------------------------------------------


def test_config_file_runs_tls_cluster(tmp_path, swarm_env):
    folder = tmp_path / "cluster"
    assert run_swarmctl(["init", str(folder), "--port", str(free_port())], swarm_env).returncode == 0
    config = str(folder / "swarm.toml")
    suite = generate_suite(tmp_path / "suite", tests=6, files=1, sleep_ms=10, failed=1)
    client = {**swarm_env, "SWARMCTL_CONFIG": config}
    coordinator = Node(["--role", "coordinator", "--config", config, "--data-dir", str(tmp_path / "coordinator")],
                       tmp_path / "coordinator.log", swarm_env)
    executor = None
    try:
        coordinator.wait_for_log(r"listening on")
        executor = Node(["--role", "executor", "--config", config, "--id", "exec-0", "--data-dir", str(tmp_path / "exec-0")],
                        tmp_path / "exec-0.log", swarm_env)
        coordinator.wait_for_log(r"executor exec-0 joined")
        process = run_swarmctl(["run", str(suite)], client)
        listing = run_swarmctl(["executors", "--json"], client, timeout=60)
        by_option = run_swarmctl(["--config", config, "executors", "--json"], swarm_env, timeout=60)
        history = run_swarmctl(["--config", config, "history", "--cluster", coordinator_address(config), "--json"], swarm_env)
        configured_history = run_swarmctl(["history", "--json"], client)  # the cluster of SWARMCTL_CONFIG, not the local folder
    finally:
        for node in (executor, coordinator):
            if node is not None:
                node.stop()

    assert process.returncode == 1, process.stdout + process.stderr
    assert "1 failed, 5 passed" in process.stdout
    assert [row["id"] for row in json.loads(listing.stdout)] == ["exec-0"]
    assert [row["id"] for row in json.loads(by_option.stdout)] == ["exec-0"], by_option.stderr
    assert history.returncode == 0, history.stderr  # the HTTP API over TLS, with the file's token and CA
    assert [entry["counts"] for entry in json.loads(history.stdout)] == [{"passed": 5, "failed": 1}]
    assert configured_history.stdout == history.stdout, configured_history.stderr
    assert "TLS certificate issued by" in coordinator.log()
    assert "no --secret-file" not in coordinator.log()


def coordinator_address(config: str) -> str:
    return tomllib.loads(Path(config).read_text())["cluster"]["coordinators"][0]


def test_config_option_missing_file(tmp_path, swarm_env):
    process = run_swarmctl(["--config", str(tmp_path / "nowhere.toml"), "executors"], swarm_env, timeout=60)

    assert process.returncode == 4
    assert "nowhere.toml: no such file" in process.stderr


def test_config_file_unknown_key(tmp_path, swarm_env):
    config = tmp_path / "swarm.toml"
    config.write_text('[coordinator]\nlisten = "127.0.0.1:0"\nlisen = "x"\n')

    process = run_swarmctl(["up", "--role", "coordinator", "--config", str(config)], swarm_env, timeout=60)

    assert process.returncode == 4
    assert "unknown key 'lisen' in [coordinator]" in process.stderr


def test_auth_init_non_loopback_host(tmp_path, swarm_env):
    folder = tmp_path / "cluster"

    created = run_swarmctl(["init", str(folder), "--host", "10.0.0.5", "--port", "7500"], swarm_env)
    invalid = run_swarmctl(["init", str(tmp_path / "other"), "--host", "coordinator.example"], swarm_env)

    assert created.returncode == 0, created.stderr
    config = (folder / "swarm.toml").read_text()
    assert 'coordinators = ["10.0.0.5:7500"]' in config
    assert 'listen = "0.0.0.0:7500"' in config
    assert 'advertise = "10.0.0.5"' in config
    assert invalid.returncode == 4
    assert "--host 'coordinator.example' is invalid" in invalid.stderr
