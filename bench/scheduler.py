"""Benchmark the sharding strategies and shard assignment in the scheduling simulator.

Usage: python bench/scheduler.py [--repeat 5] [--repeat-large 2] [--repeat-large-dependencies 1]
                                 [--output FILE] [--timing-output FILE]

Three measurements, all in one process:

1. Makespan against the lower bound. For every strategy, suite shape, executor count,
   test count and history noise, ``swarmctl.sim.scheduling`` simulates the run on a
   simulated clock and records makespan_s, lower_bound_s and their ratio. Shapes with
   dependencies run only with DEPENDENCY_STRATEGY, because the coordinator plans every
   run that declares dependencies with it. Each 10,000-test configuration runs with
   ``--repeat`` seeds. Each 100,000-test one runs with ``--repeat-large`` seeds, or with
   ``--repeat-large-dependencies`` seeds for a shape with dependencies. Shards cost
   SHARD_OVERHEAD_S each, and a smaller grid repeats some runs with
   SLOW_SHARD_OVERHEAD_S. Every seed is one row of bench/results/scheduler.json.
2. Planning time: the wall-clock time of one ``plan`` call for 100,000 tests, on the
   long-tail shape and, for DEPENDENCY_STRATEGY, also on the chains shape.
3. Assignment cost: the wall-clock time per shard of ``pick_assignments`` plus the state
   updates that follow it, for runs of 1,000, 10,000 and 100,000 queued tests, on the same
   shapes as the planning time.

Measurements 2 and 3 use the real clock and go to bench/results/scheduler-timing.json.
Only measurement 1 is simulated. No executor or coordinator process is started.
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
from collections import deque
from pathlib import Path

from swarmctl.coordinator.strategies import STRATEGY_NAMES, PlanInput, get_strategy
from swarmctl.sim.scheduling import (
    DEPENDENCY_STRATEGY,
    SHAPES,
    SHAPES_WITH_DEPENDENCIES,
    SHARD_OVERHEAD_S,
    assign_shards,
    finish_shard,
    make_executors,
    make_run,
    make_suite,
    run_simulation,
    runnable_dependencies,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_OUTPUT = RESULTS_DIR / "scheduler.json"
DEFAULT_TIMING_OUTPUT = RESULTS_DIR / "scheduler-timing.json"

EXECUTOR_COUNTS = (10, 100, 200)
TEST_COUNTS = (10_000, 100_000)
NOISE_LEVELS = (0.0, 0.3)
# A second, smaller grid repeats the 10,000-test runs on 100 and 200 executors with noise
# 0.3 and this per-shard overhead in seconds, the cost that the comment on
# MIN_SHARD_SECONDS in swarmctl.coordinator.strategies reports for trivial pytest tests.
# It shows how much the extra shards of a strategy cost when shards are not cheap.
SLOW_SHARD_OVERHEAD_S = 0.03
SLOW_SHARD_EXECUTOR_COUNTS = (100, 200)
# Each simulated executor has one slot. pick_assignments spreads shards over the executors
# with the most free slots, so in this model 50 executors of 2 slots behave like 100 of 1.
SLOTS_PER_EXECUTOR = 1

PLANNING_TESTS = 100_000
PLANNING_SLOTS = 100
PLANNING_REPEAT = 5
ASSIGNMENT_QUEUED_TESTS = (1_000, 10_000, 100_000)
ASSIGNMENT_EXECUTORS = 100
ASSIGNMENT_REPEAT = 3
# With dependencies, each pick_assignments call checks the dependencies of every queued
# case, so a run of 100,000 tests costs about shards x tests lookups: one pass takes
# seconds, not milliseconds. Those runs are simulated and timed with fewer seeds and passes.
REPEAT_LARGE_WITH_DEPENDENCIES = 1
ASSIGNMENT_REPEAT_LARGE_WITH_DEPENDENCIES = 1

# Targets that the strategy named TARGET_STRATEGY should meet: the mean efficiency over
# seeds for long-tail suites of 10,000 tests on 100 executors, by noise level, and the
# median planning time of 100,000 tests.
TARGET_STRATEGY = "time-balanced"
TARGET_EFFICIENCY = {0.0: 0.97, 0.3: 0.93}
TARGET_PLANNING_S = 1.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Simulate every sharding strategy on generated suites and compare the makespan with "
            "its lower bound, then time planning and shard assignment on the real clock."
        ),
    )
    parser.add_argument("--repeat", type=int, default=5, help="seeds per 10,000-test configuration (default: %(default)s)")
    parser.add_argument(
        "--repeat-large", type=int, default=2, help="seeds per 100,000-test configuration (default: %(default)s)"
    )
    parser.add_argument(
        "--repeat-large-dependencies",
        type=int,
        default=REPEAT_LARGE_WITH_DEPENDENCIES,
        help="seeds per 100,000-test configuration of a shape with dependencies (default: %(default)s)",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON file of simulation rows (default: bench/results/scheduler.json)"
    )
    parser.add_argument(
        "--timing-output",
        type=Path,
        default=DEFAULT_TIMING_OUTPUT,
        help="the JSON file of planning and assignment times (default: bench/results/scheduler-timing.json)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.repeat_large < 1 or args.repeat_large_dependencies < 1:
        parser.error("--repeat, --repeat-large and --repeat-large-dependencies must be at least 1")
    return args


def simulated_shapes(strategy: str) -> list[str]:
    """Return the shapes to simulate with ``strategy``: those with dependencies only for DEPENDENCY_STRATEGY."""
    return [shape for shape in SHAPES if shape not in SHAPES_WITH_DEPENDENCIES or strategy == DEPENDENCY_STRATEGY]


def timed_shapes(strategy: str) -> list[str]:
    """Return the shapes for the planning and assignment times of ``strategy``."""
    return ["long-tail", "chains"] if strategy == DEPENDENCY_STRATEGY else ["long-tail"]


def simulate_grid(repeat: int, repeat_large: int, repeat_large_dependencies: int) -> list[dict]:
    """Simulate every configuration with its seeds and return one row per seed."""
    configurations = []
    for strategy in STRATEGY_NAMES:
        for shape in simulated_shapes(strategy):
            for executors in EXECUTOR_COUNTS:
                for tests in TEST_COUNTS:
                    if tests <= 10_000:
                        seeds = repeat
                    elif shape in SHAPES_WITH_DEPENDENCIES:
                        seeds = repeat_large_dependencies
                    else:
                        seeds = repeat_large
                    for noise in NOISE_LEVELS:
                        configurations.append((strategy, shape, executors, tests, noise, seeds, SHARD_OVERHEAD_S))
            for executors in SLOW_SHARD_EXECUTOR_COUNTS:
                configurations.append((strategy, shape, executors, 10_000, 0.3, repeat, SLOW_SHARD_OVERHEAD_S))

    rows = []
    for strategy, shape, executors, tests, noise, seeds, overhead in configurations:
        for seed in range(seeds):
            result = run_simulation(strategy, shape, executors, tests, noise, seed, SLOTS_PER_EXECUTOR, overhead)
            rows.append(
                {
                    "strategy": strategy,
                    "shape": shape,
                    "executors": executors,
                    "tests": tests,
                    "noise": noise,
                    "shard_overhead_s": overhead,
                    "seed": seed,
                    "shards": result.shards,
                    "makespan_s": round(result.makespan_s, 4),
                    "lower_bound_s": round(result.lower_bound_s, 4),
                    "longest_chain_s": round(result.longest_chain_s, 4),
                    "efficiency": round(result.efficiency, 4),
                }
            )
    return rows


def summarize_rows(rows: list[dict]) -> list[dict]:
    """Group the rows by configuration and return the mean and minimum efficiency of each."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["strategy"], row["shape"], row["executors"], row["tests"], row["noise"], row["shard_overhead_s"])
        groups.setdefault(key, []).append(row)
    summary = []
    for (strategy, shape, executors, tests, noise, overhead), group in groups.items():
        efficiencies = [row["efficiency"] for row in group]
        # The lower bound is the longest chain (or test) when that exceeds total / slots.
        chain_bound = sum(row["lower_bound_s"] == row["longest_chain_s"] for row in group)
        summary.append(
            {
                "strategy": strategy,
                "shape": shape,
                "executors": executors,
                "tests": tests,
                "noise": noise,
                "shard_overhead_s": overhead,
                "seeds": len(group),
                "mean_efficiency": round(statistics.fmean(efficiencies), 4),
                "min_efficiency": round(min(efficiencies), 4),
                "mean_shards": round(statistics.fmean(row["shards"] for row in group), 1),
                "seeds_bound_by_chain": chain_bound,
            }
        )
    return summary


