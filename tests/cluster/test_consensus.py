"""Scenario tests of the Raft consensus core.

Cluster scenarios run on ``ConsensusSimulation`` with a reliable network, so the safety
invariants are checked on every step there too. Scenarios about single messages drive
``Node`` objects directly through ``Voters``, which delivers messages instantly and in
order.
"""

from __future__ import annotations

import random

import pytest

from swarmctl.cluster.consensus import (
    Accepted,
    AppendEntries,
    AppendEntriesResponse,
    ConsensusConfig,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    MemoryStorage,
    Message,
    Node,
    PersistentState,
    Ready,
    Rejected,
    RejectReason,
    RequestVote,
    RequestVoteResponse,
    Role,
    Snapshot,
)
from swarmctl.errors import ProtocolError, UsageError
from swarmctl.sim.consensus import ConsensusSimulation

CONFIG = ConsensusConfig()
TIMEOUT = CONFIG.election_timeout_s


def command(index: int, term: int, text: str = "") -> Entry:
    return Entry(index, term, EntryKind.COMMAND, (text or f"c{index}").encode())


class Voters:
    """Nodes that exchange messages instantly, with storage and a record of applied entries."""

    def __init__(self, states: dict[str, PersistentState], config: ConsensusConfig = CONFIG) -> None:
        self.now = 0.0
        self.config = config
        ids = tuple(states)
        self.nodes = {
            node_id: Node(node_id, ids, config, random.Random(index), self.now, state)
            for index, (node_id, state) in enumerate(states.items())
        }
        self.storage = {node_id: MemoryStorage() for node_id in ids}
        self.applied: dict[str, list[Entry]] = {node_id: [] for node_id in ids}
        self.outbox: list[Message] = []
        self.delivered: list[Message] = []
        self.isolated: set[str] = set()

    def handle(self, node_id: str, ready: Ready) -> Ready:
        self.storage[node_id].save(ready)
        self.outbox.extend(ready.messages)
        self.applied[node_id].extend(ready.committed_entries)
        return ready

    def campaign(self, node_id: str) -> None:
        """Let ``node_id``'s election timeout pass, then deliver every message that follows."""
        node = self.nodes[node_id]
        self.now = max(self.now, node.next_deadline())
        self.handle(node_id, node.tick(self.now))
        self.flush()

    def step(self, node_id: str, message: Message) -> Ready:
        return self.handle(node_id, self.nodes[node_id].step(message, self.now))

    def flush(self) -> None:
        while self.outbox:
            message = self.outbox.pop(0)
            if message.source in self.isolated or message.target in self.isolated:
                continue
            self.delivered.append(message)
            self.step(message.target, message)

    def heartbeat(self, leader_id: str) -> None:
        """Advance to the leader's next heartbeat and deliver everything that follows."""
        node = self.nodes[leader_id]
        self.now = node.next_deadline()
        self.handle(leader_id, node.tick(self.now))
        self.flush()


def elected(simulation: ConsensusSimulation, limit_s: float = 10.0) -> str:
    """Run until every voter follows one leader and return its id."""
    end = simulation.now + limit_s
    while simulation.now < end:
        simulation.run_for(0.1)
        leader = simulation.stable_leader()
        if leader is not None:
            return leader
    raise AssertionError(f"no stable leader within {limit_s} s")


# --- election ---------------------------------------------------------------------------


def test_election_three_voters_agree_on_leader() -> None:
    simulation = ConsensusSimulation(3, seed=1)
    leader = elected(simulation)
    nodes = simulation.live_nodes()
    assert [node.role for node in nodes].count(Role.LEADER) == 1
    assert {node.term for node in nodes} == {simulation.voters[leader].node.term}
    assert {node.leader_id for node in nodes} == {leader}


def test_election_partitioned_leader_is_replaced() -> None:
    simulation = ConsensusSimulation(3, seed=2)
    old_leader = elected(simulation)
    old_term = simulation.voters[old_leader].node.term
    others = [node_id for node_id in simulation.ids if node_id != old_leader]

    simulation.network.partition([old_leader], others)
    simulation.run_for(3 * TIMEOUT)

    new_leaders = [node_id for node_id in others if simulation.voters[node_id].node.role == Role.LEADER]
    assert len(new_leaders) == 1
    assert simulation.voters[new_leaders[0]].node.term > old_term
    # Check-quorum: the cut-off leader stepped down on its own.
    assert simulation.voters[old_leader].node.role == Role.FOLLOWER
    assert simulation.voters[old_leader].node.term == old_term


