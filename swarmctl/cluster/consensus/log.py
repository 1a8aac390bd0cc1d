"""The replicated log of one voter, in memory, with its compacted prefix and commit state.

Indexes start at 1. Everything up to ``snapshot.index`` is compacted into the snapshot,
and ``entries[k]`` has index ``snapshot.index + 1 + k``. The log also tracks which
suffix changed since the shell last persisted it, so that a Ready carries only that.
"""

from __future__ import annotations

import math

from swarmctl.cluster.consensus.messages import Entry, Snapshot
from swarmctl.errors import UsageError


class RaftLog:
    def __init__(
        self, snapshot: Snapshot, entries: tuple[Entry, ...] | list[Entry], commit: int, applied: int
    ) -> None:
        for offset, entry in enumerate(entries):
            if entry.index != snapshot.index + 1 + offset:
                raise UsageError(
                    f"stored log entry {offset} has index {entry.index}, expected {snapshot.index + 1 + offset} "
                    f"after a snapshot at index {snapshot.index}"
                )
        self.snapshot = snapshot
        self._entries: list[Entry] = list(entries)
        if not snapshot.index <= commit <= self.last_index:
            raise UsageError(
                f"stored commit index {commit} is outside the stored log, which spans "
                f"{snapshot.index} to {self.last_index}"
            )
        self.commit = commit
        if not snapshot.index <= applied <= commit:
            raise UsageError(
                f"applied index {applied} must lie between the snapshot index {snapshot.index} "
                f"and the commit index {commit}"
            )
        # Entries up to here have been handed to the application.
        self.applied = applied
        # The first index that changed since the last Ready; math.inf when nothing did.
        self._unstable_from: float = math.inf

    # --- queries ------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self.snapshot.index + 1

    @property
    def last_index(self) -> int:
        return self.snapshot.index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.snapshot.term

    def term_at(self, index: int) -> int | None:
        """Return the term of the entry at ``index``, or None if it is compacted away or beyond the end."""
        offset = index - self.snapshot.index
        if offset == 0:
            return self.snapshot.term
        if 0 < offset <= len(self._entries):
            return self._entries[offset - 1].term
        return None

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def entries_between(self, first: int, end: int) -> tuple[Entry, ...]:
        """Return the entries with first <= index < end; ``first`` must not be compacted."""
        base = self.snapshot.index + 1
        return tuple(self._entries[first - base : end - base])

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Return whether a log ending at (last_index, last_term) is at least as complete as this one.

        Raft's rule: the log whose last entry has the higher term is more complete, and of
        two logs ending in the same term the longer one.
        """
        return last_term > self.last_term or (last_term == self.last_term and last_index >= self.last_index)

    def conflict_hint(self, index: int) -> int:
        """Return where a leader should retry after its entry at ``index`` did not match ours."""
        if index > self.last_index:
            return self.last_index + 1
        term = self.term_at(index)
        first = index
        while first - 1 > self.snapshot.index and self.term_at(first - 1) == term:
            first -= 1
        return max(first, self.first_index)

    # --- changes ------------------------------------------------------------------------

    def append(self, entry: Entry) -> None:
        """Append a new entry at the end (on the leader)."""
        self._unstable_from = min(self._unstable_from, entry.index)
        self._entries.append(entry)

    def merge(self, prev_index: int, entries: tuple[Entry, ...]) -> int:
        """Merge a leader's ``entries`` that follow ``prev_index``; return the index of the last one.

        The caller has checked that ``prev_index`` matches. Entries that are already present
        with the same term stay untouched, so a late duplicate of an older AppendEntries
        cannot truncate entries that a newer one added. At the first entry whose term
        differs, this log drops its own suffix and takes the leader's.
        """
        for position, entry in enumerate(entries):
            if entry.index <= self.snapshot.index:
                continue
            existing = self.term_at(entry.index)
            if existing == entry.term:
                continue
            if existing is not None:
                if entry.index <= self.commit:
                    raise AssertionError(
                        f"leader entry at index {entry.index} (term {entry.term}) conflicts with a committed "
                        f"entry of term {existing}"
                    )
                del self._entries[entry.index - self.snapshot.index - 1 :]
            self._unstable_from = min(self._unstable_from, entry.index)
            self._entries.extend(entries[position:])
            break
        return prev_index + len(entries)

    def commit_to(self, index: int) -> bool:
        """Raise the commit index to ``index`` if that is higher; return whether it moved."""
        if index <= self.commit:
            return False
        if index > self.last_index:
            raise AssertionError(f"commit index {index} is beyond the last log index {self.last_index}")
        self.commit = index
        return True

    def compact(self, index: int, data: bytes) -> Snapshot:
        """Replace the entries up to ``index`` with a snapshot of ``data`` and return it."""
        if not self.snapshot.index < index <= self.applied:
            raise UsageError(
                f"cannot compact the log to index {index}: it must be above the current snapshot "
                f"({self.snapshot.index}) and at most the applied index ({self.applied})"
            )
        term = self.term_at(index)
        assert term is not None
        del self._entries[: index - self.snapshot.index]
        self.snapshot = Snapshot(index, term, data)
        return self.snapshot

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a leader's ``snapshot``, which becomes committed."""
        self.snapshot = snapshot
        self._entries = []
        self.commit = snapshot.index
        self.applied = snapshot.index
        self._unstable_from = math.inf

    def take_unstable(self) -> tuple[Entry, ...]:
        """Return the entries changed since the last call, for the shell to persist."""
        if self._unstable_from == math.inf:
            return ()
        first = max(int(self._unstable_from), self.first_index)
        self._unstable_from = math.inf
        return self.entries_between(first, self.last_index + 1)

    def take_committed(self) -> tuple[Entry, ...]:
        """Return the committed entries not yet handed out, and count them as applied."""
        if self.applied >= self.commit:
            return ()
        entries = self.entries_between(self.applied + 1, self.commit + 1)
        self.applied = self.commit
        return entries
