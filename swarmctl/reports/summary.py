"""The counts, final summary line, colour and exit code of a run, as pytest reports them.

The rules follow pytest 9.2's ``_pytest/terminal.py`` (``KNOWN_TYPES``, ``pluralize``,
``format_session_duration`` and the main-colour rules) and ``pytest.ExitCode``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping

from swarmctl.results import FAILING_OUTCOMES, CaseResult

# The categories pytest's summary line shows first, in this order. Any other category
# follows them, in the order it was first counted.
KNOWN_TYPES = (
    "failed",
    "passed",
    "skipped",
    "deselected",
    "xfailed",
    "xpassed",
    "warnings",
    "error",
    "subtests passed",
    "subtests failed",
    "subtests skipped",
)

# pytest's colour for each category. ``timed_out`` is swarmctl's own and is red because it
# fails the run.
CATEGORY_COLORS = {
    "failed": "red",
    "error": "red",
    "timed_out": "red",
    "warnings": "yellow",
    "passed": "green",
    "subtests passed": "green",
    "subtests failed": "red",
}
DEFAULT_COLOR = "yellow"

# pytest's exit codes (pytest.ExitCode).
EXIT_OK = 0
EXIT_TESTS_FAILED = 1
EXIT_INTERRUPTED = 2
EXIT_NO_TESTS_COLLECTED = 5


def count_categories(results: Iterable[CaseResult]) -> dict[str, int]:
    """Count the summary categories of all results, keyed in first-counted order."""
    counts: dict[str, int] = {}
    for result in results:
        for category in result.categories():
            counts[category] = counts.get(category, 0) + 1
    return counts


def format_session_duration(seconds: float) -> str:
    """Format a run's duration as pytest's final line does: ``0.12s`` or ``75.00s (0:01:15)``."""
    if seconds < 60:
        return f"{seconds:.2f}s"
    clock = datetime.timedelta(seconds=int(seconds))
    return f"{seconds:.2f}s ({clock})"


def summary_line_parts(counts: Mapping[str, int], deselected: int = 0) -> list[tuple[str, str]]:
    """Return the ``("3 failed", "failed")`` parts of the summary line, in pytest's order.

    ``deselected`` is added to any ``"deselected"`` count in ``counts``. Categories with a
    count of zero or less are left out, so the list is empty when nothing ran.
    """
    merged = {category: n for category, n in counts.items() if n > 0}
    if deselected > 0:
        merged["deselected"] = merged.get("deselected", 0) + deselected

    ordered = [category for category in KNOWN_TYPES if category in merged]
    ordered += [category for category in merged if category not in KNOWN_TYPES]
    return [(_format_count(merged[category], category), category) for category in ordered]


def format_summary_line(counts: Mapping[str, int], seconds: float, deselected: int = 0) -> str:
    """Format pytest's final summary line without the ``=`` padding.

    Example: ``3 failed, 3 passed, 1 deselected, 2 errors in 0.12s``. See
    ``summary_line_parts`` for how ``deselected`` combines with ``counts``.
    """
    parts = summary_line_parts(counts, deselected)
    text = ", ".join(part for part, _category in parts) or "no tests ran"
    return f"{text} in {format_session_duration(seconds)}"


def main_color(counts: Mapping[str, int]) -> str:
    """Return the colour pytest gives the summary line for these category counts.

    A ``timed_out`` count makes the line red, as a failure does.
    """
    present = {category for category, n in counts.items() if n > 0}
    if present & {"failed", "error", "timed_out"}:
        return "red"
    has_unknown = any(category not in KNOWN_TYPES for category in present)
    if present & {"warnings", "xpassed"} or has_unknown:
        return "yellow"
    if "passed" in present:
        return "green"
    # Only skips, xfails or deselections, or nothing at all, ran.
    return "yellow"


def category_color(category: str) -> str:
    """Return the colour pytest gives one category's part of the summary line."""
    return CATEGORY_COLORS.get(category, DEFAULT_COLOR)


def exit_code_for(results: Iterable[CaseResult], *, interrupted: bool = False) -> int:
    """Return the exit code pytest would give a run with these results.

    A result fails the run when its outcome or any category it is counted as is in
    ``FAILING_OUTCOMES``, so a passed test whose teardown failed counts too.
    """
    if interrupted:
        return EXIT_INTERRUPTED

    seen_any = False
    for result in results:
        seen_any = True
        if result.outcome in FAILING_OUTCOMES or FAILING_OUTCOMES.intersection(result.categories()):
            return EXIT_TESTS_FAILED

    if not seen_any:
        return EXIT_NO_TESTS_COLLECTED
    return EXIT_OK


def _format_count(count: int, category: str) -> str:
    # pytest turns "error" into "errors" and "warnings" into "warning" by count, and keeps
    # every other word as it is. Underscores in swarmctl's own categories read as spaces.
    if category == "error":
        noun = "error" if count == 1 else "errors"
    elif category == "warnings":
        noun = "warning" if count == 1 else "warnings"
    else:
        noun = category.replace("_", " ")
    return f"{count} {noun}"
