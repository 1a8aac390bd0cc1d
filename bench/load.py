"""Benchmark the coordinator under load: many executors, a long queue, fast tests.

Usage: python bench/load.py [--executors 200 --slots 4 --tests 100000 --hosts 4 ...]

It starts a real coordinator (``python -m swarmctl up --role coordinator``) on 127.0.0.1 and
``--hosts`` executor host processes (bench/load_executors.py), which share the simulated
executors between them. Each simulated executor has its own WebSocket connection and speaks
the real executor protocol, but "runs" a test by sleeping for its synthetic duration instead
of starting pytest. Before the hosts start, one real ``swarmctl up --role executor`` joins
for a few seconds while no run is active, to measure the memory of an idle executor.

Then a client in this process submits one run per size of the queue curve (1,000 and 10,000
tests, then ``--tests``) with ``swarmctl.client.submit_and_follow``, one after the other,
against the same coordinator and executors. The suite is a tiny real bundle. The executor
asked to collect returns the synthetic node ids, and every executor looks up a test's
duration by the index in its node id.

Measured: assignment latency in the executor hosts, results acknowledged per second, the
coordinator's CPU time and peak RSS (psutil, every 0.2 s), the hosts' RSS per simulated
executor, frame bytes per test, and the wall time against its lower bound. With
``--profile FILE`` the coordinator runs under py-spy during the largest run, which slows it,
so a profiled invocation measures the profile and not the load numbers.

Writes bench/results/load.json (``--output``). Every process it starts listens and connects
on 127.0.0.1 only and is stopped by its PID on exit, on Ctrl-C and at ``--timeout``. A run
that does not finish in time is recorded with ``"completed": false``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import trio
import trio_websocket

import swarmctl.client
from swarmctl import protocol
from swarmctl.api_client import ApiClient
from swarmctl.bundle import build_bundle
from swarmctl.cluster import transport
from swarmctl.client import submit_and_follow
from swarmctl.cluster.transport import PeerGone
from swarmctl.errors import SwarmError

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from load_executors import SUITE_NAME_FORMAT, test_durations  # noqa: E402

DEFAULT_OUTPUT = BENCH_DIR / "results" / "load.json"
SMALL_QUEUES = (1_000, 10_000)
SAMPLE_INTERVAL_S = 0.2
LAG_INTERVAL_S = 0.25  # how often the leader is asked for its followers' lag, with --voters
IDLE_EXECUTOR_SAMPLE_S = 4.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
MB = 1024 * 1024

TARGET_ASSIGN_P99_MS = 10.0
TARGET_ASSIGN_MAX_MS = 50.0
TARGET_RESULTS_PER_S = 5_000.0
TARGET_COORDINATOR_RSS_MB = 300.0
TARGET_IDLE_EXECUTOR_RSS_MB = 60.0


class TimedOut(Exception):
    """The benchmark's ``--timeout`` passed."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def distribution(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 2),
        "p95": round(percentile(values, 95), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2),
        "mean": round(sum(values) / len(values), 2),
    }


def machine_info() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    os_name = platform.platform()
    with contextlib.suppress(OSError):
        release = dict(
            line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
        )
        os_name = f"{release.get('PRETTY_NAME', '').strip(chr(34))}, kernel {platform.release()}"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": os_name,
        "python": platform.python_version(),
    }


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# --- processes --------------------------------------------------------------------------


