"""The machine-readable JSON report of a run.

Case ids are copied into the report unchanged. A pytest node id may contain backslash
escapes such as ``test_word[caf\\xe9]``, quotes, brackets and ``::``. Tools match those
ids against pytest's own output, so any rewriting would break the match.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from swarmctl.reports import write_report_file
from swarmctl.reports.summary import count_categories
from swarmctl.results import OUTCOMES, CaseResult, RunSummary


def build_json_report(summary: RunSummary, results: Sequence[CaseResult]) -> dict[str, Any]:
    """Build the report as plain JSON types, with the cases in the order given."""
    return {
        "run_id": summary.run_id,
        "summary": _summary_section(summary, results),
        "cases": [_case_entry(result) for result in results],
    }


def write_json_report(path: Path, summary: RunSummary, results: Sequence[CaseResult]) -> None:
    """Write the report to ``path`` as UTF-8 JSON, creating its folder."""
    report = build_json_report(summary, results)
    text = json.dumps(report, ensure_ascii=False, indent=2) + "\n"
    write_report_file(Path(path), text.encode("utf-8"))


def _summary_section(summary: RunSummary, results: Sequence[CaseResult]) -> dict[str, Any]:
    return {
        "exit_code": summary.exit_code,
        "wall_s": summary.wall_s,
        "total": len(results),
        "counts": _count_outcomes(results),
        "categories": count_categories(results),
        "deselected": summary.deselected,
        "error": summary.error,
        "started_at": summary.started_at,
        "suite": summary.suite,
        "executors": list(summary.executors),
        "reassigned": sum(1 for result in results if result.reassigned_from),
        "duplicates": summary.duplicates,
        "fenced": summary.fenced,
    }


def _count_outcomes(results: Sequence[CaseResult]) -> dict[str, int]:
    # Known outcomes come in the order of OUTCOMES, any other in first-seen order.
    counts = {outcome: 0 for outcome in OUTCOMES}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return {outcome: n for outcome, n in counts.items() if n > 0}


def _case_entry(result: CaseResult) -> dict[str, Any]:
    return {
        "id": result.case_id,
        "outcome": result.outcome,
        "duration": result.duration,
        "executor": result.executor,
        "attempt": result.attempt,
        "when": result.when,
        "message": result.message,
        "longrepr": result.longrepr,
        "exit_code": result.exit_code,
        "signal": result.signal,
        "subtests": [dataclasses.asdict(subtest) for subtest in result.subtests],
        "warnings": list(result.warnings),
        "flaky": result.flaky,
        "reassigned_from": list(result.reassigned_from),
        "stdout": result.stdout,
        "stderr": result.stderr,
    }
