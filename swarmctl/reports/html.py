"""A self-contained HTML report of one run: one file, no network access.

The page is rendered on the server side: every table, failure text and the timeline is
plain HTML, so it reads without JavaScript. A small inline script adds the outcome
filter, the search over test ids and the "retried only" switch. It reads the tests from a
JSON block embedded in the page (``<script type="application/json">``).

Test ids, messages and output may contain any text, ``</script>`` included:

- HTML text and attribute values go through ``html.escape``.
- The embedded JSON is ASCII with ``<``, ``>`` and ``&`` written as ``\\u003c``,
  ``\\u003e`` and ``\\u0026``. Those characters occur only inside JSON strings, where
  the escapes mean the same characters, so ``json.loads`` of the block returns the data
  unchanged while the HTML parser finds no tag in it.
- A Content-Security-Policy allows only the page's own style and script, by their
  SHA-256 hashes, and no other source. Nothing injected could run or load anything.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from swarmctl.reports import write_report_file
from swarmctl.reports.statistics import (
    RunStatistics,
    compute_statistics,
    format_duration,
    is_retried,
)
from swarmctl.reports.summary import (
    count_categories,
    format_session_duration,
    format_summary_line,
    main_color,
)
from swarmctl.reports.timeline import render_timeline_svg
from swarmctl.results import FAILING_OUTCOMES, PASSED, XPASSED, CaseResult, RunSummary

DATA_ELEMENT_ID = "swarmctl-data"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 16px 48px; color: #1f2328; }
h1 { font-size: 22px; margin: 20px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
code, pre { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eaeef2; vertical-align: top; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.id code { word-break: break-all; }
.headline { font-size: 16px; font-weight: 600; }
.color-red { color: #cf222e; } .color-green { color: #1a7f37; } .color-yellow { color: #9a6700; }
.figures { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
.figures dt { font-weight: 600; } .figures dd { margin: 0; }
.badge { display: inline-block; min-width: 64px; padding: 0 6px; border-radius: 10px; font-size: 12px; text-align: center; background: #eaeef2; }
.badge.outcome-passed, .badge.outcome-xpassed { background: #dafbe1; }
.badge.outcome-failed, .badge.outcome-error, .badge.outcome-timed_out { background: #ffebe9; }
.badge.outcome-skipped, .badge.outcome-xfailed { background: #fff8c5; }
.controls { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; margin: 8px 0; }
.controls input[type=search] { min-width: 280px; padding: 3px 6px; }
details summary { cursor: pointer; color: #57606a; }
.note { color: #57606a; }
svg.timeline { border: 1px solid #eaeef2; }
svg .lane-label, svg .tick-label { font: 10px ui-monospace, monospace; fill: #57606a; }
svg .tick { stroke: #eaeef2; }
svg .bar { fill: #8c959f; }
svg .bar.outcome-passed, svg .bar.outcome-xpassed { fill: #2da44e; }
svg .bar.outcome-failed, svg .bar.outcome-error, svg .bar.outcome-timed_out { fill: #cf222e; }
svg .bar.outcome-skipped, svg .bar.outcome-xfailed { fill: #d4a72c; }
svg .bar.earlier { opacity: 0.45; }
"""

