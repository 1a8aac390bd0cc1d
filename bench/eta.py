"""Benchmark the accuracy of the ETA that ProgressTracker reports, on simulated runs.

Usage: python bench/eta.py [--seeds 20] [--output FILE]

``swarmctl.sim.scheduling`` plans each generated suite with the time-balanced strategy (or
dependency-aware, for suites with dependencies) and runs it on a simulated clock. This
script turns the simulation's trace into the events the coordinator receives: a shard
starts on an executor, each of its tests reports a result when it ends, and the shard
ends. It feeds them to a real ``ProgressTracker`` and, at 25%, 50% and 75% of the run's
wall time, compares two estimates of the time left with the true time left (makespan
minus elapsed):

- the tracker's ``estimate``, given the same durations the plan used;
- a linear ETA, elapsed * (total - done) / done.

It writes the median absolute error of each per checkpoint, their ratio, how often the
true time left falls inside the tracker's range and the range's median width to
bench/results/eta.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from swarmctl.coordinator.progress_tracker import ProgressTracker
from swarmctl.results import PASSED
from swarmctl.sim.scheduling import (
    DEPENDENCY_STRATEGY,
    SHARD_OVERHEAD_S,
    SimulationResult,
    Suite,
    make_suite,
    simulate,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS_DIR / "eta.json"

STRATEGY = "time-balanced"
CHECKPOINTS = (0.25, 0.5, 0.75)  # shares of the run's makespan
HISTORY_NOISE = 0.3
SLOWDOWN = 2.0  # the "slower than history" scenario runs this many times slower than its history
SIZES = ((1_000, 10), (10_000, 100))  # (tests, executors of one slot each)


@dataclass(frozen=True)
class Scenario:
    name: str
    shape: str
    history: str  # "noisy", "slower" or "none"
    strategy: str = STRATEGY


SCENARIOS = (
    Scenario("long-tail, history with noise 0.3", "long-tail", "noisy"),
    Scenario(f"long-tail, {SLOWDOWN:g}x slower than history", "long-tail", "slower"),
    Scenario("long-tail, no history", "long-tail", "none"),
    Scenario("uniform, no history", "uniform", "none"),
    # The coordinator plans every suite with dependencies with DEPENDENCY_STRATEGY.
    Scenario("chains, history with noise 0.3", "chains", "noisy", DEPENDENCY_STRATEGY),
)

# Event kinds, in the order they are applied when they fall on the same instant: a slot
# reports its last result and ends its shard before it starts the next one.
RESULT, END, START = 0, 1, 2


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare ProgressTracker's ETA with a linear ETA on simulated runs."
    )
    parser.add_argument("--seeds", type=int, default=20, help="seeds per scenario and size (default: %(default)s)")
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON results file (default: bench/results/eta.json)"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    return args


def make_scenario_suite(scenario: Scenario, tests: int, slots: int, seed: int) -> Suite:
    """Generate the suite of one seed, with the history the scenario names."""
    suite = make_suite(scenario.shape, tests, slots, HISTORY_NOISE, random.Random(seed))
    if scenario.history == "slower":
        history = {case_id: seconds / SLOWDOWN for case_id, seconds in suite.history.items()}
    elif scenario.history == "none":
        history = {}
    else:
        history = suite.history
    return Suite(suite.case_ids, suite.true_durations, history, suite.dependencies)


def trace_events(result: SimulationResult, suite: Suite) -> list[tuple]:
    """Turn a simulation trace into (time, kind, sequence, payload) events, sorted.

    A shard's tests run one after another in plan order, each for its true duration, and
    the shard overhead follows the last test.
    """
    events = []
    for sequence, shard_run in enumerate(result.trace):
        events.append((shard_run.started_s, START, sequence, shard_run))
        at = shard_run.started_s
        for case in shard_run.cases:
            at += suite.true_durations[case]
            events.append((at, RESULT, sequence, case))
        events.append((shard_run.finished_s, END, sequence, shard_run))
    events.sort(key=lambda event: event[:3])
    return events


def measure_seed(scenario: Scenario, tests: int, executors: int, seed: int) -> dict:
    """Simulate one run and return the errors of both ETAs at every checkpoint."""
    suite = make_scenario_suite(scenario, tests, executors, seed)
    result = simulate(scenario.strategy, suite, executors)
    tracker = ProgressTracker(suite.case_ids, range(tests), suite.history, suite.dependencies)
    events = trace_events(result, suite)
    makespan = result.makespan_s

    checkpoints = {}
    position = 0
    running = 0
    for share in CHECKPOINTS:
        now = share * makespan
        while position < len(events) and events[position][0] <= now:
            at, kind, _, payload = events[position]
            if kind == START:
                tracker.shard_started(payload.shard_id, 1, payload.executor_id, payload.cases, at)
                running += 1
            elif kind == RESULT:
                tracker.record(suite.case_ids[payload], PASSED, suite.true_durations[payload], "executor", at)
            else:
                tracker.shard_ended(payload.shard_id)
                running -= 1
            position += 1

        eta = tracker.estimate(now, executors - running)
        true_left = makespan - now
        linear = now * (tracker.total - tracker.done) / tracker.done if tracker.done else None
        checkpoints[f"{share:.0%}"] = {
            "true_left_s": round(true_left, 3),
            "done": tracker.done,
            "tracker_eta_s": _rounded(eta.eta_s),
            "tracker_low_s": _rounded(eta.low_s),
            "tracker_high_s": _rounded(eta.high_s),
            "basis": eta.basis,
            "linear_eta_s": _rounded(linear),
            "tracker_error_s": _error(eta.eta_s, true_left),
            "linear_error_s": _error(linear, true_left),
            "in_range": eta.low_s is not None and eta.low_s <= true_left <= eta.high_s,
        }
    return {
        "scenario": scenario.name,
        "tests": tests,
        "executors": executors,
        "seed": seed,
        "makespan_s": round(makespan, 3),
        "checkpoints": checkpoints,
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _error(estimate: float | None, true_left: float) -> float | None:
    return None if estimate is None else round(abs(estimate - true_left), 3)


def summarize(rows: list[dict]) -> list[dict]:
    """Return, per scenario, size and checkpoint, the median absolute errors and the range's hit rate."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["tests"], row["executors"]), []).append(row)
    summary = []
    for (scenario, tests, executors), group in groups.items():
        for checkpoint in group[0]["checkpoints"]:
            points = [row["checkpoints"][checkpoint] for row in group]
            tracker_errors = [p["tracker_error_s"] for p in points if p["tracker_error_s"] is not None]
            linear_errors = [p["linear_error_s"] for p in points if p["linear_error_s"] is not None]
            widths = [p["tracker_high_s"] - p["tracker_low_s"] for p in points if p["tracker_low_s"] is not None]
            tracker_median = statistics.median(tracker_errors) if tracker_errors else None
            linear_median = statistics.median(linear_errors) if linear_errors else None
            summary.append(
                {
                    "scenario": scenario,
                    "tests": tests,
                    "executors": executors,
                    "checkpoint": checkpoint,
                    "seeds": len(group),
                    "median_makespan_s": round(statistics.median(row["makespan_s"] for row in group), 2),
                    "median_true_left_s": round(statistics.median(p["true_left_s"] for p in points), 2),
                    "tracker_median_abs_error_s": _rounded(tracker_median),
                    "linear_median_abs_error_s": _rounded(linear_median),
                    "ratio": round(tracker_median / linear_median, 3) if tracker_median is not None and linear_median else None,
                    "tracker_unknown": len(points) - len(tracker_errors),
                    "in_range": sum(p["in_range"] for p in points),
                    "median_range_width_s": _rounded(statistics.median(widths)) if widths else None,
                }
            )
    return summary