def time_planning(strategy: str, shape: str) -> dict:
    """Time ``plan`` on a suite of PLANNING_TESTS tests of ``shape`` with noisy history."""
    suite = make_suite(shape, PLANNING_TESTS, PLANNING_SLOTS, 0.3, random.Random(0))
    request = PlanInput(suite.case_ids, range(PLANNING_TESTS), PLANNING_SLOTS, suite.history, suite.dependencies)
    plan = get_strategy(strategy).plan
    seconds = []
    for _ in range(PLANNING_REPEAT):
        start = time.perf_counter()
        plan(request)
        seconds.append(time.perf_counter() - start)
    return {
        "strategy": strategy,
        "shape": shape,
        "tests": PLANNING_TESTS,
        "slots": PLANNING_SLOTS,
        "repeat": PLANNING_REPEAT,
        "median_s": round(statistics.median(seconds), 4),
        "max_s": round(max(seconds), 4),
    }


def time_assignment(strategy: str, shape: str, queued_tests: int) -> dict:
    """Time the assignment of every shard of one planned run, as the coordinator assigns them.

    The first call fills every idle slot, and after that the oldest running shard finishes,
    which frees one slot and may open shards that wait for its tests, and the next call
    assigns what is ready. Only the ``assign_shards`` calls are timed, and the SQLite writes
    and messages of the real coordinator are not part of it.
    """
    suite = make_suite(shape, queued_tests, ASSIGNMENT_EXECUTORS, 0.3, random.Random(0))
    dependencies = runnable_dependencies(suite.dependencies, range(queued_tests))
    request = PlanInput(
        suite.case_ids, range(queued_tests), ASSIGNMENT_EXECUTORS * SLOTS_PER_EXECUTOR, suite.history, dependencies
    )
    shards = get_strategy(strategy).plan(request)
    repeat = ASSIGNMENT_REPEAT
    if dependencies and queued_tests > 10_000:
        repeat = ASSIGNMENT_REPEAT_LARGE_WITH_DEPENDENCIES

    per_shard = []
    for _ in range(repeat):
        run = make_run(strategy, suite.case_ids, shards, dependencies)
        views = make_executors(ASSIGNMENT_EXECUTORS, SLOTS_PER_EXECUTOR)
        running: deque = deque()
        assigned = 0
        elapsed = 0.0
        while run.queue:
            start = time.perf_counter()
            started = assign_shards(run, views, 0.0)
            elapsed += time.perf_counter() - start
            assigned += len(started)
            running.extend(started)
            if not running:
                raise RuntimeError(f"{strategy} on {shape}: {len(run.queue)} shards are queued but none is ready")
            shard_id, executor = running.popleft()
            finish_shard(run, shard_id, executor, queued_tests, 0.0)
        per_shard.append(elapsed / assigned)
    return {
        "strategy": strategy,
        "shape": shape,
        "queued_tests": queued_tests,
        "shards": len(shards),
        "executors": ASSIGNMENT_EXECUTORS,
        "repeat": repeat,
        "median_us_per_shard": round(statistics.median(per_shard) * 1e6, 1),
    }


