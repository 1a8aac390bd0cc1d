"""The settings of the consensus core, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass

from swarmctl.errors import UsageError


@dataclass(frozen=True)
class ConsensusConfig:
    """Timing and batching settings; every voter of a cluster should use the same ones.

    The defaults suit a LAN with round trips of a few milliseconds and voters whose disk
    writes take well under the heartbeat interval.
    """

    # A follower that hears nothing from a leader for a time drawn uniformly from
    # [election_timeout_s, 2 x election_timeout_s) starts an election. A leader with
    # check_quorum steps down when a majority has not responded within election_timeout_s.
    election_timeout_s: float = 1.0
    # Time between two heartbeats from the leader to each follower.
    heartbeat_interval_s: float = 0.1
    # Ask for pre-votes before raising the term, so a voter that was cut off cannot depose
    # a healthy leader when it returns.
    pre_vote: bool = True
    # A leader steps down when it has not heard from a majority within an election timeout,
    # and voters reject (pre-)votes while they hear from a leader.
    check_quorum: bool = True
    # Maximum entries in one AppendEntries message.
    max_entries_per_message: int = 64
    # Time before a snapshot that was not acknowledged is sent again.
    snapshot_retry_s: float = 2.0

    def __post_init__(self) -> None:
        for name in ("election_timeout_s", "heartbeat_interval_s", "snapshot_retry_s"):
            if not getattr(self, name) > 0:
                raise UsageError(f"consensus setting {name} must be positive, not {getattr(self, name)}")

        # Followers must hear several heartbeats per election timeout, or a single lost
        # heartbeat starts an election.
        if self.heartbeat_interval_s * 3 > self.election_timeout_s:
            raise UsageError(
                f"consensus setting heartbeat_interval_s ({self.heartbeat_interval_s}) must be at most a third "
                f"of election_timeout_s ({self.election_timeout_s})"
            )

        if self.max_entries_per_message < 1:
            raise UsageError(
                f"consensus setting max_entries_per_message must be at least 1, not {self.max_entries_per_message}"
            )
