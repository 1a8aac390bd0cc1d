"""The SWIM failure detector with Lifeguard local health: whom to probe, when, and with what result.

Each probe interval the detector pings the next member of a shuffled round-robin order.
Without an ack within the probe timeout it sends ``ping_req`` to ``indirect_probes``
alive members, which ping the target for it and forward its ack or reply with a ``nack``.
With no ack by the end of the interval, the probe has failed and ``tick`` returns the
target, which the membership then suspects. The detector also runs the indirect probes
that other members ask of this node.

Local health is a score from 0 to max_local_health - 1. Every failed probe with nacks
missing raises it by the number missing (by one if there was no member to ask), because
nacks that do not arrive point at this node's own network or scheduling. The membership
raises it too when this node has to refute a suspicion of itself, and every successful
probe lowers it by one. Probe interval and timeout are multiplied by score + 1.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from swarmctl.cluster.member_table import REACHABLE, MemberTable
from swarmctl.cluster.members import MembershipConfig, MemberState, Outgoing

# A relay sends its nack this fraction of the probe timeout after the ping_req arrived,
# so that the nack reaches the requester before the requester's probe interval ends.
RELAY_TIMEOUT_FRACTION = 0.8

# Builds an outgoing message with piggybacked updates: (address, recipient id, message).
Piggyback = Callable[[tuple[str, int], "str | None", dict[str, Any]], Outgoing]


@dataclass
class _Probe:
    target: str
    seq: int
    timeout_at: float  # no direct ack by then: send ping_req
    ends_at: float  # no ack at all by then: the probe failed
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass
class _Relay:
    """An indirect probe this node runs for another member."""

    requester: tuple[str, int]
    requester_seq: int
    nack_at: float


class FailureDetector:
    """Probe rounds, indirect probes and local health of one node."""

    def __init__(
        self,
        node_id: str,
        table: MemberTable,
        config: MembershipConfig,
        rng: random.Random,
        now: float,
        piggyback: Piggyback,
    ) -> None:
        self.node_id = node_id
        self.health = 0
        self._table = table
        self._config = config
        self._rng = rng
        self._piggyback = piggyback
        self._order: list[str] = []
        self._index = 0
        self._probe: _Probe | None = None  # None between probes
        # A random first probe time keeps nodes that start together out of step.
        self._next_probe_at = now + rng.uniform(0, config.probe_interval_s)
        self._relays: dict[int, _Relay] = {}
        self._seq = 0

    def change_health(self, delta: int) -> None:
        self.health = min(max(self.health + delta, 0), self._config.max_local_health - 1)

    def next_deadline(self) -> float:
        probe = self._probe
        if probe is None:
            deadline = self._next_probe_at
        else:
            deadline = probe.ends_at if probe.indirect_sent else probe.timeout_at
        for relay in self._relays.values():
            deadline = min(deadline, relay.nack_at)
        return deadline

    def tick(self, now: float, out: list[Outgoing]) -> str | None:
        """Run the probe steps and nacks due at ``now``; return the target of a probe that failed, if any."""
        for seq, relay in list(self._relays.items()):
            if now >= relay.nack_at:
                del self._relays[seq]
                out.append(Outgoing(relay.requester, {"t": "nack", "seq": relay.requester_seq, "from": self.node_id}))

        failed = None
        probe = self._probe
        if probe is not None and not probe.indirect_sent and now >= probe.timeout_at:
            self._send_indirect_probes(probe, now, out)
        if probe is not None and now >= probe.ends_at:
            self._probe = None
            failed = self._judge_failed_probe(probe)
        if self._probe is None and now >= self._next_probe_at:
            self._start_probe(now, out)
        return failed

    def on_ack(self, seq: int, out: list[Outgoing]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self._probe = None
            self.change_health(-1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            ack = {"t": "ack", "seq": relay.requester_seq, "from": self.node_id}
            out.append(self._piggyback(relay.requester, None, ack))

    def on_nack(self, seq: int) -> None:
        if self._probe is not None and self._probe.seq == seq:
            self._probe.nacks += 1

    def relay(
        self,
        requester: tuple[str, int],
        seq: int,
        target: str,
        address: tuple[str, int],
        now: float,
        out: list[Outgoing],
    ) -> None:
        """Ping ``target`` for ``requester``; its ack is forwarded, and a nack is sent if none comes."""
        if target == self.node_id:
            out.append(Outgoing(requester, {"t": "ack", "seq": seq, "from": self.node_id}))
            return
        relay_seq = self._next_seq()
        self._relays[relay_seq] = _Relay(requester, seq, now + self._config.probe_timeout_s * RELAY_TIMEOUT_FRACTION)
        ping = {"t": "ping", "seq": relay_seq, "from": self.node_id, "to": target}
        out.append(self._piggyback(address, target, ping))

    # --- probe steps --------------------------------------------------------------------

    def _start_probe(self, now: float, out: list[Outgoing]) -> None:
        scale = self.health + 1
        self._next_probe_at = now + self._config.probe_interval_s * scale
        target = self._next_target()
        if target is None:
            return
        seq = self._next_seq()
        self._probe = _Probe(
            target,
            seq,
            timeout_at=now + self._config.probe_timeout_s * scale,
            ends_at=now + self._config.probe_interval_s * scale,
        )
        ping = {"t": "ping", "seq": seq, "from": self.node_id, "to": target}
        out.append(self._piggyback(self._table.rows[target].address, target, ping))

    def _next_target(self) -> str | None:
        # Members that appeared since the last probe are probed in this round, at a random
        # place among the members still to come.
        for node_id in self._table.newly_reachable:
            self._order.insert(self._rng.randint(self._index, len(self._order)), node_id)
        self._table.newly_reachable.clear()

        reachable = self._table.reachable
        for _ in range(2):
            while self._index < len(self._order):
                node_id = self._order[self._index]
                self._index += 1
                if node_id in reachable:
                    return node_id
            # The round is over: start the next one in a new random order.
            self._order = reachable.ids()
            self._rng.shuffle(self._order)
            self._index = 0
        return None

    def _send_indirect_probes(self, probe: _Probe, now: float, out: list[Outgoing]) -> None:
        scale = self.health + 1
        probe.indirect_sent = True
        # A late tick (this node was paused) still gives the indirect probes their full time.
        window = (self._config.probe_interval_s - self._config.probe_timeout_s) * scale
        probe.ends_at = max(probe.ends_at, now + window)

        rows = self._table.rows
        target = rows.get(probe.target)
        if target is None or target.state not in REACHABLE:
            return
        relay_count = self._config.indirect_probes
        candidates = self._table.reachable.sample(self._rng, relay_count * 2, exclude=(probe.target,))
        relays = [node_id for node_id in candidates if rows[node_id].state == MemberState.ALIVE][:relay_count]
        request = {"t": "ping_req", "seq": probe.seq, "from": self.node_id, "to": probe.target, "addr": target.address}
        for node_id in relays:
            out.append(self._piggyback(rows[node_id].address, node_id, dict(request)))
        probe.expected_nacks = len(relays)

    def _judge_failed_probe(self, probe: _Probe) -> str | None:
        target = self._table.rows.get(probe.target)
        if target is None or target.state not in REACHABLE:
            return None  # others declared it dead, or it left, while the probe ran
        if probe.expected_nacks:
            self.change_health(probe.expected_nacks - probe.nacks)
        else:
            self.change_health(1)
        return probe.target

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq
