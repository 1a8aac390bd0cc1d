"""Tests for the command runner, driven by the hard command cases and by small commands of its own.

The hard cases live in ``cases/command/`` next to the repository. Each test copies its case
folder, so a command never writes into the read-only original.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from swarmctl.executor.runners import command as command_module
from swarmctl.executor.runners.command import CASE_TOKEN_VARIABLE, run_command_case
from swarmctl.manifest import CommandCase
from swarmctl.results import FAILED, PASSED, TIMED_OUT, CaseResult

CASES_ROOT = Path(__file__).resolve().parents[3] / "shared" / "cases" / "command"

# Time allowed for a process that got SIGKILL to exit before a test calls it leaked.
EXIT_WAIT_S = 5.0


@dataclass(frozen=True)
class HardCase:
    """One manifest entry of a hard command case, with the result it must have."""

    folder: Path
    name: str
    cmd: str
    timeout_s: float
    expected: dict[str, Any]

    @property
    def test_id(self) -> str:
        return f"{self.folder.name}/{self.name}"


def load_hard_cases() -> list[HardCase]:
    hard_cases = []
    for folder in sorted(CASES_ROOT.glob("*/")):
        manifest = json.loads((folder / "manifest.json").read_text())
        expected = json.loads((folder / "expected.json").read_text())["expected"]["results_in_manifest_order"]
        for entry, entry_expected in zip(manifest, expected, strict=True):
            assert entry["name"] == entry_expected["name"]
            hard_cases.append(
                HardCase(folder, entry["name"], entry["cmd"], float(entry["timeout_s"]), entry_expected)
            )
    return hard_cases


HARD_CASES = load_hard_cases()


def copy_case_folder(source: Path, destination: Path) -> Path:
    """Copy the files of ``source`` with their mode bits into a new writable folder."""
    target = destination / source.name
    target.mkdir()
    for path in source.iterdir():
        shutil.copy(path, target / path.name)
    return target


def processes_in(folder: Path) -> list[psutil.Process]:
    """Return the live processes whose working directory is ``folder`` or a folder inside it."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and Path(process.cwd()).is_relative_to(folder):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


