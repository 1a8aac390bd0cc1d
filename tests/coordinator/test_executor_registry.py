"""The executor registry: register, cordon, drain, leave, and what `swarmctl executors` lists."""

from __future__ import annotations

import pytest

from swarmctl import protocol
from swarmctl.coordinator.executor_registry import FORGET_AFTER_S, ExecutorRegistry, ExecutorState, UnknownExecutor


def hello(node_id: str, slots: int = 2, **labels: str) -> protocol.Hello:
    return protocol.Hello(
        protocol.PROTOCOL_VERSION, protocol.ROLE_EXECUTOR, node_id, slots, labels, "swarmctl test", "host-1", 42,
        resources={"cpu_percent": 12.0, "load": 0.25},
    )


def test_registry_register_lists_executor():
    registry = ExecutorRegistry()

    record = registry.register(hello("e1", os="linux"), address="127.0.0.1:5000", now=10.0)
    record.running.add(("run-1", 3))

    [row] = registry.describe(now=12.0)
    assert row["id"] == "e1"
    assert row["state"] == "active"
    assert row["labels"] == {"os": "linux"}
    assert (row["slots"], row["busy"]) == (2, 1)
    assert row["shards"] == ["run-1/3"]
    assert row["load"] == 0.25
    assert row["last_seen_s"] == 2.0


def test_registry_cordoned_executor_gets_no_work():
    registry = ExecutorRegistry()
    record = registry.register(hello("e1"), address="a", now=0.0)

    registry.cordon("e1", "maintenance")

    assert record.state is ExecutorState.CORDONED
    assert record.free == 0
    registry.uncordon("e1")
    assert record.free == 2


def test_registry_cordon_kept_for_rejoin():
    registry = ExecutorRegistry(cordoned={"e1"})

    record = registry.register(hello("e1"), address="a", now=0.0)

    assert record.state is ExecutorState.CORDONED


def test_registry_silent_executor_gets_no_work():
    registry = ExecutorRegistry()
    record = registry.register(hello("e1"), address="a", now=0.0)

    record.silent = True

    assert record.free == 0
    assert registry.describe(0.0)[0]["state"] == "silent"
    registry.report("e1", protocol.Heartbeat(2, 0.1), now=1.0)
    assert record.free == 2


def test_registry_departed_listed_then_forgotten():
    registry = ExecutorRegistry()
    registry.register(hello("e1"), address="a", now=0.0)
    registry.register(hello("e2"), address="b", now=0.0)

    registry.remove("e1", ExecutorState.LOST, "connection closed", now=5.0)

    assert "e1" not in registry
    assert [(row["id"], row["state"], row["reason"]) for row in registry.describe(6.0)] == [
        ("e2", "active", ""), ("e1", "lost", "connection closed")
    ]
    assert [row["id"] for row in registry.describe(5.0 + FORGET_AFTER_S + 1)] == ["e2"]


def test_registry_unknown_executor_named():
    registry = ExecutorRegistry()
    registry.register(hello("e1"), address="a", now=0.0)

    with pytest.raises(UnknownExecutor, match=r"executor 'nope' is not connected \(connected: e1\)"):
        registry.drain("nope", "test")


def test_registry_departed_lists_no_shards():
    registry = ExecutorRegistry()
    record = registry.register(hello("e1"), address="a", now=0.0)
    record.running.add(("run-1", 3))

    registry.remove("e1", ExecutorState.LOST, "connection closed", now=5.0)

    [row] = registry.describe(6.0)
    assert row["busy"] == 0
    assert row["shards"] == []
