"""One voter of a Raft cluster with a fixed voter set: the pure consensus core.

The core opens no socket, reads no clock, draws no randomness of its own and writes
nothing to disk. Its shell feeds it three kinds of input: ``tick(now)`` when
``next_deadline()`` has passed, ``step(message, now)`` for every message that arrives,
and ``propose(command, now)`` for every command the application wants replicated. Each
call returns a ``Ready``. The shell persists the Ready's snapshot, entries and hard
state first and only then sends its messages, because a vote or an acknowledgement
must never be visible before it is durable. It then installs the snapshot and applies
the committed entries, and finishes all of that before the next call. The election
timeout is drawn from the ``random.Random`` that the shell injects, so a seeded
simulation replays exactly. ``swarmctl.sim.consensus`` runs this core on a simulated
clock and network.

Election. A follower that hears nothing from a leader for a randomized election
timeout first requests pre-votes: would a majority vote for it in the next term? Only
then does it raise its term and ask for real votes. Each voter gives one vote per term,
persisted with the term, and only to a candidate whose log is at least as up to date as
its own, which keeps every committed entry in the log of every future leader. A voter
cut off in a minority never gets a majority of pre-votes, so its term stays where it
was and its return cannot depose the leader. With check-quorum, a voter that has heard
from a leader within the election timeout ignores requests for (pre-)votes, except in
an election the leader started with TimeoutNow to transfer its leadership. A leader
that has not heard from a majority within an election timeout steps down, so a leader
cut off in a minority stops accepting proposals instead of keeping clients waiting.

Terms fence. Every message carries its sender's term. A newer term makes the receiver a
follower of that term. A message from an older term changes nothing, and
AppendEntries, Heartbeat or InstallSnapshot from an older term gets a response with the
newer term, so that the deposed leader steps down. Pre-votes are the exception: a
request and a granted response carry the next term, and change no one's term.

Replication is described in ``swarmctl.cluster.consensus.replication``. A single voter
is its own majority and commits an entry in the same Ready that persists it.
"""

from __future__ import annotations

import enum
import logging
import math
import random

from swarmctl.cluster.consensus.config import ConsensusConfig
from swarmctl.cluster.consensus.election import VoteTally, grants_vote, stale_term_reply
from swarmctl.cluster.consensus.follower import accept_entries, accept_snapshot
from swarmctl.cluster.consensus.log import RaftLog
from swarmctl.cluster.consensus.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
    TimeoutNow,
)
from swarmctl.cluster.consensus.ready import (
    EMPTY_READY,
    Accepted,
    HardState,
    ProposalResult,
    Ready,
    Rejected,
    RejectReason,
)
from swarmctl.cluster.consensus.replication import Leadership
from swarmctl.cluster.consensus.storage import EMPTY_STATE, PersistentState
from swarmctl.errors import ProtocolError, UsageError

log = logging.getLogger(__name__)