class Processes:
    """The processes this benchmark starts; ``stop_all`` ends every one still running, by PID."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {**os.environ, "SWARMCTL_HOME": str(folder / "home"), "PYTHONUNBUFFERED": "1"}
        self.started: dict[str, subprocess.Popen] = {}
        self.aliases: dict[str, str] = {}  # another name for a started process: "coordinator" for the leading voter

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.folder / f"{name}.log", "w") as log_file:
            process = subprocess.Popen(command, env=self.env, stdout=log_file, stderr=subprocess.STDOUT)
        self.started[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{self.aliases.get(name, name)}.log").read_text(errors="replace")

    def wait_for_log(self, name: str, pattern: str, deadline: float, *, count: int = 1) -> list[re.Match]:
        """Wait until ``pattern`` matches ``count`` times in the log of ``name``; raise TimedOut at ``deadline``."""
        limit = min(deadline, time.monotonic() + START_TIMEOUT_S)
        while True:
            matches = list(re.finditer(pattern, self.log(name)))
            if len(matches) >= count:
                return matches
            process = self.started[name]
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode} before logging {pattern!r}; see {self.folder / name}.log")
            if time.monotonic() > limit:
                raise TimedOut(f"{pattern!r} appeared {len(matches)} of {count} times in {name}.log")
            time.sleep(0.05)

    def stop(self, name: str, timeout: float = STOP_TIMEOUT_S) -> None:
        """Send SIGTERM to one process, then SIGKILL if it is still running after ``timeout``."""
        process = self.started.get(name)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)

    def stop_all(self) -> None:
        for process in self.started.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started.values():
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class ProcessSamples:
    rss: list[tuple[float, int]] = field(default_factory=list)  # (time.monotonic(), bytes)
    peak_rss: int = 0


class Sampler:
    """Samples the RSS of chosen processes every ``SAMPLE_INTERVAL_S`` in a thread."""

    def __init__(self) -> None:
        self.watched: dict[str, psutil.Process] = {}
        self.samples: dict[str, ProcessSamples] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self.watched[name] = psutil.Process(pid)
            self.samples.setdefault(name, ProcessSamples())

    def unwatch(self, name: str) -> None:
        with self._lock:
            self.watched.pop(name, None)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def peak_between(self, name: str, start: float, end: float) -> int:
        with self._lock:
            values = [rss for at, rss in self.samples[name].rss if start <= at <= end]
        return max(values, default=0)

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            with self._lock:
                watched = list(self.watched.items())
            for name, process in watched:
                try:
                    rss = process.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                with self._lock:
                    record = self.samples[name]
                    record.rss.append((time.monotonic(), rss))
                    record.peak_rss = max(record.peak_rss, rss)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


# --- the client ---------------------------------------------------------------------------


@dataclass
class ClientBytes:
    sent: int = 0
    received: int = 0


_client_counters: list[ClientBytes] = []  # the current run's counter last


def count_client_bytes(counter: ClientBytes) -> None:
    """Count the client's HTTP bodies and event-stream messages in ``counter`` from now on.

    NOTE: this wraps ``ApiClient._send`` and trio-websocket's ``get_message`` in this process,
    where only the benchmark's client uses them. Headers, framing and failed calls are not counted.
    """
    if not _client_counters:
        original_send = ApiClient._send
        original_get = trio_websocket.WebSocketConnection.get_message

        def send(self, method, url, json_body, file):
            body, headers = original_send(self, method, url, json_body, file)
            current = _client_counters[-1]
            current.sent += len(json.dumps(json_body)) if json_body is not None else 0
            current.sent += file.stat().st_size if file is not None else 0
            current.received += len(body)
            return body, headers

        async def get_message(self):
            message = await original_get(self)
            _client_counters[-1].received += len(message)
            return message

        ApiClient._send = send
        trio_websocket.WebSocketConnection.get_message = get_message
    _client_counters.append(counter)


async def submit_run(
    address: tuple[str, int], bundle, tests: int, strategy: str, timeout_s: float, coordinator_alive: Callable[[], bool],
) -> dict:
    """Submit one run and follow it to the end; return what the client saw.

    The returned ``failure`` is empty when the run ended, else it describes why the client stopped:
    the coordinator exited, the connection failed, or ``timeout_s`` passed.
    """
    counter = ClientBytes()
    count_client_bytes(counter)
    suite = protocol.SuiteSpec("pytest", bundle.digest, SUITE_NAME_FORMAT.format(tests=tests))
    progress = {"frames": 0, "last_print": 0.0}
    accepted: list[str] = []
    outcome: list = []
    failure = ""

    def on_progress(watch, outcomes) -> None:
        progress["frames"] += 1
        now = time.monotonic()
        if now - progress["last_print"] >= 5.0:
            progress["last_print"] = now
            print(f"  run {watch.run_id}: {watch.done}/{watch.total} results", flush=True)

    async def follow(nursery: trio.Nursery) -> None:
        outcome.append(await submit_and_follow(
            [address], suite=suite, bundle=bundle, strategy=strategy, case_ids=None,
            on_progress=on_progress, on_accepted=accepted.append,
        ))
        nursery.cancel_scope.cancel()

    async def watch_coordinator(nursery: trio.Nursery) -> None:
        nonlocal failure
        while coordinator_alive():
            await trio.sleep(0.5)
        failure = "the coordinator process exited during the run"
        nursery.cancel_scope.cancel()

    started = time.monotonic()
    started_unix = time.time()
    with trio.move_on_after(timeout_s) as scope:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow, nursery)
                nursery.start_soon(watch_coordinator, nursery)
        except* (SwarmError, PeerGone) as group:
            failure = failure or f"the client failed: {group.exceptions[0]}"
    if scope.cancelled_caught:
        failure = "the run did not finish within the benchmark's --timeout"
    run = {
        "tests": tests,
        "run_id": accepted[0] if accepted else "",
        "completed": not failure and bool(outcome),
        "failure": failure,
        "client_wall_s": round(time.monotonic() - started, 3),
        "started_unix": started_unix,
        "ended_unix": time.time(),
        "progress_frames": progress["frames"],
        "client_bytes_sent": counter.sent,
        "client_bytes_received": counter.received,
    }
    if outcome:
        summary, results, _ = outcome[0]
        run.update({
            "exit_code": summary.exit_code,
            "coordinator_wall_s": round(summary.wall_s, 3),
            "results": len(results),
            "outcomes": dict(Counter(result.outcome for result in results)),
            "duplicates": summary.duplicates,
            "fenced": summary.fenced,
            "error": summary.error,
        })
    return run


# --- analysis --------------------------------------------------------------------------------


def read_host_stats(paths: list[Path]) -> list[dict]:
    stats = []
    for path in paths:
        with contextlib.suppress(OSError, json.JSONDecodeError):
            stats.append(json.loads(path.read_text()))
    return stats


def sum_seconds(hosts: list[dict], key: str, start: float, end: float) -> int:
    """Sum a per-second table of every host over the seconds from ``start`` to ``end`` (Unix times)."""
    first, last = math.floor(start), math.ceil(end)
    return sum(value for host in hosts for second, value in host[key].items() if first <= int(second) <= last)


def log_time(line: str) -> float | None:
    """Return the Unix time of a log line of swarmctl's format, or None."""
    try:
        moment = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    except ValueError:
        return None
    return moment.timestamp()


