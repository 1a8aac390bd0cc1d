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

import trio
import trio_websocket

from swarmctl import protocol
from swarmctl.errors import AddressError, ConnectionFailed, ListenFailed, ProtocolError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
DISCONNECT_TIMEOUT_S = 2.0
LISTEN_BACKLOG = 512
MAX_HEAD_BYTES = 16 * 1024  # the head of a connection's first request, read to route the connection

# Hypercorn's own info messages repeat what the node logs; its errors still show.
_http_log = logging.getLogger("swarmctl.http")
_http_log.setLevel(logging.WARNING)


class PeerGone(Exception):
    """The connection closed or broke."""


CONNECTION_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio_websocket.ConnectionClosed)


class Network:
    """The transport that nodes serve and open protocol connections on: WebSockets over TCP.

    Replicas and executors take one, so the cluster simulator can run them on a network
    in memory (``swarmctl.sim.coordinator.network``).
    """

    async def serve(self, handler, host: str, port: int, **options) -> None:
        await serve(handler, host, port, **options)

    def connect(self, addresses: Sequence[tuple[str, int]], ssl_context: ssl.SSLContext | None = None):
        return connect(addresses, ssl_context)


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
    """One connection carrying protocol messages.

    ``WebSocketPeer`` is a trio-websocket connection, on either side. Implementations raise
    ``PeerGone`` for a closed connection and ``ProtocolError`` for a frame that is not a
    valid message.
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


class WebSocketPeer(Peer):
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


async def serve(
    handler,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    http_app=None,
    websocket_app=None,
    sockets: list[socket.socket] | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HOST:PORT, over TLS with ``ssl_context``; report the bound port through ``task_status``.

    ``sockets`` are listening sockets from ``listen`` to serve instead of binding HOST:PORT,
    so that clients can connect, and wait in the backlog, before the server starts.

    Each connection is routed by its first request. A WebSocket upgrade at ``/`` is a
    protocol connection: ``handler(Peer)`` runs for it. Another WebSocket upgrade goes to
    ``websocket_app(request, name)`` with the trio-websocket ``WebSocketRequest`` and the
    peer's address. Any other request goes to the ASGI application ``http_app`` under
    Hypercorn. Without them, those requests get 404.
    """
    if sockets is None:
        sockets = listen(host, port)
    bound_port = sockets[0].getsockname()[1]
    listeners: list[trio.abc.Listener] = [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]
    if ssl_context is not None:
        listeners = [trio.SSLListener(listener, ssl_context, https_compatible=True) for listener in listeners]
    router = _Router(handler, _HttpServer(http_app) if http_app is not None else None, websocket_app)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(router.close_streams_on_cancel)
            task_status.started(bound_port)
            await trio.serve_listeners(router.serve_connection, listeners)
    finally:
        for sock in sockets:
            sock.close()


def listen(host: str, port: int) -> list[socket.socket]:
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


