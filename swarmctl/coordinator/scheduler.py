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

from collections import Counter, deque
from collections.abc import Iterable

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
    running = Counter(run_id for e in records.values() for run_id, _ in e.running)

    ready: dict[str, deque[int]] = {}
    by_id: dict[str, RunState] = {}
    for run in runs:
        if run.status is not RunStatus.RUNNING or (now is not None and run.start_at and run.start_at > now):
            continue
        check_needs = bool(run.deps)
        shards = deque(
            s for s in run.queue
            if (now is None or run.shards[s].not_before <= now) and (not check_needs or dependencies_met(run, s))
        )
        if shards:
            ready[run.run_id], by_id[run.run_id] = shards, run

    picks = []
    while free and ready:
        run_id = min(ready, key=lambda r: (-by_id[r].priority, running[r], by_id[r].submitted_at, r))
        run = by_id[run_id]
        shard_id = ready[run_id].popleft()
        if not ready[run_id]:
            del ready[run_id]

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
