"""A deterministic discrete-event simulation of gossip membership.

The simulation runs many ``Membership`` cores, the same code that ``GossipNode`` runs,
on a simulated clock over an in-memory network. Every message is encoded with msgpack
as on the wire, so the simulation checks the size limit and the decoded shapes too.
Encryption is left out: it changes neither timing nor contents.

The network delivers each packet after a latency drawn uniformly from ``latency_s``,
drops it with probability ``loss``, and drops every packet between two partition
groups. A member can be

- paused: it neither ticks nor handles packets. Packets that arrive meanwhile wait and
  are handled on resume, in arrival order and before the first tick, as a socket buffer
  would hold them for a stopped process;
- crashed: it stops for good, and packets sent to it are lost.

All randomness comes from one ``random.Random(seed)``: the network's, the schedule's, and
each core's own generator, seeded from it. The same arguments always give the same result.

Each member starts with a table that already lists every other member, as if all of
them had synced with each other. This skips a bootstrap that would cost O(n^2) updates.
Members added later with ``add_member`` join through seeds, as real nodes do.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack

from swarmctl.cluster.membership import (
    Membership,
    MembershipConfig,
    MemberState,
    Outgoing,
)

LATENCY_S = (0.0005, 0.005)
PORT = 7946
WARMUP_S = 5.0  # simulated time before the first fault, so that probes fall out of step

_DELIVER, _TICK, _RESUME, _CALL = range(4)


@dataclass
class SimMember:
    node_id: str
    address: tuple[str, int]
    core: Membership
    crashed: bool = False
    paused: bool = False
    inbox: list[tuple[tuple[str, int], bytes]] = field(default_factory=list)
    tick_at: float = math.inf


class MembershipSimulation:
    """Membership cores on a simulated clock and a lossy, partitionable in-memory network."""

    def __init__(
        self,
        *,
        seed: int = 1,
        loss: float = 0.0,
        latency_s: tuple[float, float] = LATENCY_S,
        config: MembershipConfig | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.latency_s = latency_s
        self.config = config or MembershipConfig()
        self.now = 0.0
        self.members: dict[str, SimMember] = {}
        self._by_address: dict[tuple[str, int], str] = {}
        self._queue: list[tuple] = []
        self._order = itertools.count()
        self._groups: dict[str, int] = {}  # partition group per member; empty when healed

        # (subject, state) -> observer -> simulated time of the observer's first event
        self.first_seen: dict[tuple[str, MemberState], dict[str, float]] = {}
        # MemberEvents by state, summed over all observers
        self.event_counts: Counter[MemberState] = Counter()
        # (time, observer, subject) for every member declared dead that had not crashed
        self.false_deaths: list[tuple[float, str, str]] = []
        self.left: set[str] = set()
        self.stats = {"sent": 0, "delivered": 0, "lost": 0, "bytes": 0, "largest": 0, "oversized": 0}

    # --- building the cluster -----------------------------------------------------------

    def add_members(self, count: int, prefix: str = "node") -> list[str]:
        """Add ``count`` members that all know each other, and return their ids.

        Only an empty simulation can be filled this way; later members join with ``add_member``.
        """
        if self.members:
            raise ValueError("add_members fills an empty simulation; add later members with add_member")
        width = len(str(count - 1))
        ids = [f"{prefix}-{index:0{width}d}" for index in range(count)]
        for node_id in ids:
            self._create(node_id, {"role": "executor"})

        entries = [
            {"n": node_id, "i": 0, "s": "alive", "a": [node_id, PORT], "m": {"role": "executor"}} for node_id in ids
        ]
        for node_id in ids:
            member = self.members[node_id]
            # A sync from the node itself applies every row and spreads none of them.
            member.core.receive(
                {"t": "sync", "from": node_id, "ask": False, "rows": count, "members": entries},
                member.address,
                self.now,
            )
            member.core.drain_events()
            self._schedule_tick(member)
        return ids

    def add_member(self, node_id: str, seeds: list[str], meta: dict | None = None) -> None:
        """Start a new member that joins through the members ``seeds``."""
        member = self._create(node_id, meta if meta is not None else {"role": "executor"})
        out = member.core.join([self.members[seed].address for seed in seeds], self.now)
        self._after_call(member, out)

    def _create(self, node_id: str, meta: dict) -> SimMember:
        address = (node_id, PORT)
        core = Membership(node_id, address, meta, self.config, random.Random(self.rng.getrandbits(64)), self.now)
        member = SimMember(node_id, address, core)
        self.members[node_id] = member
        self._by_address[address] = node_id
        return member

    # --- faults -------------------------------------------------------------------------

    def crash(self, node_id: str) -> None:
        member = self.members[node_id]
        member.crashed = True
        member.inbox.clear()

    def pause(self, node_id: str, duration_s: float) -> None:
        member = self.members[node_id]
        if member.crashed or member.paused:
            return
        member.paused = True
        self._push(self.now + duration_s, _RESUME, node_id)

    def leave(self, node_id: str) -> None:
        member = self.members[node_id]
        out = member.core.leave(self.now)
        self.left.add(node_id)
        self._send(member, out)

    def partition(self, *groups: list[str]) -> None:
        """Drop every packet between members of different groups; members in no group form one more."""
        self._groups = {node_id: index for index, group in enumerate(groups) for node_id in group}

    def heal(self) -> None:
        self._groups = {}

    def set_meta(self, node_id: str, meta: dict) -> None:
        member = self.members[node_id]
        member.core.set_meta(meta, self.now)
        self._after_call(member, [])

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        """Call ``action`` at simulated time ``at``."""
        self._push(at, _CALL, action)

    # --- running ------------------------------------------------------------------------

    def run_until(self, end: float) -> None:
        """Process every event up to simulated time ``end``."""
        queue = self._queue
        while queue and queue[0][0] <= end:
            at, _, kind, subject, sender, data = heapq.heappop(queue)
            self.now = at
            if kind == _DELIVER:
                self._deliver(subject, sender, data)
            elif kind == _TICK:
                member = self.members[subject]
                if member.tick_at == at and not member.crashed and not member.paused:
                    member.tick_at = math.inf
                    self._after_call(member, member.core.tick(at))
            elif kind == _RESUME:
                self._resume(self.members[subject])
            else:
                subject()
        self.now = max(self.now, end)

    def run_for(self, duration_s: float) -> None:
        self.run_until(self.now + duration_s)

    def live_ids(self) -> list[str]:
        """Return the members that have neither crashed nor left."""
        return [node_id for node_id, member in self.members.items() if not member.crashed and node_id not in self.left]

    def all_know(self, subject: str, states: tuple[MemberState, ...]) -> float:
        """Return when the last live member other than ``subject`` first saw it in one of ``states``.

        Returns math.inf while some live member has not.
        """
        latest = 0.0
        for observer in self.live_ids():
            if observer == subject:
                continue
            seen = [self.first_seen.get((subject, state), {}).get(observer, math.inf) for state in states]
            latest = max(latest, min(seen))
        return latest

    # --- internals ----------------------------------------------------------------------

    def _push(self, at: float, kind: int, subject, sender=None, data=None) -> None:
        heapq.heappush(self._queue, (at, next(self._order), kind, subject, sender, data))

    def _deliver(self, node_id: str, sender: tuple[str, int], data: bytes) -> None:
        member = self.members[node_id]
        if member.crashed:
            return
        if member.paused:
            member.inbox.append((sender, data))
            return
        self.stats["delivered"] += 1
        out = member.core.receive(msgpack.unpackb(data), sender, self.now)
        self._after_call(member, out)

    def _resume(self, member: SimMember) -> None:
        if member.crashed:
            return
        member.paused = False
        inbox, member.inbox = member.inbox, []
        for sender, data in inbox:
            self.stats["delivered"] += 1
            self._send(member, member.core.receive(msgpack.unpackb(data), sender, self.now))
        member.tick_at = math.inf
        self._after_call(member, member.core.tick(self.now))

    def _after_call(self, member: SimMember, out: list[Outgoing]) -> None:
        self._send(member, out)
        self._record(member)
        self._schedule_tick(member)

    def _schedule_tick(self, member: SimMember) -> None:
        # A deadline already past (gossip that waited for news) means now.
        deadline = max(member.core.next_deadline(), self.now)
        if deadline < member.tick_at:
            member.tick_at = deadline
            self._push(deadline, _TICK, member.node_id)

    def _send(self, member: SimMember, out: list[Outgoing]) -> None:
        stats = self.stats
        for address, message in out:
            data = msgpack.packb(message)
            stats["sent"] += 1
            stats["bytes"] += len(data)
            stats["largest"] = max(stats["largest"], len(data))
            if len(data) > self.config.max_packet_bytes:
                stats["oversized"] += 1
            destination = self._by_address.get(address)
            if destination is None or self.rng.random() < self.loss or not self._connected(member.node_id, destination):
                stats["lost"] += 1
                continue
            latency = self.rng.uniform(*self.latency_s)
            self._push(self.now + latency, _DELIVER, destination, member.address, data)

    def _connected(self, source: str, destination: str) -> bool:
        groups = self._groups
        return not groups or groups.get(source, -1) == groups.get(destination, -1)

    def _record(self, member: SimMember) -> None:
        for event in member.core.drain_events():
            self.event_counts[event.state] += 1
            seen = self.first_seen.setdefault((event.node_id, event.state), {})
            seen.setdefault(member.node_id, self.now)
            if event.state == MemberState.DEAD:
                subject = self.members.get(event.node_id)
                if subject is not None and not subject.crashed and event.node_id not in self.left:
                    self.false_deaths.append((self.now, member.node_id, event.node_id))


@dataclass(frozen=True)
class Detection:
    """How long after a crash the first member, and the last live member, marked it dead."""

    node_id: str
    first_s: float
    all_s: float


def detection_times(
    members: int = 128,
    loss: float = 0.0,
    crashes: int = 10,
    seed: int = 1,
    *,
    window_s: float = 15.0,
    config: MembershipConfig | None = None,
) -> list[Detection]:
    """Crash ``crashes`` members one after another, ``window_s`` apart, and time their detection.

    Each Detection gives the seconds from the crash until the first member declared it
    dead, and until every live member had. A time is math.inf if that did not happen
    within the window.
    """
    simulation = MembershipSimulation(seed=seed, loss=loss, config=config)
    ids = simulation.add_members(members)
    simulation.run_for(WARMUP_S)

    results = []
    for victim in simulation.rng.sample(ids, crashes):
        simulation.run_for(simulation.rng.uniform(0, simulation.config.probe_interval_s))
        crashed_at = simulation.now
        simulation.crash(victim)
        simulation.run_for(window_s)
        first = min(simulation.first_seen.get((victim, MemberState.DEAD), {}).values(), default=math.inf)
        everyone = simulation.all_know(victim, (MemberState.DEAD, MemberState.LEFT))
        results.append(Detection(victim, first - crashed_at, everyone - crashed_at))
    return results


@dataclass(frozen=True)
class PauseReport:
    """The outcome of a run with members that pause again and again."""

    false_deaths: list[tuple[float, str, str]]  # (time, observer, subject)
    pauses: int
    suspicions: int  # suspect events, summed over observers
    simulation: MembershipSimulation

    @property
    def falsely_dead_members(self) -> int:
        return len({subject for _, _, subject in self.false_deaths})


def run_with_pauses(
    members: int = 128,
    loss: float = 0.05,
    paused_fraction: float = 0.10,
    pause_s: tuple[float, float] = (1.0, 3.0),
    simulated_s: float = 3600.0,
    seed: int = 1,
    *,
    run_s: tuple[float, float] = (5.0, 30.0),
    config: MembershipConfig | None = None,
) -> PauseReport:
    """Run ``simulated_s`` seconds in which a fraction of the members pause again and again.

    Each pausing member runs for a time drawn uniformly from ``run_s``, pauses for a time
    drawn uniformly from ``pause_s``, and repeats. No member crashes.
    """
    simulation = MembershipSimulation(seed=seed, loss=loss, config=config)
    ids = simulation.add_members(members)
    pausing = simulation.rng.sample(ids, round(members * paused_fraction))
    pauses = 0

    def pause_then_reschedule(node_id: str) -> None:
        nonlocal pauses
        pauses += 1
        duration = simulation.rng.uniform(*pause_s)
        simulation.pause(node_id, duration)
        next_at = simulation.now + duration + simulation.rng.uniform(*run_s)
        simulation.schedule(next_at, lambda: pause_then_reschedule(node_id))

    for node_id in pausing:
        simulation.schedule(
            WARMUP_S + simulation.rng.uniform(*run_s), lambda node_id=node_id: pause_then_reschedule(node_id)
        )
    simulation.run_until(simulated_s)

    return PauseReport(simulation.false_deaths, pauses, simulation.event_counts[MemberState.SUSPECT], simulation)


def false_positives(
    members: int = 128,
    loss: float = 0.05,
    paused_fraction: float = 0.10,
    pause_s: tuple[float, float] = (1.0, 3.0),
    simulated_s: float = 3600.0,
    seed: int = 1,
) -> int:
    """Return how many members that never crashed were declared dead by anyone (see run_with_pauses)."""
    return run_with_pauses(members, loss, paused_fraction, pause_s, simulated_s, seed).falsely_dead_members
