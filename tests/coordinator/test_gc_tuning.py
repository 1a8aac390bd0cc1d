"""The coordinator process hides its long-lived objects from the cyclic garbage collector."""

from __future__ import annotations

import gc

from swarmctl.coordinator.node import GC_YOUNG_THRESHOLD, tune_garbage_collection


def test_tuning_freezes_and_raises_threshold() -> None:
    threshold = gc.get_threshold()
    try:
        tune_garbage_collection()
        assert gc.get_freeze_count() > 1_000  # the imported modules' objects
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])

        # Objects made later are collected as usual: a cycle made now is found.
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
