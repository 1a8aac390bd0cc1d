"""Benchmark recovery: how fast an executor's work moves on after it dies, and how fast gossip notices.

Usage: python bench/recovery.py [--trials 20] [--skip-gossip]

Part 1 uses real processes on loopback with default settings: one coordinator and three
executors of one slot each. Each trial submits a run of two 60-second tests, so two
executors are busy and one is idle, waits until both tests run, and sends SIGKILL to one
busy executor. It reads two times from the coordinator's state database: when the killed
attempt ended (requeued) and when the shard's next attempt was assigned (reassigned), both
measured from the moment of the kill. It then cancels the run and starts a fresh executor
for the next trial.

Part 2 runs the SWIM membership simulator (bench/recovery_swim.py): time to declare a crashed
member dead among 128 members, and false deaths while members pause under packet loss.

Writes bench/results/recovery.json and prints a summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = BENCH_DIR / "results" / "recovery.json"
TARGET_REASSIGN_P99_S = 3.0
WAIT_S = 60.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


class Processes:
    """The swarmctl processes of the benchmark; all are stopped on exit."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.env = {**os.environ, "SWARMCTL_HOME": str(folder / "home")}
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")
        process = subprocess.Popen(
            [sys.executable, "-m", "swarmctl", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def wait_for_log(self, name: str, pattern: str) -> re.Match:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log(name))
            if match:
                return match
            time.sleep(0.02)
        raise SystemExit(f"{pattern!r} not in {name}.log within {WAIT_S}s")

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def running_attempts(db: Path, run_id: str) -> list[tuple[int, int, str]]:
    with sqlite3.connect(db, timeout=5) as conn:
        return conn.execute(
            "SELECT shard_id, attempt, executor FROM attempts WHERE run_id = ? AND ended_at IS NULL", (run_id,)
        ).fetchall()


def attempt_times(db: Path, run_id: str, shard_id: int, attempt: int) -> tuple[float | None, float | None]:
    """Return when the attempt ended and when the next attempt was assigned (Unix times)."""
    with sqlite3.connect(db, timeout=5) as conn:
        (ended,) = conn.execute(
            "SELECT ended_at FROM attempts WHERE run_id = ? AND shard_id = ? AND attempt = ?", (run_id, shard_id, attempt)
        ).fetchone()
        row = conn.execute(
            "SELECT assigned_at FROM attempts WHERE run_id = ? AND shard_id = ? AND attempt = ?",
            (run_id, shard_id, attempt + 1),
        ).fetchone()
    return ended, row[0] if row else None


def two_running(db: Path, run_id: str) -> list[tuple[int, int, str]] | None:
    rows = running_attempts(db, run_id)
    return rows if len(rows) == 2 else None


def next_attempt(db: Path, run_id: str, shard_id: int, attempt: int) -> tuple[float, float] | None:
    ended, assigned = attempt_times(db, run_id, shard_id, attempt)
    return (ended, assigned) if assigned is not None else None


def poll(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def measure_reassignment(trials: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="swarmctl-recovery-") as tmp:
        folder = Path(tmp)
        suite = folder / "suite"
        suite.mkdir()
        (suite / "test_long.py").write_text(
            "import time\n\ndef test_one():\n    time.sleep(60)\n\ndef test_two():\n    time.sleep(60)\n"
        )
        processes = Processes(folder)
        db = folder / "coordinator" / "state.db"
        requeued, reassigned = [], []
        try:
            processes.start("coordinator", "up", "--role", "coordinator", "--listen", "127.0.0.1:0",
                            "--data-dir", str(folder / "coordinator"))
            port = processes.wait_for_log("coordinator", r"listening on 127\.0\.0\.1:(\d+)").group(1)
            address = f"127.0.0.1:{port}"
            executors: dict[str, subprocess.Popen] = {}

            def add_executor(name: str) -> None:
                executors[name] = processes.start(
                    name, "up", "--role", "executor", "--join", address, "--slots", "1", "--id", name,
                    "--data-dir", str(folder / name),
                )
                processes.wait_for_log("coordinator", rf"executor {name} joined")

            for i in range(3):
                add_executor(f"exec-{i}")

            for trial in range(trials):
                client = processes.start(f"run-{trial}", "run", str(suite), "--cluster", address)
                run_id = processes.wait_for_log(f"run-{trial}", r"swarmctl run (\S+)").group(1)
                busy = poll(lambda: two_running(db, run_id), "two running tests")
                time.sleep(0.5)  # let both workers start their test
                shard_id, attempt, victim = busy[0]

                killed_at = time.time()
                executors.pop(victim).send_signal(signal.SIGKILL)
                ended, assigned = poll(lambda: next_attempt(db, run_id, shard_id, attempt), "the next attempt")
                requeued.append(ended - killed_at)
                reassigned.append(assigned - killed_at)
                print(f"trial {trial + 1}: requeued {ended - killed_at:.2f}s, reassigned {assigned - killed_at:.2f}s", flush=True)

                subprocess.run([sys.executable, "-m", "swarmctl", "cancel", run_id, "--cluster", address],
                               env=processes.env, capture_output=True, timeout=60)
                client.wait(timeout=60)
                add_executor(f"exec-{3 + trial}")
        finally:
            processes.stop_all()

    return {
        "trials": trials,
        "setup": "coordinator + 3 executors x 1 slot on loopback, default settings (lease 5s, reconnect grace 1s); "
                 "SIGKILL of a busy executor while another executor is idle",
        "requeued_s": summary(requeued),
        "reassigned_s": summary(reassigned),
        "target_reassigned_p99_s": TARGET_REASSIGN_P99_S,
        "meets_target": percentile(reassigned, 99) <= TARGET_REASSIGN_P99_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--skip-gossip", action="store_true", help="Measure only the real-process reassignment.")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    started = time.monotonic()
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "reassignment": measure_reassignment(args.trials),
    }
    if not args.skip_gossip:
        sys.path.insert(0, str(BENCH_DIR))
        import recovery_swim

        result["gossip"] = recovery_swim.measure()
    result["wall_s"] = round(time.monotonic() - started, 1)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