async def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` has exited, and return whether it did within ``timeout`` seconds."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        with trio.move_on_after(timeout):
            await trio.lowlevel.wait_readable(pidfd)
            return True
        return False
    finally:
        os.close(pidfd)


async def leaked_processes(folder: Path) -> list[str]:
    """Return the processes still running in ``folder`` after a short wait, as 'pid cmdline'."""
    leaked = []
    for process in processes_in(folder):
        if not await wait_for_exit(process.pid, EXIT_WAIT_S):
            leaked.append(f"{process.pid} {' '.join(process.cmdline())}")
    return leaked


@pytest.fixture
def suite_folder(tmp_path: Path):
    """Create a working folder for one test, and send SIGKILL to whatever still runs there afterwards."""
    folder = tmp_path / "suite"
    folder.mkdir()
    yield folder
    for process in processes_in(folder):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def printed_pid(stdout: str) -> int:
    match = re.fullmatch(r"bg_pid=(\d{10})\n", stdout)
    assert match, f"stdout is not one bg_pid line: {stdout!r}"
    return int(match.group(1))


# Checks of the properties that expected.json lists beyond outcome, status and duration.


def check_exit_codes(name: str, result: CaseResult, suite: Path) -> None:
    if name == "exit_139_is_not_a_signal":
        assert result.message == "exited with code 139"
    if name == "command_not_found_127":
        assert result.message.startswith("exited with code 127: ")
        assert "not found" in result.message
    if name == "not_executable_126":
        assert result.message.startswith("exited with code 126: ")
        assert "Permission denied" in result.message
    if name == "stderr_noise_but_exit_0":
        assert result.stdout == "FAILED\n"
        assert "ERROR: this is only a log line" in result.stderr


def check_signals(name: str, result: CaseResult, suite: Path) -> None:
    if result.signal is not None:
        number = {"SIGSEGV": 11, "SIGABRT": 6, "SIGKILL": 9, "SIGTERM": 15, "SIGINT": 2, "SIGPIPE": 13}[result.signal]
        assert result.message == f"killed by signal {result.signal} ({number})"
    if name == "pipeline_reader_exits_early":
        assert result.stdout == "y\ny\ny\n"
    if name == "shell_reports_child_signal_as_exit_code":
        assert "Segmentation fault" in result.stderr
        assert result.message.startswith("exited with code 139")


def check_timeouts(name: str, result: CaseResult, suite: Path) -> None:
    if result.outcome == TIMED_OUT:
        assert result.message.startswith("timed out after 2 s: sent SIGTERM to the process group")
    if name == "ignores_sigterm":
        assert "then SIGKILL" in result.message
        assert result.signal == "SIGKILL"
    if name == "sleep_past_timeout":
        assert result.signal == "SIGTERM"
    if name == "output_then_hang":
        assert result.stdout == "partial-output-before-hang\n"
    if name == "background_children_past_timeout":
        commands = [" ".join(process.cmdline()) for process in processes_in(suite)]
        assert "sleep 31" not in commands
        assert "sleep 32" not in commands


def check_large_output(name: str, result: CaseResult, suite: Path) -> None:
    cap = 1_000_000
    if name == "stdout_50mb_single_line":
        assert result.stdout == "x" * (cap // 2) + f"\n[... {52428800 - cap} bytes truncated by swarmctl ...]\n" + "x" * (cap // 2)
        assert result.stderr == ""
    if name == "stderr_50mb_lines":
        assert f"\n[... {52428800 - cap} bytes truncated by swarmctl ...]\n" in result.stderr
        assert result.stderr.startswith("eeee")
        assert result.stdout == ""
    if name == "interleaved_400k_lines":
        assert result.stdout.startswith("out0\nout1\n")
        assert result.stdout.endswith("out199999\n")
        assert result.stderr.endswith("err199999\n")
        assert f"[... {1888890 - cap} bytes truncated by swarmctl ...]" in result.stdout
    if name == "10mb_then_exit_4":
        assert result.message == "exited with code 4"
        assert f"[... {10485760 - cap} bytes truncated by swarmctl ...]" in result.stdout


async def check_daemon_holds_output(name: str, result: CaseResult, suite: Path) -> None:
    background_pid = printed_pid(result.stdout)

    assert await wait_for_exit(background_pid, EXIT_WAIT_S), f"background pid {background_pid} still runs"
    assert f"[swarmctl warning: killed process {background_pid} (" in result.stderr
    assert "leftover process(es)" in result.message
    if name == "grandchild_keeps_output_then_exit_5":
        assert result.message.startswith("exited with code 5; ")


PROPERTY_CHECKS = {
    "001_exit_codes": check_exit_codes,
    "002_signals": check_signals,
    "003_timeouts": check_timeouts,
    "004_large_output": check_large_output,
}


@pytest.mark.parametrize("hard_case", HARD_CASES, ids=[hard_case.test_id for hard_case in HARD_CASES])
async def test_hard_case(hard_case: HardCase, suite_folder: Path) -> None:
    suite = copy_case_folder(hard_case.folder, suite_folder)
    case = CommandCase(id=hard_case.name, cmd=hard_case.cmd, timeout=hard_case.timeout_s, env={})
    expected = hard_case.expected
    before = time.time()

    result = await run_command_case(case, suite, executor="executor-1", attempt=2)

    assert result.case_id == hard_case.name
    assert result.outcome == expected["outcome"]
    if "exit_code" in expected:
        assert result.exit_code == expected["exit_code"]
        assert result.signal is None
    if "signal" in expected:
        assert result.signal == expected["signal"]
        assert result.exit_code is None
    assert result.duration <= expected["max_duration_s"]
    assert result.executor == "executor-1"
    assert result.attempt == 2
    assert result.when == "call"
    assert before <= result.started_at <= time.time()

    if hard_case.folder.name == "006_daemon_holds_output":
        await check_daemon_holds_output(hard_case.name, result, suite)
    else:
        PROPERTY_CHECKS[hard_case.folder.name](hard_case.name, result, suite)
    assert await leaked_processes(suite) == []


def test_hard_cases_found() -> None:
    assert {hard_case.folder.name for hard_case in HARD_CASES} >= {
        "001_exit_codes",
        "002_signals",
        "003_timeouts",
        "004_large_output",
        "006_daemon_holds_output",
    }


def test_copy_keeps_file_without_execute_bit(tmp_path: Path) -> None:
    suite = copy_case_folder(CASES_ROOT / "001_exit_codes", tmp_path)
    mode = (suite / "not_executable.sh").stat().st_mode

    assert mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) == 0


# Behaviour beyond the hard cases


async def run(cmd: str | tuple[str, ...], folder: Path, *, timeout: float = 10, env=None, **options):
    case = CommandCase(id="case", cmd=cmd, timeout=timeout, env=env or {})
    return await run_command_case(case, folder, **options)


async def test_output_cap_keeps_head_and_tail(suite_folder: Path) -> None:
    result = await run("printf 'abcdefghij0123456789'", suite_folder, output_cap=8)

    assert result.stdout == "abcd\n[... 12 bytes truncated by swarmctl ...]\n6789"


async def test_output_at_cap_not_truncated(suite_folder: Path) -> None:
    result = await run("printf '12345678'", suite_folder, output_cap=8)

    assert result.stdout == "12345678"


async def test_output_invalid_utf8_replaced(suite_folder: Path) -> None:
    result = await run(r"printf 'ok \377\n'", suite_folder)

    assert result.stdout == "ok \ufffd\n"


async def test_argv_command_runs_without_shell(suite_folder: Path) -> None:
    result = await run(("printf", "%s|", "$HOME", "a b"), suite_folder)

    assert result.outcome == PASSED
    assert result.stdout == "$HOME|a b|"


async def test_environment_and_stdin(suite_folder: Path) -> None:
    command = f'printf "%s %s %s " "$FROM_CASE" "$PATH" "${{{CASE_TOKEN_VARIABLE}:+token}}"; cat; pwd'
    result = await run(command, suite_folder, env={"FROM_CASE": "yes"})

    assert result.outcome == PASSED
    assert result.stdout == f"yes {os.environ['PATH']} token {suite_folder}\n"


async def test_missing_program_fails_to_start(suite_folder: Path) -> None:
    result = await run(("/nonexistent/program",), suite_folder)

    assert result.outcome == FAILED
    assert result.exit_code is None
    assert result.message.startswith("failed to start: ")
    assert "/nonexistent/program" in result.message


async def test_exit_message_uses_last_stderr_line(suite_folder: Path) -> None:
    result = await run("echo first >&2; echo '  last line  ' >&2; echo >&2; exit 3", suite_folder)

    assert result.message == "exited with code 3: last line"


async def test_group_member_ignoring_sigterm_gets_sigkill(suite_folder: Path) -> None:
    # The shell dies on SIGTERM at once, but its background child ignores it.
    command = "(trap '' TERM; exec sleep 40) & wait"
    result = await run(command, suite_folder, timeout=0.5, kill_grace=0.5)

    assert result.outcome == TIMED_OUT
    assert result.signal == "SIGTERM"
    assert "then SIGKILL" in result.message
    assert result.duration < 5
    assert await leaked_processes(suite_folder) == []


async def test_cancellation_kills_process_group(suite_folder: Path) -> None:
    command = "sleep 40 & setsid sleep 41 & sleep 42"
    started = trio.current_time()

    with trio.move_on_after(0.5) as scope:
        await run(command, suite_folder)

    assert scope.cancelled_caught
    assert trio.current_time() - started < 5
    assert await leaked_processes(suite_folder) == []


async def test_invalid_output_cap_rejected(suite_folder: Path) -> None:
    with pytest.raises(ValueError, match="output_cap"):
        await run("true", suite_folder, output_cap=-1)


async def test_leftover_that_left_the_group_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process found in the case's group that calls setsid before the group's SIGKILL still gets one."""
    group = subprocess.Popen(["sleep", "60"], start_new_session=True)  # the case's process group
    escaped = subprocess.Popen(["sleep", "60"], start_new_session=True)  # was in it when found
    try:
        found = command_module._Leftover(psutil.Process(escaped.pid), "sleep 60", in_group=True)
        monkeypatch.setattr(command_module, "_find_leftovers", lambda pgid, token, started_at: [found])

        command_module._kill_leftovers(os.getpgid(group.pid), "token", time.time())

        assert await wait_for_exit(escaped.pid, EXIT_WAIT_S), "the process that left the group still runs"
        assert await wait_for_exit(group.pid, EXIT_WAIT_S)
    finally:
        for process in (group, escaped):
            process.kill()
            process.wait()
