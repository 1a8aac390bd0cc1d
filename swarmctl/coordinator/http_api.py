"""The HTTP API of a coordinator: REST calls and a WebSocket event stream on the node's own port.

Each call is turned into the request that ``swarmctl`` clients send as a msgpack frame and
goes through the same handler, so roles, validation and acknowledgement after commit are the
same on both paths. Calls authenticate with ``Authorization: Bearer TOKEN``: a missing,
invalid or revoked token gets 401, a token whose role does not allow the call 403.
``GET /openapi.json`` describes every call and needs no token.

Reports, history, comparison and log queries read the coordinator's databases through
read-only connections in a worker thread, so a large report does not stall the coordinator.
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
import trio_websocket
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Route

from swarmctl import protocol
from swarmctl.cluster.transport import Peer, PeerGone
from swarmctl.coordinator.event_hub import MAX_INTERVAL_S, MIN_INTERVAL_S
from swarmctl.coordinator.log_collector import LOGS_DB, LogReader
from swarmctl.coordinator.openapi import build_spec
from swarmctl.errors import BundleError, ProtocolError, SwarmError, UsageError
from swarmctl.reports.comparison import DEFAULT_THRESHOLD, compare_runs
from swarmctl.reports.formats import FORMATS, MEDIA_TYPES, render_report
from swarmctl.reports.history import load_history
from swarmctl.reports.run_store import open_run_store
from swarmctl.tokens import AuthError, Role, Token, verify
from swarmctl.wire_types import check_fields

if TYPE_CHECKING:
    from swarmctl.coordinator.node import Coordinator

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 30.0  # a call whose reply waits for a commit longer than this gets 503
MAX_LOG_LINES = 10_000
EXECUTOR_ACTIONS = ("drain", "cordon", "uncordon")
SUBMIT_FIELDS = {name for name in protocol.SubmitRun.__dataclass_fields__}
_RUN_STREAM = re.compile(r"/v1/runs/([^/]+)/watch")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class JSONResponse(StarletteJSONResponse):
    """A JSON response in which infinite and NaN numbers, which JSON lacks, are null."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)  # Starlette encodes with allow_nan=False
        except ValueError:
            return super().render(finite(content))


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def bearer_token(headers, secret: bytes | None, revoked: set[str]) -> tuple[Token | None, str]:
    """Return the verified token of ``Authorization: Bearer TOKEN`` and its text; (None, "") without a secret."""
    if secret is None:
        return None, ""
    header = headers.get("authorization", "")
    scheme, _, text = header.partition(" ")
    text = text.strip()
    if scheme.lower() != "bearer" or not text:
        raise ApiError(
            401, "this call needs the header 'Authorization: Bearer TOKEN'; create a token with `swarmctl token create`"
        )
    try:
        token = verify(secret, text)
    except AuthError as exc:
        raise ApiError(401, str(exc)) from None
    if token.token_id in revoked:
        raise ApiError(401, f"token {token.token_id} was revoked")
    return token, text


def require(token: Token | None, role: Role, call: str) -> None:
    if token is not None and not token.allows(role):
        raise ApiError(403, f"permission denied: {call} needs a token with role {role} or higher; this token ({token.token_id}) has role {token.role}")


def message_json(message: protocol.Message) -> dict[str, Any]:
    """Convert a protocol message to a JSON object: its kind and its fields, without any token."""
    data = {"kind": message.KIND}
    for name in message.__dataclass_fields__:
        if name != "token":
            data[name] = getattr(message, name)
    return data


