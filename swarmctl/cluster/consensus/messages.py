"""Log entries, snapshots and the messages that voters send each other.

Every message carries the sender's term, and the receiver compares it with its own
before anything else. A newer term makes the receiver a follower of that term. A
message from an older term is dropped or gets a response with the newer term, which
fences a deposed leader. Messages are immutable, so a network may deliver one object
twice. ``swarmctl.cluster.consensus.wire`` converts them to and from msgpack-ready maps.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class EntryKind(enum.IntEnum):
    """The kind of content of an entry in the replicated log."""

    # The empty entry a new leader appends at the start of its term. Committing it commits
    # every earlier entry, because Raft commits by counting replicas only for entries of
    # the leader's own term.
    NOOP = 0
    # An opaque command for the application's state machine.
    COMMAND = 1


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: EntryKind
    command: bytes = b""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application's state after applying every entry up to ``index``, which has ``term``.

    ``data`` is opaque to the consensus core. The empty snapshot (index 0, term 0) stands
    for the empty state before the first entry.
    """

    index: int = 0
    term: int = 0
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class RequestVote:
    """A request for a vote, or with ``pre_vote`` for a non-binding pre-vote.

    A pre-vote checks whether the receiver would vote for the sender in ``term``, one above
    the sender's current term, without anyone changing term or vote. ``transfer`` marks
    an election started by TimeoutNow, which voters grant even while they still hear
    from the current leader.
    """

    term: int
    source: str
    target: str
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    term: int
    source: str
    target: str
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Entries that follow ``prev_log_index`` in the leader's log, which has ``prev_log_term`` there."""

    term: int
    source: str
    target: str
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    """The response to AppendEntries and to InstallSnapshot.

    On success ``index`` is the last index that the follower's log now shares with the
    leader's. On rejection ``index`` is the ``prev_log_index`` that did not match, and
    ``hint_index`` is the next index worth trying. That is one past the follower's last
    entry when its log is shorter, else the first index of the conflicting term, so the
    leader skips a whole term per round trip instead of one entry.
    """

    term: int
    source: str
    target: str
    success: bool
    index: int
    hint_index: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The leader's periodic proof of life.

    ``commit`` is the leader's commit index capped at what the receiver is known to hold,
    so a follower may take it without a log check.
    """

    term: int
    source: str
    target: str
    commit: int


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    source: str
    target: str


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """The leader's latest snapshot, for a follower that needs entries the leader has compacted away."""

    term: int
    source: str
    target: str
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """The leader's order to start an election at once, sent to the target of a leadership transfer."""

    term: int
    source: str
    target: str


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | TimeoutNow
)
