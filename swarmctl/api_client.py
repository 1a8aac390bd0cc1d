"""The client side of the coordinator's HTTP API, which every client command uses.

Calls are plain HTTP requests (urllib, in a worker thread when the caller runs in Trio); the
event streams are WebSockets that send one JSON object per event. Both carry the token as
``Authorization: Bearer TOKEN`` and use TLS when a CA certificate is configured.

Any coordinator of a replicated cluster can take a call. A follower redirects it with 307
to the leader, and the next attempt goes there. While the coordinators elect a leader they
return 503, and the client waits up to ``ELECTION_WAIT_S`` for one.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from swarmctl import protocol
from swarmctl.cluster.transport import PeerGone, describe_failure, format_address, open_client_websocket
from swarmctl.credentials import client_tls, client_token
from swarmctl.errors import ConnectionFailed, ProtocolError, SwarmError, UsageError
from swarmctl.tokens import AuthError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0  # a node cut off by the network never completes the connect
TIMEOUT_S = 60.0  # for each later socket operation of a call
ELECTION_WAIT_S = 15.0  # how long a client waits for a leader while the coordinators elect one
ELECTION_RETRY_S = 0.5
MAX_REDIRECTS = 3  # in a row; more means the nodes disagree on the leader, so wait for the election
MAX_EVENT_BYTES = 64 * 1024 * 1024  # a run's final results arrive in frames of up to 16 MiB of msgpack

TRANSPORT_HINT = (
    "Check that a coordinator runs there and that TLS is used on both sides or neither: the cluster CA certificate "
    "comes from SWARMCTL_CA_FILE, or from the configuration that SWARMCTL_CONFIG or swarmctl --config FILE names."
)


class RemoteError(SwarmError):
    """The coordinator refused a request; ``exit_code`` is what the command exits with."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Leave 307 to the client, which follows it for every method and remembers the leader."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _ConnectFailed(OSError):
    """The connection (or its TLS handshake) did not open, so nothing of the request was sent."""


def _connecting_within(connection_class: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
    """Return ``connection_class`` with ``CONNECT_TIMEOUT_S`` for the connect (and TLS handshake) and its own timeout after."""

    class Connection(connection_class):
        def connect(self) -> None:
            timeout, self.timeout = self.timeout, CONNECT_TIMEOUT_S
            try:
                super().connect()
            except OSError as exc:
                raise _ConnectFailed(f"{exc.strerror or exc}") from exc
            finally:
                self.timeout = timeout
            self.sock.settimeout(timeout)

    return Connection


_HTTPConnection = _connecting_within(http.client.HTTPConnection)
_HTTPSConnection = _connecting_within(http.client.HTTPSConnection)


class _HttpHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_HTTPConnection, req)


class _HttpsHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self.ssl_context = context

    def https_open(self, req):
        return self.do_open(_HTTPSConnection, req, context=self.ssl_context)


