"""Tests for the swarm.toml command-manifest format."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmctl.errors import ManifestError, UsageError
from swarmctl.manifest import DEFAULT_TIMEOUT, CommandCase, is_command_suite, load_manifest


def write_manifest(folder: Path, text: str) -> Path:
    path = folder / "swarm.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(folder: Path, text: str):
    write_manifest(folder, text)
    return load_manifest(folder)


def manifest_error(folder: Path, text: str) -> str:
    write_manifest(folder, text)
    with pytest.raises(ManifestError) as info:
        load_manifest(folder)
    return str(info.value)


# is_command_suite


def test_suite_without_manifest(tmp_path: Path) -> None:
    assert not is_command_suite(tmp_path)


def test_suite_with_case_table(tmp_path: Path) -> None:
    write_manifest(tmp_path, '[[case]]\nid = "a"\ncmd = "true"\n')
    assert is_command_suite(tmp_path)


def test_suite_with_only_defaults(tmp_path: Path) -> None:
    write_manifest(tmp_path, "[defaults]\ntimeout = 5\n")
    assert not is_command_suite(tmp_path)


def test_suite_with_invalid_toml(tmp_path: Path) -> None:
    # Counted as a command suite so that load_manifest reports the syntax error.
    write_manifest(tmp_path, "[[case]\n")
    assert is_command_suite(tmp_path)


def test_suite_manifest_is_directory(tmp_path: Path) -> None:
    (tmp_path / "swarm.toml").mkdir()
    assert not is_command_suite(tmp_path)


# Valid manifests


def test_load_shell_command_defaults(tmp_path: Path) -> None:
    manifest = load_text(tmp_path, '[[case]]\nid = "unit"\ncmd = "make test"\n')

    assert manifest.cases == (CommandCase(id="unit", cmd="make test", timeout=DEFAULT_TIMEOUT, env={}),)
    assert DEFAULT_TIMEOUT == 600


def test_load_argv_command(tmp_path: Path) -> None:
    manifest = load_text(tmp_path, '[[case]]\nid = "unit"\ncmd = ["make", "test", ""]\n')

    assert manifest.cases[0].cmd == ("make", "test", "")


def test_load_keeps_file_order(tmp_path: Path) -> None:
    text = "".join(f'[[case]]\nid = "c{i}"\ncmd = "true"\n' for i in (3, 1, 2))
    manifest = load_text(tmp_path, text)

    assert [case.id for case in manifest.cases] == ["c3", "c1", "c2"]


def test_load_applies_defaults(tmp_path: Path) -> None:
    text = """
[defaults]
timeout = 30
env = { LANG = "C", SHARED = "default" }

[[case]]
id = "uses-defaults"
cmd = "true"