def plan_of_run(coordinator_log: str, run_id: str) -> dict:
    """Read from the coordinator's log how the run was planned and how many shards were split off."""
    planned = re.search(rf"run {re.escape(run_id)}: (\d+) cases in (\d+) shards", coordinator_log)
    collected_line = next((line for line in coordinator_log.splitlines() if f"run {run_id}: collected" in line), "")
    planned_line = next((line for line in coordinator_log.splitlines() if f"run {run_id}: " in line and " shards, " in line), "")
    collected_at, planned_at = log_time(collected_line), log_time(planned_line)
    return {
        "shards": int(planned.group(2)) if planned else None,
        "release_requests": len(re.findall(rf"run {re.escape(run_id)}: asking \S+ to give back", coordinator_log)),
        "plan_s": round(planned_at - collected_at, 3) if collected_at and planned_at else None,
    }


def count_in_window(coordinator_log: str, pattern: str, start: float, end: float) -> int:
    """Count log lines matching ``pattern`` whose time is between ``start`` and ``end`` (Unix times)."""
    count = 0
    for line in coordinator_log.splitlines():
        if re.search(pattern, line):
            moment = log_time(line)
            if moment is not None and start <= moment <= end:
                count += 1
    return count


def last_error_line(coordinator_log: str) -> str:
    """Return the last line of the log that names an exception, such as ``AttributeError: ...``."""
    lines = [line.strip(" |") for line in coordinator_log.splitlines() if re.search(r"\b\w+(Error|Exception)\b: ", line)]
    return lines[-1] if lines else ""


