"""Raft consensus among the coordinator-eligible voters: the pure core.

``node`` contains the protocol and its design notes, ``replication`` the leader's side of
it, ``log`` the replicated log, ``messages`` the entries and messages, ``ready`` what
each call hands back to the shell, and ``storage`` what a voter must persist.
"""

from swarmctl.cluster.consensus.config import ConsensusConfig
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
from swarmctl.cluster.consensus.node import Node, Role
from swarmctl.cluster.consensus.ready import (
    Accepted,
    HardState,
    ProposalResult,
    Ready,
    Rejected,
    RejectReason,
)
from swarmctl.cluster.consensus.storage import MemoryStorage, PersistentState, Storage

__all__ = [
    "Accepted",
    "AppendEntries",
    "AppendEntriesResponse",
    "ConsensusConfig",
    "Entry",
    "EntryKind",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "MemoryStorage",
    "Message",
    "Node",
    "PersistentState",
    "ProposalResult",
    "Ready",
    "RejectReason",
    "Rejected",
    "RequestVote",
    "RequestVoteResponse",
    "Role",
    "Snapshot",
    "Storage",
    "TimeoutNow",
]
