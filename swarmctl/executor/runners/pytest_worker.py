"""The warm pytest worker: runs inside the suite's own interpreter, standard library only.

The executor starts this file as
``PYTHON -c SOURCE --events-fd W --commands-fd R --output-cap N [--bytecode-dir DIR] -- ARGS``
with the suite folder as working directory. It runs ``pytest.main(ARGS)`` with a plugin that
replaces pytest's run loop: after collection it sends the collected node ids, then runs the
node ids it receives, one batch at a time, until told to stop. Each message is one line of
JSON on a pipe of its own, so nothing a test prints can be mistaken for a message.

Events sent (worker -> executor):
    {"op": "collected", "ids": [...], "collect_results": [...], "deselected": N}
    {"op": "start", "id": NODEID, "log_offset": N, "timeout": SECONDS or null}
    {"op": "output", "id": NODEID, "stream": "stdout" or "stderr", "text": TEXT}   while it runs
    {"op": "result", "result": {...}}            fields of swarmctl.results.CaseResult
    {"op": "released", "ids": [...]}     answers a release at once, so an idle slot can start
    {"op": "batch_done", "released": [...]}
Commands received (executor -> worker):
    {"op": "run", "ids": [...]}
    {"op": "release", "count": N}      give back the last N tests of the batch not yet started
    {"op": "stop"}

The executor decides that a test finished when its result arrives or the worker exits,
never when this pipe reaches end-of-file: a test that forks keeps the pipe open in the child.
"""

import codecs
import faulthandler
import io
import json
import os
import select
import signal
import sys
import threading
import time

_STACK_DUMP_FILE = None  # kept referenced: faulthandler holds only its file descriptor

TRUNCATION_MARKER = "\n[... {} characters truncated by swarmctl ...]\n"
PARENT_CHECK_INTERVAL_S = 0.5
OUTPUT_POLL_INTERVAL_S = 0.5  # how often a running test's captured output is sent
LIVE_CAP_MARKER = "\n[... live output stopped after {} characters; the result keeps the start and the end ...]\n"


def truncate_middle(text, cap):
    """Keep the start and the end of ``text`` within ``cap`` characters, marking the cut."""
    if len(text) <= cap:
        return text
    half = cap // 2
    return text[:half] + TRUNCATION_MARKER.format(len(text) - 2 * half) + text[-half:]


class Channel:
    """JSON lines over two pipes."""

    def __init__(self, events_fd, commands_fd):
        self._events = os.fdopen(events_fd, "wb", buffering=0)
        self._commands_fd = commands_fd
        self._buffer = b""
        self._send_lock = threading.Lock()  # the output tail thread sends too

    def send(self, message):
        data = (json.dumps(message, ensure_ascii=True) + "\n").encode("ascii")
        with self._send_lock:
            view = memoryview(data)
            while view:
                written = self._events.write(view)
                view = view[written:]

    def receive(self):
        """Wait for the next command; the executor closing the pipe means stop."""
        while b"\n" not in self._buffer:
            chunk = os.read(self._commands_fd, 65536)
            if not chunk:
                return {"op": "stop"}
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def poll(self):
        """Return a command that has already arrived, or None without waiting."""
        if b"\n" not in self._buffer and select.select([self._commands_fd], [], [], 0)[0]:
            chunk = os.read(self._commands_fd, 65536)
            if not chunk:
                return None  # closed: the next receive() reports the stop
            self._buffer += chunk
        if b"\n" not in self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)