def test_check_quorum_leader_steps_down_and_rejects_proposals() -> None:
    simulation = ConsensusSimulation(5, seed=3)
    leader = elected(simulation)
    node = simulation.voters[leader].node
    others = [node_id for node_id in simulation.ids if node_id != leader]

    simulation.network.partition([leader, others[0]], others[1:])
    simulation.run_for(0.5 * TIMEOUT)
    assert node.role == Role.LEADER  # two of five is no majority, but the leader has not checked yet
    simulation.run_for(1.6 * TIMEOUT)
    assert node.role == Role.FOLLOWER

    result = node.propose(b"late", simulation.now)
    assert isinstance(result, Rejected)
    assert result.reason == RejectReason.NOT_LEADER


def test_pre_vote_rejoining_voter_keeps_term_and_leader() -> None:
    simulation = ConsensusSimulation(3, seed=4)
    leader = elected(simulation)
    term = simulation.voters[leader].node.term
    loner = next(node_id for node_id in simulation.ids if node_id != leader)
    others = [node_id for node_id in simulation.ids if node_id != loner]

    simulation.network.partition([loner], others)
    simulation.run_for(10 * TIMEOUT)
    # It kept asking for pre-votes, and none raised its term.
    assert simulation.voters[loner].node.term == term
    assert simulation.voters[loner].node.role in (Role.PRE_CANDIDATE, Role.FOLLOWER)

    simulation.network.heal()
    simulation.run_for(TIMEOUT)
    assert simulation.stable_leader() == leader
    assert all(node.term == term for node in simulation.live_nodes())


def test_without_pre_vote_rejoining_voter_deposes_leader() -> None:
    # The contrast to the test above: without pre-vote and check-quorum the loner's
    # repeated elections raise its term, and its return forces a new election.
    config = ConsensusConfig(pre_vote=False, check_quorum=False)
    simulation = ConsensusSimulation(3, seed=4, config=config)
    leader = elected(simulation)
    term = simulation.voters[leader].node.term
    loner = next(node_id for node_id in simulation.ids if node_id != leader)

    simulation.network.partition([loner], [node_id for node_id in simulation.ids if node_id != loner])
    simulation.run_for(10 * TIMEOUT)
    assert simulation.voters[loner].node.term > term + 1

    simulation.network.heal()
    elected(simulation)
    assert all(node.term > term + 1 for node in simulation.live_nodes())


def test_vote_once_per_term_survives_restart() -> None:
    voters = Voters({name: PersistentState() for name in ("a", "b", "c")})
    ready = voters.step("a", RequestVote(1, "b", "a", 0, 0))
    assert ready.messages == (RequestVoteResponse(1, "a", "b", True),)
    # The vote is in the same Ready as its response, so the shell persists it first.
    assert ready.hard_state == HardState(1, "b", 0)

    ready = voters.step("a", RequestVote(1, "c", "a", 0, 0))
    assert ready.messages == (RequestVoteResponse(1, "a", "c", False),)

    restarted = Node("a", ("a", "b", "c"), CONFIG, random.Random(9), voters.now, voters.storage["a"].state())
    ready = restarted.step(RequestVote(1, "c", "a", 0, 0), voters.now)
    assert ready.messages == (RequestVoteResponse(1, "a", "c", False),)
    assert restarted.step(RequestVote(1, "b", "a", 0, 0), voters.now).messages[0].granted


def test_vote_rejected_for_less_complete_log() -> None:
    state = PersistentState(HardState(2, None, 1), entries=(command(1, 1), command(2, 2)))
    voters = Voters({"a": state, "b": PersistentState(), "c": PersistentState()})
    # Same last term, shorter log.
    assert not voters.step("a", RequestVote(3, "b", "a", 1, 2)).messages[0].granted
    # Longer log, but an older last term.
    assert not voters.step("a", RequestVote(4, "c", "a", 9, 1)).messages[0].granted
    # As complete as ours.
    assert voters.step("a", RequestVote(5, "b", "a", 2, 2)).messages[0].granted


