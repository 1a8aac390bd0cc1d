"""The leader's side of log replication, for one term.

A new leader appends an empty entry of its own term. It sends each follower the entries
after ``next - 1`` together with the term of that previous entry. The follower accepts
only if its own log has that term at that index, which by induction makes both logs
equal up to there (``follower.accept_entries``). On a mismatch the follower returns a
hint, which is its log's end or the start of the conflicting term, and the leader backs
off to it. An entry is committed once a majority stores it and it belongs to the
leader's current term, and earlier entries become committed with it. A follower whose
next entry the leader has compacted away gets the leader's snapshot instead. Heartbeats
repair lost messages: a heartbeat response from a follower that lags and stored nothing
since its previous one makes the leader send again from the follower's last
acknowledged index.

A ``Leadership`` exists while its node leads and is discarded when the node steps down,
so nothing of it leaks into a later term. It tracks each follower's progress, sends
AppendEntries, heartbeats, snapshots and TimeoutNow, and advances the commit index.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from swarmctl.cluster.consensus.config import ConsensusConfig
from swarmctl.cluster.consensus.log import RaftLog
from swarmctl.cluster.consensus.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Heartbeat,
    InstallSnapshot,
    Message,
    TimeoutNow,
)
from swarmctl.cluster.consensus.progress import Progress, majority, quorum_index

log = logging.getLogger(__name__)


class Leadership:
    def __init__(
        self,
        node_id: str,
        term: int,
        peers: tuple[str, ...],
        raft_log: RaftLog,
        config: ConsensusConfig,
        send: Callable[[Message], None],
        now: float,
    ) -> None:
        self.node_id = node_id
        self.term = term
        self.log = raft_log
        self.config = config
        self._send = send
        self.progress = {peer: Progress(match=0, next=raft_log.last_index + 1) for peer in peers}
        self.heartbeat_due = now + config.heartbeat_interval_s
        self.quorum_check_due = now + config.election_timeout_s
        self.transfer_target: str | None = None
        self.transfer_deadline = math.inf

    def next_deadline(self) -> float:
        return min(self.heartbeat_due, self.quorum_check_due, self.transfer_deadline)

    def _log_event(self, event: str) -> None:
        log.info("raft node %s %s, term %d", self.node_id, event, self.term)

    # --- timers -------------------------------------------------------------------------

    def tick(self, now: float) -> bool:
        """Run the leader's due timers; return False if the leader must step down."""
        if now >= self.transfer_deadline:
            self._log_event(f"gave up transferring leadership to {self.transfer_target}")
            self.transfer_target = None
            self.transfer_deadline = math.inf

        if now >= self.quorum_check_due:
            self.quorum_check_due = now + self.config.election_timeout_s
            if not self._check_quorum():
                return False

        if now >= self.heartbeat_due:
            self.heartbeat_due = now + self.config.heartbeat_interval_s
            for peer, progress in self.progress.items():
                # Capped at the follower's match index, so the follower can commit without a log check.
                self._send(Heartbeat(self.term, self.node_id, peer, min(progress.match, self.log.commit)))
        return True

    def _check_quorum(self) -> bool:
        """Return whether a majority was heard from since the last check, and start a new period."""
        active = 1 + sum(progress.recent_active for progress in self.progress.values())
        for progress in self.progress.values():
            progress.recent_active = False
        voters = len(self.progress) + 1
        if not self.config.check_quorum or active >= majority(voters):
            return True
        self._log_event(f"stepped down after hearing from only {active} of {voters} voters within the election timeout")
        return False

    # --- replication --------------------------------------------------------------------

    def append(self, entry: Entry, now: float) -> None:
        """Append a new entry of this term and send it to every follower that is up to date."""
        self.log.append(entry)
        self._maybe_commit()
        for peer, progress in self.progress.items():
            if progress.next <= entry.index:
                self.send_append(peer, now)

    def send_append(self, peer: str, now: float) -> None:
        """Send ``peer`` the entries from its next index, or the snapshot if they are compacted."""
        progress = self.progress[peer]
        if progress.snapshot_index:
            return
        prev_index = progress.next - 1
        prev_term = self.log.term_at(prev_index)
        if prev_term is None:
            # The whole snapshot is one message; the voter link splits a large one into frames.
            snapshot = self.log.snapshot
            progress.snapshot_index = snapshot.index
            progress.snapshot_sent_at = now
            self._log_event(f"sent the snapshot at index {snapshot.index} to {peer}")
            self._send(InstallSnapshot(self.term, self.node_id, peer, snapshot))
            return
        end = min(self.log.last_index + 1, progress.next + self.config.max_entries_per_message)
        entries = self.log.entries_between(progress.next, end)
        self._send(AppendEntries(self.term, self.node_id, peer, prev_index, prev_term, entries, self.log.commit))
        progress.next = end

    def handle_append_response(self, message: AppendEntriesResponse, now: float) -> None:
        peer = message.source
        progress = self.progress[peer]
        progress.recent_active = True

        if message.success:
            progress.match = max(progress.match, message.index)
            progress.next = max(progress.next, message.index + 1)
            if progress.snapshot_index and progress.match >= progress.snapshot_index:
                progress.snapshot_index = 0
            self._maybe_commit()
            self._maybe_send_timeout_now(peer)
            if progress.next <= self.log.last_index:
                self.send_append(peer, now)
            return

        # A rejection at or below the match index, or of a message sent before an earlier
        # back-off, is stale. Only a rejection of something still in flight moves ``next``.
        if progress.snapshot_index or message.index <= progress.match or message.index >= progress.next:
            return
        progress.next = max(progress.match + 1, min(message.index, message.hint_index))
        self.send_append(peer, now)

    def handle_heartbeat_response(self, peer: str, now: float) -> None:
        progress = self.progress[peer]
        progress.recent_active = True
        self._maybe_send_timeout_now(peer)
        advanced = 0 <= progress.heartbeat_match < progress.match  # since the previous heartbeat response
        progress.heartbeat_match = progress.match
        if progress.match >= self.log.last_index:
            return
        if progress.snapshot_index:
            if now - progress.snapshot_sent_at < self.config.snapshot_retry_s:
                return
            progress.snapshot_index = 0
        elif advanced:
            # Entries keep arriving: what was sent after ``match`` is on its way. Sending it
            # again at every heartbeat would send a busy leader's tail twice, and more work
            # makes it lag further behind.
            return
        # The follower stored nothing since the last heartbeat: what was sent after
        # ``match`` may have been lost, so send it again.
        progress.next = progress.match + 1
        self.send_append(peer, now)

    def _maybe_commit(self) -> None:
        index = quorum_index([self.log.last_index, *(progress.match for progress in self.progress.values())])
        # Raft's commit rule: counting replicas proves an entry committed only in the
        # leader's own term. An older entry on a majority can still be overwritten by a
        # leader that never saw it, so it is committed only by a later entry of this term.
        if index > self.log.commit and self.log.term_at(index) == self.term:
            self.log.commit_to(index)

    # --- leadership transfer ------------------------------------------------------------

    def start_transfer(self, target: str, now: float) -> None:
        self.transfer_target = target
        self.transfer_deadline = now + self.config.election_timeout_s
        self._log_event(f"started transferring leadership to {target}")
        if self.progress[target].match == self.log.last_index:
            self._send(TimeoutNow(self.term, self.node_id, target))
        else:
            self.send_append(target, now)

    def _maybe_send_timeout_now(self, peer: str) -> None:
        if self.transfer_target == peer and self.progress[peer].match == self.log.last_index:
            self._send(TimeoutNow(self.term, self.node_id, peer))
