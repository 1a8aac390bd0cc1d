"""Raft's safety properties, checked against everything the simulated voters do.

The simulation passes the checker every Ready before it is persisted and every node
after every call. The checker keeps a global record of the committed entries and of the state machine digest at
each applied index. It raises InvariantViolation the moment one of these fails:

- election safety: at most one leader per term;
- terms never decrease, in memory or on disk, across restarts too, and a persisted vote
  never changes within a term;
- a committed entry is never changed: no voter commits or applies an entry that differs
  from the committed one at its index, and no voter truncates its log at or below its
  own commit index;
- leader completeness: a new leader's log contains every entry committed so far;
- state machine safety: every voter that applied index i has the same digest there;
- log matching, checked on demand between every pair of voters: two logs with the same
  term at an index are identical up to it.
"""

from __future__ import annotations

from swarmctl.cluster.consensus import Entry, HardState, Node, Ready, Role


class InvariantViolation(AssertionError):
    """A safety property failed; the message names the property, the voters and the index."""


def _same(entry: Entry, record: tuple[int, int, bytes]) -> bool:
    return (entry.term, entry.kind, entry.command) == record


class InvariantChecker:
    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}  # term -> the voter that led it
        self.committed: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, kind, command)
        self.digests: dict[int, bytes] = {}  # index -> state machine digest after applying it
        self.database_digests: dict[int, bytes] = {}  # index -> digest of a coordinator database's rows there
        self._seen_commit: dict[str, int] = {}
        self._terms: dict[str, int] = {}  # the last term seen on each voter, across restarts

    def check_ready(self, node: Node, ready: Ready, stored: HardState) -> None:
        """Check a Ready of ``node`` before it replaces the ``stored`` hard state."""
        name = node.id
        hard_state = ready.hard_state
        if hard_state is not None:
            if hard_state.term < stored.term:
                raise InvariantViolation(f"{name} persisted term {hard_state.term} after term {stored.term}")
            if hard_state.term == stored.term and stored.vote is not None and hard_state.vote != stored.vote:
                raise InvariantViolation(
                    f"{name} changed its vote in term {stored.term} from {stored.vote} to {hard_state.vote}"
                )

        if ready.entries and ready.entries[0].index <= stored.commit:
            raise InvariantViolation(
                f"{name} rewrites its log from index {ready.entries[0].index}, at or below its commit "
                f"index {stored.commit}"
            )
        # A voter may persist an entry that differs from the committed one at its index
        # while it lags behind, but not once it counts that index as committed.
        commit = hard_state.commit if hard_state is not None else stored.commit
        for entry in ready.entries:
            if entry.index > commit:
                break
            self._check_entry(name, entry, "persisted")

        snapshot = ready.snapshot
        if snapshot is not None:
            known = self.committed.get(snapshot.index)
            if known is not None and known[0] != snapshot.term:
                raise InvariantViolation(
                    f"{name} installs a snapshot at index {snapshot.index} of term {snapshot.term}, but the "
                    f"entry committed there has term {known[0]}"
                )
            # Both simulated state machines start a snapshot's data with their sequence digest.
            digest = self.digests.get(snapshot.index)
            if digest is not None and digest != snapshot.data[: len(digest)]:
                raise InvariantViolation(f"{name} installs a snapshot at index {snapshot.index} with another state")

    def check_node(self, node: Node) -> None:
        """Check ``node`` after a call into it: one leader per term, and what it now counts as committed."""
        name = node.id
        if node.term < self._terms.get(name, 0):
            raise InvariantViolation(f"{name} went back from term {self._terms[name]} to term {node.term}")
        self._terms[name] = node.term
        if node.role == Role.LEADER:
            leader = self.leaders.get(node.term)
            if leader is None:
                self.leaders[node.term] = name
                self._check_new_leader(node)
            elif leader != name:
                raise InvariantViolation(f"two leaders in term {node.term}: {leader} and {name}")

        commit = node.commit_index
        seen = self._seen_commit.get(name, 0)
        if commit > seen:
            first = max(seen + 1, node.log.first_index)
            for entry in node.log.entries_between(first, commit + 1):
                self._record_committed(name, entry)
            self._seen_commit[name] = commit

    def _check_new_leader(self, node: Node) -> None:
        """Check that a voter that has just become leader has every committed entry in its log."""
        raft_log = node.log
        for index, (term, _, _) in self.committed.items():
            if index <= raft_log.snapshot.index:
                continue
            if raft_log.term_at(index) != term:
                raise InvariantViolation(
                    f"{node.id} leads term {node.term} without the entry committed at index {index} "
                    f"(term {term}); its log has term {raft_log.term_at(index)} there"
                )

    def check_applied(self, name: str, index: int, digest: bytes) -> None:
        known = self.digests.setdefault(index, digest)
        if known != digest:
            raise InvariantViolation(f"state machines differ at index {index}: {name} applied another entry there")

    def check_database(self, name: str, index: int, digest: bytes) -> None:
        """Check that the voter's database at ``index`` contains the same rows as every other voter's there."""
        known = self.database_digests.setdefault(index, digest)
        if known != digest:
            raise InvariantViolation(f"databases differ at index {index}: {name} contains other rows than a voter checked before it")

    def forget_node(self, name: str) -> None:
        """Forget what a crashed voter counted as committed; its restart reports it again."""
        self._seen_commit.pop(name, None)

    def check_log_matching(self, nodes: list[Node]) -> None:
        for position, first in enumerate(nodes):
            for second in nodes[position + 1 :]:
                self._check_pair(first, second)

    # --- helpers ------------------------------------------------------------------------

    def _check_entry(self, name: str, entry: Entry, action: str) -> None:
        known = self.committed.get(entry.index)
        if known is not None and not _same(entry, known):
            raise InvariantViolation(
                f"{name} {action} an entry of term {entry.term} at index {entry.index}, where the committed "
                f"entry has term {known[0]}"
            )

    def _record_committed(self, name: str, entry: Entry) -> None:
        known = self.committed.setdefault(entry.index, (entry.term, entry.kind, entry.command))
        if not _same(entry, known):
            raise InvariantViolation(
                f"{name} committed an entry of term {entry.term} at index {entry.index}, where another voter "
                f"committed one of term {known[0]}"
            )

    def _check_pair(self, first: Node, second: Node) -> None:
        low = max(first.log.first_index, second.log.first_index)
        high = min(first.log.last_index, second.log.last_index)
        # The highest index where both logs have the same term: both must agree on every
        # entry they both still hold up to there.
        agreed = 0
        for index in range(high, low - 1, -1):
            if first.log.term_at(index) == second.log.term_at(index):
                agreed = index
                break
        if agreed == 0:
            return
        ours = first.log.entries_between(low, agreed + 1)
        theirs = second.log.entries_between(low, agreed + 1)
        for entry, other in zip(ours, theirs):
            if entry != other:
                raise InvariantViolation(
                    f"log matching fails: {first.id} and {second.id} agree on the term at index {agreed} "
                    f"but differ at index {entry.index}"
                )
