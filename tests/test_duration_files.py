"""Tests of ``load_durations_file`` on reports written by real pytest runs and on bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarmctl.duration_files import load_durations_file
from swarmctl.errors import UsageError

# Its tests share a module-scoped fixture, so pytest-xdist keeps them on one worker.
pytestmark = pytest.mark.xdist_group("duration-files")

SLOW_TEST_SECONDS = 0.2

TEST_A = f"""\
import time

import pytest


def test_slow():
    time.sleep({SLOW_TEST_SECONDS})


@pytest.mark.parametrize("value", ["a.b", "c::d", "E.F"])
def test_param(value):
    pass


class TestOuter:
    def test_method(self):
        pass

    class TestInner:
        def test_nested(self):
            pass
"""

TEST_B = """\
import pytest


def test_fails():
    assert False


def test_skipped():
    pytest.skip("not here")
"""


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Write a small pytest suite with classes, parameters, a failure and a skip."""
    root = tmp_path_factory.mktemp("suite")
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "tests" / "sub").mkdir(parents=True)
    (root / "tests" / "test_a.py").write_text(TEST_A)
    (root / "tests" / "sub" / "test_b.py").write_text(TEST_B)
    return root


def run_pytest(suite: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=suite, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture(scope="module")
def collected_ids(suite: Path) -> list[str]:
    result = run_pytest(suite, "--collect-only", "-q")
    assert result.returncode == 0, result.stdout + result.stderr

    return [line for line in result.stdout.splitlines() if "::" in line]


@pytest.mark.parametrize("family", ["xunit2", "xunit1"])
def test_junit_xml_from_pytest(suite: Path, collected_ids: list[str], family: str) -> None:
    report = suite / f"report-{family}.xml"
    result = run_pytest(suite, f"--junitxml={report}", "-o", f"junit_family={family}")
    assert result.returncode == 1, result.stdout + result.stderr

    durations = load_durations_file(report)

    assert sorted(durations) == sorted(collected_ids)
    assert durations["tests/test_a.py::test_slow"] >= SLOW_TEST_SECONDS
    assert all(seconds >= 0 for seconds in durations.values())


def test_test_durations_json(suite: Path, collected_ids: list[str]) -> None:
    # The layout pytest-split writes: a JSON object, keys sorted, indented by four spaces.
    path = suite / ".test_durations"
    path.write_text(json.dumps({node_id: 0.25 for node_id in collected_ids}, sort_keys=True, indent=4))

    assert load_durations_file(path) == {node_id: 0.25 for node_id in collected_ids}


def test_test_durations_list_of_pairs(tmp_path: Path) -> None:
    path = tmp_path / ".test_durations"
    path.write_text('[["tests/test_a.py::test_x", 1.5], ["tests/test_a.py::test_y", 2]]')

    assert load_durations_file(path) == {"tests/test_a.py::test_x": 1.5, "tests/test_a.py::test_y": 2.0}


def test_format_detected_from_content(suite: Path) -> None:
    report = suite / "report-detect.xml"
    run_pytest(suite, f"--junitxml={report}")
    disguised_xml = suite / "durations.json"
    disguised_xml.write_bytes(report.read_bytes())
    disguised_json = suite / "report.xml"
    disguised_json.write_text('{"tests/test_a.py::test_slow": 3}')

    assert load_durations_file(disguised_xml) == load_durations_file(report)
    assert load_durations_file(disguised_json) == {"tests/test_a.py::test_slow": 3.0}


def test_byte_order_mark_and_whitespace(tmp_path: Path) -> None:
    json_path = tmp_path / "bom.json"
    json_path.write_bytes(b'\xef\xbb\xbf\n  {"a.py::t": 1}')
    xml_path = tmp_path / "bom.xml"
    xml_path.write_bytes(b'\xef\xbb\xbf\n<testsuite><testcase classname="a" name="t" time="2"/></testsuite>')

    assert load_durations_file(json_path) == {"a.py::t": 1.0}
    assert load_durations_file(xml_path) == {"a.py::t": 2.0}


def test_empty_files_give_empty_maps(tmp_path: Path) -> None:
    json_path = tmp_path / "empty.json"
    json_path.write_text("{}")
    xml_path = tmp_path / "empty.xml"
    xml_path.write_text('<testsuites><testsuite name="pytest" tests="0"/></testsuites>')

    assert load_durations_file(json_path) == {}
    assert load_durations_file(xml_path) == {}


def test_junit_repeated_testcase_sums(tmp_path: Path) -> None:
    path = tmp_path / "merged.xml"
    path.write_text(
        "<testsuites>"
        '<testsuite><testcase classname="tests.test_a" name="test_x" time="1.25"/></testsuite>'
        '<testsuite><testcase classname="tests.test_a" name="test_x" time="0.75"/>'
        '<testcase classname="tests.test_a" name="test_y" time="4"/></testsuite>'
        "</testsuites>"
    )

    assert load_durations_file(path) == {"tests/test_a.py::test_x": 2.0, "tests/test_a.py::test_y": 4.0}


@pytest.mark.parametrize(
    ("attributes", "node_id"),
    [
        ('classname="tests.test_a" name="test_x"', "tests/test_a.py::test_x"),
        ('classname="tests.test_a.TestX" name="test_m"', "tests/test_a.py::TestX::test_m"),
        ('classname="tests.test_a.TestX.TestY" name="test_m[1.5]"', "tests/test_a.py::TestX::TestY::test_m[1.5]"),
        ('classname="test_top" name="test_x"', "test_top.py::test_x"),
        ('classname="Tests.test_a" name="test_x"', "Tests/test_a.py::test_x"),
        ('classname="tests.test_a" name="test_x" file="tests/test_a.py"', "tests/test_a.py::test_x"),
        ('classname="a.b.TestX" name="test_m" file="a/b.py"', "a/b.py::TestX::test_m"),
        ('classname="pkg.Checks.test_a.lower" name="test_m" file="pkg/Checks/test_a.py"', "pkg/Checks/test_a.py::lower::test_m"),
        ('classname="tests.test_a" name="test_x" file="tests\\test_a.py"', "tests/test_a.py::test_x"),
        # An inherited method: ``file`` names the base class's file, ``classname`` the collected one.
        ('classname="tests.test_child.TestChild" name="test_m" file="tests/base.py"', "tests/test_child.py::TestChild::test_m"),
    ],
)
def test_junit_node_ids(tmp_path: Path, attributes: str, node_id: str) -> None:
    path = tmp_path / "report.xml"
    path.write_text(f'<testsuites><testsuite><testcase {attributes} time="1.5"/></testsuite></testsuites>')

    assert load_durations_file(path) == {node_id: 1.5}


@pytest.mark.parametrize(
    ("content", "problem", "fix"),
    [
        ("", "is empty", "pytest-split"),
        ("  \n", "is empty", "pytest-split"),
        ("tests/test_a.py::test_x 1.5\n", "is neither JSON nor XML", "--junitxml"),
        ('{"a.py::t": 1,', "is not valid JSON", "--store-durations"),
        ("<testsuites><testcase", "is not valid XML", "--junitxml"),
        ("<html><body/></html>", "its root element is <html>", "--junitxml"),
        ('{"a.py::t": "1.5"}', "the duration of 'a.py::t' is '1.5'", "Correct or remove"),
        ('{"a.py::t": -0.5}', "the duration of 'a.py::t' is -0.5", "Correct or remove"),
        ('{"a.py::t": NaN}', "the duration of 'a.py::t' is nan", "Correct or remove"),
        ('{"a.py::t": Infinity}', "the duration of 'a.py::t' is inf", "Correct or remove"),
        ('{"a.py::t": true}', "the duration of 'a.py::t' is True", "Correct or remove"),
        ('{"a.py::t": null}', "the duration of 'a.py::t' is None", "Correct or remove"),
        ('{"tests": [{"nodeid": "a.py::t"}]}', "the value of 'tests' is a JSON array", "pytest-split"),
        ('{"a.py::t": {"duration": 1}}', "the value of 'a.py::t' is a JSON object", "pytest-split"),
        ('[["a.py::t", 1], "b.py::t"]', "item 1 of the JSON array is 'b.py::t'", "--store-durations"),
        ('[["a.py::t", 1, 2]]', "item 0 of the JSON array is ['a.py::t', 1, 2]", "--store-durations"),
        ('[["a.py::t", "x"]]', "the duration of 'a.py::t' is 'x'", "Correct or remove"),
        ('<testsuite><testcase classname="a" name="t"/></testsuite>', "'a.py::t' has no 'time' attribute", "--junitxml"),
        ('<testsuite><testcase classname="a" name="t" time="fast"/></testsuite>', "is 'fast'", "Correct or remove"),
        ('<testsuite><testcase classname="a" name="t" time="-1"/></testsuite>', "is -1.0", "Correct or remove"),
        ('<testsuite><testcase classname="a" name="t" time="nan"/></testsuite>', "is nan", "Correct or remove"),
        ('<testsuite><testcase classname="a" time="1"/></testsuite>', "lacks its 'classname' or 'name'", "--junitxml"),
        ('<testsuite><testcase name="t" time="1"/></testsuite>', "lacks its 'classname' or 'name'", "--junitxml"),
    ],
)
def test_invalid_files(tmp_path: Path, content: str, problem: str, fix: str) -> None:
    path = tmp_path / "durations"
    path.write_text(content)

    with pytest.raises(UsageError) as caught:
        load_durations_file(path)

    message = str(caught.value)
    assert str(path) in message
    assert problem in message
    assert fix in message
    assert caught.value.exit_code == 4


def test_invalid_utf8_json(tmp_path: Path) -> None:
    path = tmp_path / "durations.json"
    path.write_bytes(b'{"a.py::\xff": 1}')

    with pytest.raises(UsageError, match="not UTF-8 text") as caught:
        load_durations_file(path)

    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"

    with pytest.raises(UsageError) as caught:
        load_durations_file(path)

    message = str(caught.value)
    assert f"cannot read durations file {path}" in message
    assert "No such file or directory" in message
    assert "Check the path" in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read durations file"):
        load_durations_file(tmp_path)
