"""The follower's side of replication: how its log takes AppendEntries and InstallSnapshot.

Both functions change only the log and return the response for the leader. The node
decides who leads and when its election timer restarts.
"""

from __future__ import annotations

from swarmctl.cluster.consensus.log import RaftLog
from swarmctl.cluster.consensus.messages import (
    AppendEntries,
    AppendEntriesResponse,
    InstallSnapshot,
    Snapshot,
)


def accept_entries(raft_log: RaftLog, message: AppendEntries, term: int, node_id: str) -> AppendEntriesResponse:
    """Merge the leader's entries if they follow a matching entry, and return the response."""
    if message.prev_log_index < raft_log.commit:
        # Everything up to our commit index is known to match, and committed entries
        # never change, so only the suffix after it needs the leader's attention.
        return AppendEntriesResponse(term, node_id, message.source, True, raft_log.commit)

    if not raft_log.matches(message.prev_log_index, message.prev_log_term):
        hint = raft_log.conflict_hint(message.prev_log_index)
        return AppendEntriesResponse(term, node_id, message.source, False, message.prev_log_index, hint)

    last_new = raft_log.merge(message.prev_log_index, message.entries)
    # Only what this message proved to match may be committed: entries after
    # ``last_new`` may be left over from an older leader.
    raft_log.commit_to(min(message.leader_commit, last_new))
    return AppendEntriesResponse(term, node_id, message.source, True, last_new)


def accept_snapshot(
    raft_log: RaftLog, message: InstallSnapshot, term: int, node_id: str
) -> tuple[AppendEntriesResponse, Snapshot | None]:
    """Take the leader's snapshot unless the log already covers it.

    Returns the response, and the snapshot if it replaced the log, in which case the
    application must install it.
    """
    snapshot = message.snapshot
    if snapshot.index <= raft_log.commit:
        return AppendEntriesResponse(term, node_id, message.source, True, raft_log.commit), None

    if raft_log.matches(snapshot.index, snapshot.term):
        # The log already has the snapshot's last entry, and so everything before it.
        raft_log.commit_to(snapshot.index)
        return AppendEntriesResponse(term, node_id, message.source, True, snapshot.index), None

    raft_log.restore(snapshot)
    return AppendEntriesResponse(term, node_id, message.source, True, snapshot.index), snapshot