class _Router:
    """Routes each accepted connection by its first request, and closes every open one when serving stops."""

    def __init__(self, handler, http: _HttpServer | None, websocket_app) -> None:
        self._handler = handler
        self._http = http
        self._websocket_app = websocket_app
        self._open: set[trio.abc.Stream] = set()

    async def close_streams_on_cancel(self) -> None:
        """Close the sockets of open connections once serving is cancelled.

        Hypercorn sends in a shielded cancel scope, so a peer that stops reading would keep
        its task, and the server, from stopping. Closing the socket ends such a send.
        """
        try:
            await trio.sleep_forever()
        finally:
            for stream in list(self._open):
                _socket_of(stream).close()

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        self._open.add(stream)
        name = _peer_name(stream)
        try:
            with trio.move_on_after(CONNECT_TIMEOUT_S):
                if isinstance(stream, trio.SSLStream):
                    await stream.do_handshake()
                head = await _read_head(stream)
            if not head:
                return  # no request within the timeout, or the peer closed, so there is nothing to reply to
            path, upgrade = _parse_head(head)
            replay = _ReplayStream(stream, head)
            if upgrade:
                await self._serve_websocket(replay, path, name)
            elif self._http is not None:
                await self._http.serve(replay)
            else:
                await replay.send_all(_NOT_FOUND)
        except CONNECTION_ERRORS as exc:
            # An error of one connection (a broken TLS handshake, a reset socket) ends only it.
            log.info("connection from %s closed after an error: %s", name, _describe(exc))
        finally:
            self._open.discard(stream)
            await trio.aclose_forcefully(stream)

    async def _serve_websocket(self, stream: trio.abc.Stream, path: str, name: str) -> None:
        async with trio.open_nursery() as nursery:
            connection = None
            try:
                request = await trio_websocket.wrap_server_stream(nursery, stream, max_message_size=protocol.MAX_FRAME_BYTES)
                if path == "/":
                    connection = await request.accept()
                    await self._handler(WebSocketPeer(connection, name))
                elif self._websocket_app is not None:
                    await self._websocket_app(request, name)
                else:
                    await request.reject(404, body=b"not found: WebSocket connections go to /\n")
            except PeerGone:
                pass
            except CONNECTION_ERRORS as exc:
                log.info("connection from %s closed after an error: %s", name, _describe(exc))
            finally:
                if connection is not None:
                    with trio.move_on_after(DISCONNECT_TIMEOUT_S):
                        await connection.aclose()
                nursery.cancel_scope.cancel()


class _HttpServer:
    """Serves HTTP connections with Hypercorn, one ``TCPServer`` per connection that ``_Router`` hands over.

    NOTE: ``hypercorn.trio.tcp_server.TCPServer`` is not public API; it is the class that
    Hypercorn's own trio worker runs for each accepted connection (Hypercorn 0.17 and 0.18).
    """

    def __init__(self, app) -> None:
        # Imported here: executors and clients never serve HTTP, and Hypercorn with h11 and h2
        # adds several megabytes to every process that imports it.
        from hypercorn.config import Config
        from hypercorn.trio.worker_context import WorkerContext
        from hypercorn.utils import wrap_app

        config = Config()
        config.keep_alive_timeout = CONNECT_TIMEOUT_S
        config.graceful_timeout = DISCONNECT_TIMEOUT_S
        config.errorlog = _http_log
        config.accesslog = None
        self._config = config
        self._app = wrap_app(app, config.wsgi_max_body_size, None)
        self._context = WorkerContext(None)

    async def serve(self, stream: trio.abc.Stream) -> None:
        from hypercorn.trio.tcp_server import TCPServer

        await TCPServer(self._app, self._config, self._context, {}, stream).run()


class _ReplayStream(trio.abc.Stream):
    """A stream whose first bytes received are ``prefix``, already read from ``stream`` to route it.

    It exposes ``socket`` as a plain ``trio.SocketStream`` does, for the peer's address, and
    hides TLS from Hypercorn, which would otherwise do the handshake again.
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
        self.socket = _socket_of(stream)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self._stream, trio.abc.HalfCloseableStream):
            await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 54\r\n\r\n"
    b"not found: this node serves WebSocket connections at /\n"
)


async def _read_head(stream: trio.abc.Stream) -> bytes:
    """Read until the end of the first request's head (or MAX_HEAD_BYTES); return b"" if the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MAX_HEAD_BYTES:
        chunk = await stream.receive_some(MAX_HEAD_BYTES)
        if not chunk:
            return b""
        data += chunk
    return data


def _parse_head(head: bytes) -> tuple[str, bool]:
    """Return the request's path and whether it requests a WebSocket upgrade."""
    lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    parts = lines[0].split(b" ")
    target = parts[1] if len(parts) == 3 else b""
    path = target.split(b"?", 1)[0].decode("latin-1")
    upgrade = any(
        name.strip().lower() == b"upgrade" and b"websocket" in value.lower()
        for name, _, value in (line.partition(b":") for line in lines[1:])
    )
    return path, upgrade


