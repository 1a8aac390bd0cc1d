"""The executor's link to the coordinator: connect, hello, reconnect, follow redirects.

``CoordinatorClient.run`` keeps one session open at a time and calls the executor's session
function with it. When the connection fails or breaks, it waits and tries again, forever:
an executor outlives coordinator restarts and network cuts. The wait doubles from
``min_delay`` up to ``max_delay`` and is multiplied by a random factor between 0.5 and 1.5,
so that a hundred executors cut off together do not reconnect in one burst. A coordinator
that is not the leader rejects the hello with the leader's address, and the next attempt
goes there first.
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence

import trio

from swarmctl import protocol
from swarmctl.cluster.transport import TCP, Network, Peer, PeerGone, format_address, parse_address
from swarmctl.errors import ConnectionFailed, ProtocolError, UsageError
from swarmctl.tokens import AuthError

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10.0
MAX_REDIRECTS = 3  # in a row to the same leader without a session; more means that leader is gone

Session = Callable[[Peer, protocol.Welcome], Awaitable[None]]


def backoff_delay(failures: int, rng: random.Random, *, min_delay: float, max_delay: float) -> float:
    """Return the wait before reconnect attempt ``failures`` (1 for the first), with jitter."""
    base = min(max_delay, min_delay * 2 ** max(0, failures - 1))
    return base * rng.uniform(0.5, 1.5)


class NoLeader(Exception):
    """A coordinator-eligible node rejected the hello during an election: try again soon, without backing off."""


class Redirected(Exception):
    def __init__(self, address: tuple[str, int], reason: str) -> None:
        super().__init__(reason)
        self.address = address


class CoordinatorClient:
    def __init__(
        self,
        addresses: Sequence[tuple[str, int]],
        *,
        rng: random.Random | None = None,
        min_delay: float = RECONNECT_MIN_S,
        max_delay: float = RECONNECT_MAX_S,
        ssl_context: ssl.SSLContext | None = None,
        network: Network = TCP,
    ) -> None:
        self.addresses = list(addresses)
        self.network = network
        self.ssl_context = ssl_context  # TLS towards the coordinator, with the cluster CA
        self.rng = rng or random.Random()
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.sessions = 0  # sessions opened so far
        self.term = 0  # the newest leader term seen; a coordinator of an older term was deposed

    async def run(self, hello: Callable[[], protocol.Hello], session: Session) -> None:
        """Open sessions with ``session`` until cancelled; ``hello`` builds each session's hello."""
        failures = redirects = 0
        last_target: tuple[str, int] | None = None  # the leader named by the last redirect
        while True:
            redirect: list[Redirected] = []
            failure: list[str] = []
            electing: list[NoLeader] = []
            connected: tuple[str, int] | None = None
            try:
                async with self.network.connect(self.addresses, self.ssl_context) as peer:
                    connected = parse_address(peer.name)
                    welcome = await self._handshake(peer, hello())
                    failures = redirects = 0
                    last_target = None
                    self.sessions += 1
                    await session(peer, welcome)
            except* Redirected as group:
                redirect.append(group.exceptions[0])
            except* NoLeader as group:
                electing.append(group.exceptions[0])
            except* (ConnectionFailed, PeerGone, ProtocolError) as group:
                # The session's nursery wraps these in an exception group.
                failure.append(_first_message(group))
                if connected is not None and len(self.addresses) > 1:
                    # Try the others first next time: a node cut off by the network takes a
                    # whole connect timeout to fail, where the others redirect at once.
                    self.addresses = [a for a in self.addresses if a != connected] + [connected]

            if electing:
                # A new leader is due within an election timeout or two, and its executors should
                # be back at once. So wait the shortest delay instead of backing off.
                log.info("%s Trying again.", electing[0])
                redirects = 0
                await trio.sleep(backoff_delay(1, self.rng, min_delay=self.min_delay, max_delay=self.max_delay))
                continue
            if redirect:
                target = redirect[0].address
                self._prefer(target)
                redirects = redirects + 1 if target == last_target else 1
                last_target = target
                if redirects <= MAX_REDIRECTS:
                    log.info("%s Connecting to %s.", redirect[0], format_address(*target))
                    continue
                # The named leader does not accept connections because it died, and the other
                # nodes will elect a new one within an election timeout or two. Try again soon,
                # without backing off.
                if redirects == MAX_REDIRECTS + 1:
                    log.warning(
                        "the leader %s that coordinators redirect to does not accept connections; waiting for them to elect another",
                        format_address(*target),
                    )
                await trio.sleep(backoff_delay(1, self.rng, min_delay=self.min_delay, max_delay=self.max_delay))
                continue
            failures += 1
            delay = backoff_delay(failures, self.rng, min_delay=self.min_delay, max_delay=self.max_delay)
            reason = failure[0] if failure else "The coordinator closed the connection."
            log.warning("%s Reconnecting in %.1fs.", reason, delay)
            await trio.sleep(delay)

    async def _handshake(self, peer: Peer, hello: protocol.Hello) -> protocol.Welcome:
        await peer.send(hello)
        reply = await peer.receive()
        match reply:
            case protocol.Welcome() if reply.term < self.term:
                raise ProtocolError(
                    f"coordinator {peer.name} ({reply.coordinator_id}) leads term {reply.term}, older than term "
                    f"{self.term} of a coordinator this executor followed: it was deposed"
                )
            case protocol.Welcome():
                log.info("connected to %s (%s, term %d)", peer.name, reply.coordinator_id, reply.term)
                self.term = reply.term
                return reply
            case protocol.Reject(redirect=redirect) if redirect:
                try:
                    address = parse_address(redirect)
                except UsageError:
                    raise ProtocolError(f"coordinator {peer.name} redirected to an invalid address {redirect!r}") from None
                raise Redirected(address, f"coordinator {peer.name} redirected this executor: {reply.reason}.")
            case protocol.Reject() if reply.reason.startswith(protocol.NO_LEADER):
                raise NoLeader(f"coordinator {peer.name}: {reply.reason}.")
            case protocol.Reject() if reply.reason.startswith(protocol.AUTH_FAILED):
                # Trying again with the same token cannot succeed: stop with the reason.
                raise AuthError(f"coordinator {peer.name} rejected this executor: {reply.reason}")
            case protocol.Reject():
                raise ProtocolError(f"coordinator {peer.name} rejected this executor: {reply.reason}.")
            case _:
                raise ProtocolError(f"coordinator {peer.name} sent {reply.KIND} instead of welcome.")

    def _prefer(self, address: tuple[str, int]) -> None:
        """Try ``address`` first from now on (the leader moved there)."""
        self.addresses = [address, *(a for a in self.addresses if a != address)]


def _first_message(group: BaseExceptionGroup) -> str:
    exc = group.exceptions[0]
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    text = str(exc)
    return text if text.endswith(".") else text + "."