def test_stale_term_messages_are_fenced() -> None:
    state = PersistentState(HardState(5, None, 0))
    voters = Voters({"a": state, "b": PersistentState(), "c": PersistentState()})

    ready = voters.step("a", AppendEntries(3, "b", "a", 0, 0, (command(1, 3),), 1))
    assert ready.messages == (AppendEntriesResponse(5, "a", "b", False, 0),)
    assert voters.nodes["a"].log.last_index == 0
    assert voters.nodes["a"].term == 5

    ready = voters.step("a", Heartbeat(4, "c", "a", 0))
    assert ready.messages == (HeartbeatResponse(5, "a", "c"),)
    assert voters.nodes["a"].leader_id is None


def test_deposed_leader_steps_down_on_newer_term() -> None:
    voters = Voters({name: PersistentState() for name in ("a", "b", "c")})
    voters.campaign("a")
    leader = voters.nodes["a"]
    assert leader.role == Role.LEADER

    voters.step("a", HeartbeatResponse(leader.term + 2, "b", "a"))
    assert leader.role == Role.FOLLOWER
    assert leader.term == 3
    assert isinstance(leader.propose(b"x", voters.now), Rejected)


def test_message_from_unknown_voter_raises() -> None:
    voters = Voters({name: PersistentState() for name in ("a", "b", "c")})
    with pytest.raises(ProtocolError, match="unknown voter z"):
        voters.step("a", Heartbeat(1, "z", "a", 0))
    with pytest.raises(ProtocolError, match="delivered to a"):
        voters.step("a", Heartbeat(1, "b", "c", 0))


# --- proposals and replication ------------------------------------------------------------


def test_proposal_on_follower_rejected_with_leader_id() -> None:
    voters = Voters({name: PersistentState() for name in ("a", "b", "c")})
    voters.campaign("a")

    result = voters.nodes["b"].propose(b"x", voters.now)
    assert isinstance(result, Rejected)
    assert result.reason == RejectReason.NOT_LEADER
    assert result.leader_id == "a"
    assert "the leader is a" in str(result)


def test_replication_commits_on_majority_and_applies_everywhere() -> None:
    voters = Voters({name: PersistentState() for name in ("a", "b", "c")})
    voters.campaign("a")
    result = voters.nodes["a"].propose(b"first", voters.now)
    assert isinstance(result, Accepted)
    voters.handle("a", result.ready)
    voters.flush()
    assert voters.nodes["a"].commit_index == result.index
    voters.heartbeat("a")

    for name in ("a", "b", "c"):
        assert [entry.command for entry in voters.applied[name]] == [b"", b"first"]
        assert voters.applied[name][0].kind == EntryKind.NOOP
        assert voters.storage[name].entries == voters.applied[name]


def test_heartbeat_resends_only_to_a_stalled_follower() -> None:
    voters = Voters({node_id: PersistentState() for node_id in "abc"})
    voters.campaign("a")
    leader = voters.nodes["a"]
    voters.heartbeat("a")  # every follower has sent one heartbeat response

    voters.handle("a", leader.propose(b"one", voters.now).ready)
    voters.flush()
    voters.handle("a", leader.propose(b"two", voters.now).ready)
    in_flight = [m for m in voters.outbox if m.target == "b"]
    voters.outbox = [m for m in voters.outbox if m.target != "b"]
    voters.flush()
    assert [m.entries[-1].command for m in in_flight] == [b"two"]

    def appends_to_b_after_heartbeat() -> list[AppendEntries]:
        sent = len(voters.delivered)
        voters.heartbeat("a")
        return [m for m in voters.delivered[sent:] if isinstance(m, AppendEntries) and m.target == "b"]

    # "b" stored an entry since the last heartbeat: "two" is still on its way, not lost.
    assert appends_to_b_after_heartbeat() == []
    # "b" stored nothing since: the leader sends "two" again.
    assert [m.entries[-1].command for m in appends_to_b_after_heartbeat()] == [b"two"]
    assert voters.nodes["b"].log.last_index == leader.log.last_index


