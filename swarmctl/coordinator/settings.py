"""Timing settings of a coordinator, checked in one place."""

from __future__ import annotations

from dataclasses import dataclass

from swarmctl.errors import UsageError

TERM = 1  # a single coordinator leads term 1; elections will raise it

# How long the leases of an executor whose connection closed survive, waiting for it to
# reconnect and claim them: a second covers a broken connection that reconnects at once,
# and keeps a killed executor's work waiting no longer than that.
RECONNECT_GRACE_S = 1.0


@dataclass(frozen=True)
class CoordinatorSettings:
    lease_s: float = 5.0  # a shard attempt lapses after this long without a heartbeat renewing it
    unmatched_timeout_s: float = 60.0  # a test no executor's labels can meet errors after this long
    reconnect_grace_s: float = RECONNECT_GRACE_S

    def __post_init__(self) -> None:
        for name in ("lease_s", "unmatched_timeout_s", "reconnect_grace_s"):
            value = getattr(self, name)
            if not value > 0:
                raise UsageError(f"coordinator setting {name} = {value!r} is invalid: it must be more than 0 seconds")

    @property
    def heartbeat_s(self) -> float:
        """Return the executors' heartbeat interval: a lease outlives three missed heartbeats."""
        return min(1.0, self.lease_s / 4)
