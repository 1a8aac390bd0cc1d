"""Tests for the JUnit XML writer, including id mapping checked against pytest's own output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmctl.reports.junit import (
    escape_illegal_xml,
    render_junit,
    split_node_id,
    write_junit,
)
from swarmctl.results import CaseResult, RunSummary, Subtest

SUMMARY = RunSummary(
    run_id="run-1",
    exit_code=1,
    wall_s=12.3456,
    started_at=1_700_000_000.0,
    suite="tests",
    executors=["exec-a", "exec-b"],
)

MIXED_RESULTS = [
    CaseResult("tests/test_a.py::test_pass", "passed", duration=0.25, executor="exec-a"),
    CaseResult(
        "tests/test_a.py::test_fail",
        "failed",
        executor="exec-b",
        attempt=2,
        message="assert 1 == 2",
        longrepr="def test_fail():\n>       assert 1 == 2\nE       assert 1 == 2",
        stdout="printed before failing\n",
        stderr="warning text\n",
    ),
    CaseResult("tests/test_a.py::test_skip", "skipped", when="setup", message="Skipped: not here"),
    CaseResult("tests/test_a.py::test_xfail", "xfailed", message="reason: known bug"),
    CaseResult("tests/test_a.py::test_xpass", "xpassed", message="fixed since"),
    CaseResult(
        "tests/test_a.py::test_setup_error",
        "error",
        when="setup",
        message="RuntimeError: setup failed",
        longrepr="E   RuntimeError: setup failed",
    ),
    CaseResult(
        "tests/test_a.py::test_teardown_error",
        "error",
        when="teardown",
        message="RuntimeError: teardown failed",
        longrepr="E   RuntimeError: teardown failed",
        counted_as=("passed", "error"),
    ),
    CaseResult(
        "build-docs",
        "timed_out",
        message="timed out after 30s",
        exit_code=None,
        signal="SIGKILL",
    ),
    CaseResult(
        "tests/test_a.py::test_subtests",
        "failed",
        message="contains 1 failed subtest",
        longrepr="contains 1 failed subtest",
        subtests=(Subtest("[good]", "passed"), Subtest("[bad]", "failed", "E   assert False")),
        counted_as=("failed", "failed"),
    ),
]

# Element and attribute rules of the Jenkins xunit plugin's junit-10.xsd, the schema that
# pytest's junitxml module names as its target. The additions are "properties" inside
# "testcase", and Maven Surefire's rerun and flaky elements for earlier attempts, which
# swarmctl writes and that schema leaves out.
RERUN_TAGS = ("rerunFailure", "rerunError", "flakyFailure", "flakyError")
SCHEMA_CHILDREN = {
    "testsuites": {"testsuite"},
    "testsuite": {"testsuite", "properties", "testcase", "system-out", "system-err"},
    "testcase": {"properties", "skipped", "error", "failure", "system-out", "system-err", *RERUN_TAGS},
    "properties": {"property"},
    "property": set(),
    "failure": set(),
    "error": set(),
    "skipped": set(),
    "system-out": set(),
    "system-err": set(),
    "stackTrace": set(),
    **{tag: {"stackTrace", "system-out", "system-err"} for tag in RERUN_TAGS},
}
SCHEMA_ATTRIBUTES = {
    "testsuites": {"name", "time", "tests", "failures", "errors"},
    "testsuite": {
        "name", "tests", "failures", "errors", "group", "time", "skipped", "timestamp",
        "hostname", "id", "package", "file", "log", "url",
    },
    "testcase": {"name", "time", "classname", "group"},
    "properties": set(),
    "property": {"name", "value"},
    "failure": {"type", "message"},
    "error": {"type", "message"},
    "skipped": {"type", "message"},
    "system-out": set(),
    "system-err": set(),
    "stackTrace": set(),
    **{tag: {"type", "message"} for tag in RERUN_TAGS},
}
SCHEMA_REQUIRED = {
    "testsuite": {"name", "tests", "failures", "errors"},
    "testcase": {"name"},
    "property": {"name", "value"},
    **{tag: {"type"} for tag in RERUN_TAGS},
}
SUREFIRE_TIME = re.compile(r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?")


def schema_violations(element: ET.Element, path: str = "") -> list[str]:
    """List every place where ``element`` and its children break the schema rules above."""
    where = f"{path}/{element.tag}"
    problems = []
    if element.tag not in SCHEMA_CHILDREN:
        return [f"{where}: unknown element"]
    extra = set(element.attrib) - SCHEMA_ATTRIBUTES[element.tag]
    if extra:
        problems.append(f"{where}: attributes not in the schema: {sorted(extra)}")
    missing = SCHEMA_REQUIRED.get(element.tag, set()) - set(element.attrib)
    if missing:
        problems.append(f"{where}: required attributes missing: {sorted(missing)}")
    if element.tag in ("testsuite", "testsuites") and "time" in element.attrib:
        if not SUREFIRE_TIME.fullmatch(element.attrib["time"]):
            problems.append(f"{where}: time {element.attrib['time']!r} is not a SUREFIRE_TIME")
    for child in element:
        if child.tag not in SCHEMA_CHILDREN[element.tag]:
            problems.append(f"{where}: child {child.tag} not allowed")
        problems.extend(schema_violations(child, where))
    return problems


def parse(summary: RunSummary, results: list[CaseResult]) -> ET.Element:
    return ET.fromstring(render_junit(summary, results))


def find_testcase(root: ET.Element, name: str) -> ET.Element:
    matches = [case for case in root.iter("testcase") if case.get("name") == name]
    assert len(matches) == 1, f"expected one testcase named {name!r}, found {len(matches)}"
    return matches[0]


def test_junit_suite_attributes():
    root = parse(SUMMARY, MIXED_RESULTS)

    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("name") == "swarmctl"
    assert suite.get("tests") == "9"
    # test_fail, the timeout, the failed subtest and test_subtests itself.
    assert suite.get("failures") == "4"
    assert suite.get("errors") == "2"
    # The skip and the xfail. An xpass is a pass.
    assert suite.get("skipped") == "2"
    assert suite.get("time") == "12.346"
    assert suite.get("timestamp", "").startswith("2023-11-")
    assert suite.get("hostname")


def test_junit_counts_match_elements():
    suite = parse(SUMMARY, MIXED_RESULTS).find("testsuite")

    for attribute, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
        assert int(suite.get(attribute)) == len(suite.findall(f"testcase/{tag}")), attribute


def test_junit_valid_against_schema_rules():
    root = parse(SUMMARY, MIXED_RESULTS)

    assert schema_violations(root) == []


def test_junit_empty_run():
    root = parse(SUMMARY, [])
    suite = root.find("testsuite")

    assert suite.get("tests") == "0"
    assert suite.get("failures") == "0"
    assert schema_violations(root) == []


def test_junit_outcome_elements():
    root = parse(SUMMARY, MIXED_RESULTS)

    passed = find_testcase(root, "test_pass")
    assert [child.tag for child in passed] == ["properties"]
    assert passed.get("time") == "0.250"

    failure = find_testcase(root, "test_fail").find("failure")
    assert failure.get("message") == "assert 1 == 2"
    assert "E       assert 1 == 2" in failure.text

    skipped = find_testcase(root, "test_skip").find("skipped")
    assert skipped.get("type") == "pytest.skip"
    assert skipped.get("message") == "not here"

    xfailed = find_testcase(root, "test_xfail").find("skipped")
    assert xfailed.get("type") == "pytest.xfail"
    assert xfailed.get("message") == "known bug"

    xpassed = find_testcase(root, "test_xpass")
    assert [child.tag for child in xpassed] == ["properties"]

    timeout = find_testcase(root, "build-docs").find("failure")
    assert timeout.get("type") == "timeout"
    assert timeout.get("message") == "timed out after 30s"


def test_junit_error_messages_name_phase():
    root = parse(SUMMARY, MIXED_RESULTS)

    setup = find_testcase(root, "test_setup_error").find("error")
    teardown = find_testcase(root, "test_teardown_error").find("error")

    assert setup.get("message") == 'failed on setup with "RuntimeError: setup failed"'
    assert teardown.get("message") == 'failed on teardown with "RuntimeError: teardown failed"'


def test_junit_collection_error():
    result = CaseResult("tests/test_b.py", "error", when="collect", longrepr="ImportError: x")

    testcase = parse(SUMMARY, [result]).find("testsuite/testcase")

    assert testcase.get("classname") == ""
    assert testcase.get("name") == "tests.test_b"
    assert testcase.find("error").get("message") == "collection failure"
    assert testcase.find("error").text == "ImportError: x"


def test_junit_failed_subtests():
    testcase = find_testcase(parse(SUMMARY, MIXED_RESULTS), "test_subtests")
    failures = testcase.findall("failure")

    assert [failure.get("message") for failure in failures] == [
        "subtest [bad] failed",
        "contains 1 failed subtest",
    ]
    assert failures[0].text == "E   assert False"


def test_junit_properties_and_output():
    testcase = find_testcase(parse(SUMMARY, MIXED_RESULTS), "test_fail")
    properties = {prop.get("name"): prop.get("value") for prop in testcase.iter("property")}

    assert properties == {"executor": "exec-b", "attempt": "2"}
    assert testcase.find("system-out").text == "printed before failing\n"
    assert testcase.find("system-err").text == "warning text\n"


def test_junit_command_properties():
    testcase = find_testcase(parse(SUMMARY, MIXED_RESULTS), "build-docs")
    properties = {prop.get("name"): prop.get("value") for prop in testcase.iter("property")}

    assert testcase.get("classname") == "commands"
    assert properties["signal"] == "SIGKILL"
    assert "exit_code" not in properties


def test_junit_suite_properties():
    summary = RunSummary("run-9", 2, 1.0, 0.0, "tests", error="Interrupted: 2 errors during collection")

    suite = parse(summary, []).find("testsuite")
    properties = {prop.get("name"): prop.get("value") for prop in suite.find("properties")}

    assert properties == {
        "run_id": "run-9",
        "suite": "tests",
        "error": "Interrupted: 2 errors during collection",
    }


@pytest.mark.parametrize(
    ("case_id", "classname", "name"),
    [
        ("test_case.py::test_id[a::b]", "test_case", "test_id[a::b]"),
        (
            "test_case.py::TestNested::TestInner::test_deep[a::b::c]",
            "test_case.TestNested.TestInner",
            "test_deep[a::b::c]",
        ),
        ("tests/unit/test_x.py::TestA::test_b", "tests.unit.test_x.TestA", "test_b"),
        ("tests/test_x.py::test_nested_brackets[x[1]]", "tests.test_x", "test_nested_brackets[x[1]]"),
        ("tests/test[1].py::test_x", "tests.test[1]", "test_x"),
        ("tests/test_word.py::test_word[caf\\xe9]", "tests.test_word", "test_word[caf\\xe9]"),
        ("make lint", "commands", "make lint"),
        ("suite/case[1]", "commands", "suite/case[1]"),
    ],
)
def test_split_node_id(case_id, classname, name):
    assert split_node_id(case_id) == (classname, name)


def test_split_node_id_collect_error():
    assert split_node_id("tests/test_a.py", when="collect") == ("", "tests.test_a")
    assert split_node_id("tests/test_a.py::TestA", when="collect") == ("tests.test_a", "TestA")


def test_split_node_id_matches_pytest(tmp_path):
    """Compare classname and name with pytest's own --junitxml for awkward node ids."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            def pytest_collection_modifyitems(config, items):
                with open("node_ids.txt", "w", encoding="utf-8") as stream:
                    stream.writelines(item.nodeid + "\\n" for item in items)
            """
        )
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test_nested.py").write_text(
        textwrap.dedent(
            """
            import pytest

            class TestNested:
                class TestInner:
                    @pytest.mark.parametrize("value", [1], ids=["a::b::c"])
                    def test_deep(self, value):
                        pass

            @pytest.mark.parametrize("value", ["x[1]", 'q"', "caf\\xe9", "a::b"])
            def test_id(value):
                pass
            """
        )
    )
    (tmp_path / "test_br[1].py").write_text("def test_plain():\n    pass\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"

    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=pytest.xml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    node_ids = (tmp_path / "node_ids.txt").read_text(encoding="utf-8").splitlines()
    pytest_pairs = [
        (case.get("classname"), case.get("name"))
        for case in ET.parse(tmp_path / "pytest.xml").iter("testcase")
    ]
    assert len(node_ids) == 6
    assert sorted(split_node_id(node_id) for node_id in node_ids) == sorted(pytest_pairs)


def test_junit_illegal_characters_escaped():
    result = CaseResult(
        "tests/test_a.py::test_ctrl[\x01]",
        "failed",
        message="bad \x00 byte",
        longrepr="escape \x1b[31mred\x1b[0m and \ud800 surrogate, tab\tkept",
        stdout="bell \x07",
    )

    data = render_junit(SUMMARY, [result])
    testcase = ET.fromstring(data).find("testsuite/testcase")

    assert testcase.get("name") == "test_ctrl[#x01]"
    assert testcase.find("failure").get("message") == "bad #x00 byte"
    assert testcase.find("failure").text == (
        "escape #x1B[31mred#x1B[0m and #xD800 surrogate, tab\tkept"
    )
    assert testcase.find("system-out").text == "bell #x07"


def test_escape_keeps_legal_text():
    text = "tab\t newline\n return\r é 中 \U0001f600 <&>\"'"

    assert escape_illegal_xml(text) == text


def test_junit_long_message_shortened():
    result = CaseResult("tests/test_a.py::test_long", "failed", message="x" * 2000, longrepr="y" * 2000)

    failure = parse(SUMMARY, [result]).find("testsuite/testcase/failure")

    assert len(failure.get("message")) < 600
    assert failure.text == "y" * 2000


@given(
    case_id=st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())),
    text=st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())),
)
def test_junit_any_text_parses(case_id, text):
    result = CaseResult(case_id, "failed", message=text, longrepr=text, stdout=text, stderr=text)

    root = ET.fromstring(render_junit(SUMMARY, [result]))

    assert root.find("testsuite").get("failures") == "1"


def test_write_junit_creates_file(tmp_path):
    path = tmp_path / "reports" / "junit.xml"

    write_junit(path, SUMMARY, MIXED_RESULTS)
    write_junit(path, SUMMARY, MIXED_RESULTS[:1])

    assert ET.parse(path).getroot().find("testsuite").get("tests") == "1"
    assert [entry.name for entry in path.parent.iterdir()] == ["junit.xml"]


# --- earlier attempts of retried tests ----------------------------------------------------

XSD = Path(__file__).resolve().parent.parent / "data" / "junit-swarmctl.xsd"

FLAKY_RESULT = CaseResult(
    "tests/test_r.py::test_flaky", "passed", duration=0.1, executor="exec-b", attempt=3, flaky=True
)
FLAKY_EARLIER = [
    CaseResult(
        "tests/test_r.py::test_flaky", "failed", executor="exec-a", attempt=1,
        message="AssertionError: first", longrepr="E   AssertionError: first", stdout="out 1\n",
    ),
    CaseResult(
        "tests/test_r.py::test_flaky", "error", executor="exec-a", attempt=2, when="setup",
        message="RuntimeError: fixture", longrepr="E   RuntimeError: fixture", stderr="err 2\n",
    ),
]
BROKEN_RESULT = CaseResult(
    "tests/test_r.py::test_broken", "failed", executor="exec-b", attempt=2,
    message="AssertionError: last", longrepr="E   AssertionError: last",
)
BROKEN_EARLIER = [
    CaseResult(
        "tests/test_r.py::test_broken", "failed", executor="exec-a", attempt=1,
        message="AssertionError: first", longrepr="E   AssertionError: first",
    ),
]
ERRORED_RESULT = CaseResult(
    "tests/test_r.py::test_errored", "error", executor="exec-b", attempt=3, when="setup",
    message="OSError: disk", longrepr="E   OSError: disk",
)
ERRORED_EARLIER = [
    CaseResult("tests/test_r.py::test_errored", "failed", executor="exec-a", attempt=1, message="boom", longrepr="boom"),
    CaseResult("tests/test_r.py::test_errored", "timed_out", executor="exec-a", attempt=2, message="timed out"),
]
RETRY_RESULTS = [FLAKY_RESULT, BROKEN_RESULT, ERRORED_RESULT]
RETRY_EARLIER = {
    FLAKY_RESULT.case_id: FLAKY_EARLIER,
    BROKEN_RESULT.case_id: BROKEN_EARLIER,
    ERRORED_RESULT.case_id: ERRORED_EARLIER,
}


def parse_with_reruns() -> ET.Element:
    return ET.fromstring(render_junit(SUMMARY, RETRY_RESULTS, RETRY_EARLIER))


def test_junit_flaky_attempts_become_flaky_elements():
    testcase = find_testcase(parse_with_reruns(), "test_flaky")

    assert [child.tag for child in testcase] == ["properties", "flakyFailure", "flakyError"]
    flaky_failure, flaky_error = testcase.find("flakyFailure"), testcase.find("flakyError")
    assert flaky_failure.get("message") == "AssertionError: first"
    assert flaky_failure.get("type") == "failed"
    assert flaky_failure.find("stackTrace").text == "E   AssertionError: first"
    assert flaky_failure.find("system-out").text == "out 1\n"
    assert flaky_error.get("message") == 'failed on setup with "RuntimeError: fixture"'
    assert flaky_error.find("system-err").text == "err 2\n"


def test_junit_failed_retries_become_rerun_elements():
    testcase = find_testcase(parse_with_reruns(), "test_broken")

    assert [child.tag for child in testcase] == ["properties", "failure", "rerunFailure"]
    assert testcase.find("failure").get("message") == "AssertionError: last"
    assert testcase.find("rerunFailure").get("message") == "AssertionError: first"


def test_junit_reruns_follow_surefire_order():
    testcase = find_testcase(parse_with_reruns(), "test_errored")

    # Failure-kind attempts come before the final <error>, error-kind ones after it.
    assert [child.tag for child in testcase] == ["properties", "rerunFailure", "rerunFailure", "error"]
    assert [element.get("type") for element in testcase.findall("rerunFailure")] == ["failed", "timed_out"]
    assert testcase.findall("rerunFailure")[1].find("stackTrace").text == "timed out"


def test_junit_reruns_leave_counters_alone():
    suite = parse_with_reruns().find("testsuite")

    assert suite.get("tests") == "3"
    assert suite.get("failures") == "1"
    assert suite.get("errors") == "1"


def test_junit_reruns_valid_against_schema_rules():
    assert schema_violations(parse_with_reruns()) == []


def test_junit_without_earlier_attempts_unchanged():
    assert render_junit(SUMMARY, MIXED_RESULTS, {}) == render_junit(SUMMARY, MIXED_RESULTS)


def test_junit_reassigned_property():
    result = CaseResult("tests/test_r.py::test_moved", "passed", executor="exec-c", attempt=2, reassigned_from=("exec-a", "exec-b"))

    testcase = find_testcase(parse(SUMMARY, [result]), "test_moved")
    properties = {prop.get("name"): prop.get("value") for prop in testcase.iter("property")}

    assert properties["reassigned_from"] == "exec-a,exec-b"


@pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint (Debian package libxml2-utils) is not installed")
@pytest.mark.parametrize("name", ["mixed", "reruns", "empty"])
def test_junit_valid_against_xsd(tmp_path, name):
    documents = {
        "mixed": render_junit(SUMMARY, MIXED_RESULTS),
        "reruns": render_junit(SUMMARY, RETRY_RESULTS, RETRY_EARLIER),
        "empty": render_junit(SUMMARY, []),
    }
    path = tmp_path / f"{name}.xml"
    path.write_bytes(documents[name])

    process = subprocess.run(
        ["xmllint", "--noout", "--schema", str(XSD), str(path)], capture_output=True, text=True, timeout=60, check=False
    )

    assert process.returncode == 0, process.stderr


@pytest.mark.skipif(shutil.which("xmllint") is None, reason="xmllint (Debian package libxml2-utils) is not installed")
def test_junit_xsd_rejects_misordered_reruns(tmp_path):
    # The schema must be able to fail: a rerunFailure after the error breaks Surefire's order.
    path = tmp_path / "bad.xml"
    path.write_text(
        '<testsuites><testsuite name="s" tests="1" failures="0" errors="1">'
        '<testcase name="t"><error message="m"/><rerunFailure type="failed"><stackTrace/></rerunFailure>'
        "</testcase></testsuite></testsuites>"
    )

    process = subprocess.run(
        ["xmllint", "--noout", "--schema", str(XSD), str(path)], capture_output=True, text=True, timeout=60, check=False
    )

    assert process.returncode != 0
