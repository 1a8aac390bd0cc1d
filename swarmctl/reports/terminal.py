"""The final console report of a run, laid out like the end of a pytest session.

Everything a test produced (ids, messages, tracebacks, captured output) is printed as
rich ``Text``, which rich never parses for markup, so a test that prints ``[bold]`` shows
those characters as they are. Lines are printed with ``soft_wrap=True`` so that rich
neither wraps nor crops them, and a long node id stays whole for copying.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from swarmctl.reports.summary import (
    DEFAULT_COLOR,
    category_color,
    count_categories,
    format_session_duration,
    main_color,
    summary_line_parts,
)
from swarmctl.results import ERROR, FAILED, TIMED_OUT, CaseResult, RunSummary


def render_final_report(
    console: Console,
    summary: RunSummary,
    results: Sequence[CaseResult],
    *,
    show_longrepr: bool = True,
) -> None:
    """Print the ERRORS and FAILURES sections, the short test summary and the summary line.

    With ``show_longrepr=False`` the ERRORS and FAILURES sections are left out, as with
    pytest's ``--tb=no``. ``summary.error``, when set, is printed just above the summary
    line between ``!`` bars.
    """
    errors = [result for result in results if result.outcome == ERROR]
    failures = [result for result in results if result.outcome in (FAILED, TIMED_OUT)]

    if show_longrepr:
        _print_error_sections(console, errors)
        _print_failure_sections(console, failures)
    _print_warnings(console, results)
    _print_short_summary(console, results)
    if summary.error and "\n" in summary.error.strip():
        console.print(Text(summary.error.strip(), style="red"), soft_wrap=True)
    elif summary.error:
        _print_rule(console, "!", Text(summary.error, style="red"), style="red")
    _print_summary_line(console, summary, results)


def _print_warnings(console: Console, results: Sequence[CaseResult]) -> None:
    flagged = [result for result in results if result.warnings]
    if not flagged:
        return
    _print_rule(console, "=", Text("swarmctl warnings", style="yellow"))
    for result in flagged:
        for warning in result.warnings:
            console.print(Text(f"{result.case_id}: {warning}"), soft_wrap=True)


def _print_error_sections(console: Console, errors: Sequence[CaseResult]) -> None:
    if not errors:
        return
    _print_rule(console, "=", Text("ERRORS"))
    for result in errors:
        if result.when == "collect":
            heading = f"ERROR collecting {result.case_id}"
        else:
            heading = f"ERROR at {result.when} of {head_line(result.case_id)}"
        _print_rule(console, "_", Text(heading, style="bold red"), style="bold red")
        _print_case_details(console, result)


def _print_failure_sections(console: Console, failures: Sequence[CaseResult]) -> None:
    if not failures:
        return
    _print_rule(console, "=", Text("FAILURES"))
    for result in failures:
        # pytest prints each failed subtest's section before the section of its test.
        for subtest in result.subtests:
            if subtest.outcome != FAILED:
                continue
            heading = Text(f"{head_line(result.case_id)} {subtest.description}", style="bold red")
            _print_rule(console, "_", heading, style="bold red")
            _print_block(console, subtest.longrepr)
        _print_rule(console, "_", Text(head_line(result.case_id), style="bold red"), style="bold red")
        _print_case_details(console, result)


def _print_case_details(console: Console, result: CaseResult) -> None:
    _print_block(console, result.longrepr or result.message)
    for label, captured in (("stdout", result.stdout), ("stderr", result.stderr)):
        if not captured:
            continue
        # The pytest runner sends captured output with pytest's own section rules in it.
        if not captured.startswith("-"):
            _print_rule(console, "-", Text(f"Captured {label}"))
        _print_block(console, captured)


def head_line(case_id: str) -> str:
    """Return the heading pytest gives a test's failure section: ``Class.test[param]``.

    A command case id, which has no ``::``, is its own heading.
    """
    path, sep, rest = case_id.partition("::")
    if not sep:
        return case_id
    name, bracket, params = rest.partition("[")
    return name.replace("::", ".") + bracket + params


def _print_short_summary(console: Console, results: Sequence[CaseResult]) -> None:
    lines = _short_summary_lines(results)
    if not lines:
        return
    _print_rule(console, "=", Text("short test summary info", style="bold cyan"), style="bold cyan")
    for line in lines:
        console.print(line, soft_wrap=True)


def _short_summary_lines(results: Sequence[CaseResult]) -> list[Text]:
    """Build the ``FAILED id - message`` lines, grouped by word as pytest groups them.

    pytest lists each failed subtest as ``SUBFAILED<description> id`` just before the
    test that contains it.
    """
    lines: list[Text] = []
    for result in results:
        if result.outcome != FAILED:
            continue
        for subtest in result.subtests:
            if subtest.outcome == FAILED:
                lines.append(_summary_entry(f"SUBFAILED{subtest.description}", result.case_id, ""))
        lines.append(_summary_entry("FAILED", result.case_id, result.message))
    for word, outcome in (("TIMED_OUT", TIMED_OUT), ("ERROR", ERROR)):
        for result in results:
            if result.outcome == outcome:
                lines.append(_summary_entry(word, result.case_id, result.message))
    for result in results:
        if result.flaky:
            lines.append(_summary_entry("FLAKY", result.case_id, f"passed on attempt {result.attempt} after failing"))
    return lines


def _summary_entry(word: str, case_id: str, message: str) -> Text:
    line = Text()
    line.append(word, style="red")
    line.append(f" {case_id}")
    first_line = message.strip().partition("\n")[0]
    if first_line:
        line.append(f" - {first_line}")
    return line


def _print_summary_line(console: Console, summary: RunSummary, results: Sequence[CaseResult]) -> None:
    """Print ``==== 1 failed, 2 passed in 0.12s ====`` in pytest's colours.

    As in pytest, each count has its category's colour and is bold when that colour is
    the line's colour. The bars and the duration have the line's colour.
    """
    counts = count_categories(results)
    color = main_color(counts)
    parts = summary_line_parts(counts, summary.deselected)

    title = Text()
    for index, (part, category) in enumerate(parts):
        if index:
            title.append(", ")
        part_color = category_color(category)
        title.append(part, style=f"bold {part_color}" if part_color == color else part_color)
    if not parts:
        title.append("no tests ran", style=DEFAULT_COLOR)
    title.append(f" in {format_session_duration(summary.wall_s)}", style=color)

    _print_rule(console, "=", title, style=color)


def _print_rule(console: Console, character: str, title: Text, style: str = "") -> None:
    """Print ``title`` centred between bars of ``character`` across the console width.

    Unlike rich's ``Rule``, which crops a title wider than the console, this keeps the
    whole title and puts one bar character on each side.
    """
    room = console.width - cell_len(title.plain) - 2
    left = max(room // 2, 1)
    right = max(room - left, 1)

    line = Text()
    line.append(character * left + " ", style=style)
    line.append_text(title)
    line.append(" " + character * right, style=style)
    console.print(line, soft_wrap=True)


def _print_block(console: Console, text: str) -> None:
    if text:
        console.print(Text(text.rstrip("\n")), soft_wrap=True, highlight=False)
