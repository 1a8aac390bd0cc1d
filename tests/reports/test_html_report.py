"""Tests for the single-file HTML report: escaping, the embedded data, and the filter in a browser."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmctl.reports.html import (
    DATA_ELEMENT_ID,
    embedded_json,
    encode_text,
    page_data,
    render_html,
    write_html,
)
from swarmctl.reports.timeline import pack_lanes, render_timeline_svg, tick_step
from swarmctl.results import CaseResult, RunSummary

T0 = 1_700_000_000.0
HOSTILE_ID = "test_x.py::test_x[x</script><script>alert(1)</script>]"
HOSTILE_MESSAGE = "<img src=x onerror=alert(2)> & \"quotes\" 'single'"

SUMMARY = RunSummary("run-7", 1, wall_s=4.0, started_at=T0, suite="tests/", executors=["exec-a", "exec-b"])
RESULTS = [
    CaseResult("test_a.py::test_ok", "passed", duration=0.5, executor="exec-a", started_at=T0 + 1.0),
    CaseResult(
        HOSTILE_ID, "failed", duration=1.5, executor="exec-b", started_at=T0 + 1.0,
        message=HOSTILE_MESSAGE, longrepr=f"E   {HOSTILE_MESSAGE}\nsecond line", stdout="</pre><b>out</b>",
    ),
    CaseResult("test_a.py::test_skip", "skipped", duration=0.0, executor="exec-a", started_at=T0 + 1.6, message="not here"),
    CaseResult(
        "test_a.py::test_flaky", "passed", duration=0.2, executor="exec-a", started_at=T0 + 2.0, attempt=2, flaky=True
    ),
]
EARLIER = {
    "test_a.py::test_flaky": [
        CaseResult(
            "test_a.py::test_flaky", "failed", duration=0.3, executor="exec-b", started_at=T0 + 1.2,
            message="AssertionError: first try", longrepr="E   AssertionError: first try",
        )
    ]
}


class PageParser(HTMLParser):
    """Record every start tag with its attributes, the text of each element by tag, and script bodies."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.styles: list[str] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "script":
            self.scripts.append((attributes, ""))
        if tag == "style":
            self.styles.append("")
        if tag not in ("input", "meta", "br", "line", "rect"):
            self._open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag in self._open:
            while self._open and self._open.pop() != tag:
                pass

    def handle_data(self, data):
        if not self._open:
            return
        current = self._open[-1]
        if current == "script":
            attributes, text = self.scripts[-1]
            self.scripts[-1] = (attributes, text + data)
        elif current == "style":
            self.styles[-1] += data
        self.texts.setdefault(current, []).append(data)


def parse_page(html_text: str) -> PageParser:
    parser = PageParser()
    parser.feed(html_text)
    parser.close()
    return parser


def render_default() -> str:
    return render_html(SUMMARY, RESULTS, EARLIER)


def test_html_hostile_id_escaped():
    page = render_default()
    parsed = parse_page(page)

    assert "<script>alert(1)" not in page
    assert "<img src=x" not in page
    assert len(parsed.scripts) == 2
    assert [tag for tag, _ in parsed.tags].count("img") == 0
    assert HOSTILE_ID in parsed.texts["code"]


def test_html_embedded_json_round_trips():
    parsed = parse_page(render_default())

    data_scripts = [text for attributes, text in parsed.scripts if attributes.get("id") == DATA_ELEMENT_ID]
    assert len(data_scripts) == 1
    assert json.loads(data_scripts[0]) == page_data(SUMMARY, RESULTS)
    assert json.loads(data_scripts[0])["cases"][1]["id"] == HOSTILE_ID


@given(st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=("Cs",))))
def test_embedded_json_any_text(text):
    encoded = embedded_json({"id": text})

    assert "<" not in encoded
    assert ">" not in encoded
    assert "&" not in encoded
    assert json.loads(encoded) == {"id": text}


def test_html_failure_text_expandable():
    parsed = parse_page(render_default())
    pre_texts = "".join(parsed.texts["pre"])

    assert f"E   {HOSTILE_MESSAGE}\nsecond line" in pre_texts
    assert "</pre><b>out</b>" in pre_texts
    assert "E   AssertionError: first try" in pre_texts
    assert any(HOSTILE_MESSAGE == text for text in parsed.texts["summary"])


def test_html_filter_controls_per_outcome():
    parsed = parse_page(render_default())

    outcomes = [attributes["data-outcome"] for tag, attributes in parsed.tags if tag == "input" and "data-outcome" in attributes]
    ids = {attributes.get("id") for tag, attributes in parsed.tags if tag == "input"}
    assert outcomes == ["passed", "failed", "skipped"]
    assert {"search", "retried-only"} <= ids


