"""The simulated application: a hash chain over the applied commands.

Its state after index i is a SHA-256 digest of its state after i - 1 and entry i, so two
voters with the same digest at the same index applied the same sequence of entries. A
snapshot's data is that digest, in place of the SQLite backup that a coordinator would
send.
"""

from __future__ import annotations

import hashlib

from swarmctl.cluster.consensus import Entry, Snapshot

DIGEST_BYTES = 32
EMPTY_DIGEST = bytes(DIGEST_BYTES)


class HashChain:
    def __init__(self, snapshot: Snapshot) -> None:
        self.applied = snapshot.index
        self.digest = snapshot.data if snapshot.index else EMPTY_DIGEST

    def apply(self, entry: Entry) -> bytes:
        """Apply ``entry``, which must follow the last applied one, and return the new digest."""
        if entry.index != self.applied + 1:
            raise AssertionError(f"entry {entry.index} applied after entry {self.applied}")
        chain = hashlib.sha256(self.digest)
        chain.update(b"%d:%d:%d:" % (entry.index, entry.term, entry.kind))
        chain.update(entry.command)
        self.digest = chain.digest()
        self.applied = entry.index
        return self.digest

    def snapshot_data(self) -> bytes:
        return self.digest

    def install(self, snapshot: Snapshot) -> None:
        self.applied = snapshot.index
        self.digest = snapshot.data
