"""The HTTP API on a real coordinator process with a cluster secret: every call, every role, the event stream."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

import jwt
import pytest
import trio
import trio_websocket

from swarmctl.bundle import build_bundle
from swarmctl.security import load_secret, write_secret
from swarmctl.tokens import Role, issue
from tests.conftest import BIN, generate_suite, run_swarmctl
from tests.e2e.nodes import Cluster, voters

# (method, path, least role): every call of the API with the role it needs.
CALLS = [
    ("GET", "/v1/status", Role.READ),
    ("GET", "/v1/runs", Role.READ),
    ("POST", "/v1/runs", Role.SUBMIT),
    ("GET", "/v1/runs/last", Role.READ),
    ("POST", "/v1/runs/some-run/cancel", Role.SUBMIT),
    ("GET", "/v1/runs/last/report", Role.READ),
    ("GET", "/v1/runs/last/logs", Role.READ),
    ("GET", "/v1/bundles/" + "0" * 64, Role.SUBMIT),
    ("PUT", "/v1/bundles/" + "0" * 64, Role.SUBMIT),
    ("GET", "/v1/executors", Role.READ),
    ("POST", "/v1/executors/exec-0/cordon", Role.ADMIN),
    ("GET", "/v1/history", Role.READ),
    ("GET", "/v1/compare?base=last&head=last", Role.READ),
    ("DELETE", "/v1/tokens/some-token", Role.ADMIN),
    ("GET", "/v1/gossip-keys", Role.ADMIN),
    ("POST", "/v1/gossip-keys", Role.ADMIN),
    ("POST", "/v1/gossip-keys/0/use", Role.ADMIN),
    ("DELETE", "/v1/gossip-keys/7", Role.ADMIN),
    ("POST", "/v1/leader/transfer?target=127.0.0.1:1", Role.ADMIN),
]
RANK = {Role.READ: 1, Role.SUBMIT: 2, Role.ADMIN: 3, Role.JOIN: 0}


class Api:
    def __init__(self, address: str, tokens: dict[Role, str]) -> None:
        self.base = f"http://{address}"
        self.tokens = tokens

    def call(self, method: str, path: str, role: Role | None = Role.ADMIN, body: bytes | None = None, token: str | None = None):
        """Return (status, headers, body bytes) of one request."""
        headers = {}
        if token is None and role is not None:
            token = self.tokens[role]
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None and path.startswith("/v1/runs"):
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def json(self, method: str, path: str, role: Role | None = Role.ADMIN, body: dict | None = None, expect: int = 200):
        status, _, data = self.call(method, path, role, json.dumps(body).encode() if body is not None else None)
        assert status == expect, (method, path, status, data)
        return json.loads(data)


@pytest.fixture
def api(tmp_path: Path, swarm_env: dict):
    secret = tmp_path / "cluster.secret"
    write_secret(secret)
    key = load_secret(secret)
    tokens = {role: issue(key, role, subject=str(role), ttl_s=3600)[0] for role in Role}
    join = tmp_path / "join.token"
    join.write_text(tokens[Role.JOIN])
    join.chmod(0o600)
    running = Cluster(tmp_path, swarm_env)
    try:
        running.start_coordinator("--secret-file", str(secret))
        running.add_executor("exec-0", "--token-file", str(join), slots=2)
        yield running, Api(running.address, tokens)
    finally:
        running.stop()


def test_http_api_roles_on_every_call(api):
    _, client = api
    assert client.json("GET", "/openapi.json", role=None)["openapi"].startswith("3.1")
    for method, path, needed in CALLS:
        body = b"{}" if method in ("POST", "PUT") else None
        status, headers, data = client.call(method, path, role=None, body=body)
        assert status == 401, (method, path, status, data)
        assert headers["WWW-Authenticate"] == "Bearer"
        status, _, data = client.call(method, path, body=body, token="not-a-token")
        assert status == 401, (method, path, status, data)
        for role in Role:
            status, _, data = client.call(method, path, role, body=body)
            if RANK[role] < RANK[needed]:
                assert status == 403, (method, path, role, status, data)
                assert f"needs a token with role {needed}" in json.loads(data)["error"]
            else:
                assert status not in (401, 403), (method, path, role, status, data)


def test_http_api_runs_suite_end_to_end(api, tmp_path, swarm_env):
    running, client = api
    suite = generate_suite(tmp_path / "suite", tests=8, files=2, sleep_ms=10, failed=2, skipped=1)
    bundle = build_bundle(suite, tmp_path / "bundle")
    path = f"/v1/bundles/{bundle.digest}"

    assert client.json("GET", path, Role.SUBMIT) == {"digest": bundle.digest, "stored": False}
    status, _, data = client.call("PUT", path, Role.SUBMIT, body=bundle.path.read_bytes()[:-10])
    assert status == 400
    assert "sha256" in json.loads(data)["error"]
    status, _, _ = client.call("PUT", path, Role.SUBMIT, body=bundle.path.read_bytes())
    assert status == 201
    assert client.json("GET", path, Role.SUBMIT)["stored"] is True

    bad = client.call("POST", "/v1/runs", Role.SUBMIT, body=json.dumps({"suite": {"kind": "pytest"}, "colour": 1}).encode())
    assert bad[0] == 400
    assert "colour" in json.loads(bad[2])["error"]
    request = {"suite": {"kind": "pytest", "bundle": bundle.digest, "name": "suite"}, "priority": 1}
    run_id = client.json("POST", "/v1/runs", Role.SUBMIT, request, expect=202)["run_id"]

    deadline = time.monotonic() + 120
    while (run := client.json("GET", f"/v1/runs/{run_id}", Role.READ))["status"] in ("collecting", "running"):
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert run["status"] == "finished"
    assert run["exit_code"] == 1
    assert run["counts"] == {"passed": 5, "failed": 2, "skipped": 1}

    status, headers, junit = client.call("GET", f"/v1/runs/{run_id}/report?format=junit", Role.READ)
    assert status == 200
    assert headers["Content-Type"].startswith("application/xml")
    assert len(ElementTree.fromstring(junit).findall(".//testcase")) == 8
    report = client.json("GET", f"/v1/runs/{run_id}/report", Role.READ)
    assert report["summary"]["counts"]["failed"] == 2
    assert len(report["cases"]) == 8
    assert client.call("GET", f"/v1/runs/{run_id}/report?format=pdf", Role.READ)[0] == 400
    assert client.call("GET", "/v1/runs/no-such-run/report", Role.READ)[0] == 404

    history = client.json("GET", "/v1/history?limit=5", Role.READ)["runs"]
    assert [entry["run_id"] for entry in history] == [run_id]
    comparison = client.json("GET", f"/v1/compare?base={run_id}&head=last", Role.READ)
    assert comparison["new_failures"] == []
    assert comparison["added"] == []
    logs = client.json("GET", f"/v1/runs/{run_id}/logs", Role.READ)
    assert any(line["executor"] == "exec-0" for line in logs["lines"])
    assert client.json("GET", "/v1/runs/last/logs", Role.READ)["run_id"] == run_id
    assert client.json("GET", "/v1/runs", Role.READ)["runs"][0]["run_id"] == run_id
    assert client.json("POST", f"/v1/runs/{run_id}/cancel", Role.ADMIN, expect=404)["error"].endswith("is not active on this coordinator")
    # The stream of a finished run sends its results and its completion at once.
    watched = trio.run(_watch_events, running.address, client.tokens[Role.READ], f"/v1/runs/{run_id}/watch")
    assert [event["kind"] for event in watched] == ["welcome", "run_results", "complete"]
    assert len(watched[1]["results"]) == 8
    assert watched[2]["exit_code"] == 1
    unknown = trio.run(_watch_events, running.address, client.tokens[Role.READ], "/v1/runs/no-such-run/watch")
    assert unknown[-1]["kind"] == "error"
    assert "unknown" in unknown[-1]["message"]

    # The CLI reads the same runs through the API with --cluster, as it reads them from the data folder.
    env = {**swarm_env, "SWARMCTL_TOKEN": client.tokens[Role.READ]}
    commands = (["report", run_id, "-f", "json"], ["report", "last"], ["history", "--json"], ["history"], ["compare", run_id, "last", "--json"])
    for command in commands:
        remote = run_swarmctl([*command, "--cluster", running.address], env)
        local = run_swarmctl([*command, "--data-dir", str(tmp_path / "coordinator")], swarm_env)
        assert remote.returncode == local.returncode == 0, remote.stderr + local.stderr
        assert remote.stdout == local.stdout
    missing = run_swarmctl(["report", "no-such-run", "--cluster", running.address], env)
    assert missing.returncode == 4
    assert "not found" in missing.stderr
    refused = run_swarmctl(["history", "--cluster", running.address], swarm_env)
    assert refused.returncode == 4
    assert "rejected the request" in refused.stderr


async def _watch_events(address: str, token: str, path: str) -> list[dict]:
    """Return a run stream's events up to its completion or error."""
    host, port = address.rsplit(":", 1)
    headers = [(b"Authorization", f"Bearer {token}".encode())]
    events: list[dict] = []
    with trio.fail_after(30):
        async with trio_websocket.open_websocket(host, int(port), path, use_ssl=False, extra_headers=headers) as ws:
            while not events or events[-1]["kind"] not in ("complete", "error"):
                events.append(json.loads(await ws.get_message()))
    return events


