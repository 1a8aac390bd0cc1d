"""WebSocket transport of the data plane: typed messages over WebSocket connections.

``Peer`` wraps one connection and speaks ``protocol.Message`` objects. Errors of the
websocket layer become ``PeerGone`` at this boundary, so callers handle one exception for
"the other side went away", whatever the cause.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import hypercorn.config
import hypercorn.trio
import trio
import trio_websocket
from hypercorn.config import Sockets

from swarmctl import protocol
from swarmctl.errors import AddressError, ConnectionFailed, ListenFailed, ProtocolError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
DISCONNECT_TIMEOUT_S = 2.0
LISTEN_BACKLOG = 512
APP_QUEUE_SIZE = 64  # frames received and not yet read, per connection, before Hypercorn stops reading

# Hypercorn's own messages ("Running on ...") repeat what the node logs; its errors still show.
_http_log = logging.getLogger("swarmctl.http")
_http_log.setLevel(logging.WARNING)


class PeerGone(Exception):
    """The connection closed or broke."""


def parse_address(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:PORT`` for IPv6) into host and port."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise AddressError(f"invalid address {text!r}: expected HOST:PORT, for example 127.0.0.1:7400")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise AddressError(f"invalid port {port} in {text!r}: it must be between 0 and 65535")
    return host.strip("[]"), port


def parse_addresses(text: str) -> list[tuple[str, int]]:
    """Split a comma-separated list of ``HOST:PORT`` to connect to (port 0 is not one)."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise AddressError(f"invalid address list {text!r}: expected HOST:PORT[,HOST:PORT...]")
    addresses = [parse_address(part) for part in parts]
    for (host, port), part in zip(addresses, parts):
        if port == 0:
            raise AddressError(f"invalid address {part.strip()!r}: port 0 cannot be connected to; give the node's port")
    return addresses


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Peer:
    """One WebSocket connection carrying protocol messages.

    ``ClientPeer`` is the side that connected (trio-websocket), ``ServerPeer`` the side that
    accepted (an ASGI WebSocket under Hypercorn). Both raise ``PeerGone`` for a closed
    connection and ``ProtocolError`` for a frame that is not a valid message.
    """

    name: str

    async def send(self, message: protocol.Message) -> None:
        raise NotImplementedError

    async def receive(self) -> protocol.Message:
        raise NotImplementedError

    async def check_alive(self, timeout_s: float) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class ClientPeer(Peer):
    def __init__(self, ws: trio_websocket.WebSocketConnection, name: str) -> None:
        self._ws = ws
        self.name = name
        self._send_lock = trio.Lock()

    async def send(self, message: protocol.Message) -> None:
        frame = protocol.encode(message)
        try:
            async with self._send_lock:
                await self._ws.send_message(frame)
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(f"{self.name}: connection closed") from exc

    async def receive(self) -> protocol.Message:
        try:
            frame = await self._ws.get_message()
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(f"{self.name}: connection closed") from exc
        if isinstance(frame, str):
            raise ProtocolError(f"{self.name} sent a text frame; swarmctl frames are binary msgpack")
        return protocol.decode(frame)

    async def check_alive(self, timeout_s: float) -> None:
        """Send a WebSocket ping; raise PeerGone unless the pong arrives within ``timeout_s``.

        A peer cut off by the network sends nothing and no FIN either, so only a ping finds
        out before TCP gives up, which takes many minutes.
        """
        try:
            with trio.fail_after(timeout_s):
                await self._ws.ping()
        except trio.TooSlowError:
            raise PeerGone(f"{self.name}: no response to a ping within {timeout_s:g}s") from None
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(f"{self.name}: connection closed") from exc

    async def aclose(self) -> None:
        await self._ws.aclose()


class ServerPeer(Peer):
    """The accepting side of a connection: ASGI WebSocket events from Hypercorn."""

    def __init__(self, receive, send, name: str) -> None:
        self._receive = receive
        self._send = send
        self.name = name
        self._send_lock = trio.Lock()
        self._closed = False

    async def send(self, message: protocol.Message) -> None:
        frame = protocol.encode(message)
        async with self._send_lock:
            if self._closed:
                raise PeerGone(f"{self.name}: connection closed")
            await self._send({"type": "websocket.send", "bytes": frame})

    async def receive(self) -> protocol.Message:
        if self._closed:
            raise PeerGone(f"{self.name}: connection closed")
        event = await self._receive()
        if event["type"] == "websocket.disconnect":
            self._closed = True
            raise PeerGone(f"{self.name}: connection closed (code {event.get('code')})")
        frame = event.get("bytes")
        if frame is None:
            raise ProtocolError(f"{self.name} sent a text frame; swarmctl frames are binary msgpack")
        return protocol.decode(frame)

    async def check_alive(self, timeout_s: float) -> None:
        # NOTE: ASGI has no server-sent ping; only the connecting side checks liveness.
        raise NotImplementedError("only the connecting side of a connection sends pings")

    async def aclose(self) -> None:
        async with self._send_lock:
            if not self._closed:
                self._closed = True
                await self._send({"type": "websocket.close", "code": 1000})