def test_log_conflict_repaired_with_one_back_off() -> None:
    # "a" has entries of term 2 that "b" never saw; "b" has a longer tail of term 1 from
    # a leader that lost them. Only entry 1 is committed.
    leader_log = (command(1, 1), command(2, 2, "a2"), command(3, 2, "a3"))
    stale_log = (command(1, 1), *(command(index, 1, f"b{index}") for index in range(2, 7)))
    voters = Voters({
        "a": PersistentState(HardState(2, "a", 1), entries=leader_log),
        "b": PersistentState(HardState(1, None, 1), entries=stale_log),
        "c": PersistentState(HardState(2, "a", 1), entries=leader_log[:2]),
    })
    voters.campaign("a")
    leader = voters.nodes["a"]
    assert leader.role == Role.LEADER
    voters.heartbeat("a")

    follower = voters.nodes["b"]
    assert follower.log.entries_between(1, follower.log.last_index + 1) == leader.log.entries_between(1, 5)
    assert follower.commit_index == leader.commit_index == 4
    rejections = [
        message for message in voters.delivered
        if isinstance(message, AppendEntriesResponse) and message.source == "b" and not message.success
    ]
    # The hint points at the start of b's conflicting term, so one rejection is enough.
    assert len(rejections) == 1
    assert rejections[0].hint_index == 1


def test_commit_waits_for_entry_of_current_term() -> None:
    # "a" leads term 3 with an entry of term 2 at index 2 that no majority had yet.
    voters = Voters({
        "a": PersistentState(HardState(2, None, 1), entries=(command(1, 1), command(2, 2))),
        "b": PersistentState(HardState(2, None, 1), entries=(command(1, 1),)),
        "c": PersistentState(HardState(2, None, 1), entries=(command(1, 1),)),
    })
    voters.isolated = {"b", "c"}
    leader = voters.nodes["a"]
    leader.become_candidate(voters.now)
    leader.become_leader(voters.now)
    voters.outbox.clear()
    assert leader.log.last_index == 3  # the no-op of term 3

    # "b" now has index 2 of term 2: a majority, but of an older term.
    voters.step("a", AppendEntriesResponse(leader.term, "b", "a", True, 2))
    assert leader.commit_index == 1
    voters.step("a", AppendEntriesResponse(leader.term, "b", "a", True, 3))
    assert leader.commit_index == 3


def test_single_voter_commits_on_own_write() -> None:
    voters = Voters({"solo": PersistentState()})
    voters.campaign("solo")
    node = voters.nodes["solo"]
    assert node.role == Role.LEADER

    result = node.propose(b"alone", voters.now)
    assert isinstance(result, Accepted)
    ready = result.ready
    assert ready.messages == ()
    assert ready.entries == (command(2, 1, "alone"),)
    assert ready.committed_entries == ready.entries
    assert ready.hard_state == HardState(1, "solo", 2)


def test_follower_ignores_stale_duplicate_append() -> None:
    voters = Voters({name: PersistentState() for name in ("a", "b", "c")})
    voters.campaign("a")
    for text in ("x", "y"):
        result = voters.nodes["a"].propose(text.encode(), voters.now)
        voters.handle("a", result.ready)
    voters.flush()
    follower = voters.nodes["b"]
    assert follower.log.last_index == 3

    # A late copy of the first AppendEntries, with only entry 2, must not cut entry 3.
    first = next(m for m in voters.delivered if isinstance(m, AppendEntries) and m.target == "b" and m.entries
                 and m.entries[0].index == 2)
    voters.step("b", AppendEntries(first.term, "a", "b", 1, 1, first.entries[:1], 1))
    assert follower.log.last_index == 3


# --- snapshots ----------------------------------------------------------------------------


def test_snapshot_installed_on_lagging_follower() -> None:
    simulation = ConsensusSimulation(3, seed=5, compact_every=4)
    leader = elected(simulation)
    lagging = next(node_id for node_id in simulation.ids if node_id != leader)
    simulation.crash(lagging)
    for _ in range(20):
        simulation.propose(simulation.next_command())
        simulation.run_for(0.05)
    leader_node = simulation.voters[leader].node
    assert leader_node.log.snapshot.index > 1  # the entries the follower needs are gone

    simulation.restart(lagging)
    simulation.run_for(3 * TIMEOUT)
    assert simulation.stats["snapshots_installed"] >= 1
    follower = simulation.voters[lagging]
    assert follower.machine.applied == simulation.voters[leader].machine.applied
    assert follower.machine.digest == simulation.voters[leader].machine.digest
    assert follower.storage.snapshot.index > 1


