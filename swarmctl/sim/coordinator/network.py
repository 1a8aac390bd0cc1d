"""A network in memory, for the replicated coordinator's real code on trio's virtual clock.

``MemoryNetwork.endpoint(host)`` returns the ``Network`` one simulated machine uses in place
of WebSockets over TCP. A connection behaves as a stream. Frames arrive in order after a
delay drawn from the seeded profile. A cut between two machines keeps their frames until it
heals, as TCP retransmission would. Closing, or the machine crashing, ends the other side
after the frames already sent. A reset (a fault) ends both sides at once and loses what was
in flight. Consensus frames are what Raft sends between voters, and Raft expects a network
that loses, duplicates and reorders messages, so only those are also dropped, duplicated
and delivered out of order.

Every frame is encoded and decoded with the real protocol. Every random choice comes from
the ``random.Random`` given, so a run is a function of its seed.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from swarmctl import protocol
from swarmctl.cluster.transport import Network, Peer, PeerGone, format_address
from swarmctl.errors import ConnectionFailed

CONNECT_TIMEOUT_S = 10.0  # a connection towards a machine cut off fails after this, as transport's does

_EOF = object()  # marks the end of a direction's frames


@dataclass(frozen=True)
class NetworkProfile:
    latency_s: tuple[float, float] = (0.0005, 0.005)
    slow: float = 0.02  # share of frames that take up to slow_s instead
    slow_s: float = 0.5
    reset: float = 0.0  # share of stream frames whose loss breaks the connection
    drop: float = 0.0  # share of consensus frames lost
    duplicate: float = 0.0  # share of consensus frames delivered twice


RELIABLE = NetworkProfile(slow=0.0)
FAULTY = NetworkProfile(reset=0.004, drop=0.03, duplicate=0.03)


class _Direction:
    """The frames one side of a connection sent and the other has not received, by arrival time."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int, object]] = []  # heap of (arrival, order, frame or _EOF)
        self.last_arrival = 0.0  # the latest arrival of a stream frame, which the next may not precede
        self.changed = trio.Event()

    def push(self, arrival: float, order: int, frame: object) -> None:
        heapq.heappush(self.frames, (arrival, order, frame))
        self.changed.set()


class MemoryPeer(Peer):
    def __init__(self, network: MemoryNetwork, host: str, remote: str, name: str,
                 outgoing: _Direction, incoming: _Direction) -> None:
        self.network = network
        self.host = host  # the machine this side is on
        self.remote = remote
        self.name = name
        self._out = outgoing
        self._in = incoming
        self.other: MemoryPeer | None = None
        self.closed = False
        self.end_reason = ""  # why the connection ended, once this side learned it
        self.other_closed_at = math.inf  # when the other side's close reaches this side

    async def send(self, message: protocol.Message) -> None:
        await trio.lowlevel.checkpoint()
        if self.closed or self.end_reason or trio.current_time() >= self.other_closed_at:
            raise PeerGone(f"{self.name}: connection closed")
        frame = protocol.encode(message)
        self.network.carry(self, frame, consensus=isinstance(message, protocol.ConsensusFrame))

    async def receive(self) -> protocol.Message:
        while True:
            if self.closed:
                raise PeerGone(f"{self.name}: connection closed")
            if self.end_reason:
                raise PeerGone(f"{self.name}: {self.end_reason}")
            direction = self._in
            if not direction.frames or self.network.is_cut(self.remote, self.host):
                await self._wait(direction, math.inf)
                continue
            arrival = direction.frames[0][0]
            if arrival > trio.current_time():
                await self._wait(direction, arrival)
                continue
            _, _, frame = heapq.heappop(direction.frames)
            if frame is _EOF:
                self.end_reason = "connection closed by the other side"
                continue
            return protocol.decode(frame)

    async def _wait(self, direction: _Direction, until: float) -> None:
        """Sleep until ``until``, a new frame, or a change of the network's cuts."""
        direction.changed = trio.Event()
        with trio.move_on_at(until):
            await direction.changed.wait()

    async def check_alive(self, timeout_s: float) -> None:
        if self.closed or self.end_reason or self.network.is_cut(self.host, self.remote):
            await trio.sleep(timeout_s)
            raise PeerGone(f"{self.name}: no response to a ping within {timeout_s:g}s")
        await trio.sleep(2 * self.network.latency())

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """End this side; the other receives what was sent before, then the end."""
        if not self.closed:
            self.closed = True
            self.network.finish(self)

    def reset(self, reason: str) -> None:
        self.end_reason = self.end_reason or reason
        self._in.changed.set()


@dataclass
class _Listener:
    host: str
    handler: object
    nursery: trio.Nursery


