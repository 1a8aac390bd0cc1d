"""SWIM-style gossip membership with the Lifeguard extensions: the pure core.

Every node keeps a table of members: address, incarnation, state and meta (role, data
address, labels, slots, load). This package decides what to send and how the table
changes. It opens no socket, reads no clock and draws no randomness of its own: the
caller passes ``now`` and a seeded ``random.Random``, and sends the returned messages.
``swarmctl.cluster.gossip`` runs it over UDP, ``swarmctl.sim.membership`` over a
simulated network. This module contains the protocol; the table and its incarnation rules
are in ``member_table``, probing and local health in ``probing``, the wire shapes and the
piggyback queue in ``dissemination``, the suspicion timer in ``suspicion``.

Failure detection (SWIM). Each probe interval a node pings the next member of a shuffled
round-robin order. Without an ack within the probe timeout, it asks ``indirect_probes``
other members to ping the target for it (``ping_req``). They forward the ack if one
comes, and otherwise answer with a ``nack``. With no ack by the end of the interval the
target becomes suspect. A suspect that does not refute before its suspicion timeout
becomes dead. Every member probes one target per interval, so a crashed member is
probed by about one member per interval: the first probe comes after about one interval
on average, and later than 4.6 intervals with a probability of 1%.

Lifeguard adds three things. Local health: a node counts signs that it is itself the slow
one (nacks that did not arrive, suspicions of itself it had to refute) and multiplies its
probe interval and timeouts by that score plus one, so a starved or paused node accuses
others less readily. Each successful probe lowers the score. Suspicion timeouts start at
a maximum and fall towards a minimum as other members independently confirm the
suspicion. Buddy messages: whatever a node sends to a member it holds as suspect or dead
carries that news first, and a node that starts to suspect a member tells it at once.

Incarnations order the news about a member. Only the member itself increments its
incarnation: to refute a suspicion, to rejoin after it was declared dead, or to publish
new meta. alive(i) overrides suspect(j) and dead(j) iff i > j; suspect(i) overrides
alive(j) iff i >= j; dead(i) and left(i) override everything of incarnation <= i.

Dissemination. Every update is piggybacked on pings, acks and ping_reqs, and on gossip
messages that a node with news sends every gossip interval to ``gossip_fanout`` random
members. Each node that learns something new sends it retransmit_multiplier x
ceil(log10(n + 1)) times, enough for the epidemic to reach all n members with high
probability. A packet carries only the updates that fit into ``max_packet_bytes``. Two
updates also go straight to every member, because their loss is costly and n small
datagrams are cheap next to the probe traffic: a refutation (a member that misses it
declares a live node dead), and a newcomer's arrival (members that join at the same
time would otherwise depend on gossip alone to meet each other).

Join and anti-entropy. A newcomer sends its own state to its seeds. A seed takes the
newcomer into its table, spreads the news, and replies with its whole table in as many
packets as needed. If some of those packets are lost, the newcomer asks again after
``join_retry_s``. Every sync interval, scaled up in large clusters, a node does the
same push-pull exchange with a random member, dead ones not yet forgotten included. This
repairs updates that gossip missed and reunites the halves of a healed partition. Dead
and left members are forgotten after ``dead_member_reap_s``. Until then their
incarnation is kept, so a delayed old alive message cannot bring them back.

Timing. The minimum suspicion timeout is suspicion_min_multiplier x max(1, log10(n)) x
probe interval, because dissemination needs O(log n) rounds, and never less than
suspicion_min_floor_s. A member that pauses is
suspected at the earliest one probe interval after the pause began, and refutes within
a round trip after it resumes, so pauses shorter than the probe interval plus the
minimum timeout are survived: 3.9 s at 128 members with the defaults. In the simulator,
a crashed member of 128 is known dead everywhere within 5.5 s at the 99th percentile
(``bench/recovery_swim.py``).
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

from swarmctl.cluster.dissemination import (
    PIGGYBACK_FRAME_BYTES,
    BroadcastQueue,
    Update,
    packed_size,
    parse_address,
    parse_updates,
    require_int,
    require_str,
)
from swarmctl.cluster.member_table import REACHABLE, MemberTable, update_of
from swarmctl.cluster.members import (
    Member,
    MemberEvent,
    MembershipConfig,
    MemberState,
    Outgoing,
)
from swarmctl.cluster.probing import FailureDetector
from swarmctl.errors import ProtocolError, UsageError

__all__ = ["Member", "MemberEvent", "MemberState", "Membership", "MembershipConfig", "Outgoing"]

log = logging.getLogger(__name__)

# Join attempts back off exponentially from join_retry_s up to this many seconds.
MAX_JOIN_RETRY_S = 30.0
# A node's own alive update may fill at most this share of a packet, so that it always
# fits beside the largest message it rides on.
MAX_OWN_UPDATE_SHARE = 0.5


class Membership:
    """The membership of one node: its table, and the SWIM protocol that keeps it current."""

    def __init__(
        self,
        node_id: str,
        address: tuple[str, int],
        meta: dict[str, Any],
        config: MembershipConfig,
        rng: random.Random,
        now: float,
    ) -> None:
        self.node_id = node_id
        self.address = (str(address[0]), int(address[1]))
        self.config = config
        self._rng = rng
        self._budget = config.max_packet_bytes
        self._check_meta(meta)
        self._me = Member(node_id, self.address, 0, MemberState.ALIVE, dict(meta), now)
        self._table = MemberTable(self._me, config)
        self._broadcasts = BroadcastQueue(max_update_bytes=int(self._budget * MAX_OWN_UPDATE_SHARE))

        self._detector = FailureDetector(node_id, self._table, config, rng, now, self._with_piggyback)

        self._next_gossip_at = now
        self._next_sync_at = now + config.sync_interval(1) * (1 + rng.random())
        self._seeds: list[tuple[str, int]] = []
        self._join_attempts = 0
        self._join_retry_at = math.inf
        self._left = False

    # --- queries ------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._me.meta)

    @property
    def local_health(self) -> int:
        """The Lifeguard local health score: 0 when healthy, up to max_local_health - 1."""
        return self._detector.health

    def members(self) -> list[Member]:
        """Return copies of all rows: this node's own, and dead and left ones not yet forgotten."""
        return [self._table.copy_of(node_id) for node_id in self._table.rows]

    def member(self, node_id: str) -> Member | None:
        return self._table.copy_of(node_id)

    def drain_events(self) -> list[MemberEvent]:
        """Return the events since the last call, oldest first."""
        events, self._table.events = self._table.events, []
        return events

    def next_deadline(self) -> float:
        """Return the time at which ``tick`` must run next (math.inf after leaving)."""
        if self._left:
            return math.inf
        deadline = self._detector.next_deadline()
        if self._broadcasts:
            deadline = min(deadline, self._next_gossip_at)
        return min(deadline, self._next_sync_at, self._join_retry_at, self._table.next_deadline())

    # --- commands -----------------------------------------------------------------------

    def join(self, seeds: list[tuple[str, int]], now: float) -> list[Outgoing]:
        """Send this node's state to ``seeds``, which reply with theirs; retried until one replies."""
        self._seeds = [(str(host), int(port)) for host, port in seeds if (host, port) != self.address]
        self._join_attempts = 0
        self._join_retry_at = math.inf
        if not self._seeds:
            return []
        log.info("member %s joining through %s, incarnation %d", self.node_id, self._seeds, self.incarnation)
        return self._send_join(now)

    def leave(self, now: float) -> list[Outgoing]:
        """Announce that this node leaves; afterwards it sends and handles nothing."""
        if self._left:
            return []
        self._left = True
        self._me.state = MemberState.LEFT
        self._me.state_since = now
        self._table.log_transition(self.node_id, "left", self.incarnation)
        update = update_of(self._me)
        fanout = self.config.retransmit_limit(self._table.size())
        return [
            Outgoing(self._table.rows[node_id].address, {"t": "gossip", "from": self.node_id, "g": [update]})
            for node_id in self._table.reachable.sample(self._rng, fanout)
        ]

    def set_meta(self, meta: dict[str, Any], now: float) -> None:
        """Publish new meta; the incarnation goes up so that every member takes it."""
        self._check_meta(meta)
        self._me.meta = dict(meta)
        self._me.incarnation += 1
        self._me.state_since = now
        self._broadcasts.push(update_of(self._me))

    # --- time ---------------------------------------------------------------------------

    def tick(self, now: float) -> list[Outgoing]:
        """Run every step that is due at ``now``: probes, nacks, suspicion timeouts, gossip, sync."""
        if self._left:
            return []
        out: list[Outgoing] = []
        failed = self._detector.tick(now, out)
        if failed is not None:
            self._suspect_after_failed_probe(failed, now, out)

        for node_id in self._table.expired_suspicions(now):
            member = self._table.rows[node_id]
            self._table.mark_dead(node_id, member.incarnation, self.node_id, now)
            self._broadcasts.push(update_of(member, accuser=self.node_id))

        if now >= self._next_gossip_at:
            self._next_gossip_at = now + self.config.gossip_interval_s
            self._gossip(out)

        if now >= self._next_sync_at:
            self._next_sync_at = now + self.config.sync_interval(self._table.size()) * (0.5 + self._rng.random())
            self._start_sync(out)

        if now >= self._join_retry_at:
            out.extend(self._send_join(now))

        for node_id in self._table.reap(now):
            self._broadcasts.discard(node_id)
        return out

    def _suspect_after_failed_probe(self, node_id: str, now: float, out: list[Outgoing]) -> None:
        target = self._table.rows[node_id]
        if not self._table.mark_suspect(node_id, target.incarnation, self.node_id, now):
            return
        update = update_of(target, accuser=self.node_id)
        self._broadcasts.push(update)
        # Tell the suspect at once, so that a live member can refute within a round trip.
        out.append(Outgoing(target.address, {"t": "gossip", "from": self.node_id, "g": [update]}))

    def _gossip(self, out: list[Outgoing]) -> None:
        if not self._broadcasts:
            return
        rows = self._table.rows
        for node_id in self._table.reachable.sample(self._rng, self.config.gossip_fanout):
            message = self._with_piggyback(rows[node_id].address, node_id, {"t": "gossip", "from": self.node_id})
            if "g" in message.message:
                out.append(message)

    # --- messages -----------------------------------------------------------------------

    def receive(self, message: dict[str, Any], sender: tuple[str, int], now: float) -> list[Outgoing]:
        """Handle one decoded message from ``sender``; raise ProtocolError if its shape is wrong."""
        if type(message) is not dict:
            raise ProtocolError(f"membership message must be a map, not {type(message).__name__}")
        kind = require_str(message, "t")
        origin = require_str(message, "from")
        if self._left:
            return []
        out: list[Outgoing] = []

        match kind:
            case "ping":
                seq = require_int(message, "seq")
                target = require_str(message, "to")
                self._apply_all(parse_updates(message), sender, now, out)
                # A ping for another node id is for an earlier node at this address: no ack,
                # so that the prober declares that node dead.
                if target == self.node_id:
                    ack = {"t": "ack", "seq": seq, "from": self.node_id}
                    out.append(self._with_piggyback(sender, origin, ack))
            case "ack":
                seq = require_int(message, "seq")
                self._apply_all(parse_updates(message), sender, now, out)
                self._detector.on_ack(seq, out)
            case "ping_req":
                seq = require_int(message, "seq")
                target = require_str(message, "to")
                target_address = parse_address(message.get("addr"))
                self._apply_all(parse_updates(message), sender, now, out)
                self._detector.relay(sender, seq, target, target_address, now, out)
            case "nack":
                self._detector.on_nack(require_int(message, "seq"))
            case "gossip":
                self._apply_all(parse_updates(message), sender, now, out)
            case "sync":
                entries = parse_updates(message, "members")
                ask = message.get("ask", False)
                if type(ask) is not bool:
                    raise ProtocolError("membership message field 'ask' must be a boolean")
                rows = require_int(message, "rows")
                self._handle_sync(origin, sender, entries, ask, rows, now, out)
            case _:
                raise ProtocolError(f"unknown membership message type {kind!r}")
        return out

    def _handle_sync(
        self,
        origin: str,
        sender: tuple[str, int],
        entries: list[Update],
        ask: bool,
        rows: int,
        now: float,
        out: list[Outgoing],
    ) -> None:
        # The sender has every row it sent, and the other members learn them from their own
        # gossip, so only news about the sender itself is spread further. That is how the
        # arrival of a newcomer reaches the cluster.
        joining = bool(self._seeds) and not ask
        announce: list[tuple[str, int]] = []
        for entry in entries:
            if entry.node_id == self.node_id:
                # The reply, or the sender's own gossip, carries this node's row back.
                self._apply_about_self(entry, now, out)
            elif self._table.apply(entry, now):
                if entry.node_id == origin:
                    self._broadcasts.push(entry.wire)
                if joining and entry.state in REACHABLE:
                    announce.append(entry.address)

        # A newcomer announces itself to every member it learns from the seed. Members that
        # join at the same time reach the seed in some order, and the later one's reply
        # lists the earlier one, so every pair of them meets even if gossip misses one.
        if announce:
            hello = update_of(self._me)
            out.extend(Outgoing(address, {"t": "gossip", "from": self.node_id, "g": [hello]}) for address in announce)

        if ask:
            out.extend(self._sync_messages(sender, ask=False))
        elif self._seeds and len(self._table.rows) >= rows:
            log.info("member %s joined through %s, incarnation %d", self.node_id, origin, self.incarnation)
            self._seeds = []
            self._join_retry_at = math.inf
        elif self._seeds:
            # Part of the seed's table was lost on the way, so the join goes out again after
            # join_retry_s, without backoff because the seed is reachable. Each reply fills gaps.
            self._join_attempts = 0
            self._join_retry_at = now + self.config.join_retry_s

    def _apply_all(self, updates: list[Update], sender: tuple[str, int], now: float, out: list[Outgoing]) -> None:
        correct_sender = False
        for update in updates:
            if update.node_id == self.node_id:
                correct_sender |= self._apply_about_self(update, now, out)
            elif self._table.apply(update, now):
                self._broadcasts.push(update.wire)
        if correct_sender:
            out.append(Outgoing(sender, {"t": "gossip", "from": self.node_id, "g": [update_of(self._me)]}))

    def _apply_about_self(self, update: Update, now: float, out: list[Outgoing]) -> bool:
        """Apply news about this node; return whether its sender should be sent this node's current row.

        That is the case when the sender still spreads a suspicion or death that an earlier
        refutation settled: gossip about the refutation may have missed it, and no other
        member corrects it.
        """
        me = self._me
        if update.state == MemberState.ALIVE:
            # An alive message newer than ours, or one of our incarnation with other
            # contents, is left over from an earlier run of this node id.
            if update.incarnation > me.incarnation or (
                update.incarnation == me.incarnation and (update.meta != me.meta or update.address != me.address)
            ):
                self.refute(update.incarnation, MemberState.ALIVE, now, out)
            return False
        if update.incarnation >= me.incarnation:
            self.refute(update.incarnation, MemberState(update.state), now, out)
            return False
        return True

    def refute(self, heard_incarnation: int, heard_state: MemberState, now: float, out: list[Outgoing]) -> None:
        """Refute news that this node is suspect, dead or gone, by raising its incarnation above the one heard.

        The refutation goes into gossip and also straight to every reachable member. It is
        the one update whose loss costs a false death: a member that misses it declares this
        node dead when its suspicion times out. An epidemic misses a given member with
        probability of about exp(-retransmit limit), which adds up over thousands of
        refutations an hour, whereas n datagrams of some 60 bytes are cheap next to the
        probe traffic.
        """
        me = self._me
        me.incarnation = max(me.incarnation, heard_incarnation) + 1
        me.state_since = now
        if heard_state != MemberState.ALIVE:
            self._detector.change_health(1)
        self._table.log_transition(self.node_id, f"refutes {heard_state.value}", me.incarnation)
        update = update_of(me)
        self._broadcasts.push(update)
        rows = self._table.rows
        for node_id in self._table.reachable.ids():
            out.append(Outgoing(rows[node_id].address, {"t": "gossip", "from": self.node_id, "g": [update]}))

    # --- helpers ------------------------------------------------------------------------

    def _check_meta(self, meta: dict[str, Any]) -> None:
        largest = {"n": self.node_id, "i": 2**32, "s": "alive", "a": self.address, "m": meta}
        size = packed_size(largest)
        limit = int(self._budget * MAX_OWN_UPDATE_SHARE)
        if size > limit:
            raise UsageError(
                f"meta of node {self.node_id} encodes to {size} bytes, more than the {limit} bytes that fit "
                "in a membership packet; keep large values out of the meta"
            )

    def _with_piggyback(self, address: tuple[str, int], node_id: str | None, message: dict[str, Any]) -> Outgoing:
        """Return ``message`` to ``address`` with as many queued updates as fit in a packet."""
        budget = self._budget - packed_size(message) - PIGGYBACK_FRAME_BYTES
        first = None
        member = self._table.rows.get(node_id) if node_id is not None else None
        if member is not None and member is not self._me and member.state != MemberState.ALIVE:
            # Buddy message: a member we hold as suspect or dead hears it first.
            first = update_of(member, accuser=self.node_id)
        updates = self._broadcasts.take(budget, self.config.retransmit_limit(self._table.size()), first)
        if updates:
            message["g"] = updates
        return Outgoing(address, message)

    def _send_join(self, now: float) -> list[Outgoing]:
        delay = min(self.config.join_retry_s * 2**self._join_attempts, MAX_JOIN_RETRY_S)
        if self._join_retry_at != math.inf:
            log.info(
                "member %s has no complete reply from seeds %s yet; sending the join again, next try in %.1f s",
                self.node_id,
                self._seeds,
                delay,
            )
        self._join_attempts += 1
        self._join_retry_at = now + delay
        out: list[Outgoing] = []
        for seed in self._seeds:
            out.extend(self._sync_messages(seed, ask=True))
        return out

    def _start_sync(self, out: list[Outgoing]) -> None:
        # Dead members are candidates too: one that is back after a partition learns that
        # it was declared dead, refutes, and so rejoins.
        candidates = [
            member
            for member in self._table.rows.values()
            if member.state != MemberState.LEFT and member is not self._me
        ]
        if candidates:
            partner = self._rng.choice(candidates)
            out.extend(self._sync_messages(partner.address, ask=True))

    def _sync_messages(self, address: tuple[str, int], *, ask: bool) -> list[Outgoing]:
        """Split the whole table into sync messages that each fit in a packet.

        Only the first message requests a reply. Every message carries the number of rows,
        so that a joining node can tell whether a lost packet left it with part of them.
        """
        header = {"t": "sync", "from": self.node_id, "ask": ask, "rows": 2**32, "members": []}
        room = self._budget - packed_size(header) - PIGGYBACK_FRAME_BYTES
        chunks: list[list[dict[str, Any]]] = [[]]
        used = 0
        for member in self._table.rows.values():
            entry = update_of(member)
            size = packed_size(entry)
            if chunks[-1] and used + size > room:
                chunks.append([])
                used = 0
            chunks[-1].append(entry)
            used += size
        rows = len(self._table.rows)
        return [
            Outgoing(
                address, {"t": "sync", "from": self.node_id, "ask": ask and index == 0, "rows": rows, "members": chunk}
            )
            for index, chunk in enumerate(chunks)
        ]
