"""The command-manifest suite format: a folder with ``swarm.toml`` listing shell commands.

Example::

    [defaults]            # optional
    timeout = 600         # seconds, the default for every case
    env = { LANG = "C" }  # merged under each case's env

    [[case]]
    id = "unit"           # required, unique, non-empty
    cmd = "make test"     # a string runs as /bin/sh -c CMD; a list of strings is exec'd directly
    timeout = 120         # optional, seconds > 0
    env = { FOO = "bar" } # optional, string -> string

Cases are numbered from 1 in the order of their ``[[case]]`` tables, and every error
message names the case by that number and by its id.
"""

from __future__ import annotations

import json
import logging
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmctl.errors import ManifestError
from swarmctl.labels import label_value

logger = logging.getLogger(__name__)

MANIFEST_NAME = "swarm.toml"
DEFAULT_TIMEOUT = 600.0

TOP_LEVEL_KEYS = ("defaults", "case")
DEFAULTS_KEYS = ("timeout", "env")
CASE_KEYS = ("id", "cmd", "timeout", "env", "depends_on", "requires")


@dataclass(frozen=True)
class CommandCase:
    """One command of a command suite, with its defaults already applied."""

    id: str
    cmd: str | tuple[str, ...]  # a string runs as /bin/sh -c CMD; a tuple is the argv to exec
    timeout: float  # seconds
    # The defaults' env merged under the case's own env. It is a plain dict so that
    # copy and dataclasses.asdict work, and callers must treat it as read-only.
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    depends_on: tuple[str, ...] = ()  # ids of cases that must pass before this one runs
    requires: Mapping[str, str] = field(default_factory=dict, hash=False)  # labels its executor must have


@dataclass(frozen=True)
class Manifest:
    """The cases of a command suite, in file order."""

    cases: tuple[CommandCase, ...]


@dataclass(frozen=True)
class _Defaults:
    timeout: float = DEFAULT_TIMEOUT
    env: Mapping[str, str] = field(default_factory=dict)


def is_command_suite(folder: Path) -> bool:
    """Return whether ``folder`` contains a swarm.toml with at least one ``[[case]]`` table.

    A swarm.toml that is not valid TOML also counts, so that ``load_manifest`` reports
    the syntax error instead of the folder being run as a pytest suite.
    """
    path = Path(folder) / MANIFEST_NAME
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return path.is_file()
    return "case" in data


def load_manifest(folder: Path) -> Manifest:
    """Read and validate ``folder``/swarm.toml and return its cases.

    Raises ManifestError for a missing or unreadable file, a TOML syntax error and
    every invalid value. The message names the case, the value and the fix.
    """
    path = Path(folder) / MANIFEST_NAME
    data = _read_toml(path)
    where = str(path)

    _check_keys(where, "the top level", data, TOP_LEVEL_KEYS)
    defaults = _parse_defaults(where, data.get("defaults", {}))
    tables = _case_tables(where, data)

    cases: list[CommandCase] = []
    first_index_of_id: dict[str, int] = {}
    for index, table in enumerate(tables, start=1):
        case = _parse_case(where, index, table, defaults)
        if case.id in first_index_of_id:
            raise ManifestError(
                where,
                f"case #{index}: id {_format_value(case.id)} is already used by case "
                f"#{first_index_of_id[case.id]}: every case needs a unique id",
            )
        first_index_of_id[case.id] = index
        cases.append(case)

    logger.debug("loaded %d command cases from %s", len(cases), path)
    return Manifest(cases=tuple(cases))


def _read_toml(path: Path) -> dict[str, Any]:
    where = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            where, f"file not found: a command suite needs {MANIFEST_NAME} with at least one [[case]] table"
        ) from None
    except OSError as exc:
        raise ManifestError(where, f"failed to read: {exc.strerror}. Check the file's permissions") from exc

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(where, f"is not valid UTF-8 at byte {exc.start}: save the file as UTF-8") from exc

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)", which is the position to fix.
        raise ManifestError(where, f"invalid TOML: {exc}; fix the syntax at that position") from exc