def test_html_rows_match_data_indexes():
    parsed = parse_page(render_default())

    indexes = [attributes["data-index"] for tag, attributes in parsed.tags if tag == "tr" and "data-index" in attributes]
    assert indexes == ["0", "1", "2", "3"]


def test_html_loads_nothing_external():
    page = render_default()
    parsed = parse_page(page)

    for tag, attributes in parsed.tags:
        assert "src" not in attributes, (tag, attributes)
        assert "href" not in attributes, (tag, attributes)
    assert "http://" not in page
    assert "https://" not in page
    assert "<link" not in page


def test_html_policy_hashes_match_inline_code():
    parsed = parse_page(render_default())
    policy = next(attributes["content"] for tag, attributes in parsed.tags if tag == "meta" and attributes.get("http-equiv"))
    code = next(text for attributes, text in parsed.scripts if "type" not in attributes)

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    assert "default-src 'none'" in policy
    assert f"script-src {digest(code)}" in policy
    assert f"style-src {digest(parsed.styles[0])}" in policy


def test_html_lists_slowest_and_flaky():
    parsed = parse_page(render_default())
    code_texts = parsed.texts["code"]

    # The tests table, the slowest table, then the flaky and retried table.
    assert code_texts.count("test_a.py::test_flaky") == 3
    assert "flaky" in parsed.texts["td"]


def test_html_lone_surrogate_id_encodes(tmp_path):
    result = CaseResult("test_b.py::test_word[caf\udce9]", "passed", executor="exec-a", started_at=T0 + 1)
    path = tmp_path / "report.html"

    write_html(path, SUMMARY, [result])

    assert "test_word[caf\\udce9]" in path.read_text(encoding="utf-8")
    assert encode_text("\udce9") == b"\\udce9"


def test_timeline_lanes_for_parallel_tests():
    attempts = [
        (CaseResult("a", "passed", duration=2.0, started_at=T0 + 0.0), True),
        (CaseResult("b", "passed", duration=2.0, started_at=T0 + 1.0), True),
        (CaseResult("c", "passed", duration=1.0, started_at=T0 + 2.0), True),
        (CaseResult("d", "passed", duration=1.0, started_at=0.0), True),
    ]

    bars = pack_lanes(attempts, origin=T0)

    assert [(bar.attempt.case_id, bar.lane) for bar in bars] == [("a", 0), ("b", 1), ("c", 0)]


def test_timeline_bars_per_attempt():
    svg = render_timeline_svg(RESULTS, EARLIER["test_a.py::test_flaky"], started_at=T0, wall_s=4.0)
    parsed = parse_page(svg)

    bars = [attributes for tag, attributes in parsed.tags if tag == "rect"]
    assert len(bars) == 5
    assert sum("earlier" in attributes["class"] for attributes in bars) == 1
    assert parsed.texts["text"][-2:] == ["exec-a", "exec-b"]


def test_timeline_without_start_times():
    svg = render_timeline_svg([CaseResult("a", "error")], [], started_at=T0, wall_s=1.0)

    assert "<svg" not in svg


@pytest.mark.parametrize(("span", "step"), [(4.0, 0.5), (10.0, 2.0), (75.0, 10.0), (0.03, 0.005), (0.0, 1.0)])
def test_timeline_tick_step(span, step):
    assert tick_step(span) == pytest.approx(step)


# --- in a real browser ---------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]


@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
def test_html_filter_in_chromium(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    path = tmp_path / "report.html"
    write_html(path, SUMMARY, RESULTS, EARLIER)

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            errors: list[str] = []
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(path.as_uri())

            assert page.text_content("#visible-count") == "4 of 4 tests shown"
            page.uncheck("input[data-outcome=passed]")
            assert page.text_content("#visible-count") == "2 of 4 tests shown"
            assert page.is_hidden("tr[data-index='0']")
            assert page.is_visible("tr[data-index='1']")
            page.check("input[data-outcome=passed]")
            page.fill("#search", "SCRIPT>ALERT")
            assert page.text_content("#visible-count") == "1 of 4 tests shown"
            page.fill("#search", "")
            page.check("#retried-only")
            assert page.text_content("#visible-count") == "1 of 4 tests shown"
            page.screenshot(path=str(tmp_path / "filtered.png"), full_page=True)

            assert dialogs == []
            assert errors == []
        finally:
            browser.close()
    assert (tmp_path / "filtered.png").stat().st_size > 0
