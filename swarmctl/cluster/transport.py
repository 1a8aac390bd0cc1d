"""WebSocket transport of the data plane: typed messages over trio-websocket.

``Peer`` wraps one connection and speaks ``protocol.Message`` objects. Errors of the
websocket layer become ``PeerGone`` at this boundary, so callers handle one exception for
"the other side went away", whatever the cause.
"""

from __future__ import annotations

import logging
import math
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
    """One WebSocket connection carrying protocol messages."""

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
    handler, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    """Serve WebSocket connections on HOST:PORT, over TLS with ``ssl_context``; ``handler(Peer)`` runs per connection.

    Reports the bound port through ``task_status`` (useful with port 0).
    """

    async def on_request(request: trio_websocket.WebSocketRequest) -> None:
        # An error of one connection (a broken TLS handshake, a reset socket) must end only
        # that connection: raised from here, it would stop the whole server.
        try:
            ws = await request.accept()
            remote = ws.remote
            name = f"{remote.address}:{remote.port}" if hasattr(remote, "address") else str(remote)
            await handler(Peer(ws, name))
        except PeerGone:
            pass
        except (OSError, trio.BrokenResourceError, trio_websocket.ConnectionClosed) as exc:
            log.info("connection closed after an error: %s", exc)

    reporter = _PortReporter(task_status)
    try:
        await trio_websocket.serve_websocket(
            on_request,
            host,
            port,
            ssl_context=ssl_context,
            handler_nursery=None,
            max_message_size=protocol.MAX_FRAME_BYTES,
            connect_timeout=CONNECT_TIMEOUT_S,  # a peer that never completes its handshake is dropped then
            disconnect_timeout=DISCONNECT_TIMEOUT_S,
            task_status=reporter,
        )
    except* OSError as group:
        if reporter.bound:
            raise  # not about listening: the server was already serving
        error = _first_leaf(group)
        raise ListenFailed(
            f"cannot listen on {format_address(host, port)}: {getattr(error, 'strerror', None) or error}; "
            "choose another address or port with --listen"
        ) from None


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class _PortReporter:
    """Adapts trio-websocket's ``started(server)`` to report the bound port."""

    def __init__(self, task_status) -> None:
        self._task_status = task_status
        self.bound = False  # set once the server listens, so later errors are not taken for listen failures

    def started(self, server) -> None:
        self.bound = True
        self._task_status.started(server.port)


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
                    yield Peer(ws, address)
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
