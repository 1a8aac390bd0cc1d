"""The load balancer: labels first, then free slots, load, a warm worker, join order."""

from __future__ import annotations

from swarmctl.coordinator.executor_registry import ExecutorRecord, ExecutorState
from swarmctl.coordinator.load_balancer import can_ever_run, choose_executor


def record(executor_id: str, *, joined: float = 0.0, labels=None, load: float = 0.0, warm=(), slots: int = 2):
    return ExecutorRecord(executor_id, slots, joined, labels=dict(labels or {}), load=load, warm=set(warm))


def choose(records, free=None, **kwargs):
    by_id = {r.executor_id: r for r in records}
    free = free or {r.executor_id: r.free for r in records}
    kwargs.setdefault("requires", {})
    kwargs.setdefault("bundle", "b1")
    return choose_executor(free, by_id, **kwargs)


def test_balancer_requires_every_label():
    records = [record("plain", labels={"os": "linux"}), record("browser", joined=1, labels={"os": "linux", "browser": "chromium"})]

    assert choose(records, requires={"browser": "chromium"}) == "browser"
    assert choose(records, requires={"browser": "firefox"}) is None
    assert choose(records, requires={"os": "linux", "browser": "chromium"}) == "browser"


def test_balancer_prefers_free_slots():
    records = [record("a"), record("b", joined=1)]

    assert choose(records, free={"a": 1, "b": 2}) == "b"


def test_balancer_prefers_low_load():
    records = [record("busy", load=0.9), record("idle", joined=1, load=0.2)]

    assert choose(records) == "idle"


def test_balancer_ignores_load_noise():
    records = [record("first", load=0.31), record("second", joined=1, load=0.29)]

    assert choose(records) == "first"


def test_balancer_prefers_warm_worker():
    records = [record("cold"), record("warm", joined=1, warm={"b1"})]

    assert choose(records) == "warm"
    assert choose(records, bundle="other") == "cold"


def test_balancer_avoids_failed_executor_while_another_fits():
    records = [record("failed-here"), record("other", joined=1)]

    assert choose(records, free={"failed-here": 2, "other": 1}, avoid="failed-here") == "other"
    assert choose(records, free={"failed-here": 2}, avoid="failed-here") == "failed-here"


def test_balancer_can_ever_run_needs_active_executor():
    cordoned = record("gpu", labels={"gpu": "true"})
    cordoned.state = ExecutorState.CORDONED

    assert not can_ever_run({"gpu": "true"}, [cordoned, record("cpu")])
    cordoned.state = ExecutorState.ACTIVE
    assert can_ever_run({"gpu": "true"}, [cordoned, record("cpu")])