class CoordinatorApi:
    """The Starlette application of one coordinator."""

    def __init__(self, coordinator: Coordinator, status: Callable[[], protocol.NodeStatus] | None = None) -> None:
        self.coordinator = coordinator
        self.node_status = status or coordinator.status  # a voter's status names its peers
        self.spec = build_spec()
        routes = [
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/v1/status", self._status, methods=["GET"]),
            Route("/v1/runs", self.runs, methods=["GET", "POST"]),
            Route("/v1/runs/{run_id}", self._get_run, methods=["GET"]),
            Route("/v1/runs/{run_id}/cancel", self._cancel_run, methods=["POST"]),
            Route("/v1/runs/{run_id}/report", self._report, methods=["GET"]),
            Route("/v1/runs/{run_id}/logs", self._logs, methods=["GET"]),
            Route("/v1/bundles/{digest}", self.bundle, methods=["GET", "PUT"]),
            Route("/v1/executors", self._list_executors, methods=["GET"]),
            Route("/v1/executors/{executor_id}/{action}", self._control_executor, methods=["POST"]),
            Route("/v1/history", self._history, methods=["GET"]),
            Route("/v1/compare", self._compare, methods=["GET"]),
            Route("/v1/tokens/{token_id}", self._revoke_token, methods=["DELETE"]),
            Route("/v1/gossip-keys", self._gossip_keys, methods=["GET", "POST"]),
            Route("/v1/gossip-keys/{generation:int}/use", self._use_gossip_key, methods=["POST"]),
            Route("/v1/gossip-keys/{generation:int}", self._remove_gossip_key, methods=["DELETE"]),
            Route("/v1/leader/transfer", self._transfer_leadership, methods=["POST"]),
        ]
        handlers = {404: self._not_found, 405: self._not_allowed, ApiError: api_error_response}
        self.app = Starlette(routes=routes, exception_handlers=handlers)

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)

    # --- plumbing ---------------------------------------------------------------------------

    def _authorize(self, request: Request, role: Role, call: str) -> tuple[Token | None, str]:
        token, text = bearer_token(request.headers, self.coordinator.secret, self.coordinator.machine.revoked_tokens)
        require(token, role, call)
        return token, text

    async def _call(self, request: Request, message: protocol.Message, token: Token | None) -> protocol.Message:
        """Hand ``message`` to the coordinator as a client request; return its first reply."""
        from swarmctl.coordinator.node import Session  # node imports this module

        send, receive = trio.open_memory_channel(math.inf)
        client = request.client
        hello = protocol.Hello(
            protocol.PROTOCOL_VERSION, protocol.ROLE_CLIENT, f"http:{client.host}:{client.port}" if client else "http"
        )
        session = Session(None, hello, send, trio.current_time(), token=token)
        with trio.move_on_after(REPLY_TIMEOUT_S):
            try:
                await self.coordinator.handle_request(session, message)
            except SwarmError as exc:
                # The request was valid, but the coordinator could not carry it out (its database, a lost leadership).
                log.error("HTTP request %s failed: %s", message.KIND, exc)
                raise ApiError(503, str(exc)) from None
            reply = await receive.receive()
            if isinstance(reply, protocol.ErrorReply):
                raise ApiError(_status_of(reply), reply.message)
            return reply
        raise ApiError(503, f"the coordinator did not reply within {REPLY_TIMEOUT_S:g}s; try again")

    async def _read_json(self, request: Request) -> dict[str, Any]:
        body = b""
        limit = self.coordinator.limits.http_body_max_bytes
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"the request body is larger than the limit of {limit} bytes (http_body_max_bytes)")
        try:
            data = json.loads(body, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return data

    async def _in_thread(self, reader: Callable[[], Any]) -> Any:
        try:
            return await trio.to_thread.run_sync(reader)
        except UsageError as exc:
            raise ApiError(404 if "not found" in str(exc) else 400, self._public(str(exc))) from None
        except SwarmError as exc:
            log.error("HTTP request failed: %s", exc)
            raise ApiError(503, self._public(str(exc))) from None

    def _public(self, message: str) -> str:
        """Return ``message`` without the coordinator's data folder, which callers have no use for."""
        return message.replace(str(self.coordinator.data_dir), "the coordinator's data folder")

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return error_response(404, f"no such path {request.url.path}; GET /openapi.json lists the API")

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        message = f"{request.method} is not allowed on {request.url.path}; GET /openapi.json lists the API"
        return error_response(405, message, getattr(exc, "headers", None))

    # --- endpoints --------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self.spec)

    async def _status(self, request: Request) -> Response:
        self._authorize(request, Role.READ, "GET /v1/status")
        return JSONResponse(status_json(self.node_status()))

    async def runs(self, request: Request) -> Response:
        return await (self._submit_run if request.method == "POST" else self._list_runs)(request)

    async def _list_runs(self, request: Request) -> Response:
        token, _ = self._authorize(request, Role.READ, "GET /v1/runs")
        reply = await self._call(request, protocol.ListRuns(), token)
        return JSONResponse({"runs": reply.runs})

    async def _get_run(self, request: Request) -> Response:
        token, _ = self._authorize(request, Role.READ, "GET /v1/runs/{run_id}")
        run_id = request.path_params["run_id"]
        reply = await self._call(request, protocol.ListRuns(), token)
        for row in reply.runs:
            if row["run_id"] == run_id:
                return JSONResponse(row)
        data_dir = self.coordinator.data_dir

        def read() -> dict[str, Any]:
            with open_run_store(data_dir) as store:
                header = store.resolve(run_id)
                counts = store.run_counts([header.run_id])[header.run_id]
            return {
                "run_id": header.run_id,
                "suite": header.suite_name,
                "status": header.status,
                "submitted_at": header.submitted_at,
                "finished_at": header.finished_at,
                "exit_code": header.exit_code,
                "error": header.error,
                "total": header.total,
                "done": counts.recorded,
                "counts": dict(counts.counts),
            }

        return JSONResponse(await self._in_thread(read))

    async def _submit_run(self, request: Request) -> Response:
        token, _ = self._authorize(request, Role.SUBMIT, "POST /v1/runs")
        data = await self._read_json(request)
        message = submit_message(data)
        reply = await self._call(request, message, token)
        return JSONResponse({"run_id": reply.run_id}, status_code=202)

    async def _cancel_run(self, request: Request) -> Response:
        token, _ = self._authorize(request, Role.SUBMIT, "POST /v1/runs/{run_id}/cancel")
        run_id = request.path_params["run_id"]
        reason = request.query_params.get("reason") or "cancelled through the HTTP API"
        reply = await self._call(request, protocol.CancelRun(run_id, reason[:500]), token)
        return JSONResponse({"run_id": reply.run_id, "cancelled": True})

    async def _report(self, request: Request) -> Response:
        self._authorize(request, Role.READ, "GET /v1/runs/{run_id}/report")
        run_id = request.path_params["run_id"]
        report_format = request.query_params.get("format", "json")
        if report_format not in FORMATS:
            raise ApiError(400, f"format {report_format!r} is invalid: use one of {', '.join(FORMATS)}")
        data_dir = self.coordinator.data_dir

        def read() -> tuple[bytes, str]:
            with open_run_store(data_dir) as store:
                run = store.load(run_id)
            return render_report(run, report_format), run.header.run_id

        body, resolved = await self._in_thread(read)
        return Response(body, media_type=MEDIA_TYPES[report_format], headers={protocol.RUN_ID_HEADER: resolved})

    async def _logs(self, request: Request) -> Response:
        self._authorize(request, Role.READ, "GET /v1/runs/{run_id}/logs")
        run_id = request.path_params["run_id"]
        chosen = request.query_params.getlist("executor")
        limit = _int_param(request, "limit", MAX_LOG_LINES, 1, MAX_LOG_LINES)
        data_dir = self.coordinator.data_dir

        def read() -> tuple[str, list[dict[str, Any]]]:
            with open_run_store(data_dir) as store:
                run = store.load(run_id)
            executors = [e for e in run.summary.executors if not chosen or e in chosen]
            path = data_dir / LOGS_DB
            if not path.is_file():
                return run.header.run_id, []
            reader = LogReader(path)
            try:
                header = run.header
                until = header.finished_at if header.finished_at is not None else math.inf
                lines = reader.lines(executors, since=header.submitted_at, until=until)
            finally:
                reader.close()
            return run.header.run_id, [
                {"id": line.id, "executor": line.executor, "time": line.time, "level": line.level, "logger": line.logger, "message": line.message}
                for line in lines[-limit:]
            ]

        resolved, lines = await self._in_thread(read)
        return JSONResponse({"run_id": resolved, "lines": lines})

    async def bundle(self, request: Request) -> Response:
        return await (self._put_bundle if request.method == "PUT" else self._get_bundle)(request)

    async def _get_bundle(self, request: Request) -> Response:
        self._authorize(request, Role.SUBMIT, "GET /v1/bundles/{digest}")
        digest = _digest(request)
        return JSONResponse({"digest": digest, "stored": self.coordinator.bundles.has_archive(digest)})

    async def _put_bundle(self, request: Request) -> Response:
        self._authorize(request, Role.SUBMIT, "PUT /v1/bundles/{digest}")
        digest = _digest(request)
        try:
            with self.coordinator.bundles.open_writer(digest) as writer:
                async for chunk in request.stream():
                    writer.write(chunk)
                writer.commit()
        except BundleError as exc:
            raise ApiError(413 if "larger than the limit" in str(exc) else 400, str(exc)) from None
        except ClientDisconnect:
            log.info("upload of bundle %s stopped: the client disconnected", digest[:12])
            return Response(status_code=400)  # the client is gone, so no one reads it
        log.info("stored bundle %s uploaded over HTTP", digest[:12])
        return JSONResponse({"digest": digest, "stored": True}, status_code=201)

    async def _list_executors(self, request: Request) -> Response:
        token, _ = self._authorize(request, Role.READ, "GET /v1/executors")
        reply = await self._call(request, protocol.ListExecutors(), token)
        return JSONResponse({"executors": reply.executors})

    async def _control_executor(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in EXECUTOR_ACTIONS:
            raise ApiError(404, f"no executor action {action!r}: use {', '.join(EXECUTOR_ACTIONS)}")
        token, _ = self._authorize(request, Role.ADMIN, f"POST /v1/executors/{{executor_id}}/{action}")
        reply = await self._call(request, protocol.ControlExecutor(action, request.path_params["executor_id"]), token)
        return JSONResponse({"executor_id": reply.executor_id, "state": reply.state})

    async def _history(self, request: Request) -> Response:
        self._authorize(request, Role.READ, "GET /v1/history")
        suite = request.query_params.get("suite") or None
        limit = _int_param(request, "limit", 20, 1, 10_000)
        data_dir = self.coordinator.data_dir

        def read() -> list[dict[str, Any]]:
            with open_run_store(data_dir) as store:
                entries = load_history(store.runs(), store.run_counts, suite=suite, limit=limit)
            return [entry.to_json() for entry in entries]

        return JSONResponse({"runs": await self._in_thread(read)})

    async def _compare(self, request: Request) -> Response:
        self._authorize(request, Role.READ, "GET /v1/compare")
        base, head = request.query_params.get("base"), request.query_params.get("head")
        if not base or not head:
            raise ApiError(400, "give the two runs to compare as ?base=RUN&head=RUN")
        threshold = _float_param(request, "threshold", DEFAULT_THRESHOLD)
        if not 0 < threshold <= 1000:
            raise ApiError(400, f"threshold {threshold} is invalid: it must be a fraction greater than 0, such as 0.5")
        data_dir = self.coordinator.data_dir

        def read() -> dict[str, Any]:
            with open_run_store(data_dir) as store:
                before, after = store.load(base), store.load(head)
            comparison = compare_runs(before.header.run_id, before.results, after.header.run_id, after.results, threshold=threshold)
            return comparison.to_json()

        return JSONResponse(await self._in_thread(read))

    async def _revoke_token(self, request: Request) -> Response:
        token, _ = self._authorize(request, Role.ADMIN, "DELETE /v1/tokens/{token_id}")
        token_id = request.path_params["token_id"]
        if not 0 < len(token_id) <= 200:
            raise ApiError(400, "a token id has 1 to 200 characters; `swarmctl token create` prints it")
        reply = await self._call(request, protocol.RevokeToken(token_id), token)
        return JSONResponse({"token_id": reply.token_id, "closed_connections": reply.connections_closed})

    async def _gossip_keys(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._gossip_key_call(request, "POST /v1/gossip-keys", protocol.GossipKeyRequest("install"))
        return await self._gossip_key_call(request, "GET /v1/gossip-keys", protocol.GossipKeyRequest("list"))

    async def _use_gossip_key(self, request: Request) -> Response:
        generation = request.path_params["generation"]
        return await self._gossip_key_call(request, "POST /v1/gossip-keys/{generation}/use", protocol.GossipKeyRequest("use", generation))

    async def _remove_gossip_key(self, request: Request) -> Response:
        generation = request.path_params["generation"]
        return await self._gossip_key_call(request, "DELETE /v1/gossip-keys/{generation}", protocol.GossipKeyRequest("remove", generation))

    async def _gossip_key_call(self, request: Request, call: str, message: protocol.GossipKeyRequest) -> Response:
        token, _ = self._authorize(request, Role.ADMIN, call)
        reply = await self._call(request, message, token)
        return JSONResponse({"generations": reply.generations, "primary": reply.primary})

    async def _transfer_leadership(self, request: Request) -> Response:
        self._authorize(request, Role.ADMIN, "POST /v1/leader/transfer")
        raise ApiError(409, "this coordinator was started without --peers, so it has no other voter to hand leadership to")

    async def websocket(self, request: trio_websocket.WebSocketRequest, name: str) -> None:
        """Serve a WebSocket upgrade other than the protocol's: the event stream and a run's stream."""
        target = urllib.parse.urlsplit(request.path)
        watched = _RUN_STREAM.fullmatch(target.path)
        if target.path != "/v1/events" and watched is None:
            await _reject(request, 404, f"no WebSocket at {target.path}; the event streams are at /v1/events and /v1/runs/{{run_id}}/watch")
            return
        try:
            token, text = bearer_token(_Headers(request.headers), self.coordinator.secret, self.coordinator.machine.revoked_tokens)
            require(token, Role.READ, f"the event stream {target.path}")
            if watched is not None:
                first: protocol.Message = protocol.WatchRun(urllib.parse.unquote(watched.group(1)))
            else:
                first = subscribe_message(dict(urllib.parse.parse_qsl(target.query)))
        except ApiError as exc:
            log.warning("event stream for %s rejected with %d: %s", name, exc.status, exc)
            await _reject(request, exc.status, str(exc))
            return
        connection = await request.accept()
        hello = protocol.Hello(protocol.PROTOCOL_VERSION, protocol.ROLE_CLIENT, f"http:{name}", token=text)
        await self.coordinator.serve_peer(EventPeer(connection, f"http:{name}", first), hello)


class ReplicaApi:
    """The HTTP API of a voter: served by its coordinator while it leads; followers redirect to the leader.

    A follower serves ``/openapi.json`` and ``/v1/status`` itself, redirects other calls
    with 307 to the same path on the leader, and returns 503 while no leader is known.
    """

    def __init__(self, replica: Any) -> None:
        self.replica = replica
        self.spec = build_spec()
        self._apis: dict[int, CoordinatorApi] = {}  # id of the leading coordinator -> its API

    async def __call__(self, scope, receive, send) -> None:
        coordinator = self.replica.leading_coordinator()
        if coordinator is not None and scope.get("path") != "/v1/leader/transfer":
            # A call belongs to this leadership, and ends when the leadership does.
            with self.replica.leader_connection():
                await self._api_of(coordinator)(scope, receive, send)
            return
        # A leader's transfer is served outside the leadership's scope: the handover ends it
        # before the reply is sent.
        request = Request(scope, receive)
        handler = self._transfer if coordinator is not None else self._follower
        try:
            response = await handler(request)
        except ApiError as exc:
            response = api_error_response(request, exc)
        await response(scope, receive, send)

    async def _transfer(self, request: Request) -> Response:
        if request.method != "POST":
            return error_response(405, f"{request.method} is not allowed on {request.url.path}; GET /openapi.json lists the API", {"Allow": "POST"})
        token, _ = bearer_token(request.headers, self.replica.secret, self.replica.machine.revoked_tokens)
        require(token, Role.ADMIN, "POST /v1/leader/transfer")
        target = request.query_params.get("target", "")
        if not target:
            raise ApiError(400, "the query parameter target is missing: give the voter to lead next as ?target=HOST:PORT, one of --peers")
        try:
            status = self.replica.transfer(target)
        except UsageError as exc:
            raise ApiError(409, str(exc)) from None
        return JSONResponse(status_json(status))

    def _api_of(self, coordinator: Coordinator) -> CoordinatorApi:
        api = self._apis.get(id(coordinator))
        if api is None or api.coordinator is not coordinator:
            self._apis = {id(coordinator): CoordinatorApi(coordinator, self.replica.status)}
            api = self._apis[id(coordinator)]
        return api

    async def _follower(self, request: Request) -> Response:
        if request.url.path == "/openapi.json":
            return JSONResponse(self.spec)
        replica = self.replica
        if request.url.path == "/v1/status":
            token, _ = bearer_token(request.headers, replica.secret, replica.machine.revoked_tokens)
            require(token, Role.READ, "GET /v1/status")
            return JSONResponse(status_json(replica.status()))
        leader = replica.node.leader_id
        if not leader or leader == replica.node_id:
            return error_response(503, f"{replica.node_id} knows no leader yet; try again shortly", {"Retry-After": "1"})
        query = f"?{request.url.query}" if request.url.query else ""
        return Response(status_code=307, headers={"Location": f"{self._scheme}://{leader}{request.url.path}{query}"})

    @property
    def _scheme(self) -> str:
        # Voters with the cluster CA serve TLS, but Hypercorn receives only the decrypted stream.
        return "https" if self.replica.client_ssl is not None else "http"

    async def websocket(self, request: trio_websocket.WebSocketRequest, name: str) -> None:
        """Serve the event stream while leading; followers redirect the upgrade to the leader."""
        coordinator = self.replica.leading_coordinator()
        if coordinator is not None:
            with self.replica.leader_connection():
                await self._api_of(coordinator).websocket(request, name)
            return
        leader = self.replica.node.leader_id
        if not leader or leader == self.replica.node_id:
            await _reject(request, 503, f"{self.replica.node_id} knows no leader yet; try again shortly", {"Retry-After": "1"})
            return
        scheme = "wss" if self.replica.client_ssl is not None else "ws"
        await _reject(request, 307, f"the leader is {leader}", {"Location": f"{scheme}://{leader}{request.path}"})


class EventPeer(Peer):
    """The coordinator's view of an event-stream WebSocket: one request in (``Subscribe`` or ``WatchRun``), JSON events out."""

    def __init__(self, connection: trio_websocket.WebSocketConnection, name: str, first: protocol.Message) -> None:
        self._connection = connection
        self.name = name
        self._first: protocol.Message | None = first

    async def send(self, message: protocol.Message) -> None:
        try:
            await self._connection.send_message(json_text(message_json(message)))
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(f"{self.name}: connection closed") from exc

    async def receive(self) -> protocol.Message:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        # Frames from the client are not requests here; only its close matters.
        try:
            while True:
                await self._connection.get_message()
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(f"{self.name}: connection closed") from exc

    async def check_alive(self, timeout_s: float) -> None:
        raise NotImplementedError("the coordinator does not ping event-stream clients")

    async def aclose(self) -> None:
        await self._connection.aclose()


class _Headers:
    """Case-insensitive lookup in a WebSocket request's raw headers."""

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}

    def get(self, name: str, default: str = "") -> str:
        return self._headers.get(name.lower(), default)


async def _reject(request: trio_websocket.WebSocketRequest, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    extra = [(b"content-type", b"application/json")]
    if status == 401:
        extra.append((b"www-authenticate", b"Bearer"))
    extra += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await request.reject(status, extra_headers=extra, body=json.dumps({"error": message}).encode())


def json_text(value: Any) -> str:
    """Encode ``value`` as JSON text, with null for infinite and NaN floats, which JSON lacks.

    Such floats are rare, so the walk of ``finite`` over every nested value, which takes
    about as long as the encoding, runs only when the plain encoding rejects one.
    """
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(finite(value))


def finite(value: Any) -> Any:
    """Replace infinite and NaN floats, which JSON cannot express, by None, in nested lists and dicts."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def api_error_response(request: Request, exc: ApiError) -> JSONResponse:
    """Log a failed call and return its error response; Starlette calls this for every ApiError a handler raises."""
    client = request.client
    where = f"{client.host}:{client.port}" if client else "unknown client"
    if exc.status in (401, 403):
        log.warning("HTTP %s %s from %s rejected with %d: %s", request.method, request.url.path, where, exc.status, exc)
    else:
        log.info("HTTP %s %s from %s failed with %d: %s", request.method, request.url.path, where, exc.status, exc)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return error_response(exc.status, str(exc), headers)


def status_json(status: protocol.NodeStatus) -> dict[str, Any]:
    data = message_json(status)
    data.pop("kind")
    return data


def submit_message(data: dict[str, Any]) -> protocol.SubmitRun:
    """Check a ``POST /v1/runs`` body and return its ``SubmitRun``; raise ApiError naming the bad field."""
    unknown = sorted(set(data) - SUBMIT_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown fields {unknown}: the fields are {', '.join(sorted(SUBMIT_FIELDS))}")
    if "suite" not in data:
        raise ApiError(400, "the field 'suite' is missing: give {kind, bundle, name} of a bundle uploaded with PUT /v1/bundles/{digest}")
    try:
        check_fields("submit", protocol.SubmitRun, data)
        suite = data["suite"]
        suite_fields = set(protocol.SuiteSpec.__dataclass_fields__)
        if set(suite) - suite_fields or not {"kind", "bundle", "name"} <= set(suite):
            raise ProtocolError(f"'suite' needs kind, bundle and name, and may have {', '.join(sorted(suite_fields - {'kind', 'bundle', 'name'}))}")
        spec = protocol.SuiteSpec.from_wire(suite)
        if spec.kind not in ("pytest", "command") or not isinstance(spec.bundle, str) or not _DIGEST.fullmatch(spec.bundle):
            raise ProtocolError("'suite' needs kind pytest or command and bundle, the sha256 of an uploaded bundle")
        if not isinstance(spec.name, str) or not isinstance(spec.python, str) or not all(isinstance(arg, str) for arg in spec.pytest_args):
            raise ProtocolError("'suite' fields name, python and pytest_args must be text")
        if spec.timeout is not None and (not isinstance(spec.timeout, (int, float)) or isinstance(spec.timeout, bool) or not spec.timeout > 0):
            raise ProtocolError("'suite' field timeout must be a number of seconds above 0")
    except (ProtocolError, TypeError) as exc:
        raise ApiError(400, str(exc).replace("submit frame has", "the run has")) from None
    return protocol.SubmitRun(**data)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number that JSON allows")


def subscribe_message(params) -> protocol.Subscribe:
    interval = params.get("interval_s", "1")
    try:
        interval_s = float(interval)
    except ValueError:
        raise ApiError(400, f"interval_s {interval!r} is invalid: give seconds such as 1 or 0.5") from None
    if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
        raise ApiError(400, f"interval_s {interval_s:g} is invalid: it must be between {MIN_INTERVAL_S:g} and {MAX_INTERVAL_S:g}")
    flags = {}
    for name in ("output", "logs"):
        value = params.get(name, "false").lower()
        if value not in ("true", "false", "1", "0"):
            raise ApiError(400, f"{name} {value!r} is invalid: use true or false")
        flags[name] = value in ("true", "1")
    return protocol.Subscribe(params.get("run_id", ""), flags["output"], flags["logs"], interval_s)


def _status_of(reply: protocol.ErrorReply) -> int:
    """Return the HTTP status for a coordinator's error reply to a request."""
    text = reply.message
    if text.startswith("permission denied"):
        return 403
    if any(phrase in text for phrase in ("is unknown", "is not active", "is not connected", "not found")):
        return 404
    if "was not uploaded" in text:
        return 409  # upload the bundle first
    if text.startswith("cannot read"):
        return 503  # its database failed, not the request
    return 400


def _digest(request: Request) -> str:
    digest = request.path_params["digest"]
    if not _DIGEST.fullmatch(digest):
        raise ApiError(400, f"bundle digest {digest[:80]!r} is invalid: it is the sha256 of the archive, 64 lowercase hex digits")
    return digest


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} {text[:40]!r} is invalid: give a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} {value} is invalid: it must be between {low} and {high}")
    return value


def _float_param(request: Request, name: str, default: float) -> float:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise ApiError(400, f"{name} {text[:40]!r} is invalid: give a number") from None

