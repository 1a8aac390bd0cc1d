"""Read test durations that other tools recorded, as expected seconds per pytest node id.

Two formats are read. The format is detected from the content, not from the file name:

* pytest-split's ``.test_durations``: a JSON object mapping node ids to seconds. pytest-split
  0.1 wrote a JSON array of ``[node id, seconds]`` pairs instead, and that form is read too.
* JUnit XML as written by ``pytest --junitxml``: ``testcase`` elements with ``classname``,
  ``name`` and ``time`` attributes, plus ``file`` when ``junit_family`` is ``xunit1``.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from swarmctl.errors import UsageError

_FORMATS_HINT = "Pass a .test_durations file written by pytest-split or a JUnit XML report written by pytest --junitxml."


def load_durations_file(path: Path) -> dict[str, float]:
    """Read a pytest-split durations file or a JUnit XML report and return seconds per node id.

    Raises UsageError naming the file, the problem and the fix when the file cannot be read,
    is neither JSON nor XML, has another shape, or contains a duration that is not a
    non-negative finite number.
    """
    try:
        content = path.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read durations file {path}: {error.strerror or error}. Check the path.") from None

    start = content.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not start:
        raise UsageError(f"durations file {path} is empty. {_FORMATS_HINT}")
    if start[:1] in (b"{", b"["):
        return _parse_test_durations(path, content)
    if start[:1] == b"<":
        return _parse_junit_xml(path, content)
    preview = start[:20].decode("utf-8", errors="replace")
    raise UsageError(f"durations file {path} is neither JSON nor XML (it starts with {preview!r}). {_FORMATS_HINT}")


def _parse_test_durations(path: Path, content: bytes) -> dict[str, float]:
    try:
        data = json.loads(content)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"durations file {path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}."
            f" Fix the file or write it again with pytest --store-durations (pytest-split)."
        ) from None
    except UnicodeDecodeError:
        raise UsageError(f"durations file {path} is not valid JSON: it is not UTF-8 text. {_FORMATS_HINT}") from None

    # The content starts with "{" or "[", so the document is an object or an array.
    if isinstance(data, dict):
        pairs = list(data.items())
    else:
        pairs = [_pair_from_list_item(path, position, item) for position, item in enumerate(data)]

    durations: dict[str, float] = {}
    for node_id, seconds in pairs:
        _add_duration(durations, node_id, _checked_seconds(path, node_id, seconds))
    return durations


def _pair_from_list_item(path: Path, position: int, item: object) -> tuple[str, object]:
    """Return one ``[node id, seconds]`` pair of the array form that pytest-split 0.1 wrote."""
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        raise UsageError(
            f"durations file {path}: item {position} of the JSON array is {item!r}, expected a"
            f" [node id, seconds] pair. Write the file again with pytest --store-durations (pytest-split)."
        )
    return item[0], item[1]


def _parse_junit_xml(path: Path, content: bytes) -> dict[str, float]:
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as error:
        raise UsageError(f"durations file {path} is not valid XML: {error}. {_FORMATS_HINT}") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise UsageError(
            f"durations file {path} is XML but not a JUnit report: its root element is <{root.tag}>,"
            f" expected <testsuites> or <testsuite>. {_FORMATS_HINT}"
        )

    durations: dict[str, float] = {}
    for testcase in root.iter("testcase"):
        name = testcase.get("name")
        classname = testcase.get("classname")
        if not name or classname is None:
            raise UsageError(
                f"durations file {path}: a <testcase> element lacks its 'classname' or 'name' attribute"
                f" ({dict(testcase.attrib)!r}). {_FORMATS_HINT}"
            )
        node_id = _node_id_of_testcase(classname, name, testcase.get("file"))
        time = testcase.get("time")
        if time is None:
            raise UsageError(
                f"durations file {path}: <testcase> {node_id!r} has no 'time' attribute."
                f" Use a report written by pytest --junitxml, which records the seconds of every test."
            )
        # A node id can appear several times, for example in reports of several runs merged
        # into one file, and then its durations add up.
        _add_duration(durations, node_id, _checked_seconds(path, node_id, _parse_number(time)))
    return durations


def _parse_number(text: str) -> float | str:
    """Convert ``text`` to a float, or return it unchanged for the error message to show."""
    try:
        return float(text)
    except ValueError:
        return text


def _node_id_of_testcase(classname: str, name: str, file: str | None) -> str:
    """Rebuild the pytest node id that ``pytest --junitxml`` wrote as ``classname`` and ``name``.

    pytest writes the node id's path as a dotted module name without ``.py``, followed by the
    classes, as ``classname``, and the last part of the node id, parameters included, as
    ``name``. With ``file`` present, the classes are what ``classname`` has after the module.
    """
    if file is not None:
        file = file.replace("\\", "/")
        module = re.sub(r"\.py$", "", file).replace("/", ".")
        if classname == module:
            return f"{file}::{name}"
        if classname.startswith(module + "."):
            classes = classname[len(module) + 1 :].split(".")
            return "::".join([file, *classes, name])
        # ``file`` names where the test function is defined. For a test method inherited from a
        # class in another file, that differs from the collected module in ``classname``, which
        # is the one in the node id.
    return _node_id_from_classname(classname, name)


def _node_id_from_classname(classname: str, name: str) -> str:
    """Rebuild a node id from a dotted ``classname`` such as ``tests.test_a.TestX``.

    The module path ends before the second or later part that starts with an uppercase letter,
    which is taken as the first class: ``tests.test_a.TestX`` becomes ``tests/test_a.py::TestX``.
    The first part always belongs to the path, because a node id starts with a file path.
    """
    # NOTE: a dotted classname does not determine the file path, so this guess can be wrong.
    # It fails for directories and modules below the top level whose names start with an
    # uppercase letter, names that contain a dot, and classes whose names start with a
    # lowercase letter. It also fails for test files not ending in .py (such as doctests in
    # a .txt file) and for reports written with pytest --junit-prefix. Such node ids match no
    # collected test, so those tests get estimated durations. Reports written with
    # -o junit_family=xunit1 contain the file path and need no guess.
    parts = classname.split(".")
    first_class = next((i for i in range(1, len(parts)) if parts[i][:1].isupper()), len(parts))
    module_path = "/".join(parts[:first_class]) + ".py"
    return "::".join([module_path, *parts[first_class:], name])


def _checked_seconds(path: Path, node_id: object, seconds: object) -> float:
    if isinstance(seconds, (dict, list)):
        raise UsageError(
            f"durations file {path}: the value of {node_id!r} is a JSON {'object' if isinstance(seconds, dict) else 'array'},"
            f" expected a number of seconds. The file should map node ids to seconds, such as"
            f' {{"tests/test_a.py::test_x": 0.5}}. {_FORMATS_HINT}'
        )
    valid = isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds) and seconds >= 0
    if not valid:
        raise UsageError(
            f"durations file {path}: the duration of {node_id!r} is {seconds!r}, expected a non-negative"
            f" number of seconds. Correct or remove that entry."
        )
    return float(seconds)


def _add_duration(durations: dict[str, float], node_id: str, seconds: float) -> None:
    durations[node_id] = durations.get(node_id, 0.0) + seconds
