"""JUnit XML in the shape pytest's ``--junitxml`` writes with ``junit_family=xunit2``.

One ``<testcase>`` is written per result. The ``<testsuite>`` counters count the
``<failure>``, ``<error>`` and ``<skipped>`` elements, as pytest's do. Each testcase carries
``<properties>`` naming its executor and attempt.

Earlier failed attempts of a retried test (``swarmctl run --retries``), when the caller
passes them, follow Maven Surefire's rerun convention. ``swarmctl report`` reads them from
the state database, and ``swarmctl run --junitxml`` receives them with the final results.

- A test that passed after failing keeps no ``<failure>`` and gets one ``<flakyFailure>``
  or ``<flakyError>`` per failed attempt.
- A test that failed on every attempt keeps the ``<failure>`` or ``<error>`` of its final
  attempt and gets one ``<rerunFailure>`` or ``<rerunError>`` per earlier attempt.
  Surefire puts the first attempt in ``<failure>``. Here it is the final one, because
  that is the result the run reported.

Each of these elements carries ``message``, ``type`` (the attempt's outcome), a
``<stackTrace>`` and the attempt's captured output. The testsuite counters never include
them, so a reader that ignores unknown elements reads an ordinary pass or failure.
Children of a testcase come in the order of Surefire's report schema: failures, rerun and
flaky failures, skipped, error, rerun and flaky errors, output.

NOTE: the Jenkins xunit plugin's ``junit-10.xsd``, the schema pytest's junitxml targets,
allows neither ``<properties>`` inside ``<testcase>`` nor the rerun and flaky elements. A
tool that validates strictly against it rejects these files. Everything else follows that
schema, and ``tests/data/junit-swarmctl.xsd`` describes the whole format.
"""

from __future__ import annotations

import datetime
import platform
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

from swarmctl.reports import write_report_file
from swarmctl.results import (
    ERROR,
    FAILED,
    FAILING_OUTCOMES,
    PASSED,
    SKIPPED,
    TIMED_OUT,
    XFAILED,
    XPASSED,
    CaseResult,
    RunSummary,
    Subtest,
)

SUITE_NAME = "swarmctl"

# Command-manifest case ids have no "::" and no file, so their testcases share this class.
COMMAND_CLASSNAME = "commands"

# Characters outside XML 1.0's Char production: C0 controls other than tab, newline and
# carriage return, lone surrogates, U+FFFE and U+FFFF.
_ILLEGAL_XML_CHARS = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# A message attribute longer than this is cut. The full text is always in the element body.
MAX_MESSAGE_CHARS = 500


def render_junit(
    summary: RunSummary,
    results: Sequence[CaseResult],
    earlier_attempts: Mapping[str, Sequence[CaseResult]] | None = None,
) -> bytes:
    """Render the run as a UTF-8 JUnit XML document.

    ``earlier_attempts`` maps a case id to its failed attempts before the final result,
    oldest first, as ``RunStore.load`` returns them.
    """
    earlier_attempts = earlier_attempts or {}
    testcases = [_testcase_element(result, earlier_attempts.get(result.case_id, ())) for result in results]
    suite = _testsuite_element(summary, results, testcases)
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(
    path: Path,
    summary: RunSummary,
    results: Sequence[CaseResult],
    earlier_attempts: Mapping[str, Sequence[CaseResult]] | None = None,
) -> None:
    """Write the run's JUnit XML to ``path``, creating its folder."""
    write_report_file(Path(path), render_junit(summary, results, earlier_attempts))


def split_node_id(case_id: str, *, when: str = "call") -> tuple[str, str]:
    """Return the JUnit ``(classname, name)`` of a pytest node id or command case id.

    ``tests/test_a.py::TestB::test_c[x::y]`` becomes ``("tests.test_a.TestB",
    "test_c[x::y]")``. The parameter part starts at the first ``[`` after the file path,
    so a ``::`` inside the brackets is never split, and a ``[`` in the file path
    (``test[1].py``) is never taken for one. This is how pytest 9.2's ``NodeId.parse``
    reads an id.

    An id without ``::`` is a command case, unless ``when`` is ``"collect"``. Then it is
    a pytest file that failed to collect, and pytest writes ``("", "tests.test_a")``.
    """
    path, separator, tail = case_id.partition("::")
    if not separator:
        if when == "collect":
            return "", _dotted_module(case_id)
        return COMMAND_CLASSNAME, case_id

    names_part, bracket, params = tail.partition("[")
    names = names_part.split("::")
    classname = ".".join([_dotted_module(path), *names[:-1]])
    name = names[-1] + bracket + params
    return classname, name


def _dotted_module(path: str) -> str:
    return path.replace("/", ".").removesuffix(".py")


def escape_illegal_xml(text: str) -> str:
    """Replace each character that XML 1.0 forbids with a visible ``#xHH`` marker.

    pytest's junitxml marks them the same way. ``#x1B`` is plain text, not an XML
    character reference, so the document stays well formed.
    """
    return _ILLEGAL_XML_CHARS.sub(_marker_for, text)