SCRIPT = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("swarmctl-data").textContent);
  var rows = Array.prototype.slice.call(document.querySelectorAll("#tests tbody tr[data-index]"));
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input[data-outcome]"));
  var search = document.getElementById("search");
  var retriedOnly = document.getElementById("retried-only");
  var visibleCount = document.getElementById("visible-count");
  function update() {
    var checkedOutcomes = {};
    boxes.forEach(function (box) { checkedOutcomes[box.getAttribute("data-outcome")] = box.checked; });
    var query = search.value.toLowerCase();
    var count = 0;
    rows.forEach(function (row) {
      var test = data.cases[Number(row.getAttribute("data-index"))];
      var visible = checkedOutcomes[test.outcome] === true
        && test.id.toLowerCase().indexOf(query) !== -1
        && (!retriedOnly.checked || test.flaky || test.retried);
      row.hidden = !visible;
      if (visible) { count += 1; }
    });
    visibleCount.textContent = count + " of " + rows.length + " tests shown";
  }
  boxes.forEach(function (box) { box.addEventListener("change", update); });
  retriedOnly.addEventListener("change", update);
  search.addEventListener("input", update);
  update();
})();
"""


def render_html(
    summary: RunSummary,
    results: Sequence[CaseResult],
    earlier_attempts: Mapping[str, Sequence[CaseResult]] | None = None,
    statistics: RunStatistics | None = None,
) -> str:
    """Render the run as one HTML document.

    ``earlier_attempts`` maps a case id to its failed attempts before the final result, as
    for ``render_junit``.
    """
    earlier_attempts = earlier_attempts or {}
    earlier_list = [attempt for attempts in earlier_attempts.values() for attempt in attempts]
    statistics = statistics or compute_statistics(summary, results, earlier_list)
    title = f"swarmctl run {summary.run_id}"

    body = [
        f"<h1>{_e(title)}</h1>",
        _headline(summary, results),
        "<h2>Summary</h2>",
        _figures(summary, statistics),
        f"<h2>Tests ({len(results)})</h2>",
        _controls(statistics.counts),
        _tests_table(results, earlier_attempts),
        "<h2>Slowest tests</h2>",
        _slowest_table(statistics),
        f"<h2>Flaky and retried tests ({len(statistics.retried)})</h2>",
        _retried_table(statistics, earlier_attempts),
        "<h2>Timeline</h2>",
        (
            '<p class="note">One row per executor; time 0 is when the run was submitted. '
            "Faded bars are failed attempts that were retried.</p>"
        ),
        render_timeline_svg(results, earlier_list, started_at=summary.started_at, wall_s=summary.wall_s),
        _data_block(summary, results),
        f"<script>{SCRIPT}</script>",
    ]
    policy = (
        f"default-src 'none'; style-src '{_sha256(STYLE)}'; script-src '{_sha256(SCRIPT)}'; "
        "img-src 'none'; base-uri 'none'; form-action 'none'"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(policy)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_html(
    path: Path,
    summary: RunSummary,
    results: Sequence[CaseResult],
    earlier_attempts: Mapping[str, Sequence[CaseResult]] | None = None,
) -> None:
    """Write the HTML report to ``path``, creating its folder."""
    write_report_file(Path(path), encode_text(render_html(summary, results, earlier_attempts)))


def encode_text(text: str) -> bytes:
    """Encode as UTF-8, writing a lone surrogate from an undecodable test id as ``\\udcxx``."""
    return text.encode("utf-8", "backslashreplace")


def embedded_json(data: Any) -> str:
    """Serialize ``data`` for a ``<script type="application/json">`` element, escaped as the module docstring describes."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def page_data(summary: RunSummary, results: Sequence[CaseResult]) -> dict[str, Any]:
    """Return the data the page's script reads: one entry per row of the tests table, in order."""
    return {
        "run_id": summary.run_id,
        "suite": summary.suite,
        "exit_code": summary.exit_code,
        "cases": [
            {
                "id": result.case_id,
                "outcome": result.outcome,
                "duration": result.duration,
                "executor": result.executor,
                "attempt": result.attempt,
                "flaky": result.flaky,
                "retried": is_retried(result),
            }
            for result in results
        ],
    }


def _data_block(summary: RunSummary, results: Sequence[CaseResult]) -> str:
    return f'<script type="application/json" id="{DATA_ELEMENT_ID}">{embedded_json(page_data(summary, results))}</script>'


def _headline(summary: RunSummary, results: Sequence[CaseResult]) -> str:
    counts = count_categories(results)
    line = format_summary_line(counts, summary.wall_s, summary.deselected)
    parts = [f'<p class="headline color-{main_color(counts)}">{_e(line)}</p>']
    if summary.error:
        parts.append(f'<pre class="color-red">{_e(summary.error)}</pre>')
    return "\n".join(parts)


def _figures(summary: RunSummary, statistics: RunStatistics) -> str:
    durations = statistics.durations
    figures = [
        ("Suite", summary.suite),
        ("Submitted", _local_time(summary.started_at)),
        ("Exit code", str(summary.exit_code)),
        ("Tests", f"{statistics.total} ({_counts_text(statistics.counts)})"),
        ("Pass rate", _percent(statistics.pass_rate)),
        (
            "Durations",
            (
                f"p50 {format_duration(durations.p50)}, p95 {format_duration(durations.p95)}, "
                f"max {format_duration(durations.max)}"
            ),
        ),
        ("Wall time", format_session_duration(statistics.wall_s)),
        (
            "Lower bound",
            (
                f"{format_duration(statistics.lower_bound_s)} = max(busy time / slots, longest attempt); "
                f"efficiency {_percent(statistics.efficiency)}"
            ),
        ),
        (
            "Executors",
            (
                f"{len(statistics.executors)} with about {statistics.slots} slots; "
                f"utilization {_percent(statistics.utilization)}"
            ),
        ),
        ("Flaky", str(len(statistics.flaky))),
        ("Retried", str(len(statistics.retried))),
    ]
    if summary.deselected:
        figures.append(("Deselected", str(summary.deselected)))
    if summary.duplicates or summary.fenced:
        figures.append(("Ignored results", f"{summary.duplicates} duplicates, {summary.fenced} fenced"))
    rows = "".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in figures)
    usage = "".join(
        f"<tr><td>{_e(entry.executor)}</td><td class=num>{entry.attempts}</td>"
        f"<td class=num>{format_duration(entry.busy_s)}</td><td class=num>{entry.slots}</td>"
        f"<td class=num>{_percent(entry.utilization)}</td></tr>"
        for entry in statistics.executors
    )
    table = (
        "<table><thead><tr><th>Executor</th><th class=num>Attempts</th><th class=num>Busy</th>"
        f"<th class=num>Slots</th><th class=num>Utilization</th></tr></thead><tbody>{usage}</tbody></table>"
    )
    return f'<dl class="figures">{rows}</dl>\n<h3>Executors</h3>\n{table}'


