"""Tests for the final console report."""

from __future__ import annotations

import io

from rich.console import Console

from swarmctl.reports.summary import count_categories, format_summary_line
from swarmctl.reports.terminal import render_final_report
from swarmctl.results import CaseResult, RunSummary, Subtest

WIDTH = 80

SUMMARY = RunSummary(run_id="run-3", exit_code=1, wall_s=0.42, started_at=0.0, suite="tests", deselected=1)

RESULTS = [
    CaseResult("tests/test_a.py::test_pass", "passed"),
    CaseResult(
        "tests/test_a.py::test_fail",
        "failed",
        message="assert 1 == 2",
        longrepr="def test_fail():\n>       assert 1 == 2\nE       assert 1 == 2\n",
        stdout="printed line\n",
    ),
    CaseResult(
        "tests/test_a.py::test_setup_error",
        "error",
        when="setup",
        message="RuntimeError: setup failed",
        longrepr="E   RuntimeError: setup failed",
    ),
    CaseResult("lint", "timed_out", message="timed out after 30s"),
    CaseResult("tests/test_a.py::test_skip", "skipped", message="not here"),
    CaseResult(
        "tests/test_a.py::test_subtests",
        "failed",
        message="contains 1 failed subtest",
        longrepr="contains 1 failed subtest",
        counted_as=("failed", "failed"),
        subtests=(Subtest("[bad]", "failed", "E   assert False"),),
    ),
]


def render(
    summary: RunSummary = SUMMARY,
    results: list[CaseResult] = RESULTS,
    *,
    show_longrepr: bool = True,
    colour: bool = False,
) -> str:
    stream = io.StringIO()
    if colour:
        console = Console(file=stream, width=WIDTH, force_terminal=True, color_system="standard")
    else:
        console = Console(file=stream, width=WIDTH, force_terminal=False, color_system=None)
    render_final_report(console, summary, results, show_longrepr=show_longrepr)
    return stream.getvalue()


def line_index(lines: list[str], fragment: str) -> int:
    matches = [index for index, line in enumerate(lines) if fragment in line]
    assert matches, f"no line contains {fragment!r}"
    return matches[0]


def test_terminal_summary_line_last():
    lines = render().splitlines()
    expected = format_summary_line(count_categories(RESULTS), SUMMARY.wall_s, SUMMARY.deselected)

    last = lines[-1]
    assert last.strip("= ") == expected
    assert last.startswith("= ") or last.startswith("==")
    assert last.endswith(" =") or last.endswith("==")
    assert expected == "3 failed, 1 passed, 1 skipped, 1 deselected, 1 error, 1 timed out in 0.42s"


def test_terminal_summary_line_centred():
    summary = RunSummary(run_id="r", exit_code=0, wall_s=0.42, started_at=0.0, suite="tests")
    results = [CaseResult("tests/test_a.py::test_pass", "passed")]

    last = render(summary=summary, results=results).splitlines()[-1]

    assert len(last) == WIDTH
    left, _, right = last.partition(" 1 passed in 0.42s ")
    assert set(left) == {"="}
    assert set(right) == {"="}
    assert abs(len(left) - len(right)) <= 1


def test_terminal_sections_in_order():
    lines = render().splitlines()

    errors = line_index(lines, " ERRORS ")
    failures = line_index(lines, " FAILURES ")
    short = line_index(lines, " short test summary info ")
    assert errors < failures < short < len(lines) - 1
    assert lines[errors].startswith("=")


def test_terminal_section_headers():
    lines = render().splitlines()

    # pytest heads each section with the test's name within its file, not the node id.
    assert lines[line_index(lines, "ERROR at setup of test_setup_error")].startswith("_")
    assert lines[line_index(lines, " test_fail ")].startswith("_")
    assert lines[line_index(lines, " lint ")].startswith("_")
    assert lines[line_index(lines, " test_subtests [bad] ")].startswith("_")


def test_terminal_failure_details():
    output = render()

    assert "E       assert 1 == 2" in output
    assert "E   RuntimeError: setup failed" in output
    assert "Captured stdout" in output
    assert "printed line" in output
    assert "timed out after 30s" in output