def describe_failure(exc: BaseException) -> str:
    """Return why a connection did not open; trio-websocket's HandshakeError carries its reason in ``__context__``."""
    return str(exc) or str(exc.__context__ or "") or type(exc).__name__


def _describe(exc: BaseException) -> str:
    """Return the error's text, or its type where the text is empty (as for a TLS handshake that a plain client broke)."""
    cause = exc.__cause__ or exc.__context__
    return str(exc) or (f"{type(exc).__name__}: {cause}" if cause else type(exc).__name__)


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType:
    return stream.transport_stream.socket if isinstance(stream, trio.SSLStream) else stream.socket


def _peer_name(stream: trio.abc.Stream) -> str:
    try:
        host, port = _socket_of(stream).getpeername()[:2]
    except OSError:
        return "unknown peer"
    return format_address(host, port)


async def _closed_anyway(address: str, body_error: list[BaseException], exc_type, exc, tb) -> bool:
    """Exit callback of ``open_client_websocket``: a close handshake that timed out still ends the connection.

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
async def open_client_websocket(
    host: str,
    port: int,
    path: str,
    ssl_context: ssl.SSLContext | None,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    max_message_size: int = protocol.MAX_FRAME_BYTES,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Open a client WebSocket to ``host:port`` at ``path``, over TLS with ``ssl_context``.

    Raises OSError, trio-websocket's HandshakeError (ConnectionRejected when the server
    replied with an HTTP status), or trio.TooSlowError when no handshake completes within
    ``CONNECT_TIMEOUT_S``. A close handshake that the peer never answers is not an error.
    """
    address = format_address(host, port)
    stack = AsyncExitStack()
    body_error: list[BaseException] = []
    stack.push_async_exit(partial(_closed_anyway, address, body_error))
    # trio-websocket's own connect_timeout does not end a handshake that gets no reply,
    # as with a plain client at a TLS port, because its reader task keeps the connection's
    # nursery open. This scope bounds the whole opening and is lifted once it succeeded.
    with trio.CancelScope(deadline=trio.current_time() + CONNECT_TIMEOUT_S) as opening:
        ws = await stack.enter_async_context(
            trio_websocket.open_websocket(
                host,
                port,
                path,
                use_ssl=ssl_context if ssl_context is not None else False,
                extra_headers=extra_headers,
                max_message_size=max_message_size,
                connect_timeout=CONNECT_TIMEOUT_S,
                disconnect_timeout=DISCONNECT_TIMEOUT_S,
            )
        )
        opening.deadline = math.inf
        # The connection's nursery was opened in this scope, so it must close in it too.
        async with stack:
            try:
                yield ws
            except BaseException as exc:
                body_error.append(exc)
                raise
        return
    raise trio.TooSlowError(f"no WebSocket handshake within {CONNECT_TIMEOUT_S:g}s")


@asynccontextmanager
async def connect(addresses: Sequence[tuple[str, int]], ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Peer]:
    """Open a protocol connection to the first of ``addresses`` that accepts one, over TLS with ``ssl_context``."""
    failures = []
    for host, port in addresses:
        address = format_address(host, port)
        stack = AsyncExitStack()
        try:
            ws = await stack.enter_async_context(open_client_websocket(host, port, "/", ssl_context))
        except (OSError, trio_websocket.HandshakeError, trio.TooSlowError) as exc:
            failures.append(f"{address}: {describe_failure(exc)}")
            continue
        async with stack:
            yield WebSocketPeer(ws, address)
        return

    raise ConnectionFailed(
        "could not connect to " + "; ".join(failures) + ". Check that a coordinator runs there "
        "(swarmctl up --role coordinator --listen HOST:PORT), that the address is right, and that TLS is used on "
        "both sides or neither (SWARMCTL_CA_FILE names the cluster CA certificate)."
    )


TCP = Network()