def print_summary(summary: list[dict]) -> None:
    print(
        f"{'scenario':<38} {'tests':>6} {'exec':>4} {'at':>4} {'left s':>7} {'tracker s':>9} {'linear s':>9} "
        f"{'ratio':>6} {'in range':>8} {'width s':>7}"
    )
    for row in summary:
        tracker = "-" if row["tracker_median_abs_error_s"] is None else f"{row['tracker_median_abs_error_s']:.2f}"
        linear = "-" if row["linear_median_abs_error_s"] is None else f"{row['linear_median_abs_error_s']:.2f}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        print(
            f"{row['scenario']:<38} {row['tests']:>6} {row['executors']:>4} {row['checkpoint']:>4} "
            f"{row['median_true_left_s']:>7.1f} {tracker:>9} {linear:>9} {ratio:>6} "
            f"{row['in_range']:>3}/{row['seeds']:<4} {row['median_range_width_s'] or 0:>7.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    began = time.perf_counter()

    rows = [
        measure_seed(scenario, tests, executors, seed)
        for scenario in SCENARIOS
        for tests, executors in SIZES
        for seed in range(args.seeds)
    ]
    summary = summarize(rows)
    print_summary(summary)

    output = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/eta.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "python": platform.python_version(),
        "strategy": {scenario.name: scenario.strategy for scenario in SCENARIOS},
        "history_noise": HISTORY_NOISE,
        "shard_overhead_s": SHARD_OVERHEAD_S,
        "summary": summary,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=1) + "\n")
    print(f"wrote {args.output} in {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