def test_snapshot_ready_replaces_log() -> None:
    voters = Voters({
        "a": PersistentState(),
        "b": PersistentState(HardState(1, None, 1), entries=(command(1, 1), command(2, 1, "stale"))),
        "c": PersistentState(),
    })
    voters.nodes["a"].become_candidate(0.0)
    snapshot = Snapshot(index=5, term=2, data=b"state at 5")
    ready = voters.step("b", InstallSnapshot(2, "a", "b", snapshot))
    assert ready.snapshot == snapshot
    assert ready.messages == (AppendEntriesResponse(2, "b", "a", True, 5),)
    assert ready.hard_state == HardState(2, None, 5)
    assert ready.committed_entries == ()
    assert voters.storage["b"].snapshot == snapshot
    assert voters.storage["b"].entries == []
    node = voters.nodes["b"]
    assert (node.log.last_index, node.log.last_term, node.applied_index) == (5, 2, 5)


def test_compact_rejects_unapplied_index() -> None:
    voters = Voters({"solo": PersistentState()})
    voters.campaign("solo")
    node = voters.nodes["solo"]
    with pytest.raises(UsageError, match="applied index"):
        node.compact(5, b"")
    snapshot = node.compact(1, b"after the no-op")
    assert (snapshot.index, snapshot.term) == (1, 1)
    assert node.log.first_index == 2


def test_restart_applies_committed_entries_from_storage() -> None:
    voters = Voters({"solo": PersistentState()})
    voters.campaign("solo")
    node = voters.nodes["solo"]
    for text in ("x", "y"):
        result = node.propose(text.encode(), voters.now)
        voters.handle("solo", result.ready)
    storage = voters.storage["solo"]

    restarted = Node("solo", ("solo",), CONFIG, random.Random(2), voters.now, storage.state())
    assert (restarted.term, restarted.vote, restarted.commit_index) == (1, "solo", 3)
    ready = restarted.tick(voters.now)
    assert [entry.command for entry in ready.committed_entries] == [b"", b"x", b"y"]


# --- leadership transfer ------------------------------------------------------------------


def test_transfer_leadership_to_follower() -> None:
    simulation = ConsensusSimulation(3, seed=6)
    leader = elected(simulation)
    target = next(node_id for node_id in simulation.ids if node_id != leader)
    term = simulation.voters[leader].node.term

    simulation.transfer_leadership(target)
    result = simulation.voters[leader].node.propose(b"during", simulation.now)
    assert isinstance(result, Rejected)
    assert result.reason == RejectReason.TRANSFERRING
    simulation.run_for(0.2)

    assert simulation.stable_leader() == target
    assert simulation.voters[target].node.term == term + 1


def test_transfer_leadership_to_non_voter_raises() -> None:
    voters = Voters({name: PersistentState() for name in ("a", "b", "c")})
    voters.campaign("a")
    with pytest.raises(UsageError, match="not found among the other voters"):
        voters.nodes["a"].transfer_leadership("z", voters.now)
    with pytest.raises(UsageError, match="follower"):
        voters.nodes["b"].transfer_leadership("c", voters.now)


# --- settings -----------------------------------------------------------------------------


def test_config_rejects_slow_heartbeat() -> None:
    with pytest.raises(UsageError, match="heartbeat_interval_s"):
        ConsensusConfig(election_timeout_s=1.0, heartbeat_interval_s=0.5)
    with pytest.raises(UsageError, match="election_timeout_s must be positive"):
        ConsensusConfig(election_timeout_s=0)


def test_node_rejects_unknown_self_and_stored_vote() -> None:
    with pytest.raises(UsageError, match="not among"):
        Node("z", ("a", "b"), CONFIG, random.Random(1), 0.0)
    with pytest.raises(UsageError, match="names no voter"):
        Node("a", ("a", "b"), CONFIG, random.Random(1), 0.0, PersistentState(HardState(1, "z", 0)))
