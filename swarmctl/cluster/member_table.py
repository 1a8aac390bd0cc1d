"""The membership table of one node and the incarnation rules that change it.

Every change to another member's row goes through a named transition (``mark_alive``,
``mark_suspect``, ``mark_dead``, ``mark_left``). Each one logs a line of the same shape
(member id, event, incarnation, observing node) and records a ``MemberEvent`` when the
state, address or meta changed. Transitions send nothing: they return whether the
change is news, and the protocol in ``swarmctl.cluster.membership`` decides what to
broadcast. The node's own row is changed only by the protocol, because only a node
itself may raise its incarnation.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

from swarmctl.cluster.dissemination import Update
from swarmctl.cluster.members import (
    Member,
    MemberEvent,
    MembershipConfig,
    MemberState,
    PeerSet,
)
from swarmctl.cluster.suspicion import Suspicion

log = logging.getLogger(__name__)

REACHABLE = (MemberState.ALIVE, MemberState.SUSPECT)
GONE = (MemberState.DEAD, MemberState.LEFT)


def update_of(member: Member, accuser: str = "") -> dict[str, Any]:
    """Return the wire form of ``member``'s row; ``accuser`` goes on suspect and dead rows."""
    update: dict[str, Any] = {
        "n": member.node_id,
        "i": member.incarnation,
        "s": member.state.value,
        "a": list(member.address),
    }
    if member.state == MemberState.ALIVE:
        update["m"] = member.meta
    elif accuser and member.state != MemberState.LEFT:
        update["f"] = accuser
    return update