def analyse_run(run: dict, hosts: list[dict], coordinator_log: str, durations, slots_total: int) -> dict:
    run_id, tests = run["run_id"], run["tests"]
    plan = plan_of_run(coordinator_log, run_id) if run_id else {"shards": None, "release_requests": 0, "plan_s": None}
    queued, split, queued_idle = [], [], []
    for host in hosts:
        for sample_run, shard_id, attempt, assign_ms, idle_ms in host["samples"]:
            if sample_run != run_id:
                continue
            if plan["shards"] is not None and shard_id < plan["shards"] and attempt == 1:
                queued.append(assign_ms)
                queued_idle.append(idle_ms)
            else:
                split.append(assign_ms)

    acked = sum(host["acked"].get(run_id, 0) for host in hosts)
    ack_seconds: Counter[int] = Counter()
    for host in hosts:
        for second, count in host["ack_seconds"].items():
            if run["started_unix"] - 1 <= int(second) <= run["ended_unix"] + 1:
                ack_seconds[int(second)] += count

    executor_sent = sum_seconds(hosts, "sent_seconds", run["started_unix"], run["ended_unix"])
    executor_received = sum_seconds(hosts, "received_seconds", run["started_unix"], run["ended_unix"])
    wire = executor_sent + executor_received + run["client_bytes_sent"] + run["client_bytes_received"]

    work = sum(durations[:tests])
    lower_bound = max(work / slots_total, max(durations[:tests]))
    wall = run.get("coordinator_wall_s") or run["client_wall_s"]
    window = (run["started_unix"], run["ended_unix"])
    return {
        "tests": tests,
        "run_id": run_id,
        "completed": run["completed"],
        "failure": run["failure"],
        "shards_planned": plan["shards"],
        "plan_s": plan["plan_s"],
        "release_requests": plan["release_requests"],
        "assignment_latency_ms": distribution(queued),
        "slot_idle_ms": distribution(queued_idle),
        "split_or_retried_assignment_latency_ms": distribution(split),
        "first_assignments": sum(host["first_assigns"].get(run_id, 0) for host in hosts),
        "results_acked": acked,
        "results_per_s": round(acked / wall, 1) if wall else None,
        "results_per_s_busiest_second": max(ack_seconds.values(), default=0),
        "wire_bytes": wire,
        "wire_bytes_per_test": round(wire / tests, 1),
        "wire_bytes_split": {
            "executors_sent": executor_sent,
            "executors_received": executor_received,
            "client_sent": run["client_bytes_sent"],
            "client_received": run["client_bytes_received"],
        },
        "progress_frames": run["progress_frames"],
        "lease_lapses": count_in_window(coordinator_log, rf"run {re.escape(run_id)}: shard \d+ attempt \d+ requeued: its lease", *window) if run_id else 0,
        "shards_failed_after_losses": count_in_window(coordinator_log, rf"run {re.escape(run_id)}: shard \d+: not run: the shard was lost", *window) if run_id else 0,
        "executors_closed_as_silent": count_in_window(coordinator_log, r"silent for [\d.]+s \(lease", *window),
        "work_s": round(work, 1),
        "lower_bound_s": round(lower_bound, 2),
        "wall_s": wall,
        "client_wall_s": run["client_wall_s"],
        "wall_over_lower_bound": round(wall / lower_bound, 2) if run["completed"] else None,
        "exit_code": run.get("exit_code"),
        "results": run.get("results"),
        "outcomes": run.get("outcomes"),
        "duplicates": run.get("duplicates"),
        "fenced": run.get("fenced"),
        "error": run.get("error"),
        "coordinator_cpu_s": run.get("coordinator_cpu_s"),
        "coordinator_peak_rss_mb": run["coordinator_peak_rss_mb"],
        "load_average_before": run["load_average_before"],
        "load_average_after": run["load_average_after"],
    }


def summarize_profile(raw: Path, top: int = 25) -> dict:
    """Rank functions of a py-spy raw (collapsed stacks) profile by their share of samples.

    ``self`` counts samples where the function is the innermost frame; ``total`` counts samples
    where it is anywhere on the stack, once per sample.
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_short_frame(frame) for frame in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return {"samples": 0}

    def ranked(counter: Counter[str]) -> list[list]:
        return [[name, round(100 * count / samples, 1)] for name, count in counter.most_common(top)]

    return {"samples": samples, "self_percent": ranked(own), "total_percent": ranked(total)}


def _short_frame(frame: str) -> str:
    """Turn py-spy's ``function (path/to/file.py:LINE)`` into ``file.py:function``, with swarmctl paths kept."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame.strip())
    if match is None:
        return frame.strip()
    function, path = match.groups()
    if "swarmctl/" in path:
        path = "swarmctl/" + path.rsplit("swarmctl/", 1)[1]
    else:
        path = Path(path).name
    return f"{path}:{function}"


# --- the benchmark ------------------------------------------------------------------------------


def coordinator_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "swarmctl", "up", "--role", "coordinator", "--listen", "127.0.0.1:0",
            "--data-dir", str(folder / "coordinator")]


