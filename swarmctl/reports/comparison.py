"""Compare two runs test by test: what broke, what was fixed, what changed speed.

Tests are matched by node id. ``base`` is the earlier run and ``head`` the later one. Every
category except ``added`` and ``removed`` looks only at tests present in both runs:

- **new failure**: failing in head (failed, error or timed_out), not failing in base.
- **fixed**: failing in base, and passed, xfailed or xpassed in head.
- **newly flaky**: flaky in head (passed after a failed attempt), not flaky in base.
- **added** / **removed**: in head only / in base only, with the outcome they had there.
- **slower** / **faster**: a duration that changed by more than ``threshold`` relative to
  base *and* by more than ``min_change_s`` seconds. The absolute floor keeps noise in very
  short tests out, since a 1 ms test that takes 2 ms has doubled. A test that was skipped
  or did not run on an executor in either run has no duration to compare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from swarmctl.results import (
    FAILING_OUTCOMES,
    PASSED,
    SKIPPED,
    XFAILED,
    XPASSED,
    CaseResult,
)

DEFAULT_THRESHOLD = 0.5  # 50% slower or faster
MIN_CHANGE_S = 0.1  # smaller changes are scheduling noise, not a slower test

_PASSING = frozenset({PASSED, XFAILED, XPASSED})


@dataclass(frozen=True, slots=True)
class OutcomeChange:
    """A test whose outcome differs between the runs."""

    id: str
    before: str
    after: str
    message: str  # head's message, or base's for a fixed test


@dataclass(frozen=True, slots=True)
class PresentTest:
    """A test in only one of the runs."""

    id: str
    outcome: str


@dataclass(frozen=True, slots=True)
class DurationChange:
    """A test whose duration changed past the threshold and the floor."""

    id: str
    before_s: float
    after_s: float

    @property
    def change(self) -> float:
        """The relative change: 1.0 means twice as long, -0.5 half as long, inf from a zero base."""
        if self.before_s <= 0:
            return math.inf
        return (self.after_s - self.before_s) / self.before_s


@dataclass(frozen=True, slots=True)
class RunComparison:
    """The differences between two runs, each list in head's order (base's for removed)."""

    base: str  # run id
    head: str
    threshold: float
    min_change_s: float
    new_failures: tuple[OutcomeChange, ...]
    fixed: tuple[OutcomeChange, ...]
    newly_flaky: tuple[OutcomeChange, ...]
    added: tuple[PresentTest, ...]
    removed: tuple[PresentTest, ...]
    slower: tuple[DurationChange, ...]
    faster: tuple[DurationChange, ...]

    def is_empty(self) -> bool:
        return not any(
            (self.new_failures, self.fixed, self.newly_flaky, self.added, self.removed, self.slower, self.faster)
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("slower", "faster"):
            for entry, change in zip(data[key], getattr(self, key)):
                # JSON has no infinity, so a change from a zero base is null.
                entry["change"] = change.change if math.isfinite(change.change) else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunComparison:
        """Rebuild a comparison from ``to_json`` output, as a coordinator's HTTP API sends it."""
        changes = {key: tuple(OutcomeChange(**entry) for entry in data[key]) for key in ("new_failures", "fixed", "newly_flaky")}
        present = {key: tuple(PresentTest(**entry) for entry in data[key]) for key in ("added", "removed")}
        durations = {
            key: tuple(DurationChange(entry["id"], entry["before_s"], entry["after_s"]) for entry in data[key])
            for key in ("slower", "faster")
        }
        return cls(data["base"], data["head"], data["threshold"], data["min_change_s"], **changes, **present, **durations)


def compare_runs(
    base_id: str,
    base: Sequence[CaseResult],
    head_id: str,
    head: Sequence[CaseResult],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_change_s: float = MIN_CHANGE_S,
) -> RunComparison:
    """Compare the final results of two runs by the rules in the module docstring."""
    if threshold <= 0:
        raise ValueError(f"threshold {threshold} must be greater than 0")
    before = {result.case_id: result for result in base}
    after = {result.case_id: result for result in head}
    common = [(before[result.case_id], result) for result in head if result.case_id in before]

    new_failures = []
    fixed = []
    newly_flaky = []
    slower = []
    faster = []
    for old, new in common:
        if new.outcome in FAILING_OUTCOMES and old.outcome not in FAILING_OUTCOMES:
            new_failures.append(OutcomeChange(new.case_id, old.outcome, new.outcome, _first_line(new.message)))
        elif old.outcome in FAILING_OUTCOMES and new.outcome in _PASSING:
            fixed.append(OutcomeChange(new.case_id, old.outcome, new.outcome, _first_line(old.message)))
        if new.flaky and not old.flaky:
            newly_flaky.append(OutcomeChange(new.case_id, old.outcome, new.outcome, _first_line(new.message)))

        change = _duration_change(old, new, threshold, min_change_s)
        if change is not None:
            (slower if change.after_s > change.before_s else faster).append(change)

    return RunComparison(
        base=base_id,
        head=head_id,
        threshold=threshold,
        min_change_s=min_change_s,
        new_failures=tuple(new_failures),
        fixed=tuple(fixed),
        newly_flaky=tuple(newly_flaky),
        added=tuple(PresentTest(result.case_id, result.outcome) for result in head if result.case_id not in before),
        removed=tuple(PresentTest(result.case_id, result.outcome) for result in base if result.case_id not in after),
        slower=tuple(sorted(slower, key=lambda entry: entry.change, reverse=True)),
        faster=tuple(sorted(faster, key=lambda entry: entry.change)),
    )


def _duration_change(
    old: CaseResult, new: CaseResult, threshold: float, min_change_s: float
) -> DurationChange | None:
    if not (_timed(old) and _timed(new)):
        return None
    difference = abs(new.duration - old.duration)
    if difference <= min_change_s:
        return None
    # A base of zero with a difference past the floor is an infinite change, so it counts.
    if old.duration > 0 and difference / old.duration <= threshold:
        return None
    return DurationChange(new.case_id, old.duration, new.duration)


def _timed(result: CaseResult) -> bool:
    return bool(result.executor) and result.outcome != SKIPPED


def _first_line(text: str) -> str:
    return text.strip().partition("\n")[0]
