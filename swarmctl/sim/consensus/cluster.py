"""Simulated voters on a virtual clock: the shell around each consensus core, in one process.

Each voter runs the real ``Node`` with a ``MemoryStorage`` and a hash-chain state
machine, and its shell follows the contract of a Ready exactly: persist, then send,
then install and apply. A crash keeps only the storage. Time is a float advanced by an
event queue, and every random choice comes from one ``random.Random(seed)``, so a run
is a function of its seed. ``trace_digest`` summarizes every call into every voter, and
two runs of the same seed produce the same digest.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass

import msgpack

from swarmctl.cluster.consensus import (
    Accepted,
    ConsensusConfig,
    Entry,
    MemoryStorage,
    Message,
    Node,
    Ready,
    Rejected,
    Role,
    Snapshot,
)
from swarmctl.cluster.consensus.wire import from_wire, to_wire
from swarmctl.sim.consensus.invariants import InvariantChecker, InvariantViolation
from swarmctl.sim.consensus.network import RELIABLE, NetworkProfile, SimNetwork
from swarmctl.sim.consensus.state_machine import HashChain

_DELIVER, _TICK, _CALL = range(3)


@dataclass
class SimVoter:
    node_id: str
    storage: MemoryStorage
    node: Node
    machine: Any  # HashChain or CoordinatorMachine
    up: bool = True
    paused_until: float = -math.inf
    tick_at: float = math.inf
    # Bumped on every restart, so messages and ticks meant for an earlier run are recognized.
    incarnation: int = 0


class ConsensusSimulation:
    def __init__(
        self,
        voters: int,
        *,
        seed: int,
        config: ConsensusConfig | None = None,
        profile: NetworkProfile = RELIABLE,
        compact_every: int = 32,
        encode_messages: bool = True,
        machine: Callable[[Snapshot], Any] = HashChain,
        database_check_every: int = 8,
    ) -> None:
        self.seed = seed
        # Send every message through msgpack as a real transport would, so that the wire
        # format is exercised by every schedule.
        self.encode_messages = encode_messages
        self.rng = random.Random(seed)
        self.config = config or ConsensusConfig()
        self.network = SimNetwork(random.Random(self.rng.getrandbits(64)), profile)
        self.compact_every = compact_every
        # The state machine each voter runs (HashChain, or CoordinatorMachine for the
        # coordinator's own state), and how often a database's rows are compared.
        self.machine_type = machine
        self.database_check_every = database_check_every
        self.checker = InvariantChecker()
        self.now = 0.0
        self.ids = tuple(f"n{index}" for index in range(voters))
        self._queue: list[tuple] = []
        self._order = itertools.count()
        self._trace = hashlib.blake2b(digest_size=16)

        # Proposals each voter accepted and has not yet applied: (voter, index) -> (term, command).
        self._pending: dict[tuple[str, int], tuple[int, bytes]] = {}
        # Proposals applied by the voter that accepted them: index -> (term, command). A
        # client gets the acknowledgement that its command is committed at this point.
        self.acknowledged: dict[int, tuple[int, bytes]] = {}
        self._client_target: str | None = None
        self._commands = itertools.count(1)
        self.stats: Counter[str] = Counter()

        self.voters: dict[str, SimVoter] = {}
        for node_id in self.ids:
            storage = MemoryStorage()
            voter = SimVoter(node_id, storage, self._new_node(node_id, storage), machine(storage.snapshot))
            self.voters[node_id] = voter
            self._schedule_tick(voter)

    # --- faults and clients -------------------------------------------------------------

    def crash(self, node_id: str) -> None:
        """Stop a voter; only its storage survives.

        NOTE: crashes happen between calls, after a whole Ready was persisted. Torn or
        lost writes within a Ready are not simulated.
        """
        voter = self.voters[node_id]
        if not voter.up:
            return
        voter.up = False
        voter.tick_at = math.inf
        self.checker.forget_node(node_id)
        self._pending = {key: value for key, value in self._pending.items() if key[0] != node_id}
        self.stats["crashes"] += 1

    def restart(self, node_id: str) -> None:
        """Start a crashed voter again from what its storage holds."""
        voter = self.voters[node_id]
        if voter.up:
            return
        voter.incarnation += 1
        voter.node = self._new_node(node_id, voter.storage)
        voter.machine = self.machine_type(voter.storage.snapshot)
        voter.up = True
        voter.paused_until = -math.inf
        self.stats["restarts"] += 1
        self._after_call(voter, voter.node.tick(self.now))

    def pause(self, node_id: str, duration_s: float) -> None:
        """Freeze a voter, as a long garbage collection or a stopped VM would, keeping its memory.

        Messages that arrive meanwhile wait and are handled after it resumes, in arrival order.
        """
        voter = self.voters[node_id]
        if not voter.up or voter.paused_until > self.now:
            return
        voter.paused_until = self.now + duration_s
        voter.tick_at = math.inf
        incarnation = voter.incarnation
        self.stats["pauses"] += 1

        def resume() -> None:
            if voter.up and voter.incarnation == incarnation:
                self._after_call(voter, voter.node.tick(self.now))

        self.schedule(voter.paused_until, resume)

    def transfer_leadership(self, target: str) -> None:
        """Ask the current leader, if any, to hand leadership to ``target``."""
        leader = self.leader()
        if leader is None or leader == target or not self._available(leader) or not self._available(target):
            return
        voter = self.voters[leader]
        self.stats["transfers"] += 1
        self._after_call(voter, voter.node.transfer_leadership(target, self.now))

    def propose(self, command: bytes, target: str | None = None) -> int:
        """Propose ``command`` as a client would: to ``target`` or the voter it believes leads, following one redirect.

        Returns the index at which a leader accepted it, or 0 if none did.
        """
        self.stats["proposals"] += 1
        live = [node_id for node_id in self.ids if self._available(node_id)]
        if not live:
            return 0
        target = target or self._client_target
        if target is None or not self._available(target):
            target = self.rng.choice(live)
        for _ in range(2):
            voter = self.voters[target]
            result = voter.node.propose(command, self.now)
            match result:
                case Accepted(index=index, term=term, ready=ready):
                    self.stats["accepted"] += 1
                    self._client_target = target
                    self._pending[(target, index)] = (term, command)
                    self._after_call(voter, ready)
                    return index
                case Rejected(leader_id=leader_id):
                    self.stats["rejected"] += 1
                    if leader_id is None or leader_id == target or not self._available(leader_id):
                        self._client_target = None
                        return 0
                    target = leader_id
        return 0

    def _available(self, node_id: str) -> bool:
        voter = self.voters[node_id]
        return voter.up and voter.paused_until <= self.now

    def next_command(self) -> bytes:
        return b"command-%d" % next(self._commands)

    def schedule(self, at: float, action: Callable[[], None]) -> None:
        """Call ``action`` at simulated time ``at``."""
        self._push(at, _CALL, None, 0, action)

    # --- queries ------------------------------------------------------------------------

    def live_nodes(self) -> list[Node]:
        return [voter.node for voter in self.voters.values() if voter.up]

    def leader(self) -> str | None:
        """Return the live voter that leads the highest term any live voter leads, if one does."""
        leaders = [node for node in self.live_nodes() if node.role == Role.LEADER]
        return max(leaders, key=lambda node: node.term).id if leaders else None

    def stable_leader(self) -> str | None:
        """Return the leader if every voter is up, in its term, and follows it; else None."""
        leader_id = self.leader()
        if leader_id is None:
            return None
        term = self.voters[leader_id].node.term
        for voter in self.voters.values():
            if not voter.up or voter.node.term != term or voter.node.leader_id != leader_id:
                return None
        return leader_id

    def trace_digest(self) -> str:
        return self._trace.hexdigest()

    # --- running ------------------------------------------------------------------------

    def run_until(self, end: float) -> None:
        """Process every event up to simulated time ``end``."""
        queue = self._queue
        while queue and queue[0][0] <= end:
            at, _, kind, target, incarnation, payload = heapq.heappop(queue)
            self.now = at
            if kind == _DELIVER:
                voter = self.voters[target]
                if voter.paused_until > at:
                    self._push(voter.paused_until, _DELIVER, target, 0, payload)
                elif voter.up:
                    message = from_wire(msgpack.unpackb(payload)) if self.encode_messages else payload
                    self._after_call(voter, voter.node.step(message, at))
            elif kind == _TICK:
                voter = self.voters[target]
                if voter.up and voter.incarnation == incarnation and voter.tick_at == at and voter.paused_until <= at:
                    voter.tick_at = math.inf
                    self._after_call(voter, voter.node.tick(at))
            else:
                payload()
        self.now = max(self.now, end)

    def run_for(self, duration_s: float) -> None:
        self.run_until(self.now + duration_s)

    # --- the shell ----------------------------------------------------------------------

    def _new_node(self, node_id: str, storage: MemoryStorage) -> Node:
        rng = random.Random(self.rng.getrandbits(64))
        return Node(node_id, self.ids, self.config, rng, self.now, storage.state())

    def _after_call(self, voter: SimVoter, ready: Ready) -> None:
        """Handle a Ready as a real shell must: persist, send, install, apply; then check."""
        node = voter.node
        if ready:
            self.checker.check_ready(node, ready, voter.storage.hard_state)
            voter.storage.save(ready)
            for message in ready.messages:
                self._send(voter, message)
            if ready.snapshot is not None:
                voter.machine.install(ready.snapshot)
                self.stats["snapshots_installed"] += 1
            for entry in ready.committed_entries:
                self._apply(voter, entry)
        # Checked before compaction, which drops the newly committed entries from the log.
        self.checker.check_node(node)
        self._maybe_compact(voter)
        self._trace.update(
            b"%r %s %s %d %d %d %d\n"
            % (self.now, node.id.encode(), node.role.value.encode(), node.term, node.commit_index,
               node.log.last_index, len(ready.messages))
        )
        self._schedule_tick(voter)

    def _apply(self, voter: SimVoter, entry: Entry) -> None:
        index, term = entry.index, entry.term
        digest = voter.machine.apply(entry)
        self.checker.check_applied(voter.node_id, index, digest)
        if hasattr(voter.machine, "database_digest") and index % self.database_check_every == 0:
            self.checker.check_database(voter.node_id, index, voter.machine.database_digest())
        proposed = self._pending.pop((voter.node_id, index), None)
        if proposed is None or proposed[0] != term:
            return
        known = self.acknowledged.setdefault(index, proposed)
        if known != proposed:
            raise InvariantViolation(f"two proposals were acknowledged as committed at index {index}")
        self.stats["acknowledged"] += 1

    def _maybe_compact(self, voter: SimVoter) -> None:
        node = voter.node
        if voter.machine.applied - node.log.snapshot.index < self.compact_every:
            return
        snapshot = node.compact(voter.machine.applied, voter.machine.snapshot_data())
        voter.storage.compact(snapshot)
        self.stats["compactions"] += 1

    def _send(self, voter: SimVoter, message: Message) -> None:
        payload = msgpack.packb(to_wire(message)) if self.encode_messages else message
        for at in self.network.arrivals(voter.node_id, message.target, self.now):
            self._push(at, _DELIVER, message.target, 0, payload)

    def _schedule_tick(self, voter: SimVoter) -> None:
        if voter.paused_until > self.now:
            return
        deadline = max(voter.node.next_deadline(), self.now)
        if deadline < voter.tick_at:
            voter.tick_at = deadline
            self._push(deadline, _TICK, voter.node_id, voter.incarnation, None)

    def _push(self, at: float, kind: int, target, incarnation: int, payload) -> None:
        heapq.heappush(self._queue, (at, next(self._order), kind, target, incarnation, payload))
