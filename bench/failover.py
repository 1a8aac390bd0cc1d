"""Benchmark coordinator failover: from SIGKILL of the leader to a new leader assigning work.

Usage: python bench/failover.py [--trials 20]

Real processes on loopback with default timeouts: three coordinator-eligible nodes started
with the same --peers, and two executors of two slots each that join all three. Each trial
submits a run of 400 tests of 50 ms, waits until the leader has recorded 20 results, and
sends SIGKILL to the leader. It then reads the surviving voters' state databases for the
first shard attempt of a newer term: its assignment time minus the moment of the kill is
the failover time. The run must still end with the suite's expected outcome counts, one result per test. The
killed voter is started again on its own data folder and catches up before the next trial,
which kills whichever node leads then.

Then it measures how far the followers lag behind the leader under load, with bench/load.py
and three coordinator-eligible processes, which samples each follower's lag from the
leader's status every 0.25 s. First at a steady 5,000 results/s: 800 slots and tests of
about 160 ms. Then at the most the cluster takes: tests of about a millisecond (the
settings of make bench-throughput). --no-lag skips this part.

Writes bench/results/failover.json and prints a summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from load import free_ports  # noqa: E402  (the bench folder is not a package)
from recovery import Processes, poll, summary  # noqa: E402

DEFAULT_OUTPUT = BENCH_DIR / "results" / "failover.json"
TARGET_P99_S = 3.0
TESTS = 400
RESULTS_BEFORE_KILL = 20
# bench/load.py options for the followers' lag: three voters and 100,000 tests, of about
# 160 ms (800 slots offer 5,000 results/s), then of about 1 ms (as many as the cluster takes).
STEADY_LAG_LOAD = ["--no-curve", "--voters", "3", "--median-ms", "160", "--sigma", "0.1", "--cap-s", "1"]
STANDBY_LAG_LOAD = ["--no-curve", "--voters", "3", "--median-ms", "1", "--sigma", "0.5", "--cap-s", "0.05"]


def cluster_status(processes: Processes, peers: str) -> dict | None:
    process = subprocess.run(
        [sys.executable, "-m", "swarmctl", "status", "--cluster", peers, "--json", "--timeout", "2s"],
        env=processes.env, capture_output=True, text=True,
    )
    return json.loads(process.stdout) if process.returncode == 0 else None


def result_count(db: Path) -> int:
    with sqlite3.connect(db, timeout=5) as conn:
        try:
            return conn.execute("SELECT count(*) FROM results").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def first_assignment_after(db: Path, term: int) -> float | None:
    with sqlite3.connect(db, timeout=5) as conn:
        try:
            (assigned,) = conn.execute("SELECT min(assigned_at) FROM attempts WHERE term > ?", (term,)).fetchone()
        except sqlite3.OperationalError:
            return None
    return assigned


def applied(db: Path) -> int:
    """Return the last log index in a voter's state.db; 0 while the voter rebuilds it."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT coalesce(max(idx), 0) FROM log").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def measure(trials: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="swarmctl-bench-failover-"))
    processes = Processes(folder)
    suite = folder / "suite"
    subprocess.run(
        [sys.executable, str(BENCH_DIR / "gen_suite.py"), str(suite), "--tests", str(TESTS), "--files", "4", "--sleep-ms", "50"],
        check=True, capture_output=True,
    )
    expected = json.loads((suite / "expected_counts.json").read_text())["counts"]
    addresses = [f"127.0.0.1:{port}" for port in free_ports(3)]
    peers = ",".join(addresses)
    data = {address: folder / f"voter-{address.rsplit(':', 1)[1]}" for address in addresses}
    voters: dict[str, subprocess.Popen] = {}
    starts = {address: 0 for address in addresses}

    def start_voter(address: str) -> None:
        starts[address] += 1
        name = f"voter-{address.rsplit(':', 1)[1]}-{starts[address]}"
        voters[address] = processes.start(
            name, "up", "--role", "coordinator", "--listen", address, "--peers", peers, "--data-dir", str(data[address])
        )

    failover_s: list[float] = []
    wrong_runs = 0
    try:
        for address in addresses:
            start_voter(address)
        for i in range(2):
            processes.start(f"exec-{i}", "up", "--role", "executor", "--join", peers, "--slots", "2", "--id", f"exec-{i}",
                            "--data-dir", str(folder / f"exec-{i}"))
        for trial in range(trials):
            status = poll(lambda: cluster_status(processes, peers), "a leader")
            leader, term = status["leader"], status["term"]
            report = folder / f"report-{trial}.json"
            run = subprocess.Popen(
                [sys.executable, "-m", "swarmctl", "run", str(suite), "--cluster", peers, "--json", str(report)],
                env=processes.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            db = data[leader] / "state.db"
            start_count = result_count(db)
            poll(lambda: result_count(db) >= start_count + RESULTS_BEFORE_KILL, "results before the kill")
            killed_at = time.time()
            voters[leader].send_signal(signal.SIGKILL)
            voters[leader].wait()
            survivors = [address for address in addresses if address != leader]

            def assigned() -> float | None:
                times = [first_assignment_after(data[address] / "state.db", term) for address in survivors]
                return min((t for t in times if t is not None), default=None)

            failover_s.append(poll(assigned, "an assignment by a new leader") - killed_at)
            run.wait(timeout=300)
            counts = json.loads(report.read_text())["summary"]["counts"] if report.exists() else {}
            if counts != expected:
                wrong_runs += 1
            start_voter(leader)
            target = applied(data[survivors[0]] / "state.db")
            poll(lambda: applied(data[leader] / "state.db") >= target, "the restarted voter to catch up")
            print(f"trial {trial + 1}/{trials}: failover {failover_s[-1]:.3f}s, counts {counts}", file=sys.stderr)
    finally:
        processes.stop_all()

    result = summary(failover_s)
    return {
        "voters": 3,
        "executors": 2,
        "tests_per_run": TESTS,
        "trials": trials,
        "kill_to_new_leader_assignment_s": result,
        "target_p99_s": TARGET_P99_S,
        "met": result["p99"] <= TARGET_P99_S,
        "runs_with_wrong_results": wrong_runs,
        "samples_s": [round(value, 3) for value in failover_s],
    }


def measure_standby_lag(options: list[str]) -> dict:
    """Run bench/load.py with ``options`` against three voters; return the followers' lag and the load."""
    with tempfile.TemporaryDirectory(prefix="swarmctl-lag-") as folder:
        output = Path(folder) / "load.json"
        subprocess.run(
            [sys.executable, str(BENCH_DIR / "load.py"), *options, "--output", str(output)],
            check=False, stdout=subprocess.DEVNULL,
        )
        if not output.exists():
            return {"completed": False, "failure": "bench/load.py wrote no results"}
        load = json.loads(output.read_text())
    return {
        "command": f"bench/load.py {' '.join(options)}",
        "completed": load.get("completed"),
        "failure": load.get("failure", ""),
        "tests": load.get("tests"),
        "results_per_s": load.get("results_per_s"),
        "results_per_s_busiest_second": load.get("results_per_s_busiest_second"),
        "wall_s": load.get("wall_s"),
        "followers": load.get("standby_lag"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--no-lag", action="store_true", help="Skip the followers' lag under load.")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    started = time.monotonic()
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "failover": measure(args.trials),
    }
    if not args.no_lag:
        result["standby_lag"] = measure_standby_lag(STEADY_LAG_LOAD)
        result["standby_lag_most_load"] = measure_standby_lag(STANDBY_LAG_LOAD)
    result["wall_s"] = round(time.monotonic() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
