"""The replication state a leader tracks per follower, and the majority arithmetic of a fixed voter set."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Progress:
    """The replication state of one follower, as its leader tracks it."""

    # The highest index known to be replicated on the follower.
    match: int = 0
    # The next index to send. It runs ahead of ``match`` while AppendEntries are in flight
    # and falls back to ``match + 1`` whenever the leader probes after a loss.
    next: int = 1
    # Whether the follower sent any response since the last quorum check.
    recent_active: bool = False
    # The index of a snapshot sent and not yet acknowledged (0: none), and when it was sent.
    snapshot_index: int = 0
    snapshot_sent_at: float = 0.0
    # ``match`` at the follower's previous heartbeat response (-1: none yet).
    heartbeat_match: int = -1


def majority(voters: int) -> int:
    return voters // 2 + 1


def quorum_index(match_indexes: list[int]) -> int:
    """Return the highest index that a majority of the voters has, given each voter's match index."""
    ordered = sorted(match_indexes, reverse=True)
    return ordered[majority(len(ordered)) - 1]
