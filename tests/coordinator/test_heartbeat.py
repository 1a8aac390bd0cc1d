"""Leases on shard attempts: grant, renew by heartbeat, lapse, reconnect grace."""

from __future__ import annotations

from swarmctl.coordinator.heartbeat import LeaseTable


def table() -> LeaseTable:
    return LeaseTable(duration=5.0, reconnect_grace=1.0)


def test_lease_lapses_without_renewal():
    leases = table()
    leases.grant("run", 0, 1, "exec-a", now=100.0)

    assert leases.expire(104.9) == []
    lapsed = leases.expire(105.0)

    assert [(lease.key, lease.attempt, lease.executor_id) for lease in lapsed] == [(("run", 0), 1, "exec-a")]
    assert leases.get("run", 0) is None


def test_lease_renewed_by_heartbeat():
    leases = table()
    leases.grant("run", 0, 1, "exec-a", now=100.0)

    orphans = leases.renew("exec-a", [("run", 0, 1)], now=104.0)

    assert orphans == []
    assert leases.expire(108.9) == []
    assert leases.next_expiry() == 109.0
    assert len(leases.expire(109.0)) == 1


def test_lease_not_renewed_for_other_attempt_or_executor():
    leases = table()
    leases.grant("run", 0, 2, "exec-b", now=100.0)

    orphans = leases.renew("exec-a", [("run", 0, 1), ("run", 0, 2), ("run", 9, 1)], now=104.0)

    assert orphans == [("run", 0, 1), ("run", 0, 2), ("run", 9, 1)]
    assert leases.get("run", 0).expires_at == 105.0


def test_lease_cut_to_grace_on_disconnect():
    leases = table()
    leases.grant("run", 0, 1, "exec-a", now=100.0)
    leases.grant("run", 1, 1, "exec-b", now=100.0)

    leases.disconnected("exec-a", now=101.0)

    assert [lease.key for lease in leases.expire(102.0)] == [("run", 0)]
    assert leases.get("run", 1) is not None


def test_lease_reclaimed_after_reconnect():
    leases = table()
    leases.grant("run", 0, 1, "exec-a", now=100.0)
    leases.disconnected("exec-a", now=101.0)

    assert leases.renew("exec-a", [("run", 0, 1)], now=101.5) == []

    assert leases.expire(102.0) == []
    assert leases.get("run", 0).expires_at == 106.5


def test_lease_revoke_and_release():
    leases = table()
    leases.grant("run", 0, 1, "exec-a", now=100.0)
    leases.grant("run", 1, 1, "exec-a", now=100.0)
    leases.grant("run", 2, 1, "exec-b", now=100.0)

    revoked = leases.revoke("exec-a")
    leases.release("run", 2)

    assert sorted(lease.key for lease in revoked) == [("run", 0), ("run", 1)]
    assert len(leases) == 0
    assert leases.next_expiry() is None
    assert leases.expire(200.0) == []


def test_lease_ended_only_by_its_own_executor():
    # A deposed leader gave attempt 1 to exec-b, and the new leader gave attempt 1 to
    # exec-a. So exec-b reporting its attempt done must leave exec-a's lease alone.
    leases = table()
    leases.grant("run", 0, 1, "exec-a", now=100.0)

    leases.end("run", 0, 1, "exec-b")
    leases.end("run", 0, 2, "exec-a")
    assert leases.renew("exec-a", [("run", 0, 1)], now=101.0) == []

    leases.end("run", 0, 1, "exec-a")
    assert leases.get("run", 0) is None
