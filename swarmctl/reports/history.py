"""The run history: recent runs with their counts and the pass-rate trend of their suite.

The trend of a run is the pass rate (see ``statistics``) of up to ``TREND_LENGTH`` runs of
the same suite, oldest first, ending with that run. Runs of one suite share a
``suite_key``: the suite's kind and folder name. The delta is the run's pass rate minus
the pass rate of the previous run of the same suite, in percentage points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarmctl.reports.run_store import RunCounts, RunHeader
from swarmctl.reports.statistics import failing_count

TREND_LENGTH = 10
SPARK_BARS = "▁▂▃▄▅▆▇█"
NO_RATE_MARK = "·"  # a run in which no test ran has no pass rate


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One run of the history with its counts and its suite's trend."""

    header: RunHeader
    counts: RunCounts
    trend: tuple[float | None, ...]  # pass rates, oldest first, this run last
    delta: float | None  # pass rate change from the previous run of the suite, in percentage points

    def to_json(self) -> dict[str, Any]:
        header = self.header
        return {
            "run_id": header.run_id,
            "submitted_at": header.submitted_at,
            "finished_at": header.finished_at,
            "status": header.status,
            "exit_code": header.exit_code,
            "suite": header.suite_name,
            "suite_key": header.suite_key,
            "wall_s": header.wall_s,
            "total": header.total,
            "counts": dict(self.counts.counts),
            "failing": failing_count(self.counts.counts),
            "flaky": self.counts.flaky,
            "pass_rate": self.counts.pass_rate,
            "trend": list(self.trend),
            "delta_pp": self.delta,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistoryEntry:
        """Rebuild an entry from ``to_json`` output, as a coordinator's HTTP API sends it."""
        header = RunHeader(
            data["run_id"], data["submitted_at"], data["finished_at"], data["status"], data["exit_code"],
            data["suite"], data["suite_key"], data["total"], data.get("deselected", 0), data.get("error", ""),
        )
        return cls(header, RunCounts(dict(data["counts"]), data["flaky"]), tuple(data["trend"]), data["delta_pp"])


def select_runs(runs: Sequence[RunHeader], *, suite: str | None, limit: int | None) -> list[RunHeader]:
    """Return the runs to show, newest first: those of ``suite`` (any when None), at most ``limit``."""
    chosen = [header for header in runs if suite is None or header.matches_suite(suite)]
    return chosen if limit is None else chosen[:limit]


def trend_windows(
    runs: Sequence[RunHeader], selected: Sequence[RunHeader], length: int = TREND_LENGTH
) -> dict[str, list[RunHeader]]:
    """Return, for each selected run id, the runs of its trend: up to ``length`` of its suite, oldest first.

    ``runs`` is every run, newest first, so the earlier runs of a suite follow each run in it.
    """
    position = {header.run_id: index for index, header in enumerate(runs)}
    windows = {}
    for header in selected:
        earlier_or_same = (
            other for other in runs[position[header.run_id]:] if other.suite_key == header.suite_key
        )
        window = []
        for other in earlier_or_same:
            window.append(other)
            if len(window) == length:
                break
        windows[header.run_id] = list(reversed(window))
    return windows


def build_history(
    selected: Sequence[RunHeader],
    windows: Mapping[str, Sequence[RunHeader]],
    counts: Mapping[str, RunCounts],
) -> list[HistoryEntry]:
    """Combine the selected runs, their trend windows and the counts of every run in them."""
    entries = []
    for header in selected:
        rates = tuple(counts[other.run_id].pass_rate for other in windows[header.run_id])
        delta = None
        if len(rates) >= 2 and rates[-1] is not None and rates[-2] is not None:
            delta = (rates[-1] - rates[-2]) * 100
        entries.append(HistoryEntry(header, counts[header.run_id], rates, delta))
    return entries


def load_history(
    runs: Sequence[RunHeader],
    count_runs: Callable[[list[str]], Mapping[str, RunCounts]],
    *,
    suite: str | None,
    limit: int | None,
) -> list[HistoryEntry]:
    """Select the runs to show and count only the runs that they and their trends need."""
    selected = select_runs(runs, suite=suite, limit=limit)
    windows = trend_windows(runs, selected)
    needed = [other.run_id for window in windows.values() for other in window]
    return build_history(selected, windows, count_runs(needed))


def sparkline(rates: Sequence[float | None]) -> str:
    """Draw pass rates as bars on an absolute 0 to 100% scale, so 100% is always a full bar."""
    marks = []
    for rate in rates:
        if rate is None:
            marks.append(NO_RATE_MARK)
        else:
            level = round(min(max(rate, 0.0), 1.0) * (len(SPARK_BARS) - 1))
            marks.append(SPARK_BARS[level])
    return "".join(marks)