class Role(enum.StrEnum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class Node:
    """The Raft state of one voter."""

    def __init__(
        self,
        node_id: str,
        voters: tuple[str, ...] | list[str],
        config: ConsensusConfig,
        rng: random.Random,
        now: float,
        state: PersistentState = EMPTY_STATE,
        applied: int | None = None,
    ) -> None:
        """Start as a follower from ``state``, as stored by a previous run or empty.

        ``applied`` is the last index the application's state machine already holds. It
        defaults to the snapshot's index, and the first Ready then carries every committed
        entry after it.
        """
        state.check(node_id, voters)
        self.id = node_id
        self.voters = tuple(voters)
        self._peers = tuple(voter for voter in self.voters if voter != node_id)
        self.config = config
        self._rng = rng

        self.term = state.hard_state.term
        self.vote = state.hard_state.vote
        commit = max(state.hard_state.commit, state.snapshot.index)
        self.log = RaftLog(state.snapshot, state.entries, commit, state.snapshot.index if applied is None else applied)
        self._persisted = HardState(self.term, self.vote, self.log.commit)

        self.role = Role.FOLLOWER
        self.leader_id: str | None = None
        self._messages: list[Message] = []
        self._restored: Snapshot | None = None  # a leader's snapshot not yet handed to the shell
        self._leadership: Leadership | None = None  # set exactly while the role is LEADER
        self._tally = VoteTally(len(self.voters))
        self._election_deadline = math.inf
        self._leader_contact_at = -math.inf
        self.become_follower(self.term, None, now)

    # --- queries ------------------------------------------------------------------------

    @property
    def commit_index(self) -> int:
        return self.log.commit

    @property
    def applied_index(self) -> int:
        return self.log.applied

    @property
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

    def match_index(self, peer: str) -> int | None:
        """Return the last index known to be replicated on ``peer``; None unless this node leads."""
        if self._leadership is None or peer not in self._leadership.progress:
            return None
        return self._leadership.progress[peer].match

    @property
    def transfer_target(self) -> str | None:
        return self._leadership.transfer_target if self._leadership else None

    def next_deadline(self) -> float:
        """Return the time at which ``tick`` must run next."""
        if self._leadership is not None:
            return self._leadership.next_deadline()
        return self._election_deadline

    # --- transitions ----------------------------------------------------------------------

    def become_follower(self, term: int, leader_id: str | None, now: float) -> None:
        if term > self.term:
            self.term = term
            self.vote = None
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        if leader_id is not None:
            self._leader_contact_at = now
        self._leadership = None
        self._reset_election_deadline(now)
        self._log_event(f"became follower of {leader_id}" if leader_id else "became follower")

    def become_pre_candidate(self, now: float) -> None:
        """Ask for pre-votes in the next term, changing neither term nor vote."""
        self.role = Role.PRE_CANDIDATE
        self.leader_id = None
        self._reset_election_deadline(now)
        self._log_event(f"became pre-candidate for term {self.term + 1}")
        self._request_votes(self.term + 1, now, pre_vote=True)

    def become_candidate(self, now: float, *, transfer: bool = False) -> None:
        """Raise the term, vote for this node, and ask the other voters for their votes."""
        self.term += 1
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.leader_id = None
        self._reset_election_deadline(now)
        self._log_event("became candidate")
        self._request_votes(self.term, now, transfer=transfer)

    def _request_votes(self, term: int, now: float, *, pre_vote: bool = False, transfer: bool = False) -> None:
        self._tally = VoteTally(len(self.voters))
        self._tally.record(self.id, True)
        if self._tally.won:  # a single voter
            if pre_vote:
                self.become_candidate(now)
            else:
                self.become_leader(now)
            return
        last_index, last_term = self.log.last_index, self.log.last_term
        for peer in self._peers:
            self._send(RequestVote(term, self.id, peer, last_index, last_term, pre_vote, transfer))

    def become_leader(self, now: float) -> None:
        self.role = Role.LEADER
        self.leader_id = self.id
        self._leadership = Leadership(self.id, self.term, self._peers, self.log, self.config, self._send, now)
        self._log_event("became leader")
        self._leadership.append(Entry(self.log.last_index + 1, self.term, EntryKind.NOOP), now)

    def _log_event(self, event: str, level: int = logging.INFO) -> None:
        log.log(level, "raft node %s %s, term %d", self.id, event, self.term)

    # --- input --------------------------------------------------------------------------

    def tick(self, now: float) -> Ready:
        """Run the timers that are due at ``now``: elections, heartbeats, quorum checks."""
        if self._leadership is not None:
            if not self._leadership.tick(now):
                self.become_follower(self.term, None, now)
        elif now >= self._election_deadline:
            if self.config.pre_vote:
                self.become_pre_candidate(now)
            else:
                self.become_candidate(now)
        return self._ready()

    def step(self, message: Message, now: float) -> Ready:
        """Handle one message from another voter."""
        if message.target != self.id:
            raise ProtocolError(f"consensus message for {message.target} was delivered to {self.id}")
        if message.source not in self._peers:
            raise ProtocolError(
                f"consensus message from unknown voter {message.source} rejected by {self.id}. "
                "Every voter must be configured with the same voter list"
            )
        if not self._accept_term(message, now):
            return self._ready()

        leadership = self._leadership
        match message:
            case RequestVote():
                self._handle_vote_request(message, now)
            case RequestVoteResponse():
                self._handle_vote_response(message, now)
            case AppendEntries():
                self._handle_append(message, now)
            case Heartbeat():
                self._handle_heartbeat(message, now)
            case InstallSnapshot():
                self._handle_snapshot(message, now)
            case AppendEntriesResponse() if leadership is not None:
                leadership.handle_append_response(message, now)
            case HeartbeatResponse() if leadership is not None:
                leadership.handle_heartbeat_response(message.source, now)
            case TimeoutNow() if leadership is None:
                self._log_event(f"received TimeoutNow from {message.source}")
                self.become_candidate(now, transfer=True)
        return self._ready()

    def propose(self, command: bytes, now: float) -> ProposalResult:
        """Append ``command`` to the log if this node leads, else return where to send it."""
        if self._leadership is None:
            return Rejected(RejectReason.NOT_LEADER, self.leader_id, self.term)
        if self._leadership.transfer_target is not None:
            return Rejected(RejectReason.TRANSFERRING, self.id, self.term)
        entry = Entry(self.log.last_index + 1, self.term, EntryKind.COMMAND, command)
        self._leadership.append(entry, now)
        return Accepted(entry.index, entry.term, self._ready())

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Replace the log up to the applied ``index`` with a snapshot of the state machine there.

        The shell persists the returned snapshot with ``Storage.compact``. Followers that
        still need the dropped entries get this snapshot instead.
        """
        return self.log.compact(index, data)

    def transfer_leadership(self, target: str, now: float) -> Ready:
        """Hand leadership to ``target`` once its log is complete; proposals are rejected meanwhile.

        The transfer is abandoned after an election timeout if it has not happened by then.
        """
        if self._leadership is None:
            raise UsageError(f"node {self.id} cannot transfer leadership: it is a {self.role.value}")
        if target not in self._peers:
            raise UsageError(
                f"cannot transfer leadership to {target}: not found among the other voters {list(self._peers)}"
            )
        self._leadership.start_transfer(target, now)
        return self._ready()

    # --- terms --------------------------------------------------------------------------

    def _accept_term(self, message: Message, now: float) -> bool:
        """Apply Raft's term rules to ``message``; return whether it should be handled further."""
        if message.term > self.term:
            if isinstance(message, RequestVote):
                if not message.transfer and self._in_lease(now):
                    # A live leader's followers need no new election.
                    self._log_event(f"ignored a vote request from {message.source}", logging.DEBUG)
                    return False
                if not message.pre_vote:
                    self.become_follower(message.term, None, now)
                return True
            if isinstance(message, RequestVoteResponse) and message.pre_vote and message.granted:
                # A granted pre-vote carries the term it was asked for, one above ours.
                return True
            leader = message.source if isinstance(message, (AppendEntries, Heartbeat, InstallSnapshot)) else None
            self.become_follower(message.term, leader, now)
            return True

        if message.term < self.term:
            reply = stale_term_reply(message, self.term, self.id)
            if reply is not None:
                self._send(reply)
            return False
        return True

    def _in_lease(self, now: float) -> bool:
        """Return whether this node still trusts a leader, which makes it ignore requests for votes."""
        if not self.config.check_quorum or self.leader_id is None:
            return False
        return self.role == Role.LEADER or now - self._leader_contact_at < self.config.election_timeout_s

    # --- election -----------------------------------------------------------------------

    def _handle_vote_request(self, message: RequestVote, now: float) -> None:
        if not grants_vote(message, self.term, self.vote, self.leader_id, self.log):
            self._send(RequestVoteResponse(self.term, self.id, message.source, False, message.pre_vote))
            return
        self._send(RequestVoteResponse(message.term, self.id, message.source, True, message.pre_vote))
        if not message.pre_vote:
            self.vote = message.source
            self._reset_election_deadline(now)
            self._log_event(f"voted for {message.source}")

    def _handle_vote_response(self, message: RequestVoteResponse, now: float) -> None:
        if message.pre_vote:
            if self.role != Role.PRE_CANDIDATE:
                return
        elif self.role != Role.CANDIDATE:
            return

        self._tally.record(message.source, message.granted)
        if self._tally.won:
            if message.pre_vote:
                self.become_candidate(now)
            else:
                self.become_leader(now)
        elif self._tally.lost:
            self.become_follower(self.term, None, now)

    # --- follower side ------------------------------------------------------------------

    def _follow(self, message: AppendEntries | Heartbeat | InstallSnapshot, now: float) -> None:
        """Take ``message`` as proof that its sender leads this term."""
        if self.role == Role.LEADER:
            raise AssertionError(f"node {self.id} and {message.source} both lead term {self.term}")
        if self.role != Role.FOLLOWER or self.leader_id != message.source:
            self.become_follower(self.term, message.source, now)
        self._leader_contact_at = now
        self._reset_election_deadline(now)

    def _handle_append(self, message: AppendEntries, now: float) -> None:
        self._follow(message, now)
        self._send(accept_entries(self.log, message, self.term, self.id))

    def _handle_heartbeat(self, message: Heartbeat, now: float) -> None:
        self._follow(message, now)
        self.log.commit_to(message.commit)
        self._send(HeartbeatResponse(self.term, self.id, message.source))

    def _handle_snapshot(self, message: InstallSnapshot, now: float) -> None:
        self._follow(message, now)
        response, restored = accept_snapshot(self.log, message, self.term, self.id)
        if restored is not None:
            self._log_event(f"installed the snapshot at index {restored.index} from {message.source}")
            self._restored = restored
        self._send(response)

    # --- output -------------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        self._messages.append(message)

    def _reset_election_deadline(self, now: float) -> None:
        timeout = self.config.election_timeout_s
        self._election_deadline = now + timeout + timeout * self._rng.random()

    def _ready(self) -> Ready:
        hard_state = HardState(self.term, self.vote, self.log.commit)
        changed = hard_state != self._persisted
        self._persisted = hard_state
        restored, self._restored = self._restored, None
        entries = self.log.take_unstable()
        committed = self.log.take_committed()
        if not (changed or restored or entries or committed or self._messages):
            return EMPTY_READY
        messages, self._messages = tuple(self._messages), []
        return Ready(messages, entries, hard_state if changed else None, restored, committed)
