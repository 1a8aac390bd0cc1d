"""The report formats of a stored run, shared by ``swarmctl report`` and the HTTP API."""

from __future__ import annotations

from swarmctl.errors import UsageError
from swarmctl.reports.html import encode_text, render_html
from swarmctl.reports.json_report import build_json_report, format_json_report
from swarmctl.reports.junit import render_junit
from swarmctl.reports.markdown import render_markdown
from swarmctl.reports.run_store import StoredRun

FORMATS = ("junit", "json", "html", "md")
MEDIA_TYPES = {
    "junit": "application/xml",
    "json": "application/json",
    "html": "text/html; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
}


def render_report(run: StoredRun, report_format: str) -> bytes:
    """Render ``run`` in one of ``FORMATS`` as the bytes of a file."""
    match report_format:
        case "junit":
            return render_junit(run.summary, run.results, run.earlier_attempts)
        case "json":
            # The same text as `swarmctl run --json` writes. A lone surrogate from an
            # undecodable id becomes a JSON \udcxx escape, which decodes back to it.
            return encode_text(format_json_report(build_json_report(run.summary, run.results)))
        case "html":
            return encode_text(render_html(run.summary, run.results, run.earlier_attempts))
        case "md":
            return encode_text(render_markdown(run.summary, run.results, run.earlier_attempts))
    raise UsageError(f"--format {report_format!r} is invalid: use one of {', '.join(FORMATS)}")
