"""Assignment: which queued shard goes to which executor. Pure code, no I/O.

Each free slot takes the next ready shard of the run that comes first in this order:
higher priority; then, among runs of equal priority, the run with the fewest shards running
now (fair share, so a big run does not starve a small one); then the older run. A shard is
ready once its retry backoff (``not_before``) has passed and every test its tests depend on
has a final result. The load balancer picks its executor among those whose labels meet the
shard's requirements; a shard that no free executor can take now stays queued and the next
one gets the slot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from swarmctl.coordinator.executor_registry import ExecutorRecord
from swarmctl.coordinator.load_balancer import choose_executor
from swarmctl.coordinator.state import RunState, RunStatus


def dependencies_met(run: RunState, shard_id: int) -> bool:
    """Return whether every case the shard's cases depend on has its final result.

    What a shard still waits for is kept per run (derived, never stored) and shrinks as
    results arrive, so a check costs the shard's unmet needs, not its size.
    """
    waiting = run.waiting_on.get(shard_id)
    if waiting is None:
        cases = run.shards[shard_id].cases
        waiting = {need for case in cases for need in run.deps.get(case, ())}
    waiting = {need for need in waiting if need not in run.done}
    run.waiting_on[shard_id] = waiting
    return not waiting


def pick_assignments(
    runs: Iterable[RunState], executors: Iterable[ExecutorRecord], *, now: float | None = None
) -> list[tuple[str, int, str]]:
    """Return ``(run_id, shard_id, executor_id)`` for every shard that can start now.

    With ``now`` left out, retry backoffs and start times are not checked.
    """
    records = {e.executor_id: e for e in executors}
    free = {executor_id: e.free for executor_id, e in records.items() if e.free > 0}
    if not free:
        return []  # the common case after a result: no slot to fill, so no queue to look at

    # Each run's ready shards are found lazily, in queue order, so a call looks at about as
    # many queued shards as it fills slots, however long the queue is.
    ready: dict[str, Iterator[int]] = {}
    heads: dict[str, int] = {}
    by_id: dict[str, RunState] = {}
    for run in runs:
        if run.status is not RunStatus.RUNNING or (now is not None and run.start_at and run.start_at > now):
            continue
        shards = _ready_shards(run, now)
        head = next(shards, None)
        if head is not None:
            ready[run.run_id], heads[run.run_id], by_id[run.run_id] = shards, head, run
    if not ready:
        return []
    running = Counter(run_id for e in records.values() for run_id, _ in e.running) if len(ready) > 1 else Counter()

    picks = []
    while free and ready:
        run_id = min(ready, key=lambda r: (-by_id[r].priority, running[r], by_id[r].submitted_at, r))
        run = by_id[run_id]
        shard_id = heads[run_id]
        following = next(ready[run_id], None)
        if following is None:
            del ready[run_id]
        else:
            heads[run_id] = following

        executor_id = choose_executor(
            free, records, requires=run.shard_requires(shard_id), bundle=run.suite.get("bundle", ""),
            avoid=run.shards[shard_id].avoid,
        )
        if executor_id is None:
            continue  # no free executor has its labels; it waits for one
        picks.append((run_id, shard_id, executor_id))
        running[run_id] += 1
        free[executor_id] -= 1
        if free[executor_id] == 0:
            del free[executor_id]
    return picks


def _ready_shards(run: RunState, now: float | None) -> Iterator[int]:
    """Yield the run's queued shards that may start now, oldest first."""
    check_needs = bool(run.deps)
    for shard_id in run.queue:
        if now is not None and run.shards[shard_id].not_before > now:
            continue
        if check_needs and not dependencies_met(run, shard_id):
            continue
        yield shard_id
