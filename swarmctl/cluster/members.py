"""The types of the membership table, its settings, and a set of peers for random choice.

``swarmctl.cluster.membership`` re-exports the table types and MembershipConfig; import them from there.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from typing import Any, NamedTuple

from swarmctl.errors import UsageError


class MemberState(enum.StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


@dataclass
class Member:
    """One row of the membership table."""

    node_id: str
    address: tuple[str, int]
    incarnation: int
    state: MemberState
    meta: dict[str, Any]
    state_since: float  # the caller's clock, in seconds


@dataclass(frozen=True)
class MemberEvent:
    """A change in the table: a member appeared, changed state, or changed address or meta."""

    node_id: str
    state: MemberState
    incarnation: int
    address: tuple[str, int]
    meta: dict[str, Any]


class Outgoing(NamedTuple):
    """A message to send: the destination address and the message dict, not yet encoded."""

    address: tuple[str, int]
    message: dict[str, Any]


@dataclass(frozen=True)
class MembershipConfig:
    """Timing and size settings; every node of a cluster should use the same ones.

    The defaults suit a LAN with round trips of a few milliseconds. With them, 128 members
    send about 8 packets per second each when nothing changes.
    """

    # Time between two probes by one node, scaled by its local health.
    probe_interval_s: float = 0.25
    # Time to wait for a direct ack before asking other members to probe.
    probe_timeout_s: float = 0.1
    # Members asked to probe a target that did not ack (k in SWIM).
    indirect_probes: int = 3
    # Minimum suspicion timeout = this x max(1, log10(n)) x probe_interval_s, and at least
    # suspicion_min_floor_s. With the defaults it is 3.7 s at 128 members, long enough to
    # outlast a 3 s pause plus the refutation.
    suspicion_min_multiplier: float = 7.0
    # Small clusters would get a shorter minimum from the formula (1.75 s below 10 members),
    # and an executor whose event loop stalls for 2 s under load is not dead.
    suspicion_min_floor_s: float = 3.5
    # Maximum suspicion timeout, used until another member confirms a suspicion = this x minimum.
    suspicion_max_multiplier: float = 6.0
    # Independent confirmations that bring the suspicion timeout down to the minimum.
    suspicion_confirmations: int = 3
    # Upper bound of the local health multiplier; its score runs from 0 to this minus 1.
    max_local_health: int = 8
    # Each node sends an update this x ceil(log10(n + 1)) times.
    retransmit_multiplier: int = 4
    # While a node has updates to send, it sends a gossip message this often...
    gossip_interval_s: float = 0.2
    # ...to this many random members.
    gossip_fanout: int = 3
    # Largest encoded message before encryption. Sealing adds 33 bytes and IPv6 and UDP
    # headers 48, so 1180 keeps a datagram within the 1280-byte IPv6 minimum MTU.
    max_packet_bytes: int = 1180
    # Base time between two push-pull syncs by one node. Above 64 members it is multiplied
    # by 1 + log2(n / 64), because each sync carries the whole table.
    sync_interval_s: float = 30.0
    # Wait before a join is sent again: after a reply with rows missing, and (doubling up
    # to 30 s) while no seed replies.
    join_retry_s: float = 1.0
    # Dead and left members are forgotten this long after they were declared so.
    dead_member_reap_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("probe_interval_s", "probe_timeout_s", "gossip_interval_s", "sync_interval_s", "join_retry_s"):
            if not getattr(self, name) > 0:
                raise UsageError(f"membership setting {name} must be positive, not {getattr(self, name)}")

        if self.probe_timeout_s >= self.probe_interval_s:
            raise UsageError(
                f"membership setting probe_timeout_s ({self.probe_timeout_s}) must be below probe_interval_s "
                f"({self.probe_interval_s}), to leave time for indirect probes"
            )

        if self.suspicion_min_multiplier <= 0 or self.suspicion_max_multiplier < 1:
            raise UsageError(
                "membership settings suspicion_min_multiplier must be positive and suspicion_max_multiplier "
                f"at least 1, not {self.suspicion_min_multiplier} and {self.suspicion_max_multiplier}"
            )

        for name in ("indirect_probes", "suspicion_confirmations", "gossip_fanout"):
            if getattr(self, name) < 0:
                raise UsageError(f"membership setting {name} must not be negative, not {getattr(self, name)}")

        if self.max_local_health < 1 or self.retransmit_multiplier < 1:
            raise UsageError("membership settings max_local_health and retransmit_multiplier must be at least 1")

        if self.max_packet_bytes < 512:
            raise UsageError(f"membership setting max_packet_bytes must be at least 512, not {self.max_packet_bytes}")

        if self.dead_member_reap_s < 0:
            raise UsageError(
                f"membership setting dead_member_reap_s must not be negative, not {self.dead_member_reap_s}"
            )

    def suspicion_timeouts(self, members: int) -> tuple[float, float]:
        """Return the minimum and maximum suspicion timeouts in a cluster of ``members``."""
        minimum = max(
            self.suspicion_min_floor_s,
            self.suspicion_min_multiplier * max(1.0, math.log10(max(members, 1))) * self.probe_interval_s,
        )
        return minimum, minimum * self.suspicion_max_multiplier

    def retransmit_limit(self, members: int) -> int:
        """Return how often a node sends each update in a cluster of ``members``."""
        return self.retransmit_multiplier * max(1, math.ceil(math.log10(members + 1)))

    def sync_interval(self, members: int) -> float:
        """Return the time between two push-pull syncs by one node in a cluster of ``members``."""
        return self.sync_interval_s * (1.0 + max(0.0, math.log2(max(members, 1) / 64)))


class PeerSet:
    """Node ids in a list for random choice in O(k), with positions for removal in O(1)."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._positions: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._positions

    def ids(self) -> list[str]:
        return list(self._ids)

    def add(self, node_id: str) -> None:
        if node_id not in self._positions:
            self._positions[node_id] = len(self._ids)
            self._ids.append(node_id)

    def discard(self, node_id: str) -> None:
        position = self._positions.pop(node_id, None)
        if position is None:
            return
        last = self._ids.pop()
        if position < len(self._ids):
            self._ids[position] = last
            self._positions[last] = position

    def sample(self, rng: random.Random, count: int, exclude: tuple[str, ...] = ()) -> list[str]:
        draw = min(count + len(exclude), len(self._ids))
        picked = rng.sample(self._ids, draw)
        return [node_id for node_id in picked if node_id not in exclude][:count]