def _check_keys(where: str, owner: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = [_format_value(key) for key in table if key not in allowed]
    if unknown:
        noun = "key" if len(unknown) == 1 else "keys"
        raise ManifestError(
            where,
            f"{owner}: unknown {noun} {', '.join(unknown)}: the allowed keys are {', '.join(allowed)}",
        )


def _parse_defaults(where: str, table: Any) -> _Defaults:
    if not isinstance(table, dict):
        raise ManifestError(
            where, f"defaults = {_format_value(table)} is invalid: it must be a table such as [defaults]"
        )
    _check_keys(where, "[defaults]", table, DEFAULTS_KEYS)

    timeout = DEFAULT_TIMEOUT
    if "timeout" in table:
        timeout = _parse_timeout(where, "[defaults]", table["timeout"])
    env = _parse_env(where, "[defaults]", table.get("env", {}))
    return _Defaults(timeout=timeout, env=env)


def _case_tables(where: str, data: Mapping[str, Any]) -> list[dict[str, Any]]:
    if "case" not in data:
        raise ManifestError(where, 'no [[case]] table: add at least one, e.g. [[case]] id = "unit" cmd = "make test"')
    tables = data["case"]
    if not isinstance(tables, list) or not tables:
        raise ManifestError(
            where,
            f"case = {_format_value(tables)} is invalid: cases must be [[case]] tables, at least one",
        )
    for index, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            raise ManifestError(
                where,
                f"case #{index} = {_format_value(table)} is invalid: each case must be a [[case]] table",
            )
    return tables


def _parse_case(where: str, index: int, table: Mapping[str, Any], defaults: _Defaults) -> CommandCase:
    case_id = _parse_id(where, index, table)
    label = f"case #{index} (id {_format_value(case_id)})"
    _check_keys(where, label, table, CASE_KEYS)

    cmd = _parse_cmd(where, label, table)
    timeout = defaults.timeout
    if "timeout" in table:
        timeout = _parse_timeout(where, label, table["timeout"])
    env = {**defaults.env, **_parse_env(where, label, table.get("env", {}))}
    depends_on = table.get("depends_on", [])
    if not isinstance(depends_on, list) or not all(isinstance(d, str) and d for d in depends_on):
        raise ManifestError(
            where,
            f"{label}: depends_on = {_format_value(depends_on)} is invalid: it must be a list of case ids, "
            'such as depends_on = ["build"]',
        )
    requires = _parse_requires(where, label, table.get("requires", {}))
    return CommandCase(id=case_id, cmd=cmd, timeout=timeout, env=env, depends_on=tuple(depends_on), requires=requires)


def _parse_requires(where: str, label: str, table: Any) -> dict[str, str]:
    valid = isinstance(table, dict) and all(
        isinstance(key, str) and key and isinstance(value, (str, bool, int)) for key, value in table.items()
    )
    if not valid:
        raise ManifestError(
            where,
            f"{label}: requires = {_format_value(table)} is invalid: it must be a table of executor labels, "
            'such as requires = { os = "linux", browser = "chromium" }',
        )
    return {key: label_value(value) for key, value in table.items()}


def _parse_id(where: str, index: int, table: Mapping[str, Any]) -> str:
    if "id" not in table:
        raise ManifestError(where, f'case #{index}: id is missing: add a unique id such as id = "unit"')
    case_id = table["id"]
    if not isinstance(case_id, str) or not case_id.strip():
        raise ManifestError(
            where,
            f"case #{index}: id = {_format_value(case_id)} is invalid: it must be a non-empty string",
        )
    return case_id


def _parse_cmd(where: str, label: str, table: Mapping[str, Any]) -> str | tuple[str, ...]:
    if "cmd" not in table:
        raise ManifestError(
            where,
            f'{label}: cmd is missing: add a shell command such as cmd = "make test" '
            'or an argv list such as cmd = ["make", "test"]',
        )
    cmd = table["cmd"]
    cmd_text = _format_value(cmd)

    if isinstance(cmd, str):
        if not cmd.strip():
            raise ManifestError(where, f"{label}: cmd = {cmd_text} is invalid: the shell command must not be empty")
        _reject_nul(where, label, "cmd", cmd)
        return cmd

    is_argv = isinstance(cmd, list) and all(isinstance(arg, str) for arg in cmd)
    if not is_argv or not cmd or not cmd[0]:
        raise ManifestError(
            where,
            f"{label}: cmd = {cmd_text} is invalid: it must be a string (run as /bin/sh -c CMD) "
            "or a non-empty list of strings whose first item is the program",
        )
    for arg in cmd:
        _reject_nul(where, label, "cmd", arg)
    return tuple(cmd)


def _parse_timeout(where: str, label: str, value: Any) -> float:
    # bool is a subclass of int, but `timeout = true` is a mistake, not one second.
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value <= 0:
        raise ManifestError(
            where,
            f"{label}: timeout = {_format_value(value)} is invalid: it must be a number of seconds > 0",
        )
    return float(value)


def _parse_env(where: str, label: str, env: Any) -> dict[str, str]:
    if not isinstance(env, dict):
        raise ManifestError(
            where,
            f'{label}: env = {_format_value(env)} is invalid: it must be a table such as env = {{ LANG = "C" }}',
        )
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            raise ManifestError(
                where,
                f"{label}: env name {_format_value(name)} is invalid: "
                "it must be non-empty and contain no '=' or NUL character",
            )
        if not isinstance(value, str):
            raise ManifestError(
                where,
                f"{label}: env {name} = {_format_value(value)} is invalid: it must be a string; "
                f"quote it: {name} = {_format_value(_format_value(value))}",
            )
        _reject_nul(where, label, f"env {name}", value)
    return dict(env)


def _reject_nul(where: str, label: str, key: str, text: str) -> None:
    # The operating system cannot pass a NUL character in an argument or an environment value.
    if "\0" in text:
        raise ManifestError(
            where,
            f"{label}: {key} = {_format_value(text)} is invalid: it must not contain a NUL character",
        )


def _format_value(value: Any) -> str:
    """Format a parsed value the way it would be written in TOML, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_format_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{key} = {_format_value(item)}" for key, item in value.items())
        return "{ " + items + " }" if items else "{}"
    return str(value)
