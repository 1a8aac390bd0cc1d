"""Tests for the Markdown job summary: content, escaping of ids and the listing caps."""

from __future__ import annotations

import pytest

from swarmctl.reports.markdown import (
    MAX_LISTED,
    code_span,
    render_markdown,
    write_markdown,
)
from swarmctl.results import CaseResult, RunSummary

SUMMARY = RunSummary("run-3", 1, wall_s=2.5, started_at=1_700_000_000.0, suite="tests/", executors=["exec-a"])
RESULTS = [
    CaseResult("test_a.py::test_ok", "passed", duration=0.25, executor="exec-a"),
    CaseResult(
        "test_a.py::test_pipe[a|b]", "failed", duration=1.5, executor="exec-a",
        message="assert 'x|y' == 'z'\nmore lines", longrepr="E   assert 'x|y' == 'z'",
    ),
    CaseResult("test_a.py::test_tick[`code`]", "error", duration=0.1, executor="exec-a", when="setup", message="RuntimeError"),
    CaseResult("test_a.py::test_flaky", "passed", duration=0.2, executor="exec-a", attempt=2, flaky=True),
]
EARLIER = {
    "test_a.py::test_flaky": [
        CaseResult("test_a.py::test_flaky", "failed", executor="exec-a", message="AssertionError: first try"),
    ]
}


def table_rows(markdown: str, heading: str) -> list[str]:
    """Return the data rows of the table under ``heading``."""
    lines = markdown.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start + 4 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_markdown_headline():
    markdown = render_markdown(SUMMARY, RESULTS, EARLIER)
    lines = markdown.splitlines()

    assert lines[0] == "### ❌ swarmctl run `run-3`: failed"
    assert lines[2] == "**1 failed, 2 passed, 1 error in 2.50s**"
    assert "1 executor ·" in lines[4]
    assert "pass rate 50.0%" in lines[4]
    assert "1 flaky" in lines[4]


def test_markdown_passing_run_headline():
    summary = RunSummary("run-4", 0, wall_s=1.0, started_at=0.0, suite="tests/")

    markdown = render_markdown(summary, RESULTS[:1])

    assert markdown.startswith("### ✅ swarmctl run `run-4`: passed")
    assert "#### Failures" not in markdown


def test_markdown_failures_escape_pipes_and_backticks():
    rows = table_rows(render_markdown(SUMMARY, RESULTS, EARLIER), "#### Failures (2)")

    assert rows == [
        "| `test_a.py::test_pipe[a\\|b]` | failed | `assert 'x\\|y' == 'z'` |",
        "| ``test_a.py::test_tick[`code`]`` | error | `RuntimeError` |",
    ]


def test_markdown_flaky_with_first_failure():
    rows = table_rows(render_markdown(SUMMARY, RESULTS, EARLIER), "#### Flaky tests (1)")

    assert rows == ["| `test_a.py::test_flaky` | 2 | `AssertionError: first try` |"]


def test_markdown_slowest_longest_first():
    rows = table_rows(render_markdown(SUMMARY, RESULTS, EARLIER), "#### Slowest tests")

    assert rows[0] == "| `test_a.py::test_pipe[a\\|b]` | 1.50 s | failed |"
    assert len(rows) == 4


def test_markdown_caps_long_lists():
    results = [CaseResult(f"test_m.py::test_{i}", "failed", executor="exec-a", message="x" * 500) for i in range(MAX_LISTED + 7)]

    markdown = render_markdown(SUMMARY, results)
    rows = table_rows(markdown, f"#### Failures ({MAX_LISTED + 7})")

    assert len(rows) == MAX_LISTED
    assert "… and 7 more" in markdown
    assert all(len(row) < 300 for row in rows)


@pytest.mark.parametrize(
    ("text", "in_table", "span"),
    [
        ("plain", False, "`plain`"),
        ("a`b", False, "``a`b``"),
        ("``x", False, "``` ``x ```"),
        ("x`", False, "`` x` ``"),
        (" padded ", False, "`  padded  `"),
        ("a|b", False, "`a|b`"),
        ("a|b", True, "`a\\|b`"),
        ("two\nlines", False, "`two lines`"),
        ("<b>html</b>", False, "`<b>html</b>`"),
        ("", False, ""),
    ],
)
def test_code_span(text, in_table, span):
    assert code_span(text, in_table=in_table) == span


def test_write_markdown_creates_file(tmp_path):
    path = tmp_path / "summary" / "run.md"

    write_markdown(path, SUMMARY, RESULTS, EARLIER)

    assert path.read_text(encoding="utf-8").startswith("### ❌")


@pytest.mark.parametrize(
    "case_id",
    [
        "test_a.py::test_pipe[a|b]",
        "test_a.py::test_tick[`code`]",
        "test_a.py::test_ticks[``]",
        "`leading.py::test",
        "test_a.py::test_html[<script>alert(1)</script>]",
        "test_a.py::test_stars[*x*_y_]",
        "test_a.py::test_backslash[a\\|b]",
    ],
)
def test_markdown_ids_render_verbatim(case_id):
    # rich depends on markdown-it-py, a CommonMark parser with GFM tables.
    markdown_it = pytest.importorskip("markdown_it")
    parser = markdown_it.MarkdownIt("commonmark").enable("table")
    result = CaseResult(case_id, "failed", executor="exec-a", message=case_id)

    tokens = parser.parse(render_markdown(SUMMARY, [result]))
    code_texts = [child.content for token in tokens if token.children for child in token.children if child.type == "code_inline"]

    # The failures table (id and message) and the slowest table show it, all verbatim.
    assert code_texts.count(case_id) == 3
