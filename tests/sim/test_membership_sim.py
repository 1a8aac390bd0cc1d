"""Tests of the membership simulation at 128 and 512 members, with and without packet loss.

Each test simulates at most a minute, and the large ones a few seconds of cluster time, so
that the file runs in well under a minute. Long runs belong to bench/recovery_swim.py.
"""

from __future__ import annotations

import math

import pytest

from swarmctl.cluster.membership import MembershipConfig, MemberState
from swarmctl.sim.membership import (
    MembershipSimulation,
    detection_times,
    false_positives,
    run_with_pauses,
)

ALIVE = (MemberState.ALIVE,)
GONE = (MemberState.DEAD, MemberState.LEFT)


def run_until_all_know(
    simulation: MembershipSimulation, subject: str, states: tuple[MemberState, ...], limit_s: float
) -> float:
    """Run in steps of 0.25 s until every live member saw ``subject`` in ``states``; return how long that took."""
    start = simulation.now
    while simulation.now - start < limit_s:
        simulation.run_for(0.25)
        if simulation.all_know(subject, states) < math.inf:
            return simulation.all_know(subject, states) - start
    return math.inf


@pytest.mark.parametrize("members", [128, 512])
@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_simulation_converges_on_join_and_crash(members: int, loss: float) -> None:
    simulation = MembershipSimulation(seed=members + int(loss * 100), loss=loss)
    ids = simulation.add_members(members)
    simulation.run_for(2.0)

    simulation.add_member("newcomer", seeds=[ids[0]])
    assert run_until_all_know(simulation, "newcomer", ALIVE, limit_s=10.0) < 10.0
    newcomer = simulation.members["newcomer"].core
    for _ in range(40):  # the newcomer sends its join again after join_retry_s if packets were lost
        if len([member for member in newcomer.members() if member.state == MemberState.ALIVE]) == members + 1:
            break
        simulation.run_for(0.25)
    assert len([member for member in newcomer.members() if member.state == MemberState.ALIVE]) == members + 1

    victim = ids[members // 2]
    simulation.crash(victim)
    assert run_until_all_know(simulation, victim, GONE, limit_s=15.0) < 15.0

    assert simulation.false_deaths == []
    assert simulation.stats["oversized"] == 0
    assert simulation.stats["largest"] <= simulation.config.max_packet_bytes


@pytest.mark.parametrize("loss", [0.0, 0.05])
def test_detection_times_within_target(loss: float) -> None:
    detections = detection_times(members=128, loss=loss, crashes=3, seed=7)
    assert len(detections) == 3
    for detection in detections:
        assert detection.first_s <= detection.all_s
        assert detection.all_s < 6.0


def test_false_positives_none_with_pausing_members() -> None:
    assert false_positives(members=128, loss=0.05, simulated_s=60.0, seed=3) == 0


def test_paused_member_refutes_on_resume() -> None:
    # At 32 members the minimum suspicion timeout is 2.6 s, so pauses must stay shorter.
    report = run_with_pauses(members=32, loss=0.0, paused_fraction=0.1, pause_s=(1.5, 2.2), simulated_s=60.0, seed=5)
    assert report.pauses >= 3
    assert report.suspicions > 0  # the pauses were noticed...
    assert report.false_deaths == []  # ...and refuted in time
    pausing = [member.core for member in report.simulation.members.values() if member.core.incarnation > 0]
    assert pausing


def test_paused_member_handles_queued_packets() -> None:
    simulation = MembershipSimulation(seed=11)
    ids = simulation.add_members(16)
    simulation.run_for(1.0)
    sleeper = simulation.members[ids[3]]
    handled_before = simulation.stats["delivered"]

    simulation.pause(ids[3], 2.0)
    simulation.run_for(1.9)
    assert sleeper.inbox  # pings and gossip wait in the "socket buffer"
    simulation.run_for(0.2)
    assert sleeper.inbox == []
    assert simulation.stats["delivered"] > handled_before
    assert sleeper.core.incarnation >= 1  # it was suspected while asleep and refuted
    simulation.run_for(5.0)
    assert simulation.false_deaths == []


def test_graceful_leave_reaches_everyone() -> None:
    simulation = MembershipSimulation(seed=2, loss=0.05)
    ids = simulation.add_members(128)
    simulation.run_for(1.0)
    simulation.leave(ids[9])
    assert run_until_all_know(simulation, ids[9], (MemberState.LEFT,), limit_s=5.0) < 5.0
    assert simulation.false_deaths == []


def test_meta_change_reaches_everyone() -> None:
    simulation = MembershipSimulation(seed=4, loss=0.05)
    ids = simulation.add_members(128)
    simulation.run_for(1.0)
    simulation.set_meta(ids[1], {"role": "executor", "load": 0.75})
    simulation.run_for(3.0)
    for node_id in ids:
        assert simulation.members[node_id].core.member(ids[1]).meta == {"role": "executor", "load": 0.75}


def test_partition_heals_through_sync() -> None:
    config = MembershipConfig(sync_interval_s=2.0)
    simulation = MembershipSimulation(seed=6, config=config)
    ids = simulation.add_members(16)
    simulation.run_for(1.0)
    left_side, right_side = ids[:8], ids[8:]

    simulation.partition(left_side, right_side)
    simulation.run_for(20.0)
    assert simulation.members[ids[0]].core.member(ids[15]).state == MemberState.DEAD
    assert simulation.members[ids[15]].core.member(ids[0]).state == MemberState.DEAD

    simulation.heal()
    simulation.run_for(20.0)
    for observer in ids:
        core = simulation.members[observer].core
        states = {member.node_id: member.state for member in core.members()}
        assert set(states.values()) == {MemberState.ALIVE}, observer


def test_same_seed_gives_same_result() -> None:
    first = detection_times(members=32, crashes=2, seed=9)
    second = detection_times(members=32, crashes=2, seed=9)
    assert first == second
    assert detection_times(members=32, crashes=2, seed=10) != first
