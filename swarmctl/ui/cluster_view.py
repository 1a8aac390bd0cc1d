"""The dashboard's copy of a cluster's state, kept up to date from subscription events.

``ClusterView.apply`` takes the frames a subscribed client receives (see
``coordinator/event_hub.py``): ``RunList`` and ``ExecutorList`` replace the rows, ``RunProgress``
updates its run's row between two lists, so counts and failures show as results arrive, and
``ExecutorLogs`` feeds the log tail. It does no I/O and reads no clock.
"""

from __future__ import annotations

import collections
import datetime
from dataclasses import dataclass, field
from typing import Any

from swarmctl import protocol
from swarmctl.results import FAILING_OUTCOMES

LOG_TAIL_LINES = 8
FAILURES_PER_RUN = 5  # as many as ListRuns sends per run


@dataclass
class ClusterView:
    """The newest data the dashboard has, and what went wrong since, if anything."""

    executors: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""  # the coordinator's address
    taken_at: float = 0.0  # Unix time of the data
    status: str = ""
    log_lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))

    def apply(self, message: protocol.Message, now: float) -> bool:
        """Update the view from one event frame; return False for a frame it does not use."""
        match message:
            case protocol.RunList():
                self.runs = list(message.runs)
            case protocol.ExecutorList():
                self.executors = list(message.executors)
            case protocol.RunProgress():
                self._apply_progress(message, now)
            case protocol.ExecutorLogs():
                for line in message.lines:
                    try:
                        at, level, _logger, text = line
                        self.log_lines.append(f"{_clock_time(float(at))} {message.executor} {level} {text}")
                    except (ValueError, TypeError, OverflowError, OSError):
                        self.log_lines.append(f"{message.executor}: malformed log line {str(line)[:200]}")
            case _:
                return False
        self.taken_at = now
        return True

    def _apply_progress(self, progress: protocol.RunProgress, now: float) -> None:
        row = next((run for run in self.runs if run.get("run_id") == progress.run_id), None)
        if row is None:
            return  # a run that started after the last RunList: the next one brings its row
        row.update(
            status=progress.status, total=progress.total, done=progress.done, counts=dict(progress.counts),
            eta_s=progress.eta_s, eta_low_s=progress.eta_low_s, eta_high_s=progress.eta_high_s, eta_basis=progress.eta_basis,
            executors=sorted({activity["executor"] for activity in progress.activity}),
        )
        failures = list(row.get("failures") or [])
        for case_id, outcome in progress.outcomes:
            if outcome in FAILING_OUTCOMES:
                # The message comes with the next RunList.
                failures.append({"case_id": case_id, "outcome": outcome, "message": "", "at": now})
        row["failures"] = failures[-FAILURES_PER_RUN:]


def _clock_time(unix_time: float) -> str:
    return datetime.datetime.fromtimestamp(unix_time).strftime("%H:%M:%S")