class MemberTable:
    """Rows by node id, the running suspicions, and the tombstones waiting to be forgotten."""

    def __init__(self, me: Member, config: MembershipConfig) -> None:
        self.me = me
        self.config = config
        self.rows: dict[str, Member] = {me.node_id: me}
        self.reachable = PeerSet()  # other members that are alive or suspect
        self.suspicions: dict[str, Suspicion] = {}
        self.reap_at: dict[str, float] = {}
        self.events: list[MemberEvent] = []
        # Members that became reachable since the protocol last took this list; it probes
        # them in the current round instead of waiting for the next one.
        self.newly_reachable: list[str] = []

    def size(self) -> int:
        """Return the number of members that are alive or suspect, this node included."""
        return len(self.reachable) + 1

    def copy_of(self, node_id: str) -> Member | None:
        member = self.rows.get(node_id)
        return None if member is None else dataclasses.replace(member, meta=dict(member.meta))

    def next_deadline(self) -> float:
        deadline = math.inf
        for suspicion in self.suspicions.values():
            deadline = min(deadline, suspicion.deadline)
        if self.reap_at:
            deadline = min(deadline, min(self.reap_at.values()))
        return deadline

    def expired_suspicions(self, now: float) -> list[str]:
        return [node_id for node_id, suspicion in self.suspicions.items() if now >= suspicion.deadline]

    def reap(self, now: float) -> list[str]:
        """Forget the dead and left members whose tombstones have expired; return their ids."""
        expired = [node_id for node_id, reap_at in self.reap_at.items() if now >= reap_at]
        for node_id in expired:
            del self.reap_at[node_id]
            self.rows.pop(node_id, None)
            log.debug("member %s forgotten by %s", node_id, self.me.node_id)
        return expired

    def apply(self, update: Update, now: float) -> bool:
        """Apply an update about another member by the incarnation rules; return whether it was news."""
        state = MemberState(update.state)
        member = self.rows.get(update.node_id)
        if member is None:
            self._add(update, state, now)
            return True

        incarnation = update.incarnation
        newer = incarnation > member.incarnation
        same = incarnation == member.incarnation
        match state:
            case MemberState.ALIVE:
                return newer and self.mark_alive(update, now)
            case MemberState.SUSPECT:
                if newer or (same and member.state in REACHABLE):
                    return self.mark_suspect(update.node_id, incarnation, update.accuser, now)
            case MemberState.DEAD:
                if newer or (same and member.state in REACHABLE):
                    return self.mark_dead(update.node_id, incarnation, update.accuser, now)
            case MemberState.LEFT:
                if newer or (same and member.state != MemberState.LEFT):
                    return self.mark_left(update.node_id, incarnation, now)
        return False

    def _add(self, update: Update, state: MemberState, now: float) -> None:
        member = Member(update.node_id, update.address, update.incarnation, state, dict(update.meta or {}), now)
        self.rows[member.node_id] = member
        if state in GONE:
            # A tombstone, kept so that older alive messages about the member are ignored.
            self.reap_at[member.node_id] = now + self.config.dead_member_reap_s
            return
        self._make_reachable(member.node_id)
        self.log_transition(member.node_id, state.value, member.incarnation)
        self._emit(member)
        if state == MemberState.SUSPECT:
            self._start_suspicion(member.node_id, update.accuser, now)

    # --- named transitions ------------------------------------------------------------------

    def mark_alive(self, update: Update, now: float) -> bool:
        """Apply a newer alive message about a member: a refutation, new meta, or a return from the dead."""
        member = self.rows[update.node_id]
        before = (member.state, member.address, member.meta)
        member.incarnation = update.incarnation
        member.address = update.address
        member.meta = dict(update.meta or {})
        self.suspicions.pop(member.node_id, None)
        self.reap_at.pop(member.node_id, None)
        if member.state != MemberState.ALIVE:
            self._set_state(member, MemberState.ALIVE, now)
            self.log_transition(member.node_id, "alive", member.incarnation)
        self._make_reachable(member.node_id)
        if (member.state, member.address, member.meta) != before:
            self._emit(member)
        return True

    def mark_suspect(self, node_id: str, incarnation: int, accuser: str, now: float) -> bool:
        """Suspect ``node_id`` at ``incarnation`` on the word of ``accuser``.

        Return whether that is news worth spreading: a new suspicion, or a confirmation
        that shortened the running one.
        """
        member = self.rows[node_id]
        if member.state == MemberState.SUSPECT and member.incarnation == incarnation:
            return self.suspicions[node_id].confirm(accuser)

        member.incarnation = incarnation
        self._set_state(member, MemberState.SUSPECT, now)
        self.reap_at.pop(node_id, None)
        self._make_reachable(node_id)
        self._start_suspicion(node_id, accuser, now)
        self.log_transition(node_id, "suspect", incarnation)
        self._emit(member)
        return True

    def mark_dead(self, node_id: str, incarnation: int, accuser: str, now: float) -> bool:
        """Declare ``node_id`` dead at ``incarnation``, on the expired suspicion of ``accuser``."""
        member = self.rows[node_id]
        if member.state == MemberState.DEAD and member.incarnation >= incarnation:
            return False
        member.incarnation = incarnation
        self._make_gone(member, MemberState.DEAD, now)
        self.log_transition(node_id, f"dead (accused by {accuser})", incarnation)
        return True

    def mark_left(self, node_id: str, incarnation: int, now: float) -> bool:
        """Record that ``node_id`` left the cluster on purpose."""
        member = self.rows[node_id]
        if member.state == MemberState.LEFT and member.incarnation >= incarnation:
            return False
        member.incarnation = incarnation
        self._make_gone(member, MemberState.LEFT, now)
        self.log_transition(node_id, "left", incarnation)
        return True

    # --- helpers ----------------------------------------------------------------------------

    def _make_reachable(self, node_id: str) -> None:
        if node_id not in self.reachable:
            self.reachable.add(node_id)
            self.newly_reachable.append(node_id)

    def _make_gone(self, member: Member, state: MemberState, now: float) -> None:
        self._set_state(member, state, now)
        self.reachable.discard(member.node_id)
        self.suspicions.pop(member.node_id, None)
        self.reap_at[member.node_id] = now + self.config.dead_member_reap_s
        self._emit(member)

    def _start_suspicion(self, node_id: str, accuser: str, now: float) -> None:
        members = self.size()
        minimum, maximum = self.config.suspicion_timeouts(members)
        # The suspect and the first accuser cannot confirm, so small clusters need fewer.
        needed = min(self.config.suspicion_confirmations, max(0, members - 2))
        self.suspicions[node_id] = Suspicion(accuser, now, minimum, maximum, needed)

    @staticmethod
    def _set_state(member: Member, state: MemberState, now: float) -> None:
        member.state = state
        member.state_since = now

    def _emit(self, member: Member) -> None:
        self.events.append(
            MemberEvent(member.node_id, member.state, member.incarnation, member.address, dict(member.meta))
        )

    def log_transition(self, node_id: str, event: str, incarnation: int) -> None:
        """Log one transition in the shape every transition uses."""
        log.info("member %s %s, incarnation %d (seen by %s)", node_id, event, incarnation, self.me.node_id)
