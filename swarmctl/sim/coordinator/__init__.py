"""A deterministic simulation of the whole replicated coordinator: the real code, seeded faults, a virtual clock.

``cluster`` runs voters, executors and a client over the memory network of ``network``;
``executor`` has the executors' simulated slots. ``python -m swarmctl.sim.coordinator
--seed N`` replays one schedule.
"""

from swarmctl.sim.coordinator.cluster import Schedule, ScheduleFailure, ScheduleResult, generate_schedule, run_schedule

__all__ = ["Schedule", "ScheduleFailure", "ScheduleResult", "generate_schedule", "run_schedule"]
