"""A Markdown summary of one run, for CI job summaries such as GitHub's ``$GITHUB_STEP_SUMMARY``.

It has the headline counts, the failures with their one-line messages, the flaky tests and
the slowest tests, in GitHub Flavored Markdown tables.

Test ids and messages are written as code spans, so Markdown and HTML inside them stay
literal. A code span is fenced with one backtick more than the longest run of backticks
in its text (CommonMark's rule), and padded with a space when the text starts or ends
with a backtick. Inside a table cell, ``|`` is escaped as ``\\|``: GFM splits cells
before it parses code spans, and removes the backslash again inside the span. Line
breaks become spaces, because a table row is one line.

GitHub Actions aborts the upload of a step summary larger than 1024 KiB (its runner
reports "supports content up to a size of 1024k"). At most ``MAX_LISTED`` failures and
flaky tests are listed, and each message is cut at ``MAX_MESSAGE_CHARS``, which keeps the
summary far below that for test ids of ordinary length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from swarmctl.reports import write_report_file
from swarmctl.reports.statistics import (
    RunStatistics,
    compute_statistics,
    format_duration,
)
from swarmctl.reports.summary import count_categories, format_summary_line
from swarmctl.results import FAILING_OUTCOMES, CaseResult, RunSummary

MAX_LISTED = 50
MAX_MESSAGE_CHARS = 200

_BACKTICK_RUNS = re.compile("`+")
_LINE_BREAKS = re.compile(r"[\r\n]+")


def render_markdown(
    summary: RunSummary,
    results: Sequence[CaseResult],
    earlier_attempts: Mapping[str, Sequence[CaseResult]] | None = None,
    statistics: RunStatistics | None = None,
) -> str:
    """Render the run's summary as GitHub Flavored Markdown."""
    earlier_attempts = earlier_attempts or {}
    earlier_list = [attempt for attempts in earlier_attempts.values() for attempt in attempts]
    statistics = statistics or compute_statistics(summary, results, earlier_list)

    sections = [_headline(summary, results, statistics)]
    failures = [result for result in results if result.outcome in FAILING_OUTCOMES]
    if failures:
        sections.append(_failures_section(failures))
    if statistics.flaky:
        sections.append(_flaky_section(statistics.flaky, earlier_attempts))
    if statistics.slowest:
        sections.append(_slowest_section(statistics.slowest))
    return "\n\n".join(sections) + "\n"


def write_markdown(
    path: Path,
    summary: RunSummary,
    results: Sequence[CaseResult],
    earlier_attempts: Mapping[str, Sequence[CaseResult]] | None = None,
) -> None:
    """Write the Markdown summary to ``path``, creating its folder."""
    text = render_markdown(summary, results, earlier_attempts)
    write_report_file(Path(path), text.encode("utf-8", "backslashreplace"))


def code_span(text: str, *, in_table: bool = False) -> str:
    """Return ``text`` as a one-line Markdown code span, escaped as the module docstring describes."""
    text = _LINE_BREAKS.sub(" ", text)
    longest = max((len(run) for run in _BACKTICK_RUNS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    if text.startswith("`") or text.endswith("`") or (text.startswith(" ") and text.endswith(" ") and text.strip()):
        text = f" {text} "
    if in_table:
        text = text.replace("|", "\\|")
    return f"{fence}{text}{fence}" if text else ""


def _headline(summary: RunSummary, results: Sequence[CaseResult], statistics: RunStatistics) -> str:
    line = format_summary_line(count_categories(results), summary.wall_s, summary.deselected)
    verdict = {0: "passed", 1: "failed"}.get(summary.exit_code, f"exit code {summary.exit_code}")
    mark = "✅" if summary.exit_code == 0 else "❌"
    details = [
        f"suite {code_span(summary.suite)}",
        f"{len(summary.executors)} executor{'' if len(summary.executors) == 1 else 's'}",
        f"pass rate {_percent(statistics.pass_rate)}",
        f"lower bound {format_duration(statistics.lower_bound_s)}",
    ]
    if statistics.flaky:
        details.append(f"{len(statistics.flaky)} flaky")
    lines = [
        f"### {mark} swarmctl run {code_span(summary.run_id)}: {verdict}",
        "",
        f"**{line}**",
        "",
        " · ".join(details),
    ]
    if summary.error:
        lines += ["", f"> {code_span(summary.error)}"]
    return "\n".join(lines)


def _failures_section(failures: Sequence[CaseResult]) -> str:
    rows = [
        f"| {code_span(result.case_id, in_table=True)} | {result.outcome} | "
        f"{code_span(_message(result), in_table=True)} |"
        for result in failures[:MAX_LISTED]
    ]
    return "\n".join(
        [f"#### Failures ({len(failures)})", "", "| Test | Outcome | Message |", "| --- | --- | --- |", *rows]
        + _more_line(len(failures))
    )


def _flaky_section(flaky: Sequence[CaseResult], earlier_attempts: Mapping[str, Sequence[CaseResult]]) -> str:
    rows = []
    for result in flaky[:MAX_LISTED]:
        earlier = earlier_attempts.get(result.case_id, ())
        first_failure = _message(earlier[0]) if earlier else ""
        rows.append(
            f"| {code_span(result.case_id, in_table=True)} | {result.attempt} | "
            f"{code_span(first_failure, in_table=True)} |"
        )
    return "\n".join(
        [f"#### Flaky tests ({len(flaky)})", "", "| Test | Passed on attempt | First failure |", "| --- | --- | --- |", *rows]
        + _more_line(len(flaky))
    )


def _slowest_section(slowest: Sequence[CaseResult]) -> str:
    rows = [
        f"| {code_span(result.case_id, in_table=True)} | {format_duration(result.duration)} | {result.outcome} |"
        for result in slowest
    ]
    return "\n".join(["#### Slowest tests", "", "| Test | Duration | Outcome |", "| --- | ---: | --- |", *rows])


def _more_line(count: int) -> list[str]:
    if count <= MAX_LISTED:
        return []
    return ["", f"… and {count - MAX_LISTED} more; `swarmctl report RUN_ID --format html` lists them all."]


def _message(result: CaseResult) -> str:
    text = (result.message.strip() or result.longrepr.strip()).partition("\n")[0]
    if len(text) > MAX_MESSAGE_CHARS:
        return text[:MAX_MESSAGE_CHARS] + "…"
    return text


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"