def check_targets(summary: list[dict], planning: list[dict]) -> list[str]:
    """Return one line per target: the measured value and whether it is met."""
    lines = []
    for row in summary:
        key = (row["strategy"], row["shape"], row["executors"], row["tests"], row["shard_overhead_s"])
        if key != (TARGET_STRATEGY, "long-tail", 100, 10_000, SHARD_OVERHEAD_S):
            continue
        target = TARGET_EFFICIENCY.get(row["noise"])
        if target is None:
            continue
        verdict = "met" if row["mean_efficiency"] >= target else "MISSED"
        lines.append(
            f"{TARGET_STRATEGY} long-tail 100 x 10,000 noise {row['noise']}: mean efficiency "
            f"{row['mean_efficiency']:.3f} (min {row['min_efficiency']:.3f}), target >= {target}: {verdict}"
        )
    for row in planning:
        verdict = "met" if row["median_s"] < TARGET_PLANNING_S else "MISSED"
        lines.append(
            f"planning {PLANNING_TESTS:,} {row['shape']} tests with {row['strategy']}: {row['median_s']:.3f} s, "
            f"target < {TARGET_PLANNING_S} s: {verdict}"
        )
    if not any(line.startswith(TARGET_STRATEGY) for line in lines):
        lines.append(f"strategy {TARGET_STRATEGY!r} is not available, so its efficiency targets were not checked")
    return lines