class MemoryNetwork:
    def __init__(self, rng: random.Random, profile: NetworkProfile = RELIABLE) -> None:
        self.rng = rng
        self.profile = profile
        self.listeners: dict[str, _Listener] = {}
        # machine -> its open connection ends, in the order they opened (a set's order would vary between runs)
        self.peers: dict[str, dict[MemoryPeer, None]] = {}
        self.cuts: set[frozenset[str]] = set()  # pairs of machines that cannot reach each other
        self._order = itertools.count()
        self.stats = {"frames": 0, "dropped": 0, "duplicated": 0, "resets": 0, "refused": 0}

    def endpoint(self, host: str) -> MemoryEndpoint:
        return MemoryEndpoint(self, host)

    # --- faults -------------------------------------------------------------------------

    def is_cut(self, first: str, second: str) -> bool:
        return frozenset((first, second)) in self.cuts

    def isolate(self, host: str, others: Sequence[str]) -> None:
        self.cuts.update(frozenset((host, other)) for other in others if other != host)
        self._cuts_changed()

    def mend(self, host: str) -> None:
        """End the cuts between ``host`` and the others."""
        self.cuts = {cut for cut in self.cuts if host not in cut}
        self._cuts_changed()

    def heal(self) -> None:
        self.cuts.clear()
        self._cuts_changed()

    def crash(self, host: str) -> None:
        """End every connection of ``host``, as its process dying would."""
        for peer in list(self.peers.get(host, ())):
            peer.close()

    def _cuts_changed(self) -> None:
        for peers in self.peers.values():
            for peer in peers:
                peer._in.changed.set()

    # --- frames -------------------------------------------------------------------------

    def latency(self) -> float:
        profile = self.profile
        if profile.slow and self.rng.random() < profile.slow:
            return self.rng.uniform(0, profile.slow_s)
        return self.rng.uniform(*profile.latency_s)

    def carry(self, sender: MemoryPeer, frame: bytes, *, consensus: bool) -> None:
        self.stats["frames"] += 1
        profile, out, now = self.profile, sender._out, trio.current_time()
        if consensus:
            if self.rng.random() < profile.drop:
                self.stats["dropped"] += 1
                return
            copies = 2 if self.rng.random() < profile.duplicate else 1
            self.stats["duplicated"] += copies - 1
            for _ in range(copies):
                out.push(now + self.latency(), next(self._order), frame)
            return
        if self.rng.random() < profile.reset:
            self.stats["resets"] += 1
            sender.reset("connection reset")
            if sender.other is not None:
                sender.other.reset("connection reset by the other side")
            return
        out.last_arrival = max(out.last_arrival, now + self.latency())
        out.push(out.last_arrival, next(self._order), frame)

    def finish(self, peer: MemoryPeer) -> None:
        out = peer._out
        out.last_arrival = max(out.last_arrival, trio.current_time() + self.latency())
        out.push(out.last_arrival, next(self._order), _EOF)
        if peer.other is not None:
            # A WebSocket reads in the background, so sending fails once the close arrived.
            peer.other.other_closed_at = min(peer.other.other_closed_at, out.last_arrival)
        self.peers.get(peer.host, {}).pop(peer, None)

    def pair(self, client_host: str, server_host: str, address: str) -> tuple[MemoryPeer, MemoryPeer]:
        up, down = _Direction(), _Direction()
        client = MemoryPeer(self, client_host, server_host, address, up, down)
        server = MemoryPeer(self, server_host, client_host, f"{client_host}:{next(self._order)}", down, up)
        client.other, server.other = server, client
        self.peers.setdefault(client_host, {})[client] = None
        self.peers.setdefault(server_host, {})[server] = None
        return client, server


class MemoryEndpoint(Network):
    """One machine's view of the memory network: what it serves and what it connects to."""

    def __init__(self, network: MemoryNetwork, host: str) -> None:
        self.network = network
        self.host = host

    async def serve(self, handler, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED, **options) -> None:
        address = format_address(host, port)
        if address in self.network.listeners:
            raise OSError(f"{address} is already served")
        try:
            async with trio.open_nursery() as nursery:
                self.network.listeners[address] = _Listener(self.host, handler, nursery)
                task_status.started(port)
                await trio.sleep_forever()
        finally:
            self.network.listeners.pop(address, None)

    @asynccontextmanager
    async def connect(self, addresses: Sequence[tuple[str, int]], ssl_context=None) -> AsyncIterator[Peer]:
        network = self.network
        failures = []
        for host, port in addresses:
            address = format_address(host, port)
            await trio.sleep(2 * network.latency())  # the handshake's round trip
            listener = network.listeners.get(address)
            if listener is None:
                network.stats["refused"] += 1
                failures.append(f"{address}: connection refused")
                continue
            if network.is_cut(self.host, listener.host):
                await trio.sleep(CONNECT_TIMEOUT_S)
                failures.append(f"{address}: timed out")
                continue
            client, server = network.pair(self.host, listener.host, address)
            listener.nursery.start_soon(_serve_connection, listener.handler, server)
            try:
                yield client
            finally:
                client.close()
            return
        raise ConnectionFailed("could not connect to " + "; ".join(failures))


async def _serve_connection(handler, peer: MemoryPeer) -> None:
    """Run a connection's handler as ``transport.serve`` does: a closed connection ends it quietly."""
    try:
        await handler(peer)
    except PeerGone:
        pass
    finally:
        peer.close()
