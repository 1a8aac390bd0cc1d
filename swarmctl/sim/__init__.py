"""Simulators that run swarmctl's coordinator code on a simulated clock.

``swarmctl.sim.scheduling`` drives the real sharding strategies and ``pick_assignments``
over generated suites, so a plan's makespan can be compared with its lower bound without
starting executors. ``swarmctl.sim.membership`` runs the gossip membership over a lossy
simulated network, and ``swarmctl.sim.consensus`` runs Raft voters through seeded fault
schedules and checks the safety and liveness invariants after every step.
"""
