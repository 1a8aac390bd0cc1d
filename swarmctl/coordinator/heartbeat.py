"""Leases on shard attempts, renewed by executor heartbeats. Pure code: times come in as numbers.

Assigning a shard grants its executor a lease of ``duration`` seconds on that attempt. Every
heartbeat lists the attempts the executor holds and renews their leases. A lease lapses when
its executor stops renewing it (killed, frozen by SIGSTOP, cut off by the network, or it lost
the job), and the coordinator then requeues the shard as a new attempt. Results that arrive
later from the old attempt are fenced by the state machine.

A closed connection does not end the leases at once. They are cut to ``reconnect_grace``
seconds, which is long enough for an executor whose connection broke to reconnect and claim
them in its hello. It is also short enough that a killed executor's work moves on within
a few seconds.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ShardKey = tuple[str, int]  # (run_id, shard_id)


@dataclass(slots=True)
class Lease:
    run_id: str
    shard_id: int
    attempt: int
    executor_id: str
    expires_at: float
    disconnected: bool = False  # cut to the reconnect grace when the executor's connection closed

    @property
    def key(self) -> ShardKey:
        return self.run_id, self.shard_id


class LeaseTable:
    def __init__(self, duration: float, reconnect_grace: float) -> None:
        self.duration = duration
        self.reconnect_grace = reconnect_grace
        self._leases: dict[ShardKey, Lease] = {}
        self._expiries: list[tuple[float, str, int]] = []  # heap; stale entries are skipped

    def __len__(self) -> int:
        return len(self._leases)

    def get(self, run_id: str, shard_id: int) -> Lease | None:
        return self._leases.get((run_id, shard_id))

    def grant(self, run_id: str, shard_id: int, attempt: int, executor_id: str, now: float) -> Lease:
        lease = Lease(run_id, shard_id, attempt, executor_id, now + self.duration)
        self._leases[lease.key] = lease
        heapq.heappush(self._expiries, (lease.expires_at, run_id, shard_id))
        return lease

    def renew(self, executor_id: str, held: Iterable[Sequence], now: float) -> list[tuple[str, int, int]]:
        """Extend the leases an executor holds; return the attempts it holds without a lease.

        Those attempts ended on the coordinator (their lease lapsed or the shard moved on);
        the executor should stop them.
        """
        orphans = []
        for run_id, shard_id, attempt in held:  # lists off the wire, or tuples
            lease = self._leases.get((run_id, shard_id))
            if lease is None or lease.attempt != attempt or lease.executor_id != executor_id:
                orphans.append((run_id, shard_id, attempt))
                continue
            lease.expires_at = now + self.duration
            lease.disconnected = False
            heapq.heappush(self._expiries, (lease.expires_at, run_id, shard_id))
        return orphans

    def release(self, run_id: str, shard_id: int) -> None:
        """Forget the lease of a shard that finished or was requeued."""
        self._leases.pop((run_id, shard_id), None)

    def end(self, run_id: str, shard_id: int, attempt: int, executor_id: str) -> None:
        """Forget the lease of one executor's attempt that ended, and no other.

        A deposed leader may have handed out the same attempt number to another executor,
        whose report of that attempt must not end this one's lease.
        """
        lease = self._leases.get((run_id, shard_id))
        if lease is not None and lease.attempt == attempt and lease.executor_id == executor_id:
            del self._leases[lease.key]

    def held_by(self, executor_id: str) -> list[Lease]:
        return [lease for lease in self._leases.values() if lease.executor_id == executor_id]

    def disconnected(self, executor_id: str, now: float) -> None:
        """Cut the leases of an executor whose connection closed to the reconnect grace."""
        for lease in self.held_by(executor_id):
            lease.disconnected = True
            if lease.expires_at > now + self.reconnect_grace:
                lease.expires_at = now + self.reconnect_grace
                heapq.heappush(self._expiries, (lease.expires_at, lease.run_id, lease.shard_id))

    def revoke(self, executor_id: str) -> list[Lease]:
        """End every lease of an executor now (declared dead); return them."""
        revoked = self.held_by(executor_id)
        for lease in revoked:
            del self._leases[lease.key]
        return revoked

    def expire(self, now: float) -> list[Lease]:
        """Remove and return the leases that lapsed by ``now``, earliest first."""
        lapsed = []
        while self._expiries and self._expiries[0][0] <= now:
            expires_at, run_id, shard_id = heapq.heappop(self._expiries)
            lease = self._leases.get((run_id, shard_id))
            if lease is not None and lease.expires_at <= now:
                del self._leases[lease.key]
                lapsed.append(lease)
        return lapsed

    def next_expiry(self) -> float | None:
        """Return the earliest time a lease may lapse, or None with no leases."""
        while self._expiries:
            expires_at, run_id, shard_id = self._expiries[0]
            lease = self._leases.get((run_id, shard_id))
            if lease is not None and lease.expires_at == expires_at:
                return expires_at
            heapq.heappop(self._expiries)
        return None
