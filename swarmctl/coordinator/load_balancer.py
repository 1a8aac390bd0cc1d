"""Load balancing: which executor takes a shard. Pure code, no I/O.

A shard may go only to an active executor with a free slot whose labels contain every label
its tests require. Among those, the order of preference is:

1. not the executor where the shard's tests just failed (a retry), while another one fits;
2. more free slots, so work spreads over executors before it stacks on one;
3. lower load, as the executor's resource monitor reports it (CPU, memory and load average;
   a machine shared with other work gets less of ours);
4. a worker already warm for the suite, which saves an interpreter start and a collection;
5. the executor that joined first, so that equal choices are stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from swarmctl.coordinator.executor_registry import ExecutorRecord, ExecutorState
from swarmctl.labels import satisfies

LOAD_STEP = 0.1  # loads closer than this count as equal, so that noise does not decide


def choose_executor(
    free: Mapping[str, int],
    executors: Mapping[str, ExecutorRecord],
    *,
    requires: Mapping[str, str],
    bundle: str,
    avoid: str | None = None,
) -> str | None:
    """Return the id of the best executor with a free slot for a shard, or None if none fits.

    ``free`` maps executor ids to the slots still free in this scheduling round.
    """
    best, best_key = None, None
    for executor_id, slots in free.items():
        if slots <= 0:
            continue
        record = executors[executor_id]
        if requires and not satisfies(record.labels, requires):
            continue
        key = (
            executor_id != avoid,
            slots,
            -round(record.load / LOAD_STEP),
            bundle in record.warm,
            -record.joined_at,
        )
        if best_key is None or key > best_key:
            best, best_key = executor_id, key
    return best


def can_ever_run(requires: Mapping[str, str], executors: Iterable[ExecutorRecord]) -> bool:
    """Return whether an executor that takes work (active) has every required label."""
    return any(record.state is ExecutorState.ACTIVE and satisfies(record.labels, requires) for record in executors)