async def serve(
    handler,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    http_app=None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HOST:PORT over TLS with ``ssl_context``: WebSocket connections at ``/`` run ``handler(Peer)``.

    Every other request goes to the ASGI application ``http_app`` (the REST API), or gets
    404 without one. Reports the bound port through ``task_status`` (useful with port 0).
    """
    sockets = _listen(host, port)
    bound_port = sockets[0].getsockname()[1]
    config = _ServerConfig(sockets, ssl_context)
    app = _Router(handler, http_app)
    started = False

    def on_started(_binds) -> None:
        nonlocal started
        started = True
        task_status.started(bound_port)

    try:
        await hypercorn.trio.serve(app, config, task_status=_Started(on_started))
    except* OSError as group:
        if started:
            raise  # not about listening: the server was already serving
        raise ListenFailed(f"cannot serve on {format_address(host, port)}: {_first_leaf(group)}") from None
    finally:
        for sock in sockets:
            sock.close()


def _listen(host: str, port: int) -> list[socket.socket]:
    """Bind and listen on every address of ``host`` (as ``trio.open_tcp_listeners`` does), all on one port."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenFailed(f"cannot listen on {format_address(host, port)}: {exc.strerror}; check the host name in --listen") from None
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if address[:2] in seen:
                continue
            seen.add(address[:2])
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if sockets[0] is not sock:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ListenFailed(
            f"cannot listen on {format_address(host, port)}: {exc.strerror or exc}; choose another address or port with --listen"
        ) from None
    return sockets


class _Started:
    """Adapts Hypercorn's ``started(binds)`` to a callback."""

    def __init__(self, callback) -> None:
        self._callback = callback

    def started(self, value=None) -> None:
        self._callback(value)


class _ServerConfig(hypercorn.config.Config):
    """Hypercorn settings for the sockets bound by ``serve`` and its TLS context."""

    def __init__(self, sockets: list[socket.socket], ssl_context: ssl.SSLContext | None) -> None:
        super().__init__()
        self._sockets = sockets
        self._ssl_context = ssl_context
        self.websocket_max_message_size = protocol.MAX_FRAME_BYTES
        self.ssl_handshake_timeout = CONNECT_TIMEOUT_S
        self.keep_alive_timeout = CONNECT_TIMEOUT_S  # also drops a connection that never sends its request
        self.graceful_timeout = DISCONNECT_TIMEOUT_S
        self.max_app_queue_size = APP_QUEUE_SIZE
        self.backlog = LISTEN_BACKLOG
        self.errorlog = _http_log
        self.accesslog = None

    def create_sockets(self) -> Sockets:
        if self._ssl_context is not None:
            return Sockets(self._sockets, [], [])
        return Sockets([], self._sockets, [])

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._ssl_context


class _Router:
    """The ASGI application of a node's port: the msgpack WebSocket plane at ``/``, HTTP to ``http_app``."""

    def __init__(self, handler, http_app) -> None:
        self._handler = handler
        self._http_app = http_app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "websocket" and scope["path"] == "/":
            await self._serve_peer(scope, receive, send)
        elif self._http_app is not None:
            await self._http_app(scope, receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"not found: this node serves WebSocket connections at /\n"})
        else:
            await send({"type": "websocket.close", "code": 1008})

    async def _serve_peer(self, scope, receive, send) -> None:
        event = await receive()
        if event["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        client = scope.get("client")
        peer = ServerPeer(receive, send, format_address(*client[:2]) if client else "unknown peer")
        # An error of one connection must end only that connection.
        try:
            await self._handler(peer)
        except PeerGone:
            pass
        except (OSError, trio.BrokenResourceError) as exc:
            log.info("connection closed after an error: %s", exc)
        try:
            await peer.aclose()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _lifespan(receive, send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _closed_anyway(address: str, body_error: list[BaseException], exc_type, exc, tb) -> bool:
    """Exit callback of ``connect``: a close handshake that timed out still ends the connection.

    A peer cut off by the network never replies to the close frame, and trio-websocket then
    raises DisconnectionTimeout. The caller gets what it raised itself, or nothing.
    """
    if not isinstance(exc, trio_websocket.DisconnectionTimeout):
        return False
    log.info("%s did not answer the close of the connection within %gs", address, DISCONNECT_TIMEOUT_S)
    if body_error:
        raise body_error[0]
    return True


@asynccontextmanager
async def connect(addresses: Sequence[tuple[str, int]], ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Peer]:
    """Open a connection to the first of ``addresses`` that accepts one, over TLS with ``ssl_context``."""
    failures = []
    for host, port in addresses:
        address = format_address(host, port)
        stack = AsyncExitStack()
        body_error: list[BaseException] = []
        stack.push_async_exit(partial(_closed_anyway, address, body_error))
        # trio-websocket's own connect_timeout does not end a handshake that gets no reply,
        # as with a plain client at a TLS port, because its reader task keeps the connection's
        # nursery open. This scope bounds the whole opening and is lifted once it succeeded.
        with trio.CancelScope(deadline=trio.current_time() + CONNECT_TIMEOUT_S) as opening:
            try:
                ws = await stack.enter_async_context(
                    trio_websocket.open_websocket(
                        host,
                        port,
                        "/",
                        use_ssl=ssl_context if ssl_context is not None else False,
                        max_message_size=protocol.MAX_FRAME_BYTES,
                        connect_timeout=CONNECT_TIMEOUT_S,
                        disconnect_timeout=DISCONNECT_TIMEOUT_S,
                    )
                )
            except (OSError, trio_websocket.HandshakeError, trio.TooSlowError) as exc:
                # trio-websocket's HandshakeError carries its reason in __context__, not in its text.
                reason = str(exc) or str(exc.__context__ or "") or type(exc).__name__
                failures.append(f"{address}: {reason}")
                continue
            opening.deadline = math.inf
            async with stack:
                try:
                    yield ClientPeer(ws, address)
                except BaseException as exc:
                    body_error.append(exc)
                    raise
            return
        failures.append(f"{address}: no WebSocket handshake within {CONNECT_TIMEOUT_S:g}s")

    raise ConnectionFailed(
        "could not connect to " + "; ".join(failures) + ". Check that a coordinator runs there "
        "(swarmctl up --role coordinator --listen HOST:PORT), that the address is right, and that TLS is used on "
        "both sides or neither (SWARMCTL_CA_FILE names the cluster CA certificate)."
    )