class ApiClient:
    """Calls and event streams to the coordinators at ``addresses``, the leader first once known."""

    def __init__(self, addresses: Sequence[tuple[str, int]], token: str, ssl_context: ssl.SSLContext | None) -> None:
        if not addresses:
            raise UsageError("no coordinator address given: pass --cluster HOST:PORT")
        self.addresses = list(addresses)
        self.token = token
        self.ssl_context = ssl_context
        self.scheme = "https" if ssl_context is not None else "http"
        # No ProxyHandler settings: the token must go to the coordinator only, as on the event streams.
        handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}), _NoRedirects(), _HttpHandler()]
        if ssl_context is not None:
            handlers.append(_HttpsHandler(ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def from_environment(cls, addresses: Sequence[tuple[str, int]]) -> ApiClient:
        """Make a client with the token and CA certificate that every client command uses."""
        from swarmctl.embedded import EMBEDDED_SECRET, data_home, embedded_address

        # The embedded default's own secret signs a token only for calls to the embedded coordinator.
        home = data_home()
        embedded = embedded_address(home)
        secret = home / EMBEDDED_SECRET if embedded is not None and list(addresses) == [embedded] else None
        return cls(addresses, client_token(secret), client_tls())

    @property
    def name(self) -> str:
        """Return the address that calls go to first: the leader, once a redirect or a stream found it."""
        return format_address(*self.addresses[0])

    # --- calls ------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, params: dict[str, Any] | None = None, *, json_body: Any = None, file: Path | None = None,
    ) -> tuple[bytes, Any]:
        """Return the body and headers of a call; raise a SwarmError with the coordinator's reason on failure."""
        query = f"?{urllib.parse.urlencode(params, doseq=True)}" if params else ""
        deadline = time.monotonic() + ELECTION_WAIT_S
        redirects = 0
        warned = False
        while True:
            failures, electing = [], False
            for address in list(self.addresses):
                where = format_address(*address)
                try:
                    reply = self._send(method, f"{self.scheme}://{where}{path}{query}", json_body, file)
                    self._put_first(address)
                    return reply
                except urllib.error.HTTPError as error:
                    if error.code == 307 and redirects < MAX_REDIRECTS:
                        redirects += 1
                        self._prefer(error.headers.get("Location", ""), where)
                        break
                    failure = _status_error(error.code, error.read(), where, bool(self.token))
                    if not _awaits_leader(error.code, error.headers):
                        raise failure from None
                    electing = True
                    failures.append(str(failure))
                except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                    reason = getattr(error, "reason", error)
                    if method == "POST" and not isinstance(reason, (ConnectionRefusedError, _ConnectFailed)):
                        # The request may have reached the coordinator and been carried out, and a POST sent
                        # again could submit a run twice. The other methods are safe to repeat.
                        raise ConnectionFailed(
                            f"{method} {path} to {where} failed after it was sent ({reason}); check with swarmctl status "
                            "or swarmctl dashboard whether it took effect before repeating it"
                        ) from None
                    failures.append(f"{where}: {reason}")
            else:
                if not electing:
                    raise ConnectionFailed(f"could not connect to {'; '.join(failures)}. {TRANSPORT_HINT}")
                if time.monotonic() >= deadline:
                    raise ConnectionFailed(
                        f"no coordinator led within {ELECTION_WAIT_S:g}s ({'; '.join(failures)}): a majority of the "
                        "coordinator-eligible nodes (--peers) must be up and reach each other"
                    )
                if not warned:
                    log.warning("%s; waiting up to %gs for the coordinators to elect a leader", failures[0], ELECTION_WAIT_S)
                    warned = True
                redirects = 0
                time.sleep(ELECTION_RETRY_S)

    def _send(self, method: str, url: str, json_body: Any, file: Path | None) -> tuple[bytes, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        with ExitStack() as stack:
            data: Any = None
            if json_body is not None:
                headers["Content-Type"] = "application/json"
                data = json.dumps(json_body).encode()
            elif file is not None:
                headers.update({"Content-Type": "application/octet-stream", "Content-Length": str(file.stat().st_size)})
                data = stack.enter_context(open(file, "rb"))
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            with self._opener.open(request, timeout=TIMEOUT_S) as response:
                return response.read(), response.headers

    def _prefer(self, location: str, where: str) -> None:
        """Put the address a redirect names first, so that later calls and streams go to the leader at once."""
        target = urllib.parse.urlsplit(location)
        if not target.hostname or not target.port:
            raise ProtocolError(f"{where} redirected to {location!r}, which names no HOST:PORT")
        address = (target.hostname, target.port)
        log.info("%s redirects to the leader at %s", where, format_address(*address))
        self._put_first(address)

    def _put_first(self, address: tuple[str, int]) -> None:
        self.addresses = [address, *(a for a in self.addresses if a != address)]

    def demote(self, where: str) -> None:
        """Move the coordinator at ``where`` (HOST:PORT) to the end of the addresses, after it stopped responding."""
        silent = [a for a in self.addresses if format_address(*a) == where]
        self.addresses = [a for a in self.addresses if a not in silent] + silent

    def get_response(self, path: str, params: dict[str, Any] | None = None) -> tuple[bytes, Any]:
        return self.request("GET", path, params)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return json.loads(self.request("GET", path, params)[0])

    async def call(self, method: str, path: str, params: dict[str, Any] | None = None, **body: Any) -> Any:
        """Make a call from Trio code and return its decoded JSON reply."""
        reply, _ = await trio.to_thread.run_sync(partial(self.request, method, path, params, **body), abandon_on_cancel=True)
        try:
            return json.loads(reply)
        except ValueError:
            raise ProtocolError(f"{self.name} sent a reply to {method} {path} that is not JSON: {reply[:200]!r}") from None

    # --- event streams ----------------------------------------------------------------------

    @asynccontextmanager
    async def open_stream(self, path: str, params: dict[str, Any] | None = None) -> AsyncIterator[EventStream]:
        """Open the event stream at ``path`` on the leader, following redirects and waiting out elections."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        headers = [(b"Authorization", f"Bearer {self.token}".encode())] if self.token else []
        redirects = 0
        warned = False
        with trio.move_on_after(ELECTION_WAIT_S) as waiting:
            while True:
                failures, electing = [], False
                for address in list(self.addresses):
                    where = format_address(*address)
                    stack = AsyncExitStack()
                    try:
                        connection = await stack.enter_async_context(
                            open_client_websocket(
                                *address, f"{path}{query}", self.ssl_context, extra_headers=headers, max_message_size=MAX_EVENT_BYTES
                            )
                        )
                    except trio_websocket.ConnectionRejected as rejected:
                        status = rejected.status_code
                        reply = {name.decode().lower(): value.decode() for name, value in rejected.headers}
                        if status == 307 and redirects < MAX_REDIRECTS:
                            redirects += 1
                            self._prefer(reply.get("location", ""), where)
                            break
                        failure = _status_error(status, rejected.body, where, bool(self.token))
                        if not _awaits_leader(status, reply):
                            raise failure from None
                        electing = True
                        failures.append(str(failure))
                        continue
                    except (trio_websocket.HandshakeError, OSError, trio.TooSlowError) as error:
                        failures.append(f"{where}: {describe_failure(error)}")
                        continue
                    waiting.deadline = float("inf")
                    async with stack:
                        self._put_first(address)
                        yield EventStream(connection, where)
                    return
                else:
                    if not electing:
                        raise ConnectionFailed(f"could not connect to {'; '.join(failures)}. {TRANSPORT_HINT}")
                    if not warned:
                        log.warning("%s; waiting up to %gs for the coordinators to elect a leader", failures[0], ELECTION_WAIT_S)
                        warned = True
                    redirects = 0
                    await trio.sleep(ELECTION_RETRY_S)
        raise ConnectionFailed(
            f"no coordinator led within {ELECTION_WAIT_S:g}s at {', '.join(format_address(*a) for a in self.addresses)}: "
            "a majority of the coordinator-eligible nodes (--peers) must be up and reach each other"
        )


class EventStream:
    """One event-stream WebSocket: each frame is a JSON object with the ``kind`` and fields of a protocol message."""

    def __init__(self, connection: trio_websocket.WebSocketConnection, name: str) -> None:
        self.connection = connection
        self.name = name

    async def receive(self) -> protocol.Message:
        """Return the next event after the stream's ``welcome``; raise PeerGone when the stream closed, RemoteError for a refused request."""
        while True:
            try:
                text = await self.connection.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise PeerGone(f"{self.name}: the event stream closed ({exc.reason})") from exc
            try:
                data = json.loads(text)
                message = protocol.from_fields(data.pop("kind"), data)
            except (ValueError, KeyError, TypeError, AttributeError, ProtocolError) as exc:
                raise ProtocolError(f"{self.name} sent a malformed event: {exc}") from None
            if isinstance(message, protocol.ErrorReply):
                raise RemoteError(message.message, message.code)
            if not isinstance(message, protocol.Welcome):
                return message
            if message.version != protocol.PROTOCOL_VERSION:
                raise ProtocolError(
                    f"{self.name} speaks protocol version {message.version} and this swarmctl version "
                    f"{protocol.PROTOCOL_VERSION}: use the same swarmctl release on clients and coordinators"
                )

    async def check_alive(self, timeout_s: float) -> None:
        """Ping the coordinator; raise PeerGone when no pong returns within ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            try:
                await self.connection.ping()
            except trio_websocket.ConnectionClosed as exc:
                raise PeerGone(f"{self.name}: the event stream closed") from exc
            return
        raise PeerGone(f"{self.name} did not respond to a ping within {timeout_s:g}s")


def _reason(body: bytes | None, default: str) -> str:
    try:
        return json.loads(body or b"").get("error") or default
    except (ValueError, AttributeError):
        return default


def _auth_error(status: int, reason: str, address: str, has_token: bool) -> AuthError:
    if status == 403:
        return AuthError(
            f"{address} rejected the request: {reason}. Set SWARMCTL_TOKEN_FILE to a file with a token of that role "
            "from `swarmctl token create`"
        )
    if not has_token:
        reason = (
            "no token given. Set SWARMCTL_TOKEN_FILE to a file with a token from `swarmctl token create`, "
            "or SWARMCTL_SECRET_FILE to the cluster secret"
        )
    return AuthError(f"{address} rejected the request: authentication failed: {reason}")


def _awaits_leader(status: int, headers) -> bool:
    """Return whether a reply means "no leader yet": a 307 past the redirect limit, or a 503 with Retry-After.

    Other 503s (a commit that timed out, a database error) are failures of the call itself.
    """
    retry_after = any(name.lower() == "retry-after" for name in headers.keys())
    return status == 307 or (status == 503 and retry_after)


def _status_error(status: int, body: bytes | None, address: str, has_token: bool) -> SwarmError:
    """Return the error for an HTTP status that is not a success, with the coordinator's reason."""
    reason = _reason(body, f"HTTP {status}")
    if status in (401, 403):
        return _auth_error(status, reason, address, has_token)
    if status == 413:
        return RemoteError(reason, 3)  # a bundle over the cluster's limit fails the run, as other bundle errors do
    if status < 500:
        return RemoteError(reason, 4)
    return SwarmError(f"{address} returned HTTP {status}: {reason}")