def test_http_api_executor_control_and_token_revocation(api):
    running, client = api
    executors = client.json("GET", "/v1/executors", Role.READ)["executors"]
    assert [(row["id"], row["slots"]) for row in executors] == [("exec-0", 2)]
    assert client.json("POST", "/v1/executors/exec-0/cordon")["executor_id"] == "exec-0"
    assert client.json("GET", "/v1/executors", Role.READ)["executors"][0]["state"] == "cordoned"
    client.json("POST", "/v1/executors/exec-0/uncordon")
    assert client.json("GET", "/v1/executors", Role.READ)["executors"][0]["state"] == "active"
    assert client.call("POST", "/v1/executors/nobody/drain")[0] == 404
    assert client.call("POST", "/v1/executors/exec-0/explode")[0] == 404

    status = client.json("GET", "/v1/status", Role.READ)
    assert status["state"] == "single"
    assert status["leader"] == running.address
    refused = client.json("POST", f"/v1/leader/transfer?target={running.address}", expect=409)
    assert "without --peers" in refused["error"]

    read_id = _token_id(client.tokens[Role.READ])
    assert client.json("DELETE", f"/v1/tokens/{read_id}")["token_id"] == read_id
    status, _, data = client.call("GET", "/v1/runs", Role.READ)
    assert status == 401
    assert "revoked" in json.loads(data)["error"]