def _marker_for(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"#x{code:02X}" if code <= 0xFF else f"#x{code:04X}"


def _testsuite_element(
    summary: RunSummary, results: Sequence[CaseResult], testcases: list[ET.Element]
) -> ET.Element:
    def count(tag: str) -> int:
        return sum(len(testcase.findall(tag)) for testcase in testcases)

    suite = ET.Element(
        "testsuite",
        name=SUITE_NAME,
        errors=str(count("error")),
        failures=str(count("failure")),
        skipped=str(count("skipped")),
        tests=str(len(results)),
        time=f"{max(summary.wall_s, 0.0):.3f}",
        timestamp=_local_timestamp(summary.started_at),
        hostname=platform.node(),
    )
    suite.append(_suite_properties(summary))
    suite.extend(testcases)
    return suite


def _local_timestamp(unix_time: float) -> str:
    # pytest writes the start time in the local zone with its UTC offset.
    started = datetime.datetime.fromtimestamp(unix_time, tz=datetime.timezone.utc)
    return started.astimezone().isoformat()


def _suite_properties(summary: RunSummary) -> ET.Element:
    values = {"run_id": summary.run_id, "suite": summary.suite}
    if summary.error:
        values["error"] = summary.error
    return _properties_element(values)


def _properties_element(values: dict[str, object]) -> ET.Element:
    properties = ET.Element("properties")
    for name, value in values.items():
        ET.SubElement(properties, "property", name=name, value=escape_illegal_xml(str(value)))
    return properties


def _testcase_element(result: CaseResult, earlier: Sequence[CaseResult]) -> ET.Element:
    classname, name = split_node_id(result.case_id, when=result.when)
    testcase = ET.Element(
        "testcase",
        classname=escape_illegal_xml(classname),
        name=escape_illegal_xml(name),
        time=f"{max(result.duration, 0.0):.3f}",
    )
    testcase.append(_case_properties(result))
    for subtest in result.subtests:
        if subtest.outcome == FAILED:
            testcase.append(_subtest_failure(subtest))

    outcome_element = _outcome_element(result)
    reruns = [_earlier_attempt_element(attempt, final=result) for attempt in earlier]
    if outcome_element is not None and outcome_element.tag == "failure":
        testcase.append(outcome_element)
    testcase.extend(element for element in reruns if element.tag.endswith("Failure"))
    if outcome_element is not None and outcome_element.tag != "failure":
        testcase.append(outcome_element)
    testcase.extend(element for element in reruns if element.tag.endswith("Error"))

    if result.stdout:
        _append_text(testcase, "system-out", result.stdout)
    stderr = result.stderr
    if result.warnings:
        stderr += "".join(f"\nswarmctl warning: {warning}" for warning in result.warnings)
    if stderr:
        _append_text(testcase, "system-err", stderr)
    return testcase


def _case_properties(result: CaseResult) -> ET.Element:
    values: dict[str, object] = {"executor": result.executor, "attempt": result.attempt}
    if result.exit_code is not None:
        values["exit_code"] = result.exit_code
    if result.signal is not None:
        values["signal"] = result.signal
    if result.flaky:
        values["flaky"] = "true"  # passed on a retry after failing
    if result.reassigned_from:
        values["reassigned_from"] = ",".join(result.reassigned_from)  # executors lost while holding it
    return _properties_element(values)


def _earlier_attempt_element(attempt: CaseResult, *, final: CaseResult) -> ET.Element:
    """Build the ``<rerunFailure>``-style element of one failed attempt before ``final``."""
    prefix = "rerun" if final.outcome in FAILING_OUTCOMES else "flaky"
    if attempt.outcome == ERROR:
        tag, message = f"{prefix}Error", _error_message(attempt)
    else:
        tag, message = f"{prefix}Failure", _failure_message(attempt)
    element = ET.Element(tag, message=escape_illegal_xml(_shorten(message)), type=attempt.outcome)
    _append_text(element, "stackTrace", attempt.longrepr or attempt.message)
    if attempt.stdout:
        _append_text(element, "system-out", attempt.stdout)
    if attempt.stderr:
        _append_text(element, "system-err", attempt.stderr)
    return element


def _outcome_element(result: CaseResult) -> ET.Element | None:
    """Build the element that records a result's outcome, or None for a pass.

    A non-strict xpass is a pass, as in pytest. A strict one reaches here as ``failed``.
    """
    outcome = result.outcome
    if outcome in (PASSED, XPASSED):
        return None
    if outcome == FAILED:
        return _detail_element("failure", _failure_message(result), result.longrepr)
    if outcome == TIMED_OUT:
        element = _detail_element("failure", _failure_message(result), result.longrepr or result.message)
        element.set("type", "timeout")
        return element
    if outcome == ERROR:
        return _detail_element("error", _error_message(result), result.longrepr)
    if outcome == SKIPPED:
        reason = result.message.removeprefix("Skipped: ")
        element = _detail_element("skipped", reason, result.longrepr or reason)
        element.set("type", "pytest.skip")
        return element
    if outcome == XFAILED:
        element = _detail_element("skipped", result.message.removeprefix("reason: "), "")
        element.set("type", "pytest.xfail")
        return element
    # An outcome this module does not know still has to be visible in CI.
    return _detail_element("error", f"unknown outcome {outcome!r}", result.longrepr or result.message)


def _subtest_failure(subtest: Subtest) -> ET.Element:
    message = f"subtest {subtest.description} failed"
    return _detail_element("failure", message, subtest.longrepr)


def _failure_message(result: CaseResult) -> str:
    return result.message or _first_line(result.longrepr)


def _error_message(result: CaseResult) -> str:
    # pytest names the phase that failed: failed on setup with "RuntimeError: boom".
    if result.when == "collect":
        return "collection failure"
    reason = result.message or _first_line(result.longrepr)
    if result.when in ("setup", "teardown"):
        return f'failed on {result.when} with "{reason}"'
    return reason


def _detail_element(tag: str, message: str, text: str) -> ET.Element:
    element = ET.Element(tag, message=escape_illegal_xml(_shorten(message)))
    if text:
        element.text = escape_illegal_xml(text)
    return element


def _append_text(parent: ET.Element, tag: str, text: str) -> None:
    ET.SubElement(parent, tag).text = escape_illegal_xml(text)


def _first_line(text: str) -> str:
    return text.strip().partition("\n")[0]


def _shorten(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return message[:MAX_MESSAGE_CHARS] + "... (full text in the element body)"

