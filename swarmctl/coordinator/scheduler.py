"""Assignment: which queued shard goes to which executor. Pure code, no I/O.

Runs are served oldest first; within a run, shards leave the queue in order. A shard goes to
the executor with the most free slots (ties: the one that joined first), so work spreads
over executors before it stacks on one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from swarmctl.coordinator.state import RunState, RunStatus


@dataclass(slots=True)
class ExecutorView:
    executor_id: str
    slots: int
    joined_at: float
    running: set[tuple[str, int]] = field(default_factory=set)  # (run_id, shard_id)

    @property
    def free(self) -> int:
        return self.slots - len(self.running)


def pick_assignments(runs: Iterable[RunState], executors: Iterable[ExecutorView]) -> list[tuple[str, int, str]]:
    """Return ``(run_id, shard_id, executor_id)`` for every shard that can start now."""
    executors = list(executors)
    free = {e.executor_id: e.free for e in executors if e.free > 0}
    order = {e.executor_id: e.joined_at for e in executors}
    picks = []
    for run in sorted(runs, key=lambda r: r.submitted_at):
        if run.status is not RunStatus.RUNNING:
            continue
        for shard_id in run.queue:
            if not free:
                return picks
            executor_id = max(free, key=lambda e: (free[e], -order[e]))
            picks.append((run.run_id, shard_id, executor_id))
            free[executor_id] -= 1
            if free[executor_id] == 0:
                del free[executor_id]
    return picks