def short_message(report):
    """One line that says why a test did not pass, as pytest's short summary does."""
    if hasattr(report, "wasxfail") and report.wasxfail:
        return report.wasxfail
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return crash.message.splitlines()[0] if crash.message else ""
    lines = [line for line in str(longrepr).splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def longrepr_text(report):
    if report.longrepr is None:
        return ""
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        path, lineno, reason = report.longrepr
        return f"{path}:{lineno}: {reason}"
    # longreprtext strips the whole text, which takes the blank line pytest prints after the
    # section header and the indent of the first source line. Render it as pytest's terminal
    # reporter does, and keep the stripped form only if that is not possible.
    text = terminal_text(report)
    if text is not None:
        return text
    text = report.longreprtext
    indent = first_line_indent(report.longrepr)
    return indent + text if indent and not text.startswith(indent) else text


def terminal_text(report):
    """Return the failure text exactly as pytest's terminal shows it, without colours, or None."""
    try:
        from _pytest._io import TerminalWriter  # noqa: PLC0415  (pytest's own writer; private, so optional)
    except ImportError:
        return None
    buffer = io.StringIO()
    writer = TerminalWriter(buffer)
    writer.hasmarkup = False
    try:
        report.longrepr.toterminal(writer)
    except Exception:  # noqa: BLE001  (a longrepr of a plugin's own type may not support it)
        return None
    return buffer.getvalue().rstrip()


def first_line_indent(longrepr):
    chain = getattr(longrepr, "chain", None)
    traceback = chain[0][0] if chain else getattr(longrepr, "reprtraceback", None)
    try:
        first = traceback.reprentries[0].lines[0]
    except (AttributeError, IndexError, TypeError):
        return ""
    return first[: len(first) - len(first.lstrip())]


class OutputTail:
    """Send what the running test has written to its captured stdout and stderr, while it runs.

    With pytest's default capture (``--capture=fd``), fds 1 and 2 and ``sys.stdout`` and
    ``sys.stderr`` all write into one temporary file per stream, which pytest reads and
    truncates at the end of each phase (setup, call, teardown). A thread reads what is new in
    those files every ``OUTPUT_POLL_INTERVAL_S`` with ``os.pread``, which leaves the file
    offset that the test writes at alone. Output written in the last moments of a phase may
    not be sent live, but the final result carries every phase's output, so the live copy
    is only for watching a test that runs.

    At most ``cap`` characters per test are sent live. Other capture modes (``-s``,
    ``--capture=sys``) send nothing live.

    NOTE: this reads pytest's private ``CaptureManager._global_capturing``; a pytest release
    that renames it turns live output off, and results are not affected.
    """

    def __init__(self, channel, cap, interval=OUTPUT_POLL_INTERVAL_S):
        self.channel = channel
        self.cap = cap
        self.interval = interval
        self.capman = None
        self.lock = threading.Lock()  # guards every field below against the thread
        self.nodeid = None
        self.offsets = {}
        self.decoders = {}
        self.sent = 0
        self.wake = threading.Event()

    def attach(self, config):
        self.capman = config.pluginmanager.getplugin("capturemanager")
        if self.capman is not None:
            threading.Thread(target=self._loop, name="swarmctl-output-tail", daemon=True).start()

    def start(self, nodeid):
        with self.lock:
            self.nodeid = nodeid
            self.sent = 0
            self._reset()

    def phase_done(self):
        """Start reading the capture files from their beginning: pytest has just truncated them."""
        with self.lock:
            self._reset()

    def stop(self):
        with self.lock:
            self.nodeid = None

    def _reset(self):
        self.offsets = {"stdout": 0, "stderr": 0}
        self.decoders = {stream: codecs.getincrementaldecoder("utf-8")("replace") for stream in self.offsets}

    def _loop(self):
        while not self.wake.wait(self.interval):
            try:
                with self.lock:
                    if self.nodeid is not None:
                        self._send_new_output()
            except (OSError, ValueError, AttributeError):
                pass  # the capture files changed under us between phases; the next poll starts over

    def _send_new_output(self):
        capturing = getattr(self.capman, "_global_capturing", None)
        if capturing is None:
            return
        for stream, capture in (("stdout", capturing.out), ("stderr", capturing.err)):
            tmpfile = getattr(capture, "tmpfile", None)
            if tmpfile is None or not hasattr(tmpfile, "buffer") or self.sent >= self.cap:
                continue
            fd = tmpfile.buffer.fileno()
            size = os.fstat(fd).st_size
            offset = self.offsets[stream]
            if size < offset:
                self.offsets[stream] = offset = 0  # truncated at the end of a phase
            if size == offset:
                continue
            data = os.pread(fd, size - offset, offset)
            self.offsets[stream] = offset + len(data)
            text = self.decoders[stream].decode(data)
            if self.sent + len(text) > self.cap:
                text = text[: self.cap - self.sent] + LIVE_CAP_MARKER.format(self.cap)
            self.sent += len(text)
            if text:
                self.channel.send({"op": "output", "id": self.nodeid, "stream": stream, "text": text})


class WorkerPlugin:
    def __init__(self, channel, output_cap, bytecode_dir=None):
        self.channel = channel
        self.output_cap = output_cap
        self.config = None
        self.collect_results = []
        self.deselected = 0
        self.reports = []
        self.children = ChildTracker()
        self.output_tail = OutputTail(channel, output_cap)
        self.bytecode = BytecodeCache(bytecode_dir)

    def pytest_addoption(self, parser):
        # Declared here so that the setting is read the same way with or without pytest-timeout,
        # which declares it too.
        parser.addini("timeout", "per-test timeout in seconds, enforced by swarmctl", default="")

    def pytest_configure(self, config):
        self.config = config
        self.output_tail.attach(config)
        # Known to pytest, so that --strict-markers accepts it without pytest-timeout installed.
        config.addinivalue_line("markers", "timeout(seconds): per-test timeout, enforced by swarmctl")
        config.addinivalue_line(
            "markers", "swarm_depends_on(*node_ids): run after these tests pass; skipped when one does not"
        )
        config.addinivalue_line(
            "markers", "swarm_requires(**labels): run only on a swarmctl executor that has these labels"
        )

    def pytest_collection(self, session):
        self.bytecode.start()

    def pytest_collection_finish(self, session):
        self.bytecode.stop()

    def pytest_deselected(self, items):
        self.deselected += len(items)

    def pytest_collectreport(self, report):
        # A file that fails to import, or skips itself at module level, has no test items:
        # pytest reports it under the file's own node id, and so do we.
        if report.passed:
            return
        outcome = "error" if report.failed else "skipped"
        self.collect_results.append(
            {
                "case_id": report.nodeid,
                "outcome": outcome,
                "when": "collect",
                "message": short_message(report),
                "longrepr": longrepr_text(report),
            }
        )

    def pytest_runtest_logreport(self, report):
        self.reports.append(report)
        self.output_tail.phase_done()
        if report.when == "setup":
            self.children.after_setup()

    def pytest_runtestloop(self, session):
        items = session.items
        by_id = {}
        for item in items:
            by_id.setdefault(item.nodeid, item)
        self.channel.send(
            {
                "op": "collected",
                "ids": [item.nodeid for item in items],
                "collect_results": self.collect_results,
                "deselected": self.deselected,
                "timeout_plugin": self.config.pluginmanager.hasplugin("timeout"),
                "dependencies": dependencies(items),
                "requirements": requirements(items),
            }
        )

        while True:
            command = self.channel.receive()
            if command.get("op") == "release":
                continue  # arrived after its batch ended: nothing left to give back
            if command.get("op") != "run":
                break
            released = self.run_batch(by_id, command["ids"])
            self.channel.send({"op": "batch_done", "released": released})
        return True

    def run_batch(self, by_id, ids):
        """Run the node ids in order; return the ones given back to the executor unstarted."""
        ids = list(ids)
        released = []
        index = 0
        while index < len(ids):
            command = self.channel.poll() if index else None
            if command is not None and command.get("op") == "release":
                # An idle executor takes over the end of this batch. The test at `index` stays:
                # the previous test ran with it as its next item, so pytest kept the fixtures
                # they share and expects it to come next.
                count = max(0, min(int(command.get("count", 0)), len(ids) - index - 1))
                if count:
                    self.channel.send({"op": "released", "ids": ids[len(ids) - count:]})
                    released = ids[len(ids) - count:] + released
                    ids = ids[: len(ids) - count]
            nodeid = ids[index]
            index += 1
            item = by_id.get(nodeid)
            if item is None:
                self.channel.send({"op": "start", "id": nodeid})
                self.channel.send({"op": "result", "result": not_collected(nodeid)})
                continue

            # The next item lets pytest keep fixtures it shares with this one. At the end of a
            # batch there is none, so every fixture is torn down, as at the end of a session.
            next_id = ids[index] if index < len(ids) else None
            next_item = by_id.get(next_id) if next_id is not None else None

            self.reports = []
            started_at = time.time()
            self.channel.send(
                {"op": "start", "id": nodeid, "log_offset": log_offset(), "timeout": test_timeout(item, self.config)}
            )
            self.output_tail.start(nodeid)
            item.ihook.pytest_runtest_protocol(item=item, nextitem=next_item)
            self.output_tail.stop()
            result = self.summarize(nodeid, started_at)
            leftovers = self.children.after_test(all_torn_down=next_item is None)
            if leftovers:
                result["warnings"] = [f"killed leftover process {leftover}" for leftover in leftovers]
            self.channel.send({"op": "result", "result": result})
        return released

    def summarize(self, nodeid, started_at):
        """Turn the reports of one test into one result, counted the way pytest counts."""
        hook = self.config.hook
        categories = []
        subtests = []
        phases = {}
        for report in self.reports:
            category = hook.pytest_report_teststatus(report=report, config=self.config)[0]
            if category:
                categories.append(category)
            if type(report).__name__ == "SubtestReport":
                subtests.append(
                    {
                        "description": report._sub_test_description().strip(),
                        "outcome": category or report.outcome,
                        "longrepr": longrepr_text(report) if report.failed else "",
                    }
                )
            elif report.nodeid == nodeid:
                phases[report.when] = (report, category)

        outcome, when = "passed", "call"
        setup = phases.get("setup")
        call = phases.get("call")
        teardown = phases.get("teardown")
        deciding = None
        if setup is not None and setup[0].outcome != "passed":
            outcome, when, deciding = ("error" if setup[0].failed else setup[1] or "skipped"), "setup", setup[0]
        elif call is not None:
            outcome, deciding = call[1] or call[0].outcome, call[0]
        if teardown is not None and teardown[0].failed and outcome != "failed":
            outcome, when, deciding = "error", "teardown", teardown[0]

        last = self.reports[-1] if self.reports else None
        longrepr = longrepr_text(deciding) if deciding is not None and outcome != "passed" else ""
        if teardown is not None and teardown[0].failed and deciding is not teardown[0]:
            longrepr += "\n\nerror in teardown:\n" + longrepr_text(teardown[0])
        return {
            "case_id": nodeid,
            "outcome": outcome,
            "when": when,
            "duration": sum(report.duration for report, _ in phases.values()),
            "message": short_message(deciding) if deciding is not None and outcome != "passed" else "",
            "longrepr": truncate_middle(longrepr, self.output_cap),
            "stdout": truncate_middle(captured(last, "stdout"), self.output_cap),
            "stderr": truncate_middle(captured(last, "stderr"), self.output_cap),
            "counted_as": categories,
            "subtests": subtests,
            "started_at": started_at,
        }


def captured(report, stream):
    """Captured output of every phase so far (pytest repeats earlier phases' sections)."""
    if report is None:
        return ""
    parts = []
    for name, content in report.sections:
        if name.startswith("Captured " + stream) or (stream == "stderr" and name.startswith("Captured log")):
            parts.append(f"{(' ' + name + ' ').center(80, '-')}\n{content}")
    return "".join(parts)


def log_offset():
    """Return where the worker log ends now, so a crash report can show only this test's output.

    The executor cannot measure this itself: it may read the start event after the test
    has already written more.
    """
    try:
        return os.lseek(_STACK_DUMP_FILE.fileno(), 0, os.SEEK_CUR)
    except (OSError, AttributeError):
        return 0


def dependencies(items):
    """Map node ids to the node ids their ``swarm_depends_on`` markers name."""
    found = {}
    for item in items:
        names = [name for marker in item.iter_markers("swarm_depends_on") for name in marker.args]
        if names:
            found[item.nodeid] = names
    return found


def requirements(items):
    """Map node ids to the executor labels their ``swarm_requires`` markers ask for.

    Markers nearer the test win over those of its class and module. Values compare as text,
    with booleans as ``true``/``false``, the way swarmctl compares executor labels.
    """
    found = {}
    for item in items:
        labels = {}
        for marker in reversed(list(item.iter_markers("swarm_requires"))):
            for key, value in marker.kwargs.items():
                if isinstance(value, bool):
                    value = "true" if value else "false"
                labels[key] = str(value)
        if labels:
            found[item.nodeid] = labels
    return found


def test_timeout(item, config):
    """Return the test's own limit in seconds, read as pytest-timeout reads it, or None.

    A ``@pytest.mark.timeout(N)`` marker wins over the ``timeout`` ini setting; 0 means no
    limit. swarmctl's --timeout applies where neither is set.
    """
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        value = config.getini("timeout") or None
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else 0.0


class ChildTracker:
    """Find processes that tests left running, and kill them.

    A process that a fixture starts during setup may serve later tests (a session-scoped
    server), so it is only counted as left behind once every fixture is torn down, at the end
    of a batch. A process started in a test's call or teardown phase and still alive after the
    test is left behind at once. The worker is a child subreaper, so a daemon that double-forks
    or calls setsid stays a descendant and is found too.
    """

    def __init__(self):
        self.fixture_owned = set()
        self.known = set(descendants(os.getpid()))
        make_subreaper()

    def after_setup(self):
        self.fixture_owned |= set(descendants(os.getpid())) - self.known
        self.known |= self.fixture_owned

    def after_test(self, all_torn_down):
        alive = descendants(os.getpid())
        exited = [pid for pid in alive if is_zombie(pid)]
        reap(exited)  # orphans that ended on their own: nothing was left running
        alive = [pid for pid in alive if pid not in exited]
        if all_torn_down:
            leftovers = alive
        else:
            leftovers = [pid for pid in alive if pid not in self.fixture_owned]
        described = [describe_process(pid) for pid in leftovers]
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap(leftovers)
        self.fixture_owned &= set(alive)
        self.known = set(descendants(os.getpid())) if leftovers or exited else set(alive)
        return described


def descendants(pid):
    """Return the pids below ``pid``, read from /proc (empty where /proc lacks the data)."""
    if pid == os.getpid() and not has_children():
        return []  # the usual case after a test, found without reading /proc
    found = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for child in direct_children(parent):
            if child not in found:
                found.append(child)
                pending.append(child)
    return found


def has_children():
    """Return whether this process has a child process, running or exited, in one system call.

    Orphans re-parented to this subreaper are its children too, so without a child there
    is no descendant either.
    """
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except (AttributeError, OSError):
        pass  # no waitid here: assume there may be children
    return True


def direct_children(pid):
    children = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children.extend(int(text) for text in f.read().split())
        except OSError:
            continue
    return children


def is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The state follows the command name, which is in parentheses and may contain spaces.
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def describe_process(pid):
    command = read_cmdline(pid)
    if command and command == read_cmdline(os.getpid()):
        return f"pid {pid}: a fork of the pytest worker without exec"
    return f"pid {pid}: {command[:200] or '(exited)'}"


def read_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def reap(pids):
    """Collect the exit status of killed children, so they do not stay zombies."""
    deadline = time.monotonic() + 2.0
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pending.discard(pid)  # not our child (a grandchild): its own parent reaps it
                continue
            if done:
                pending.discard(pid)
        if pending:
            time.sleep(0.01)


def make_subreaper():
    """Become the parent of orphaned descendants instead of init (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_child_subreaper = 36
        libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def die_with_parent():
    """Exit when the executor that started this worker dies.

    An executor killed with SIGKILL cannot stop its workers, and a worker left running
    would go on with a test that the coordinator has already given to another executor.
    The kernel's parent-death signal does not fit: it follows the thread that forked the
    worker, and the executor forks from short-lived threads. So a daemon thread watches for
    the worker being handed to another parent.
    """
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_INTERVAL_S)
        os._exit(1)

    threading.Thread(target=watch, name="swarmctl-parent-watch", daemon=True).start()


class BytecodeCache:
    """A bytecode cache under ``directory`` for collection, where bytecode writing is off.

    With PYTHONDONTWRITEBYTECODE (or ``python -B``) pytest rewrites the asserts of every
    test module at each collection: 1.3 of the 1.9 s that collecting 4,000 tests took on a
    2-core machine. While the worker collects, it writes bytecode under ``directory`` in
    swarmctl's data folder, so nothing lands in the suite's environment or the user's
    folders. The suite folder's path contains the bundle's digest, so the cached bytecode
    of a test module never outlives its source. Outside collection, and so while tests
    run, both settings are as the user set them.
    """

    def __init__(self, directory):
        self.directory = directory
        self.saved = None

    def start(self):
        if self.directory and sys.dont_write_bytecode and hasattr(sys, "pycache_prefix"):  # Python 3.8+
            self.saved = (sys.pycache_prefix, sys.dont_write_bytecode)
            sys.pycache_prefix = self.directory
            sys.dont_write_bytecode = False

    def stop(self):
        if self.saved is not None:
            sys.pycache_prefix, sys.dont_write_bytecode = self.saved
            self.saved = None


def not_collected(nodeid):
    return {
        "case_id": nodeid,
        "outcome": "error",
        "when": "collect",
        "message": "not collected by this worker",
        "longrepr": (
            f"{nodeid} was assigned to this worker but its collection does not contain it; "
            "the suite collects differently on this executor"
        ),
    }


def main(argv):
    separator = argv.index("--")
    options, pytest_args = argv[:separator], argv[separator + 1:]
    events_fd = int(options[options.index("--events-fd") + 1])
    commands_fd = int(options[options.index("--commands-fd") + 1])
    output_cap = int(options[options.index("--output-cap") + 1])
    bytecode_dir = options[options.index("--bytecode-dir") + 1] if "--bytecode-dir" in options else None

    die_with_parent()

    # Children of tests must not inherit the pipes; only a fork without exec keeps them.
    os.set_inheritable(events_fd, False)
    os.set_inheritable(commands_fd, False)

    # A stack dump on SIGUSR1 lets the executor show where a timed-out test hung. It goes to a
    # copy of the original stderr (the worker log), because pytest's capture redirects fd 2
    # while a test runs.
    global _STACK_DUMP_FILE
    _STACK_DUMP_FILE = os.fdopen(os.dup(2), "w")
    faulthandler.register(signal.SIGUSR1, file=_STACK_DUMP_FILE, all_threads=True)

    # `python -c` puts the working directory first on sys.path; the `pytest` command does not.
    if sys.path and sys.path[0] == "":
        del sys.path[0]
    sys.argv = ["pytest", *pytest_args]  # usage errors then name pytest, not "-c"

    try:
        import pytest
    except ImportError as exc:
        sys.stderr.write(
            f"swarmctl: cannot import pytest in {sys.executable}: {exc}\n"
            "Install pytest into the suite's environment, or pass --python with an interpreter that has it.\n"
        )
        sys.stderr.flush()
        os._exit(3)

    # Run before pytest's own implementations: its loop would run every collected test at
    # once, and its collection must find the bytecode settings already changed.
    WorkerPlugin.pytest_runtestloop = pytest.hookimpl(tryfirst=True)(WorkerPlugin.pytest_runtestloop)
    WorkerPlugin.pytest_collection = pytest.hookimpl(tryfirst=True)(WorkerPlugin.pytest_collection)
    channel = Channel(events_fd, commands_fd)
    plugin = WorkerPlugin(channel, output_cap, bytecode_dir)
    code = pytest.main(pytest_args, plugins=[plugin])
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads a test left running must not keep the worker alive.
    os._exit(int(code))


if __name__ == "__main__":
    main(sys.argv[1:])
