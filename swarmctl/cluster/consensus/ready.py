"""The batch of work the consensus core returns to its shell after each call, and proposal outcomes."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from swarmctl.cluster.consensus.messages import Entry, Message, Snapshot


@dataclass(frozen=True, slots=True)
class HardState:
    """The state a voter must persist before it sends anything that depends on it.

    ``term`` and ``vote`` are what make one vote per term hold across restarts.
    ``commit`` is a lower bound of the cluster's commit index, kept so that a restarted
    voter can apply its committed entries at once instead of waiting for a leader.
    """

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the shell, in the order it must be done.

    1. Persist ``snapshot`` if set: it replaces the stored snapshot and every stored entry.
    2. Persist ``entries`` if any: drop every stored entry from ``entries[0].index`` on,
       then append them.
    3. Persist ``hard_state`` if set.
    4. Only then send ``messages``. A vote or an acknowledgement that goes out before its
       write is durable can be forgotten by a crash, and the cluster may then lose a
       committed entry or elect two leaders in one term.
    5. Install ``snapshot`` into the state machine if set, then apply ``committed_entries``
       in order. They may include entries of this same batch, which is how a single voter
       commits on its own durable write, so apply only after step 2.

    The core assumes that the whole batch is done before the next call into it.
    """

    messages: tuple[Message, ...] = ()
    entries: tuple[Entry, ...] = ()
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.messages or self.entries or self.hard_state or self.snapshot is not None or self.committed_entries
        )


EMPTY_READY = Ready()


@dataclass(frozen=True, slots=True)
class Accepted:
    """A proposal the leader appended to its log.

    It is committed once it appears among ``committed_entries`` at ``index`` with
    ``term``. An entry there with another term means that the proposal was lost with its
    leader.
    """

    index: int
    term: int
    ready: Ready


class RejectReason(enum.StrEnum):
    NOT_LEADER = "not the leader"
    TRANSFERRING = "leadership transfer in progress"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A proposal that was not appended; send it to ``leader_id`` instead, when known."""

    reason: RejectReason
    leader_id: str | None
    term: int

    def __str__(self) -> str:
        leader = f"the leader is {self.leader_id}" if self.leader_id else "no leader is known"
        return f"proposal rejected in term {self.term} ({self.reason.value}), and {leader}"


ProposalResult = Accepted | Rejected
