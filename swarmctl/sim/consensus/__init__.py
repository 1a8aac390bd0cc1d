"""A deterministic simulation of Raft consensus among a few voters, under seeded faults.

``cluster`` runs the real consensus cores with their storage and a hash-chain state
machine over the in-memory network of ``network``. ``invariants`` checks Raft's safety
properties on every step, and ``schedule`` draws fault schedules from a seed and checks
that a cluster recovers once the faults heal. ``python -m swarmctl.sim.consensus --seed
N --voters V`` replays one schedule.
"""

from swarmctl.sim.consensus.cluster import ConsensusSimulation
from swarmctl.sim.consensus.invariants import InvariantChecker, InvariantViolation
from swarmctl.sim.consensus.network import NetworkProfile, SimNetwork
from swarmctl.sim.consensus.schedule import (
    FaultSchedule,
    ScheduleFailure,
    ScheduleResult,
    generate_schedule,
    run_schedule,
)

__all__ = [
    "ConsensusSimulation",
    "FaultSchedule",
    "InvariantChecker",
    "InvariantViolation",
    "NetworkProfile",
    "ScheduleFailure",
    "ScheduleResult",
    "SimNetwork",
    "generate_schedule",
    "run_schedule",
]
