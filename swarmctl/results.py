"""The result of one test case, as every part of swarmctl passes it around.

A case is a pytest node id (``test_mod.py::TestA::test_b[x]``) or a command-manifest case id.
Outcomes use pytest's words. ``timed_out`` is used only by the command runner, where a case
that ran past its limit is reported apart from one that failed. The pytest runner reports a
test that ran past its limit as ``failed``, the way pytest-timeout does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PASSED = "passed"
FAILED = "failed"
SKIPPED = "skipped"
XFAILED = "xfailed"
XPASSED = "xpassed"
ERROR = "error"
TIMED_OUT = "timed_out"

OUTCOMES = (PASSED, FAILED, SKIPPED, XFAILED, XPASSED, ERROR, TIMED_OUT)

# Outcomes that make a run fail (pytest exit code 1).
FAILING_OUTCOMES = frozenset({FAILED, ERROR, TIMED_OUT})


@dataclass(frozen=True, slots=True)
class Subtest:
    """One subtest report of a test: its description, outcome and failure text."""

    description: str
    outcome: str
    longrepr: str = ""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The final result of one case.

    ``counted_as`` lists the categories pytest's summary line counts for this case, in
    report order: a test whose call passed and whose teardown failed is counted as
    ``("passed", "error")``; a test with two failed subtests as ``("failed", "failed",
    "failed")``. Empty means ``(outcome,)``.
    """

    case_id: str
    outcome: str
    duration: float = 0.0  # seconds: setup + call + teardown
    executor: str = ""
    attempt: int = 1
    when: str = "call"  # the phase that decided the outcome: collect, setup, call or teardown
    message: str = ""  # one line: assertion, skip reason, signal, timeout
    longrepr: str = ""  # full failure text
    stdout: str = ""  # captured output, truncated with a visible marker past the cap
    stderr: str = ""
    counted_as: tuple[str, ...] = ()
    subtests: tuple[Subtest, ...] = ()
    exit_code: int | None = None  # command runner: the command's exit status
    signal: str | None = None  # command runner: the signal that ended the command, e.g. SIGSEGV
    started_at: float = 0.0  # Unix time at which the case started on its executor
    warnings: tuple[str, ...] = ()  # what swarmctl noticed, such as leftover processes it killed
    flaky: bool = False  # passed after failing on an earlier attempt (swarmctl run --retries)
    reassigned_from: tuple[str, ...] = ()  # executors that were lost while they held this test's shard

    def categories(self) -> tuple[str, ...]:
        return self.counted_as or (self.outcome,)

    def to_wire(self) -> dict[str, Any]:
        """Convert to plain types for msgpack and JSON.

        Built field by field: ``dataclasses.asdict`` deep-copies every value, and made the
        final results of a 100,000-test run take over a second.
        """
        data = {name: getattr(self, name) for name in _CASE_FIELDS}
        data["counted_as"] = list(self.counted_as)
        data["subtests"] = [{name: getattr(s, name) for name in _SUBTEST_FIELDS} for s in self.subtests]
        data["warnings"] = list(self.warnings)
        data["reassigned_from"] = list(self.reassigned_from)
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> CaseResult:
        unknown = data.keys() - _CASE_FIELD_SET
        if unknown:
            raise ValueError(f"unknown result fields: {sorted(unknown)}")
        values = dict(data)
        values["counted_as"] = tuple(values.get("counted_as") or ())
        values["subtests"] = tuple(Subtest(**s) for s in values.get("subtests") or ())
        values["warnings"] = tuple(values.get("warnings") or ())
        values["reassigned_from"] = tuple(values.get("reassigned_from") or ())
        return cls(**values)


_CASE_FIELDS = tuple(f.name for f in dataclasses.fields(CaseResult))
_SUBTEST_FIELDS = tuple(f.name for f in dataclasses.fields(Subtest))
_CASE_FIELD_SET = frozenset(_CASE_FIELDS)


@dataclass(slots=True)
class RunSummary:
    """The summary of a finished run, besides its per-case results."""

    run_id: str
    exit_code: int
    wall_s: float
    started_at: float  # Unix time
    suite: str  # the suite folder as the user named it
    deselected: int = 0
    error: str = ""  # why the run ended early (collection interrupted, cancelled, ...)
    executors: list[str] = field(default_factory=list)
    duplicates: int = 0  # copies of results already recorded (a resent batch), ignored
    fenced: int = 0  # results from shard attempts that had ended (lease lapsed, executor lost), ignored