def test_terminal_short_summary_lines():
    lines = render().splitlines()
    start = line_index(lines, " short test summary info ")

    assert lines[start + 1 : -1] == [
        "FAILED tests/test_a.py::test_fail - assert 1 == 2",
        "SUBFAILED[bad] tests/test_a.py::test_subtests",
        "FAILED tests/test_a.py::test_subtests - contains 1 failed subtest",
        "TIMED_OUT lint - timed out after 30s",
        "ERROR tests/test_a.py::test_setup_error - RuntimeError: setup failed",
    ]


def test_terminal_collect_error_header():
    results = [CaseResult("tests/test_b.py", "error", when="collect", longrepr="ImportError: x")]

    output = render(results=results)

    assert "ERROR collecting tests/test_b.py" in output


def test_terminal_without_longrepr():
    output = render(show_longrepr=False)

    assert " FAILURES " not in output
    assert " ERRORS " not in output
    assert "E       assert 1 == 2" not in output
    assert "FAILED tests/test_a.py::test_fail - assert 1 == 2" in output


def test_terminal_all_passed():
    results = [CaseResult("tests/test_a.py::test_pass", "passed")]

    lines = render(results=results).splitlines()

    assert len(lines) == 1
    assert "1 passed, 1 deselected in 0.42s" in lines[0]


def test_terminal_nothing_ran():
    summary = RunSummary(run_id="r", exit_code=5, wall_s=0.01, started_at=0.0, suite="tests")

    lines = render(summary=summary, results=[]).splitlines()

    assert lines[-1].strip("= ") == "no tests ran in 0.01s"


def test_terminal_run_error_before_summary():
    summary = RunSummary(
        run_id="r",
        exit_code=2,
        wall_s=0.1,
        started_at=0.0,
        suite="tests",
        error="Interrupted: 2 errors during collection",
    )

    lines = render(summary=summary, results=RESULTS[2:3]).splitlines()

    assert lines[-2].strip("! ") == "Interrupted: 2 errors during collection"
    assert lines[-2].startswith("!")


def test_terminal_prints_markup_literally():
    result = CaseResult(
        "tests/test_m.py::test_markup[[bold]x[/bold]]",
        "failed",
        message="got [red]red[/red] and [/]",
        longrepr="E   assert '[bold]' == '[/link]'\n:smile: [link=https://example.invalid]x[/link]",
        stdout="[blink]output[/blink]",
    )

    output = render(results=[result])

    assert "tests/test_m.py::test_markup[[bold]x[/bold]]" in output
    assert "FAILED tests/test_m.py::test_markup[[bold]x[/bold]] - got [red]red[/red] and [/]" in output
    assert "E   assert '[bold]' == '[/link]'" in output
    assert ":smile: [link=https://example.invalid]x[/link]" in output
    assert "[blink]output[/blink]" in output


def test_terminal_long_id_not_cropped():
    name = "test_with_a_long_name[" + "p" * 90 + "]"
    case_id = "tests/" + "deep/" * 20 + "test_long.py::" + name
    result = CaseResult(case_id, "failed", message="boom", longrepr="E   boom")

    output = render(results=[result])

    assert f"FAILED {case_id} - boom" in output.splitlines()
    assert f"_ {name} _" in output


def test_terminal_summary_colours():
    failed_line = render(colour=True).splitlines()[-1]
    passed_line = render(results=RESULTS[:1], colour=True).splitlines()[-1]
    skipped_line = render(results=RESULTS[4:5], colour=True).splitlines()[-1]

    red, green, yellow = "\x1b[31m", "\x1b[32m", "\x1b[33m"
    # The bars and the duration take the line's colour.
    assert failed_line.startswith(red)
    assert passed_line.startswith(green)
    assert skipped_line.startswith(yellow)
    # The category with the line's colour is bold, the others are not.
    assert "\x1b[1;31m3 failed" in failed_line
    assert "\x1b[32m1 passed" in failed_line
    assert "\x1b[1;32m1 passed" in passed_line