def free_ports(count: int) -> list[int]:
    """Return ``count`` different free loopback ports: each stays bound until all are chosen."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def start_voters(processes: Processes, folder: Path, count: int, deadline: float) -> tuple[str, subprocess.Popen]:
    """Start ``count`` coordinator-eligible processes with the same --peers; return the leader's name and process.

    NOTE: the simulated executors join the first leader's address only and do not follow a
    redirect, so a change of leader during a run ends the measurement.
    """
    addresses = [f"127.0.0.1:{port}" for port in free_ports(count)]
    for index, address in enumerate(addresses):
        processes.start(f"voter-{index}", [
            sys.executable, "-m", "swarmctl", "up", "--role", "coordinator", "--listen", address,
            "--peers", ",".join(addresses), "--data-dir", str(folder / f"voter-{index}"),
        ])
    while time.monotonic() < deadline:
        for index, address in enumerate(addresses):
            with contextlib.suppress(Exception):
                status = trio.run(swarmctl.client.node_status, transport.parse_address(address))
                if status.state == "leader":
                    processes.wait_for_log(f"voter-{index}", r"coordinator .* listening on", deadline)
                    return f"voter-{index}", processes.started[f"voter-{index}"]
        time.sleep(0.2)
    raise TimeoutError(f"no leader among {addresses}")


class LagSampler:
    """Polls the leader's consensus status during a run: how far each follower is behind it.

    The lag in entries is the leader's last index minus the follower's match index. The lag
    in seconds is how long the follower has lacked the first entry it lacks: since the
    leader's log went past its match index, to the resolution of the sampling interval.
    """

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        # (monotonic time, commit index, the leader's last index, each follower's match index)
        self.samples: list[tuple[float, int, int, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(LAG_INTERVAL_S):
            with contextlib.suppress(Exception):
                status = trio.run(swarmctl.client.node_status, self.address)
                rows = [voter for voter in status.voters if "match" in voter]
                last = max((row["match"] for row in rows if row["address"] == status.node_id), default=None)
                matches = [row["match"] for row in rows if row["address"] != status.node_id]
                if last is not None:
                    self.samples.append((time.monotonic(), status.commit_index, last, matches))

    def summary(self) -> dict:
        """Summarize the followers' lag over the whole run, and over its middle half (the steady state)."""
        middle = self.samples[len(self.samples) // 4: 3 * len(self.samples) // 4]
        return {**self._summarize(self.samples), "steady": self._summarize(middle, self.samples)}

    @staticmethod
    def _summarize(samples: list, history: list | None = None) -> dict:
        """Summarize the lag in entries and in seconds, and the commit rate between samples."""
        history = history if history is not None else samples
        entries, seconds, rates = [], [], []
        for at, commit, last, matches in samples:
            for match in matches:
                entries.append(float(last - match))
                # How long the follower has lacked its first missing entry: since the first
                # sample at which the leader's log went past this match index.
                passed = next((t for t, _, leader_last, _ in history if leader_last > match and t <= at), at)
                seconds.append(at - passed if match < last else 0.0)
        for (t0, c0, _, _), (t1, c1, _, _) in zip(samples, samples[1:]):
            rates.append((c1 - c0) / (t1 - t0) if t1 > t0 else 0.0)
        return {
            "samples": len(samples),
            "interval_s": LAG_INTERVAL_S,
            "lag_entries": distribution(entries),
            "lag_s": distribution(seconds),
            "commits_per_s": distribution(rates),
        }


def host_command(args: argparse.Namespace, folder: Path, address: str, index: int, count: int, first: int, max_tests: int) -> list[str]:
    return [
        sys.executable, str(BENCH_DIR / "load_executors.py"), "--join", address, "--executors", str(count),
        "--first-index", str(first), "--slots", str(args.slots), "--max-tests", str(max_tests), "--seed", str(args.seed),
        "--median-ms", str(args.median_ms), "--sigma", str(args.sigma), "--cap-s", str(args.cap_s),
        "--data-dir", str(folder), "--stats-file", str(folder / f"host-{index}.json"), "--max-seconds", str(args.timeout),
    ]


def measure_idle_executor(processes: Processes, sampler: Sampler, address: str, folder: Path, deadline: float) -> dict:
    """Start a real executor with no run active, sample its RSS for a few seconds, then stop it."""
    name = "idle-executor"
    process = processes.start(name, [
        sys.executable, "-m", "swarmctl", "up", "--role", "executor", "--join", address, "--slots", "4",
        "--id", name, "--data-dir", str(folder / name),
    ])
    sampler.watch(name, process.pid)
    processes.wait_for_log("coordinator", rf"executor {name} joined", deadline)
    time.sleep(IDLE_EXECUTOR_SAMPLE_S)
    peak = sampler.samples[name].peak_rss
    sampler.unwatch(name)
    processes.stop(name)
    processes.wait_for_log("coordinator", rf"executor {name} (leaves|lost|left)", deadline)
    return {"idle_executor_rss_mb": round(peak / MB, 1), "slots": 4, "sampled_s": IDLE_EXECUTOR_SAMPLE_S}


def start_profiler(processes: Processes, pid: int, output: Path) -> subprocess.Popen | None:
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        print(f"py-spy not found next to {sys.executable}; install it with: {sys.executable} -m pip install py-spy")
        return None
    return processes.start("py-spy", [str(spy), "record", "--pid", str(pid), "--rate", str(50), "--format", "raw",
                                      "--output", str(output)])


def stop_profiler(profiler: subprocess.Popen | None) -> None:
    """Stop py-spy with SIGINT, which makes it write its output file."""
    if profiler is None or profiler.poll() is not None:
        return
    profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(timeout=60)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait(timeout=STOP_TIMEOUT_S)


def run_benchmark(args: argparse.Namespace, folder: Path, result: dict) -> None:
    """Fill ``result`` as the measurements come in, so that a timeout keeps what was measured."""
    deadline = time.monotonic() + args.timeout
    sizes = [size for size in SMALL_QUEUES if size < args.tests] + [args.tests]
    if args.no_curve:
        sizes = [args.tests]
    durations = test_durations(args.tests, seed=args.seed, median_s=args.median_ms / 1000, sigma=args.sigma, cap_s=args.cap_s)
    slots_total = args.executors * args.slots

    processes = Processes(folder)
    sampler = Sampler()
    profiler = None
    host_files: list[Path] = []
    runs: list[dict] = []
    try:
        if args.voters > 1:
            leader_name, coordinator = start_voters(processes, folder, args.voters, deadline)
            processes.started["coordinator"] = coordinator  # the leader is the coordinator measured
            processes.aliases["coordinator"] = leader_name
        else:
            coordinator = processes.start("coordinator", coordinator_command(folder))
        port = processes.wait_for_log("coordinator", r"listening on 127\.0\.0\.1:(\d+)", deadline)[0].group(1)
        address = f"127.0.0.1:{port}"
        coordinator_process = psutil.Process(coordinator.pid)
        sampler.watch("coordinator", coordinator.pid)
        sampler.start()

        result["idle_executor"] = measure_idle_executor(processes, sampler, address, folder, deadline)
        result["idle_executor_rss_mb"] = result["idle_executor"]["idle_executor_rss_mb"]
        print(f"idle executor: {result['idle_executor_rss_mb']} MB RSS", flush=True)

        per_host = [args.executors // args.hosts + (1 if i < args.executors % args.hosts else 0) for i in range(args.hosts)]
        first = 0
        for index, count in enumerate(per_host):
            if count == 0:
                continue
            process = processes.start(f"host-{index}", host_command(args, folder, address, index, count, first, args.tests))
            sampler.watch(f"host-{index}", process.pid)
            host_files.append(folder / f"host-{index}.json")
            first += count
        processes.wait_for_log("coordinator", r"executor load-\d+ joined", deadline, count=args.executors)
        time.sleep(2.0)  # let every heartbeat loop start
        print(f"{args.executors} simulated executors joined", flush=True)

        bundle_dir = folder / "suite"
        bundle_dir.mkdir()
        (bundle_dir / "test_load.py").write_text("def test_placeholder():\n    pass\n")
        bundle = build_bundle(bundle_dir, folder / "bundle")

        for tests in sizes:
            load_before = load_average()
            cpu_before = cpu_seconds(coordinator_process)
            started = time.monotonic()
            if tests == args.tests and args.profile is not None:
                profiler = start_profiler(processes, coordinator.pid, args.profile)
                time.sleep(1.0)
            lag = LagSampler(("127.0.0.1", int(port))) if args.voters > 1 and tests == args.tests else None
            if lag is not None:
                lag.start()
            print(f"run of {tests} tests on {args.executors} executors x {args.slots} slots", flush=True)
            remaining = deadline - time.monotonic()
            try:
                run = trio.run(submit_run, ("127.0.0.1", int(port)), bundle, tests, args.strategy, remaining,
                               lambda: coordinator.poll() is None)
            finally:
                if tests == args.tests:
                    stop_profiler(profiler)
                if lag is not None:
                    lag.stop()
                    result["standby_lag"] = lag.summary()
            ended = time.monotonic()
            with contextlib.suppress(psutil.NoSuchProcess):
                run["coordinator_cpu_s"] = round(cpu_seconds(coordinator_process) - cpu_before, 2)
            run["coordinator_peak_rss_mb"] = round(sampler.peak_between("coordinator", started, ended) / MB, 1)
            run["load_average_before"] = load_before
            run["load_average_after"] = load_average()
            runs.append(run)
            if not run["completed"]:
                print(f"  stopped after {run['client_wall_s']:.1f}s: {run['failure']}", flush=True)
                result["failure"] = f"run of {tests} tests: {run['failure']}"
                return
            print(f"  done in {run['coordinator_wall_s']:.1f}s, exit code {run['exit_code']}, "
                  f"coordinator CPU {run.get('coordinator_cpu_s')}s", flush=True)
            time.sleep(2.0)  # the last acknowledgements and heartbeats of the run

        result["completed"] = True
    finally:
        host_cpu = 0.0
        for name, process in list(processes.started.items()):
            if name.startswith("host-"):
                with contextlib.suppress(psutil.NoSuchProcess):
                    host_cpu += cpu_seconds(psutil.Process(process.pid))
                processes.stop(name)
        result["host_cpu_s"] = round(host_cpu, 1)
        hosts = read_host_stats(host_files)
        if len(hosts) < len(host_files):
            missing = len(host_files) - len(hosts)
            result.setdefault("failure", f"{missing} executor hosts wrote no statistics file (killed, or crashed)")
        coordinator_log = processes.log("coordinator") if "coordinator" in processes.started else ""
        stop_profiler(profiler)
        sampler.stop()
        processes.stop_all()

        if "coordinator" in processes.started and processes.started["coordinator"].returncode not in (None, 0, -15):
            result["coordinator_exit"] = {
                "returncode": processes.started["coordinator"].returncode,
                "last_error": last_error_line(coordinator_log),
            }
        curve = []
        for run in runs:
            analysed = analyse_run(run, hosts, coordinator_log, durations, slots_total)
            analysed["executors"] = args.executors
            curve.append(analysed)
        fill_result(result, args, curve, hosts, sampler)
        if args.profile is not None and args.profile.exists():
            result["profile"] = {"file": str(args.profile), **summarize_profile(args.profile)}


def fill_result(result: dict, args: argparse.Namespace, curve: list[dict], hosts: list[dict], sampler: Sampler) -> None:
    result["queue_curve"] = [
        {key: run[key] for key in (
            "tests", "executors", "completed", "shards_planned", "plan_s", "assignment_latency_ms",
            "split_or_retried_assignment_latency_ms", "results_per_s", "coordinator_cpu_s",
            "coordinator_peak_rss_mb", "wall_s", "lower_bound_s", "lease_lapses", "shards_failed_after_losses",
            "outcomes", "load_average_before", "load_average_after",
        )}
        for run in curve
    ]
    result["runs"] = curve

    main = next((run for run in curve if run["tests"] == args.tests), None)
    peaks = {name: samples.peak_rss for name, samples in sampler.samples.items() if name.startswith("host-")}
    per_executor = [
        peaks[f"host-{index}"] / host["executors"]
        for index, host in enumerate(hosts) if f"host-{index}" in peaks and host["executors"]
    ]
    result["host_peak_rss_mb"] = round(max(peaks.values(), default=0) / MB, 1)
    result["executor_peak_rss_mb"] = round(max(per_executor, default=0) / MB, 2)
    result["host_loop_lag_ms"] = distribution([lag for host in hosts for lag in host["lag_ms"]])
    result["host_errors"] = [error for host in hosts for error in host["errors"]][:20]
    result["digest_mismatches"] = sum(host["digest_mismatches"] for host in hosts)
    result["released_tests"] = sum(host["released_tests"] for host in hosts)
    result["coordinator_peak_rss_mb_overall"] = round(sampler.samples.get("coordinator", ProcessSamples()).peak_rss / MB, 1)

    if main is not None:
        for key in ("tests", "assignment_latency_ms", "slot_idle_ms", "split_or_retried_assignment_latency_ms",
                    "results_per_s", "results_per_s_busiest_second", "coordinator_cpu_s", "coordinator_peak_rss_mb",
                    "wire_bytes_per_test", "wall_s", "lower_bound_s", "shards_planned"):
            result[key] = main[key]
        result["targets"] = check_targets(result)
    result["load_average_after"] = load_average()


def check_targets(result: dict) -> dict:
    latency = result["assignment_latency_ms"]
    return {
        "assignment_latency_p99_ms": {"target": TARGET_ASSIGN_P99_MS, "value": latency.get("p99"),
                                      "met": latency.get("p99", math.inf) <= TARGET_ASSIGN_P99_MS},
        "assignment_latency_max_ms": {"target": TARGET_ASSIGN_MAX_MS, "value": latency.get("max"),
                                      "met": latency.get("max", math.inf) <= TARGET_ASSIGN_MAX_MS},
        "results_per_s": {"target": TARGET_RESULTS_PER_S, "value": result["results_per_s"],
                          "met": (result["results_per_s"] or 0) >= TARGET_RESULTS_PER_S},
        "coordinator_peak_rss_mb": {"target": TARGET_COORDINATOR_RSS_MB, "value": result["coordinator_peak_rss_mb"],
                                    "met": result["coordinator_peak_rss_mb"] <= TARGET_COORDINATOR_RSS_MB},
        "idle_executor_rss_mb": {"target": TARGET_IDLE_EXECUTOR_RSS_MB, "value": result.get("idle_executor_rss_mb"),
                                 "met": (result.get("idle_executor_rss_mb") or math.inf) <= TARGET_IDLE_EXECUTOR_RSS_MB},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executors", type=int, default=200, help="Simulated executors.")
    parser.add_argument("--slots", type=int, default=4, help="Slots per simulated executor.")
    parser.add_argument("--tests", type=int, default=100_000, help="Tests of the largest run.")
    parser.add_argument("--hosts", type=int, default=4, help="Processes that share the simulated executors.")
    parser.add_argument("--strategy", default="even", help="Sharding strategy of the runs (swarmctl run's default is even).")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the test durations.")
    parser.add_argument("--median-ms", type=float, default=20.0, help="Median test duration in milliseconds.")
    parser.add_argument("--sigma", type=float, default=3.0, help="Sigma of the lognormal test durations.")
    parser.add_argument("--cap-s", type=float, default=30.0, help="Maximum test duration in seconds; longer draws are cut to it.")
    parser.add_argument("--voters", type=int, default=1, help="Coordinator-eligible processes (--peers); with 2 or more, the followers' lag is sampled.")
    parser.add_argument("--no-curve", action="store_true", help="Run only the largest run, without the 1,000 and 10,000 test runs.")
    parser.add_argument("--timeout", type=float, default=900.0, help="Stop everything after this many seconds.")
    parser.add_argument("--profile", type=Path, help="Record a py-spy profile (raw format) of the coordinator during the largest run.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder with the logs.")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON file to write.")
    args = parser.parse_args()
    if args.executors < 1 or args.slots < 1 or args.hosts < 1:
        parser.error("--executors, --slots and --hosts must be at least 1")
    if not 1 <= args.tests <= 999_999:
        parser.error(f"--tests {args.tests} is invalid: it must be between 1 and 999999")

    # SIGINT and SIGTERM stop the benchmark like Ctrl-C, and the processes it started are stopped
    # too. SIGINT is set explicitly because a shell starts background jobs with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "load_average_before": load_average(),
        "executors": args.executors,
        "slots_per_executor": args.slots,
        "hosts": args.hosts,
        "tests": args.tests,
        "strategy": args.strategy,
        "durations": {"distribution": "lognormal", "median_ms": args.median_ms, "sigma": args.sigma, "cap_s": args.cap_s,
                      "seed": args.seed, "failing": "1 test in 100"},
        "gossip": False,
        "completed": False,
    }
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="swarmctl-load-"))
    try:
        run_benchmark(args, folder, result)
    except TimedOut as exc:
        print(f"timed out: {exc}", flush=True)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # Inside trio.run the interrupt arrives wrapped in an exception group.
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is None:
            raise
        result["interrupted"] = True
        print("interrupted; the processes were stopped", flush=True)
    finally:
        result["benchmark_wall_s"] = round(time.monotonic() - started, 1)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
        if args.keep:
            print(f"logs kept in {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    summary = {key: result.get(key) for key in (
        "completed", "assignment_latency_ms", "results_per_s", "coordinator_cpu_s", "coordinator_peak_rss_mb",
        "executor_peak_rss_mb", "idle_executor_rss_mb", "wire_bytes_per_test", "wall_s", "lower_bound_s")}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