async def test_http_api_event_stream(api):
    running, client = api
    host, port = running.address.rsplit(":", 1)
    headers = [(b"Authorization", f"Bearer {client.tokens[Role.READ]}".encode())]
    with trio.fail_after(30):
        async with trio_websocket.open_websocket(host, int(port), "/v1/events?interval_s=0.2", use_ssl=False, extra_headers=headers) as ws:
            kinds = []
            while "executors" not in kinds or "runs" not in kinds:
                event = json.loads(await ws.get_message())
                kinds.append(event["kind"])
                if event["kind"] == "executors":
                    assert [row["id"] for row in event["executors"]] == ["exec-0"]
            assert kinds[0] == "welcome"

        with pytest.raises(trio_websocket.HandshakeError):
            async with trio_websocket.open_websocket(host, int(port), "/v1/events", use_ssl=False):
                pass
        bad_headers = [(b"Authorization", f"Bearer {client.tokens[Role.JOIN]}".encode())]
        with pytest.raises(trio_websocket.HandshakeError):
            async with trio_websocket.open_websocket(host, int(port), "/v1/events", use_ssl=False, extra_headers=bad_headers):
                pass


def test_http_api_matches_its_schema(api, tmp_path):
    """schemathesis generates requests from /openapi.json: no 5xx, every response matches the document, auth holds."""
    running, client = api
    process = subprocess.run(
        [
            str(BIN / "st"), "run", f"http://{running.address}/openapi.json",
            "--header", f"Authorization: Bearer {client.tokens[Role.ADMIN]}",
            # Every check but one: a schema cannot state that a bundle's bytes must hash to its digest.
            "--checks", "all",
            "--exclude-checks", "positive_data_acceptance",
            "--max-examples", "25",
            "--seed", "1",
            "--workers", "1",
            # Generated token ids must not revoke the token that the run uses.
            "--exclude-path", "/v1/tokens/{token_id}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert process.returncode == 0, process.stdout[-8000:] + process.stderr[-2000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", process.stdout)
    assert generated, process.stdout[-4000:]
    assert int(generated[1]) >= 300, process.stdout[-4000:]
    assert generated[1] == generated[2], process.stdout[-4000:]
    assert running.coordinator.process.poll() is None


def _token_id(token: str) -> str:
    return jwt.decode(token, options={"verify_signature": False})["jti"]


def test_http_api_on_replicated_coordinators(tmp_path, swarm_env):
    """The leader serves the API. A follower returns its own status and redirects the rest to the leader."""
    with voters(tmp_path, swarm_env) as cluster:
        leader = cluster.status()["leader"]
        follower = next(address for address in cluster.addresses if address != leader)
        api = Api(follower, {})

        status = api.json("GET", "/v1/status", role=None)
        assert status["state"] == "follower"
        assert status["leader"] == leader
        assert api.json("GET", "/openapi.json", role=None)["paths"]

        request = urllib.request.Request(f"http://{follower}/v1/runs?x=1")
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(request, timeout=30)
        assert redirect.value.code == 307
        assert redirect.value.headers["Location"] == f"http://{leader}/v1/runs?x=1"
        # A client that follows redirects gets the leader's response.
        assert api.json("GET", "/v1/runs", role=None) == {"runs": []}
        assert Api(leader, {}).json("GET", "/v1/status", role=None)["state"] == "leader"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


BAD_NUMBERS = [
    ("start_at", "Infinity", "Infinity is not a number that JSON allows"),
    ("deadline_s", "NaN", "NaN is not a number that JSON allows"),
    ("priority", str(10**30), "priority 1000000000000000000000000000000 is invalid"),
    ("deadline_s", "-5", "deadline -5 is invalid"),
    ("start_at", "1e20", "start time 1e+20 is invalid"),
    ("durations", '{"t::a": 1e300}', "expected duration 1e+300 of 't::a' is invalid"),
]


def test_http_api_rejects_bad_numbers(api, tmp_path):
    running, client = api
    suite = generate_suite(tmp_path / "suite", tests=1, files=1, sleep_ms=0)
    bundle = build_bundle(suite, tmp_path / "bundle")
    assert client.call("PUT", f"/v1/bundles/{bundle.digest}", Role.SUBMIT, body=bundle.path.read_bytes())[0] == 201

    for field, value, message in BAD_NUMBERS:
        body = '{"suite": {"kind": "pytest", "bundle": "%s", "name": "suite"}, "%s": %s}' % (bundle.digest, field, value)
        status, _, data = client.call("POST", "/v1/runs", Role.SUBMIT, body=body.encode())
        assert status == 400, (field, value, data)
        assert message in json.loads(data)["error"], (field, value, data)

    assert client.json("GET", "/v1/runs", Role.READ) == {"runs": []}
