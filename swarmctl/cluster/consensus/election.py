"""Raft's rules for votes and for messages from an older term, as functions of a voter's state."""

from __future__ import annotations

from dataclasses import dataclass

from swarmctl.cluster.consensus.log import RaftLog
from swarmctl.cluster.consensus.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from swarmctl.cluster.consensus.progress import majority


def grants_vote(request: RequestVote, term: int, vote: str | None, leader_id: str | None, raft_log: RaftLog) -> bool:
    """Return whether a voter in ``term`` with ``vote`` grants ``request``, which is of ``term`` or newer.

    A real vote goes to at most one candidate per term, and not to anyone while the voter
    follows a leader of that term. A pre-vote binds nothing, so any request for a newer
    term may have one. Both need a log at least as up to date as the voter's own.
    """
    if request.pre_vote and request.term > term:
        free = True
    else:
        free = vote == request.source or (vote is None and leader_id is None)
    return free and raft_log.is_up_to_date(request.last_log_index, request.last_log_term)


def stale_term_reply(message: Message, term: int, node_id: str) -> Message | None:
    """Return the response to ``message`` from an older term than ``term``, if it gets one.

    A stale leader learns the newer term and steps down, and a stale pre-candidate stops
    asking. Everything else from an older term is dropped.
    """
    match message:
        case AppendEntries():
            return AppendEntriesResponse(term, node_id, message.source, False, message.prev_log_index)
        case InstallSnapshot():
            return AppendEntriesResponse(term, node_id, message.source, False, 0)
        case Heartbeat():
            return HeartbeatResponse(term, node_id, message.source)
        case RequestVote(pre_vote=True):
            return RequestVoteResponse(term, node_id, message.source, False, pre_vote=True)
    return None


@dataclass(slots=True)
class VoteTally:
    """The responses to one round of (pre-)votes."""

    voters: int
    granted: int = 0
    rejected: int = 0
    answered: tuple[str, ...] = ()

    def record(self, voter: str, granted: bool) -> None:
        """Count one response. A repeated response from the same voter counts once."""
        if voter in self.answered:
            return
        self.answered += (voter,)
        if granted:
            self.granted += 1
        else:
            self.rejected += 1

    @property
    def won(self) -> bool:
        return self.granted >= majority(self.voters)

    @property
    def lost(self) -> bool:
        return self.rejected >= majority(self.voters)
