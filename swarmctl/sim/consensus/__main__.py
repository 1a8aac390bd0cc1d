"""Replay one consensus fault schedule: python -m swarmctl.sim.consensus --seed N --voters V [--coordinator-state] [--verbose]."""

from __future__ import annotations

import argparse
import logging
import sys

from swarmctl.sim.consensus.cluster import ConsensusSimulation
from swarmctl.sim.consensus.schedule import (
    ScheduleFailure,
    generate_schedule,
    run_schedule,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swarmctl.sim.consensus", description=__doc__)
    parser.add_argument("--seed", type=int, required=True, help="seed of the schedule to replay")
    parser.add_argument("--voters", type=int, default=3, help="number of voters (default 3)")
    parser.add_argument(
        "--coordinator-state", action="store_true",
        help="run the coordinator's state machine on SQLite and test runs through it, instead of a hash chain",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="log every role change and snapshot, stamped with simulated time"
    )
    args = parser.parse_args(argv)

    print(generate_schedule(args.seed, args.voters).describe())
    on_start = None
    if args.verbose:
        handler = logging.StreamHandler(sys.stdout)
        logging.getLogger("swarmctl.cluster.consensus").addHandler(handler)
        logging.getLogger("swarmctl.cluster.consensus").setLevel(logging.INFO)

        def on_start(simulation: ConsensusSimulation) -> None:
            handler.setFormatter(_SimulatedTimeFormatter(simulation))

    try:
        result = run_schedule(args.seed, args.voters, on_start=on_start, coordinator_state=args.coordinator_state)
    except ScheduleFailure as failure:
        print(f"FAILED at {failure.at:.3f} s: {failure.reason}")
        return 1
    print(f"passed: recovered {result.recovery_s:.1f} s after the faults healed; trace digest {result.trace_digest}")
    print(", ".join(f"{name} {count}" for name, count in sorted(result.stats.items())))
    return 0


class _SimulatedTimeFormatter(logging.Formatter):
    def __init__(self, simulation: ConsensusSimulation) -> None:
        super().__init__()
        self._simulation = simulation

    def format(self, record: logging.LogRecord) -> str:
        return f"{self._simulation.now:9.4f}s {record.getMessage()}"


if __name__ == "__main__":
    sys.exit(main())
