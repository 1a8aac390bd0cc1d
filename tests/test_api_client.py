"""The HTTP API client against scripted HTTP servers on loopback: what it repeats and what it does not."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from swarmctl import protocol
from swarmctl.api_client import ApiClient, EventStream
from swarmctl.errors import ConnectionFailed, ProtocolError, SwarmError


class Script(http.server.BaseHTTPRequestHandler):
    """Reply to each request with the next (status, headers) of the server's script; None closes without a reply."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append(self.command)
        step = self.server.script.pop(0) if self.server.script else (200, {})
        if step is None:
            self.close_connection = True
            self.connection.close()
            return
        status, headers = step
        body = json.dumps({"run_id": "r1"} if status == 200 else {"error": "busy"}).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@contextmanager
def scripted(script: list) -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), Script)
    server.script, server.seen = list(script), []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def client_of(server: http.server.HTTPServer) -> ApiClient:
    return ApiClient([server.server_address[:2]], "", None)


def test_post_not_repeated_after_busy_reply():
    with scripted([(503, {})]) as server:
        with pytest.raises(SwarmError, match="HTTP 503: busy"):
            client_of(server).request("POST", "/v1/runs", json_body={})

    assert server.seen == ["POST"]


def test_post_repeated_while_no_leader():
    with scripted([(503, {"Retry-After": "1"}), (200, {})]) as server:
        body, _ = client_of(server).request("POST", "/v1/runs", json_body={})

    assert json.loads(body) == {"run_id": "r1"}
    assert server.seen == ["POST", "POST"]


def test_post_not_repeated_when_reply_lost():
    with scripted([None]) as server:
        with pytest.raises(ConnectionFailed, match="failed after it was sent"):
            client_of(server).request("POST", "/v1/runs", json_body={})

    assert server.seen == ["POST"]


def test_get_repeated_on_next_address_when_reply_lost():
    with scripted([None]) as broken, scripted([(200, {})]) as working:
        client = ApiClient([broken.server_address[:2], working.server_address[:2]], "", None)
        body, _ = client.request("GET", "/v1/runs")

    assert json.loads(body) == {"run_id": "r1"}
    assert client.addresses[0] == working.server_address[:2]


def test_proxy_settings_ignored(monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with scripted([(200, {})]) as server:
        body, _ = client_of(server).request("GET", "/v1/runs")

    assert json.loads(body) == {"run_id": "r1"}


class Frames:
    """A stand-in for a WebSocket connection that returns the given text messages in order."""

    def __init__(self, *events: dict) -> None:
        self.messages = [json.dumps(event) for event in events]

    async def get_message(self) -> str:
        return self.messages.pop(0)


def welcome(version: int) -> dict:
    return {"kind": "welcome", "version": version, "coordinator_id": "c", "term": 1}


def test_stream_skips_welcome_of_same_version():
    runs = {"kind": "runs", "runs": []}
    stream = EventStream(Frames(welcome(protocol.PROTOCOL_VERSION), runs), "127.0.0.1:7400")

    assert trio.run(stream.receive) == protocol.RunList([])


def test_stream_rejects_other_protocol_version():
    stream = EventStream(Frames(welcome(protocol.PROTOCOL_VERSION - 1)), "127.0.0.1:7400")

    with pytest.raises(ProtocolError, match="use the same swarmctl release"):
        trio.run(stream.receive)