def _controls(counts: Mapping[str, int]) -> str:
    boxes = "".join(
        f'<label><input type="checkbox" data-outcome="{_e(outcome)}" checked> '
        f'<span class="badge outcome-{_e(outcome)}">{_e(outcome)}</span> {count}</label>'
        for outcome, count in counts.items()
    )
    return (
        f'<div class="controls">{boxes}'
        '<label><input type="checkbox" id="retried-only"> flaky or retried only</label>'
        '<input type="search" id="search" placeholder="Search test ids" aria-label="Search test ids">'
        '<span id="visible-count" class="note"></span></div>'
    )


def _tests_table(results: Sequence[CaseResult], earlier_attempts: Mapping[str, Sequence[CaseResult]]) -> str:
    rows = []
    for index, result in enumerate(results):
        details = _details(result, earlier_attempts.get(result.case_id, ()))
        rows.append(
            f'<tr data-index="{index}"><td>{_badge(result.outcome)}</td>'
            f'<td class="id"><code>{_e(result.case_id)}</code>{details}</td>'
            f"<td class=num>{format_duration(result.duration)}</td><td>{_e(result.executor)}</td>"
            f"<td class=num>{result.attempt}</td></tr>"
        )
    return (
        '<table id="tests"><thead><tr><th>Outcome</th><th>Test</th><th class=num>Duration</th>'
        f"<th>Executor</th><th class=num>Attempt</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _details(result: CaseResult, earlier: Sequence[CaseResult]) -> str:
    """Build the expandable failure text, output and earlier attempts of a result, or nothing."""
    sections = []
    # A pass has no failure text. Any other outcome's text gives the reason, such as a skip reason.
    failed = result.outcome not in (PASSED, XPASSED)
    if failed and (result.longrepr or result.message):
        sections.append(f"<pre>{_e(result.longrepr or result.message)}</pre>")
    for subtest in result.subtests:
        if subtest.longrepr:
            sections.append(f"<p>subtest {_e(subtest.description)}: {_e(subtest.outcome)}</p><pre>{_e(subtest.longrepr)}</pre>")
    if failed:
        for label, text in (("stdout", result.stdout), ("stderr", result.stderr)):
            if text:
                sections.append(f"<p>Captured {label}</p><pre>{_e(text)}</pre>")
    for warning in result.warnings:
        sections.append(f"<p>swarmctl warning: {_e(warning)}</p>")
    for attempt in earlier:
        sections.append(
            f"<p>Attempt {attempt.attempt} on {_e(attempt.executor or '-')}: {_badge(attempt.outcome)}</p>"
            f"<pre>{_e(attempt.longrepr or attempt.message)}</pre>"
        )
    if not sections:
        return ""
    summary_text = _first_line(result.message) or "details"
    return f"<details><summary>{_e(summary_text)}</summary>{''.join(sections)}</details>"


def _slowest_table(statistics: RunStatistics) -> str:
    if not statistics.slowest:
        return '<p class="note">No test ran on an executor.</p>'
    rows = "".join(
        f"<tr><td class=num>{rank}</td><td class=id><code>{_e(result.case_id)}</code></td>"
        f"<td class=num>{format_duration(result.duration)}</td><td>{_badge(result.outcome)}</td><td>{_e(result.executor)}</td></tr>"
        for rank, result in enumerate(statistics.slowest, start=1)
    )
    return (
        "<table><thead><tr><th class=num>#</th><th>Test</th><th class=num>Duration</th><th>Outcome</th>"
        f"<th>Executor</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _retried_table(statistics: RunStatistics, earlier_attempts: Mapping[str, Sequence[CaseResult]]) -> str:
    if not statistics.retried:
        return '<p class="note">Every test passed or failed on its first attempt.</p>'
    rows = []
    for result in statistics.retried:
        earlier = earlier_attempts.get(result.case_id, ())
        history = " ".join(_badge(attempt.outcome) for attempt in earlier)
        lost = ", ".join(result.reassigned_from) or "-"
        if result.flaky:
            kind = "flaky"
        elif result.outcome in FAILING_OUTCOMES:
            kind = "failed every attempt"
        else:
            kind = "retried"
        rows.append(
            f"<tr><td class=id><code>{_e(result.case_id)}</code></td><td>{_e(kind)}</td>"
            f"<td>{history} {_badge(result.outcome)}</td><td class=num>{result.attempt}</td><td>{_e(lost)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>Test</th><th>Kind</th><th>Attempts, oldest first</th>"
        f"<th class=num>Attempt</th><th>Executors lost</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _badge(outcome: str) -> str:
    return f'<span class="badge outcome-{_e(outcome)}">{_e(outcome)}</span>'


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {outcome}" for outcome, count in counts.items()) or "none"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _local_time(unix_time: float) -> str:
    moment = datetime.datetime.fromtimestamp(unix_time, tz=datetime.UTC).astimezone()
    return moment.isoformat(timespec="seconds")


def _first_line(text: str) -> str:
    return text.strip().partition("\n")[0]


def _sha256(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "sha256-" + base64.b64encode(digest).decode("ascii")


def _e(text: str) -> str:
    return html.escape(text, quote=True)
