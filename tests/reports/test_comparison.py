"""Tests for comparing two runs test by test."""

from __future__ import annotations

import json
import math

import pytest

from swarmctl.reports.comparison import MIN_CHANGE_S, DurationChange, compare_runs
from swarmctl.results import CaseResult


def case(name: str, outcome: str = "passed", duration: float = 1.0, **fields) -> CaseResult:
    return CaseResult(f"t.py::{name}", outcome, duration=duration, executor=fields.pop("executor", "exec-a"), **fields)


def ids(entries) -> list[str]:
    return [entry.id for entry in entries]


BASE = [
    case("stays_green"),
    case("breaks"),
    case("gets_fixed", "failed", message="old failure"),
    case("still_red", "failed"),
    case("becomes_flaky"),
    case("was_flaky", attempt=2, flaky=True),
    case("removed", "skipped"),
    case("skip_then_fail", "skipped"),
]
HEAD = [
    case("added"),
    case("stays_green"),
    case("breaks", "error", message="RuntimeError: new\ntraceback"),
    case("gets_fixed", "xfailed"),
    case("still_red", "timed_out"),
    case("becomes_flaky", attempt=2, flaky=True),
    case("was_flaky", attempt=2, flaky=True),
    case("skip_then_fail", "failed"),
    case("added_failing", "failed"),
]


def test_compare_outcome_categories():
    comparison = compare_runs("run-a", BASE, "run-b", HEAD)

    assert ids(comparison.new_failures) == ["t.py::breaks", "t.py::skip_then_fail"]
    assert comparison.new_failures[0].before == "passed"
    assert comparison.new_failures[0].after == "error"
    assert comparison.new_failures[0].message == "RuntimeError: new"
    assert ids(comparison.fixed) == ["t.py::gets_fixed"]
    assert comparison.fixed[0].message == "old failure"
    assert ids(comparison.newly_flaky) == ["t.py::becomes_flaky"]


def test_compare_added_and_removed_in_run_order():
    comparison = compare_runs("run-a", BASE, "run-b", HEAD)

    assert [(entry.id, entry.outcome) for entry in comparison.added] == [
        ("t.py::added", "passed"),
        ("t.py::added_failing", "failed"),
    ]
    assert [(entry.id, entry.outcome) for entry in comparison.removed] == [("t.py::removed", "skipped")]


@pytest.mark.parametrize(
    ("before", "after", "listed"),
    [
        (1.0, 1.6, "slower"),  # +60%
        (1.0, 1.4, None),  # +40%: under the threshold
        (0.001, 0.002, None),  # doubled, but 1 ms is under the absolute floor
        (0.05, 0.2, "slower"),  # +300% and 0.15 s
        (2.0, 0.5, "faster"),  # -75%
        (0.0, 0.5, "slower"),  # from a zero base
    ],
)
def test_compare_duration_threshold_and_floor(before, after, listed):
    comparison = compare_runs("a", [case("t", duration=before)], "b", [case("t", duration=after)], threshold=0.5)

    assert ids(comparison.slower) == (["t.py::t"] if listed == "slower" else [])
    assert ids(comparison.faster) == (["t.py::t"] if listed == "faster" else [])


def test_compare_durations_ignore_skipped_and_unrun():
    base = [case("skipped", "skipped", duration=0.0), case("unrun", "error", duration=0.0, executor="")]
    head = [case("skipped", duration=5.0), case("unrun", duration=5.0)]

    comparison = compare_runs("a", base, "b", head)

    assert comparison.slower == ()


def test_compare_slower_sorted_by_change():
    base = [case("double", duration=1.0), case("triple", duration=1.0)]
    head = [case("double", duration=2.0), case("triple", duration=3.0)]

    comparison = compare_runs("a", base, "b", head)

    assert ids(comparison.slower) == ["t.py::triple", "t.py::double"]
    assert comparison.slower[0].change == pytest.approx(2.0)


def test_compare_identical_runs_empty():
    comparison = compare_runs("a", BASE, "b", BASE)

    assert comparison.is_empty()


def test_compare_json_has_changes():
    comparison = compare_runs("a", [case("t", duration=0.0)], "b", [case("t", duration=1.0)])

    data = json.loads(json.dumps(comparison.to_json()))

    assert data["base"] == "a"
    assert data["slower"] == [{"id": "t.py::t", "before_s": 0.0, "after_s": 1.0, "change": None}]
    assert data["min_change_s"] == MIN_CHANGE_S


def test_duration_change_from_zero_is_infinite():
    assert math.isinf(DurationChange("t", 0.0, 1.0).change)


@pytest.mark.parametrize("threshold", [0.0, -0.5])
def test_compare_rejects_threshold(threshold):
    with pytest.raises(ValueError, match="greater than 0"):
        compare_runs("a", [], "b", [], threshold=threshold)
