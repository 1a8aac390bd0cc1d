"""Run one case of a command suite and report its CaseResult.

The command runs in a session and process group of its own, so that a timeout or a
cancellation can signal everything it started. The outcome is decided when the command's
process exits. Its stdout and stderr go to temporary files, not pipes, for two reasons.
A background grandchild can hold a pipe open for minutes after the command exits, so
waiting for EOF would wait for it. A pipe that is not drained also blocks a command that
writes more than the pipe buffer.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil
import trio

from swarmctl.executor import processes
from swarmctl.manifest import CommandCase
from swarmctl.results import FAILED, PASSED, TIMED_OUT, CaseResult

logger = logging.getLogger(__name__)

# Every command gets this variable with a random value, so that processes which left its
# process group (setsid, double fork) can still be found through their environment.
CASE_TOKEN_VARIABLE = "SWARMCTL_CASE_TOKEN"

# An exec resets caught signals to their default action but keeps ignored ones, and
# Popen's restore_signals resets only SIGPIPE, SIGXFZ and SIGXFSZ. An executor started
# with nohup or as a background job of a non-interactive shell ignores these signals, and
# without a reset every command it runs would ignore them too.
_SIGNALS_TO_RESET = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)

# Processes started this many seconds before the case are not its leftovers. The margin
# covers the difference between time.time() and psutil's create_time, which the kernel
# reports in clock ticks.
_CREATE_TIME_MARGIN = 1.0

_MAX_MESSAGE_LINE = 300


@dataclass(frozen=True)
class _Leftover:
    """A process of the case that was still running after the command exited."""

    process: psutil.Process
    cmdline: str
    in_group: bool


async def run_command_case(
    case: CommandCase,
    cwd: Path,
    *,
    executor: str = "",
    attempt: int = 1,
    output_cap: int = 1_000_000,
    kill_grace: float = 2.0,
) -> CaseResult:
    """Run ``case`` with ``cwd`` as working directory and return its result.

    ``output_cap`` is the maximum number of bytes kept per stream. ``kill_grace`` is the
    number of seconds between SIGTERM and SIGKILL when the case times out. If the calling
    task is cancelled, the process group gets SIGKILL and the cancellation propagates.
    """
    if output_cap < 0:
        raise ValueError(f"output_cap = {output_cap} is invalid: it must be a number of bytes >= 0")
    if not kill_grace >= 0:
        raise ValueError(f"kill_grace = {kill_grace} is invalid: it must be a number of seconds >= 0")

    token = secrets.token_hex(16)
    started_at = time.time()
    start = trio.current_time()
    argv = _argv(case.cmd)

    # NOTE: output_cap limits what is kept, not what is written, so a command can still fill
    # the disk of the temporary directory.
    with tempfile.TemporaryFile() as stdout_file, tempfile.TemporaryFile() as stderr_file:
        try:
            process = await _start(argv, case, cwd, token, stdout_file, stderr_file)
        except OSError as exc:
            logger.warning("case %s: failed to start %r: %s", case.id, argv, exc)
            return CaseResult(
                case_id=case.id,
                outcome=FAILED,
                duration=trio.current_time() - start,
                executor=executor,
                attempt=attempt,
                message=f"failed to start: {exc}",
                started_at=started_at,
            )

        try:
            killed_with = await _wait_for_exit(process, case, kill_grace, started_at)
        except BaseException:
            await _kill_after_interruption(process, token, started_at, kill_grace)
            raise
        duration = trio.current_time() - start

        processes.untrack(process.pid)
        leftovers = await trio.to_thread.run_sync(_kill_leftovers, process.pid, token, started_at)
        # Wait for the killed leftovers to end. Those re-parented to this executor (it is a
        # child subreaper) are its children, and waiting for them collects their exit status.
        await trio.to_thread.run_sync(
            functools.partial(psutil.wait_procs, [leftover.process for leftover in leftovers], timeout=kill_grace)
        )
        await trio.to_thread.run_sync(functools.partial(processes.kill_orphans, kill=False))
        stdout = await trio.to_thread.run_sync(_read_capped, stdout_file, output_cap)
        stderr = await trio.to_thread.run_sync(_read_capped, stderr_file, output_cap)

    return _build_result(
        case,
        process.returncode,
        killed_with=killed_with,
        kill_grace=kill_grace,
        leftovers=leftovers,
        stdout=stdout,
        stderr=stderr,
        duration=duration,
        executor=executor,
        attempt=attempt,
        started_at=started_at,
    )


def _argv(cmd: str | tuple[str, ...]) -> list[str]:
    if isinstance(cmd, str):
        return ["/bin/sh", "-c", cmd]
    return list(cmd)


async def _start(
    argv: list[str], case: CommandCase, cwd: Path, token: str, stdout_file: IO[bytes], stderr_file: IO[bytes]
) -> trio.Process:
    env = {**os.environ, **case.env, CASE_TOKEN_VARIABLE: token}
    process = await trio.lowlevel.open_process(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout_file,
        stderr=stderr_file,
        start_new_session=True,
        preexec_fn=_signal_reset_hook(),
    )
    processes.track(process.pid)
    logger.debug("case %s: started pid %d: %r", case.id, process.pid, argv)
    return process


def _signal_reset_hook() -> Callable[[], None] | None:
    """Return a preexec_fn that resets ignored signals to their default, or None if none is ignored.

    The hook is used only when needed because Popen runs in a worker thread here, and a
    preexec_fn after fork in a threaded program can deadlock on a lock that another thread held.
    """
    ignored = [sig for sig in _SIGNALS_TO_RESET if signal.getsignal(sig) == signal.SIG_IGN]
    if not ignored:
        return None

    def reset_signals() -> None:
        for sig in ignored:
            signal.signal(sig, signal.SIG_DFL)

    return reset_signals


async def _wait_for_exit(process: trio.Process, case: CommandCase, kill_grace: float, started_at: float) -> str | None:
    """Wait until the command exits, and return the signal sent to end it after a timeout.

    Returns None when the command exited within its time limit.
    """
    with trio.move_on_after(case.timeout):
        await process.wait()
        return None

    logger.info("case %s: timed out after %g s, sending SIGTERM to process group %d", case.id, case.timeout, process.pid)
    _signal_group(process.pid, signal.SIGTERM)
    grace_deadline = trio.current_time() + kill_grace
    with trio.move_on_at(grace_deadline):
        await process.wait()

    if process.returncode is not None:
        # The shell is gone, but a process of its group may ignore SIGTERM. Without a
        # notification for "group empty", the remaining members get the rest of the grace.
        if not await _group_has_members(process.pid, started_at):
            return "SIGTERM"
        await trio.sleep_until(grace_deadline)
        if not await _group_has_members(process.pid, started_at):
            return "SIGTERM"

    logger.info("case %s: still running %g s after SIGTERM, sending SIGKILL", case.id, kill_grace)
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()
    return "SIGKILL"


async def _kill_after_interruption(process: trio.Process, token: str, started_at: float, kill_grace: float) -> None:
    """Kill everything the command started, after the waiting task was cancelled or failed."""
    with trio.CancelScope(shield=True):
        logger.info("interrupted while pid %d was running, sending SIGKILL to its process group", process.pid)
        _signal_group(process.pid, signal.SIGKILL)
        # SIGKILL cannot be caught, so the shell exits at once unless the kernel keeps it
        # in an uninterruptible sleep. The limit keeps a cancellation from hanging on that.
        with trio.move_on_after(max(kill_grace, 1.0)):
            await process.wait()
        await trio.to_thread.run_sync(_kill_leftovers, process.pid, token, started_at)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # every process of the group has exited
    except PermissionError as exc:
        # kill(2) fails with EPERM only if no member could be signalled, e.g. all changed their user id.
        logger.warning("cannot send %s to process group %d: %s", sig.name, pgid, exc)


async def _group_has_members(pgid: int, started_at: float) -> bool:
    leftovers = await trio.to_thread.run_sync(_find_leftovers, pgid, None, started_at)
    return any(leftover.in_group for leftover in leftovers)


def _find_leftovers(pgid: int, token: str | None, started_at: float) -> list[_Leftover]:
    """Find the live processes in group ``pgid`` and, if ``token`` is given, those carrying it.

    A process that left the group and also cleared or replaced its environment
    (``env -i``) is not found.
    """
    found: list[_Leftover] = []
    for process in psutil.process_iter():
        try:
            leftover = _match_leftover(process, pgid, token, started_at)
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, PermissionError):
            continue
        if leftover is not None:
            found.append(leftover)
    return found


def _match_leftover(process: psutil.Process, pgid: int, token: str | None, started_at: float) -> _Leftover | None:
    if process.pid == os.getpid() or process.create_time() < started_at - _CREATE_TIME_MARGIN:
        return None
    if process.status() == psutil.STATUS_ZOMBIE:
        return None  # already dead; its parent or init only has to reap it

    in_group = os.getpgid(process.pid) == pgid
    if not in_group:
        if token is None or process.environ().get(CASE_TOKEN_VARIABLE) != token:
            return None
    cmdline = " ".join(process.cmdline()) or process.name()
    return _Leftover(process=process, cmdline=cmdline, in_group=in_group)


def _kill_leftovers(pgid: int, token: str, started_at: float) -> list[_Leftover]:
    """Send SIGKILL to what the command left running and return what was found.

    The result is already decided, so leftovers get no grace period. The group is
    signalled as a whole, which also reaches processes forked after the search.
    """
    leftovers = _find_leftovers(pgid, token, started_at)
    _signal_group(pgid, signal.SIGKILL)
    for leftover in leftovers:
        # Each one found is signalled on its own too: one found in the group may have left
        # it (setsid) between the search and the group's signal.
        try:
            # psutil checks the creation time first, so a reused pid is not killed.
            leftover.process.kill()
        except psutil.NoSuchProcess as exc:
            if not leftover.in_group:  # the group's signal may have ended it already
                logger.warning("cannot kill leftover pid %d: %s", leftover.process.pid, exc)
        except psutil.AccessDenied as exc:
            logger.warning("cannot kill leftover pid %d: %s", leftover.process.pid, exc)

    for leftover in leftovers:
        logger.warning("killed leftover pid %d (%s) of process group %d", leftover.process.pid, leftover.cmdline, pgid)
    return leftovers


def _read_capped(file: IO[bytes], cap: int) -> str:
    """Read a captured stream, keeping the first and the last ``cap // 2`` bytes of a longer one.

    pread leaves the shared file offset alone, which matters if an escaped process still
    writes to the file.
    """
    fd = file.fileno()
    size = os.fstat(fd).st_size
    if size <= cap:
        return _pread_exactly(fd, size, 0).decode("utf-8", errors="replace")

    head_size = cap // 2
    tail_size = cap - head_size
    head = _pread_exactly(fd, head_size, 0).decode("utf-8", errors="replace")
    tail = _pread_exactly(fd, tail_size, size - tail_size).decode("utf-8", errors="replace")
    marker = f"\n[... {size - cap} bytes truncated by swarmctl ...]\n"
    return head + marker + tail


def _pread_exactly(fd: int, size: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break  # the file was truncated while being read
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _build_result(
    case: CommandCase,
    returncode: int,
    *,
    killed_with: str | None,
    kill_grace: float,
    leftovers: list[_Leftover],
    stdout: str,
    stderr: str,
    duration: float,
    executor: str,
    attempt: int,
    started_at: float,
) -> CaseResult:
    exit_code, signal_name = _decode_returncode(returncode)

    if killed_with is not None:
        outcome = TIMED_OUT
        message = _timeout_message(case.timeout, killed_with, kill_grace)
    elif returncode == 0:
        outcome = PASSED
        message = ""
    else:
        outcome = FAILED
        message = _failure_message(returncode, stderr)

    if leftovers:
        stderr = _append_leftover_warnings(stderr, leftovers)
        note = f"killed {len(leftovers)} leftover process(es) after the command exited, listed at the end of stderr"
        message = f"{message}; {note}" if message else note

    return CaseResult(
        case_id=case.id,
        outcome=outcome,
        duration=duration,
        executor=executor,
        attempt=attempt,
        when="call",
        message=message,
        stdout=stdout,
        stderr=stderr,
        exit_code=exit_code,
        signal=signal_name,
        started_at=started_at,
        warnings=tuple(f"killed leftover process pid {leftover.process.pid}: {leftover.cmdline}" for leftover in leftovers),
    )


def _decode_returncode(returncode: int) -> tuple[int | None, str | None]:
    """Split a Popen return code into an exit code or a signal name.

    A shell reports a child killed by signal N as exit code 128 + N. That is an exit
    code here, because the command itself exited.
    """
    if returncode < 0:
        return None, _signal_name(-returncode)
    return returncode, None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        pass
    if signal.SIGRTMIN < number < signal.SIGRTMAX:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}"
    return f"signal {number}"


def _timeout_message(timeout: float, killed_with: str, kill_grace: float) -> str:
    message = f"timed out after {timeout:g} s: sent SIGTERM to the process group"
    if killed_with == "SIGKILL":
        message += f", then SIGKILL because it was still running {kill_grace:g} s later"
    return message


def _failure_message(returncode: int, stderr: str) -> str:
    if returncode < 0:
        return f"killed by signal {_signal_name(-returncode)} ({-returncode})"

    message = f"exited with code {returncode}"
    last_line = _last_nonempty_line(stderr)
    if last_line:
        message += f": {last_line}"
    return message


def _last_nonempty_line(text: str) -> str:
    # Only the tail is searched, so a 1 MB stderr without line breaks is not split whole.
    for line in reversed(text[-4 * _MAX_MESSAGE_LINE :].splitlines()):
        line = line.strip()
        if line:
            return line[:_MAX_MESSAGE_LINE]
    return ""


def _append_leftover_warnings(stderr: str, leftovers: list[_Leftover]) -> str:
    lines = [stderr]
    if stderr and not stderr.endswith("\n"):
        lines.append("\n")
    for leftover in leftovers:
        place = "in the command's process group" if leftover.in_group else "outside the command's process group"
        lines.append(
            f"[swarmctl warning: killed process {leftover.process.pid} ({leftover.cmdline}), "
            f"which was still running {place} after the command exited]\n"
        )
    return "".join(lines)