def print_summary(summary: list[dict]) -> None:
    header = f"{'strategy':<16} {'shape':<10} {'exec':>5} {'tests':>7} {'noise':>5} {'ovh ms':>6}"
    print(f"{header} {'mean eff':>9} {'min eff':>8} {'shards':>7} {'chain-bound':>11}")
    for row in summary:
        print(
            f"{row['strategy']:<16} {row['shape']:<10} {row['executors']:>5} {row['tests']:>7} {row['noise']:>5} "
            f"{row['shard_overhead_s'] * 1000:>6.0f} "
            f"{row['mean_efficiency']:>9.3f} {row['min_efficiency']:>8.3f} {row['mean_shards']:>7.0f} "
            f"{row['seeds_bound_by_chain']:>5}/{row['seeds']:<5}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    began = time.perf_counter()

    print(f"simulating {', '.join(STRATEGY_NAMES)} on {', '.join(SHAPES)}", flush=True)
    rows = simulate_grid(args.repeat, args.repeat_large, args.repeat_large_dependencies)
    summary = summarize_rows(rows)
    print_summary(summary)

    planning = [time_planning(strategy, shape) for strategy in STRATEGY_NAMES for shape in timed_shapes(strategy)]
    for row in planning:
        print(
            f"planning {row['tests']:,} {row['shape']} tests, {row['strategy']}: "
            f"median {row['median_s']:.3f} s, max {row['max_s']:.3f} s"
        )
    assignment = [
        time_assignment(strategy, shape, queued)
        for strategy in STRATEGY_NAMES
        for shape in timed_shapes(strategy)
        for queued in ASSIGNMENT_QUEUED_TESTS
    ]
    for row in assignment:
        print(
            f"assignment, {row['strategy']}, {row['queued_tests']:,} queued {row['shape']} tests in {row['shards']} shards: "
            f"{row['median_us_per_shard']:.1f} us per shard"
        )

    targets = check_targets(summary, planning)
    for line in targets:
        print(line)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=1) + "\n")
    timing = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/scheduler.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "python": platform.python_version(),
        "planning": planning,
        "assignment": assignment,
        "targets": targets,
        "summary": summary,
    }
    args.timing_output.parent.mkdir(parents=True, exist_ok=True)
    args.timing_output.write_text(json.dumps(timing, indent=1) + "\n")
    print(f"wrote {args.output} and {args.timing_output} in {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