[[case]]
id = "overrides"
cmd = "true"
timeout = 1.5
env = { SHARED = "case", ONLY = "here" }
"""
    first, second = load_text(tmp_path, text).cases

    assert first.timeout == 30.0
    assert isinstance(first.timeout, float)
    assert first.env == {"LANG": "C", "SHARED": "default"}
    assert second.timeout == 1.5
    assert second.env == {"LANG": "C", "SHARED": "case", "ONLY": "here"}


def test_case_env_does_not_leak(tmp_path: Path) -> None:
    text = '[defaults]\nenv = { A = "1" }\n[[case]]\nid = "x"\ncmd = "true"\nenv = { B = "2" }\n[[case]]\nid = "y"\ncmd = "true"\n'
    first, second = load_text(tmp_path, text).cases

    assert first.env == {"A": "1", "B": "2"}
    assert second.env == {"A": "1"}


def test_command_case_is_hashable(tmp_path: Path) -> None:
    manifest = load_text(tmp_path, '[[case]]\nid = "a"\ncmd = ["true"]\nenv = { X = "1" }\n')

    assert len({manifest.cases[0], manifest.cases[0]}) == 1


@given(timeout=st.floats(min_value=1e-6, max_value=1e9) | st.integers(min_value=1, max_value=10**9))
def test_positive_timeouts_accepted(tmp_path_factory: pytest.TempPathFactory, timeout: float) -> None:
    folder = tmp_path_factory.mktemp("timeout")
    manifest = load_text(folder, f'[[case]]\nid = "a"\ncmd = "true"\ntimeout = {timeout!r}\n')

    assert manifest.cases[0].timeout == float(timeout)


# Invalid manifests


def test_error_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        load_manifest(tmp_path)

    assert isinstance(info.value, ManifestError)
    assert info.value.path == str(tmp_path / "swarm.toml")


def test_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)

    assert "file not found" in str(info.value)
    assert "[[case]]" in str(info.value)


def test_error_syntax_names_line(tmp_path: Path) -> None:
    message = manifest_error(tmp_path, '[[case]]\nid = "a"\ncmd = \n')

    assert "invalid TOML" in message
    assert "line 3" in message


def test_error_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "swarm.toml").write_bytes(b'[[case]]\nid = "\xff"\ncmd = "true"\n')
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)

    assert "UTF-8" in str(info.value)


def test_error_timeout_example_message(tmp_path: Path) -> None:
    text = "".join(f'[[case]]\nid = "{name}"\ncmd = "true"\n' for name in ("a", "b"))
    text += '[[case]]\nid = "x"\ncmd = "true"\ntimeout = -1\n'
    message = manifest_error(tmp_path, text)

    assert message.endswith('case #3 (id "x"): timeout = -1 is invalid: it must be a number of seconds > 0')
    assert message.startswith(str(tmp_path / "swarm.toml"))


@pytest.mark.parametrize(
    ("case_lines", "expected"),
    [
        ('id = "a"\ncmd = "true"\ntimeout = 0', 'case #1 (id "a"): timeout = 0 is invalid'),
        ('id = "a"\ncmd = "true"\ntimeout = true', "timeout = true is invalid"),
        ('id = "a"\ncmd = "true"\ntimeout = "10"', 'timeout = "10" is invalid'),
        ('id = "a"\ncmd = "true"\ntimeout = inf', "timeout = inf is invalid"),
        ('id = "a"\ncmd = "true"\ntimeout = nan', "timeout = nan is invalid"),
        ('cmd = "true"', "case #1: id is missing"),
        ('id = ""\ncmd = "true"', 'case #1: id = "" is invalid: it must be a non-empty string'),
        ('id = "  "\ncmd = "true"', 'id = "  " is invalid'),
        ('id = 7\ncmd = "true"', "id = 7 is invalid"),
        ('id = "a"', 'case #1 (id "a"): cmd is missing'),
        ('id = "a"\ncmd = ""', 'cmd = "" is invalid: the shell command must not be empty'),
        ('id = "a"\ncmd = []', "cmd = [] is invalid: it must be a string"),
        ('id = "a"\ncmd = ["make", 1]', 'cmd = ["make", 1] is invalid'),
        ('id = "a"\ncmd = ["", "x"]', "first item is the program"),
        ('id = "a"\ncmd = 5', "cmd = 5 is invalid"),
        ('id = "a"\ncmd = "echo \\u0000"', "NUL"),
        ('id = "a"\ncmd = "true"\nenv = "FOO=1"', 'env = "FOO=1" is invalid: it must be a table'),
        ('id = "a"\ncmd = "true"\nenv = { FOO = 1 }', 'env FOO = 1 is invalid: it must be a string; quote it: FOO = "1"'),
        ('id = "a"\ncmd = "true"\nenv = { "A=B" = "1" }', 'env name "A=B" is invalid'),
        ('id = "a"\ncmd = "true"\nenv = { "" = "1" }', 'env name "" is invalid'),
        (
            'id = "a"\ncmd = "true"\ntimout = 5',
            'case #1 (id "a"): unknown key "timout": the allowed keys are id, cmd, timeout, env',
        ),
        ('id = "a"\ncmd = "true"\nx = 1\ny = 2', 'unknown keys "x", "y"'),
    ],
)
def test_error_invalid_case(tmp_path: Path, case_lines: str, expected: str) -> None:
    message = manifest_error(tmp_path, f"[[case]]\n{case_lines}\n")

    assert expected in message


def test_error_duplicate_id(tmp_path: Path) -> None:
    text = '[[case]]\nid = "a"\ncmd = "true"\n[[case]]\nid = "b"\ncmd = "true"\n[[case]]\nid = "a"\ncmd = "false"\n'
    message = manifest_error(tmp_path, text)

    assert 'case #3: id "a" is already used by case #1' in message
    assert "unique" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no [[case]] table"),
        ("[defaults]\ntimeout = 5\n", "no [[case]] table"),
        ("case = []\n", "case = [] is invalid"),
        ("case = 1\n", "case = 1 is invalid"),
        ('case = [1]\n', "case #1 = 1 is invalid: each case must be a [[case]] table"),
        ('[cases]\nid = "a"\n', 'the top level: unknown key "cases": the allowed keys are defaults, case'),
        ('defaults = 5\n[[case]]\nid = "a"\ncmd = "true"\n', "defaults = 5 is invalid"),
        ('[defaults]\ntimeout = -2\n[[case]]\nid = "a"\ncmd = "true"\n', "[defaults]: timeout = -2 is invalid"),
        ('[defaults]\nretries = 2\n[[case]]\nid = "a"\ncmd = "true"\n', '[defaults]: unknown key "retries"'),
        ('[defaults]\nenv = { X = false }\n[[case]]\nid = "a"\ncmd = "true"\n', "[defaults]: env X = false is invalid"),
    ],
)
def test_error_invalid_file(tmp_path: Path, text: str, expected: str) -> None:
    message = manifest_error(tmp_path, text)

    assert expected in message


@given(timeout=st.floats(max_value=0, allow_nan=False) | st.integers(max_value=0))
def test_nonpositive_timeouts_rejected(tmp_path_factory: pytest.TempPathFactory, timeout: float) -> None:
    folder = tmp_path_factory.mktemp("timeout")
    literal = "-inf" if timeout == -math.inf else repr(timeout)
    write_manifest(folder, f'[[case]]\nid = "a"\ncmd = "true"\ntimeout = {literal}\n')

    with pytest.raises(ManifestError, match="must be a number of seconds > 0"):
        load_manifest(folder)


def test_load_requires_labels(tmp_path: Path) -> None:
    manifest = load_text(
        tmp_path,
        '[[case]]\nid = "ui"\ncmd = "true"\nrequires = { os = "linux", browser = "chromium", gpu = true, cores = 8 }\n',
    )

    assert dict(manifest.cases[0].requires) == {"os": "linux", "browser": "chromium", "gpu": "true", "cores": "8"}


@pytest.mark.parametrize("value", ['"linux"', '["os"]', '{ os = ["linux"] }', '{ os = 1.5 }'])
def test_load_requires_invalid(tmp_path: Path, value: str) -> None:
    message = manifest_error(tmp_path, f'[[case]]\nid = "ui"\ncmd = "true"\nrequires = {value}\n')

    assert 'case #1 (id "ui"): requires = ' in message
    assert "must be a table of executor labels" in message
