"""The Trio shell around the membership core: one UDP socket, one timer, encryption.

``GossipNode`` feeds datagrams and timer ticks to a ``Membership`` and sends what it
returns. Every datagram is a msgpack message sealed with the cluster key by
``PacketCipher``. A datagram that does not decrypt, decode or have the expected shape is
dropped and counted in ``stats["bad_packets"]``. Each one is logged at debug level, and
a warning with the count goes out at most once every BAD_PACKET_WARNING_INTERVAL_S.

The socket is a non-blocking stdlib UDP socket that trio waits on. Receiving drains every
datagram that is already waiting, and sending never blocks, so the synchronous methods
``join`` and ``set_meta`` can send at once. One task waits for datagrams, another sleeps
until ``Membership.next_deadline()``. Before a tick, the timer task handles the datagrams
that are already waiting. After a stall of the whole process (a GC pause, a stopped VM),
acks that arrived in time therefore count before their probes are judged to have failed.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from swarmctl.cluster.membership import (
    Member,
    MemberEvent,
    Membership,
    MembershipConfig,
    Outgoing,
)
from swarmctl.cluster.transport import format_address
from swarmctl.errors import ListenFailed, ProtocolError, UsageError
from swarmctl.security import SEAL_OVERHEAD_BYTES, PacketCipher

log = logging.getLogger(__name__)

RECEIVE_BUFFER_BYTES = 65536
# Datagrams handled in one go before other tasks get a turn.
MAX_DRAIN_PACKETS = 256
BAD_PACKET_WARNING_INTERVAL_S = 10.0
DEFAULT_CONFIG = MembershipConfig()


class _RateLimitedWarning:
    """Counts occurrences and logs a warning with the count at most once per interval."""

    def __init__(self, message: str, interval_s: float) -> None:
        self._message = message
        self._interval_s = interval_s
        self._count = 0
        self._last_at = -math.inf

    def add(self, now: float, detail: str) -> None:
        self._count += 1
        if now - self._last_at >= self._interval_s:
            log.warning(self._message, self._count, detail)
            self._count = 0
            self._last_at = now


@functools.lru_cache(maxsize=4096)
def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass
class _Running:
    membership: Membership
    socket: socket.socket
    cancel_scope: trio.CancelScope


class GossipNode:
    """One member of the cluster's gossip membership, over UDP.

    ``events`` is an unbounded ``trio.MemoryReceiveChannel`` of MemberEvent: the node never
    blocks or drops an event for a slow reader, so a program that does not read it grows
    by one event per membership change. It closes when ``run`` returns.

    ``stats`` counts datagrams: ``sent``, ``received``, ``bad_packets`` (received and
    dropped: not decryptable, not msgpack, wrong shape, or too large), ``oversized``
    (messages not sent because they exceeded max_packet_bytes) and ``send_errors``.
    """

    def __init__(
        self,
        node_id: str,
        bind: tuple[str, int],
        meta: dict[str, Any],
        cipher: PacketCipher,
        *,
        config: MembershipConfig = DEFAULT_CONFIG,
        rng: random.Random | None = None,
        clock: Callable[[], float] = trio.current_time,
        advertise: tuple[str, int] | None = None,
    ) -> None:
        self.node_id = node_id
        self.cipher = cipher
        self.config = config
        self._bind = bind
        self._meta = dict(meta)
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._advertise = advertise
        self._seeds: list[tuple[str, int]] = []
        self._send_events, self.events = trio.open_memory_channel[MemberEvent](math.inf)
        self.stats = {"sent": 0, "received": 0, "bad_packets": 0, "oversized": 0, "send_errors": 0}

        self._running: _Running | None = None  # set while run() runs
        self._stopped = trio.Event()
        self._wakeup = trio.Event()
        self._armed_deadline = math.inf
        self._bad_packets = _RateLimitedWarning(
            f"gossip node {node_id} dropped %d bad packets (latest: %s); "
            "check that every node uses the same cluster secret",
            BAD_PACKET_WARNING_INTERVAL_S,
        )
        self._oversized = _RateLimitedWarning(
            f"gossip node {node_id} dropped %d messages larger than max_packet_bytes (latest: %s)",
            BAD_PACKET_WARNING_INTERVAL_S,
        )

    # --- public API ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the socket, report the bound (host, port) through ``task_status``, and serve.

        Runs until cancelled, which stops the node without a word to the others (they will
        declare it dead), or until ``leave``.
        """
        if self._running is not None or self._stopped.is_set():
            raise RuntimeError(f"gossip node {self.node_id} can run only once")
        host = self._bind[0]
        if self._advertise is None and host in ("", "0.0.0.0", "::"):
            raise UsageError(
                f"gossip node {self.node_id} binds to {format_address(*self._bind)}, which other members cannot "
                "send to; pass advertise=(IP, PORT) with an address they can reach"
            )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        raw = socket.socket(family, socket.SOCK_DGRAM)
        try:
            with raw:
                raw.setblocking(False)
                try:
                    await trio.socket.from_stdlib_socket(raw).bind(self._bind)
                except OSError as exc:
                    raise ListenFailed(
                        f"cannot bind the gossip socket to {format_address(*self._bind)}: {exc.strerror or exc}; "
                        "choose another address or port"
                    ) from None
                bound = raw.getsockname()[:2]
                advertise = self._advertise_address(bound)
                membership = Membership(self.node_id, advertise, self._meta, self.config, self._rng, self._clock())

                with trio.CancelScope() as cancel_scope:
                    self._running = _Running(membership, raw, cancel_scope)
                    log.info(
                        "gossip node %s listening on %s, advertising %s",
                        self.node_id,
                        format_address(*bound),
                        format_address(*advertise),
                    )
                    if self._seeds:
                        self._send(membership.join(self._seeds, self._clock()))
                    task_status.started(bound)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._receive_loop, self._running)
                        await self._timer_loop(self._running)
        finally:
            if self._running is not None:
                log.info("gossip node %s stopped", self.node_id)
            self._stopped.set()
            self._send_events.close()

    def join(self, seeds: list[tuple[str, int]]) -> None:
        """Join the cluster through ``seeds``; before ``run`` starts, the join waits for it."""
        self._seeds = list(seeds)
        running = self._running_unless_stopped()
        if running is not None:
            self._send(running.membership.join(self._seeds, self._clock()))
            self._wakeup.set()

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Publish new meta (role, addresses, labels, slots, load) to every member."""
        running = self._running_unless_stopped()
        if running is None:
            self._meta = dict(meta)
            return
        running.membership.set_meta(meta, self._clock())
        self._wakeup.set()

    async def leave(self) -> None:
        """Tell the cluster that this node leaves, then stop ``run``."""
        running = self._running
        if running is None or self._stopped.is_set():
            return
        self._send(running.membership.leave(self._clock()))
        running.cancel_scope.cancel()
        await self._stopped.wait()

    def members(self) -> list[Member]:
        """Return the membership table, this node included; empty before ``run`` starts."""
        running = self._running
        return [] if running is None else running.membership.members()

    @property
    def membership(self) -> Membership:
        """The membership core, for inspection; available once ``run`` has started, and after it stopped."""
        if self._running is None:
            raise RuntimeError(f"gossip node {self.node_id} is not running; start run() first")
        return self._running.membership

    # --- the two loops ------------------------------------------------------------------

    async def _timer_loop(self, running: _Running) -> None:
        membership = running.membership
        while True:
            deadline = membership.next_deadline()
            self._armed_deadline = deadline
            with trio.move_on_at(self._trio_time(deadline)):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            # Handle datagrams that are already waiting first: after a stall their acks
            # must count before the probes they reply to are judged.
            self._drain(running)
            self._send(membership.tick(self._clock()))
            self._publish_events(membership)

    async def _receive_loop(self, running: _Running) -> None:
        while True:
            await trio.lowlevel.wait_readable(running.socket)
            self._drain(running)
            if running.membership.next_deadline() < self._armed_deadline:
                self._wakeup.set()

    # --- datagrams ----------------------------------------------------------------------

    def _drain(self, running: _Running) -> None:
        for _ in range(MAX_DRAIN_PACKETS):
            try:
                data, sender = running.socket.recvfrom(RECEIVE_BUFFER_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:
                # Linux reports ICMP errors for earlier sends on the next receive; skip them.
                log.debug("gossip node %s: receive failed: %s", self.node_id, exc)
                continue
            self._handle_datagram(running, data, (sender[0], sender[1]))
        self._publish_events(running.membership)

    def _handle_datagram(self, running: _Running, data: bytes, sender: tuple[str, int]) -> None:
        self.stats["received"] += 1
        try:
            if len(data) > self.config.max_packet_bytes + SEAL_OVERHEAD_BYTES:
                raise ProtocolError(f"datagram of {len(data)} bytes exceeds max_packet_bytes")
            plaintext = self.cipher.open(data)
            try:
                message = msgpack.unpackb(plaintext)
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise ProtocolError(f"invalid msgpack: {exc}") from None
            out = running.membership.receive(message, sender, self._clock())
        except ProtocolError as exc:
            self.stats["bad_packets"] += 1
            detail = f"from {format_address(*sender)}: {exc}"
            log.debug("gossip node %s dropped a bad packet %s", self.node_id, detail)
            self._bad_packets.add(self._clock(), detail)
            return
        self._send(out)

    def _send(self, out: list[Outgoing]) -> None:
        running = self._running
        if running is None:
            return
        for address, message in out:
            if not _is_ip_address(address[0]):
                # Only a member with another shell could advertise a host name; resolving it
                # here would block the whole node on a name lookup per datagram.
                self.stats["send_errors"] += 1
                log.debug("gossip node %s: not sending to %r, which is not an IP address", self.node_id, address[0])
                continue
            data = msgpack.packb(message)
            if len(data) > self.config.max_packet_bytes:
                self.stats["oversized"] += 1
                self._oversized.add(
                    self._clock(), f"{message.get('t')} of {len(data)} bytes to {format_address(*address)}"
                )
                continue
            try:
                running.socket.sendto(self.cipher.seal(data), address)
            except OSError as exc:
                # A full send buffer or an unreachable network: the protocol treats the
                # packet as lost, as it would be on the wire.
                self.stats["send_errors"] += 1
                log.debug("gossip node %s: send to %s failed: %s", self.node_id, format_address(*address), exc)
            else:
                self.stats["sent"] += 1

    # --- helpers ------------------------------------------------------------------------

    def _publish_events(self, membership: Membership) -> None:
        for event in membership.drain_events():
            try:
                self._send_events.send_nowait(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the reader closed its end of the channel

    def _trio_time(self, deadline: float) -> float:
        """Convert a deadline on this node's clock to trio's clock."""
        if deadline == math.inf:
            return math.inf
        return trio.current_time() + (deadline - self._clock())

    def _advertise_address(self, bound: tuple[str, int]) -> tuple[str, int]:
        host, port = self._advertise or bound
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(
                f"gossip advertise address {host!r} is not an IP address; other members send to it "
                "without a name lookup, so give its IP"
            ) from None
        if ip.is_unspecified:
            raise UsageError(
                f"gossip advertise address {host!r} is unspecified; give an address other members can reach"
            )
        return str(ip), int(port)

    def _running_unless_stopped(self) -> _Running | None:
        """Return the running state, or None before ``run``; raise RuntimeError once it has stopped."""
        if self._stopped.is_set():
            raise RuntimeError(f"gossip node {self.node_id} has stopped")
        return self._running
