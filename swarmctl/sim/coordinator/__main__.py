"""Replay one schedule of the replicated-coordinator simulation: python -m swarmctl.sim.coordinator --seed N [--voters V] [--verbose]."""

from __future__ import annotations

import argparse
import logging
import sys

import trio

from swarmctl.sim.coordinator.cluster import ScheduleFailure, generate_schedule, run_schedule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swarmctl.sim.coordinator", description=__doc__)
    parser.add_argument("--seed", type=int, required=True, help="seed of the schedule to replay")
    parser.add_argument("--voters", type=int, default=3, help="number of voters (default 3)")
    parser.add_argument("--verbose", action="store_true", help="print the voters', coordinators' and executors' logs, stamped with simulated time")
    args = parser.parse_args(argv)

    print(generate_schedule(args.seed, args.voters).describe())
    if args.verbose:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_SimulatedTimeFormatter())
        logging.getLogger("swarmctl").addHandler(handler)
        logging.getLogger("swarmctl").setLevel(logging.INFO)
    try:
        result = run_schedule(args.seed, args.voters, verbose=args.verbose)
    except ScheduleFailure as failure:
        print(f"FAILED at {failure.at:.3f} s: {failure.reason}")
        return 1
    ended = f"{result.finished_s:.1f} s after the faults healed" if result.finished_s > 0 else "before the faults healed"
    print(f"passed: every run had ended {ended}; trace digest {result.trace_digest}")
    print(", ".join(f"{name} {count}" for name, count in sorted(result.stats.items())))
    return 0


class _SimulatedTimeFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        try:
            now = f"{trio.current_time():9.3f}s"
        except RuntimeError:
            now = " " * 10
        return f"{now} {record.name.rpartition('.')[2]:<18} {record.getMessage()}"


if __name__ == "__main__":
    sys.exit(main())
