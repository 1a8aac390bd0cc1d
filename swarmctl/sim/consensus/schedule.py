"""Fault schedules drawn from a seed, and the run that checks one of them.

A schedule has a fault phase and a recovery phase. During the first ``FAULT_PHASE_S``
simulated seconds, clients propose commands all the time and the faults of the schedule
happen. Faults are partitions (random, around the leader, or a link cut in one
direction), heals, crashes and restarts, pauses, changes of loss, delay and duplication,
and leadership transfers. Then every link heals, every crashed voter restarts, and the
network turns reliable. Within ``LIVENESS_BOUND_S`` after that a single leader must be
followed by every voter, and a command proposed to it must be applied on every voter.
Safety properties are checked throughout by ``InvariantChecker``.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from swarmctl.cluster.consensus import ConsensusConfig, EntryKind
from swarmctl.errors import SwarmError
from swarmctl.coordinator import commands as cmd
from swarmctl.sim.consensus.cluster import ConsensusSimulation
from swarmctl.sim.consensus.coordinator_state import CoordinatorMachine, RunWorkload, encode
from swarmctl.sim.consensus.invariants import InvariantViolation
from swarmctl.sim.consensus.network import RELIABLE, NetworkProfile
from swarmctl.sim.consensus.state_machine import HashChain

FAULT_PHASE_S = 20.0
# Recovery needs at most a few election rounds of 1-2 election timeouts each once the
# network is reliable; 20 s is 10 to 20 rounds with the default settings.
LIVENESS_BOUND_S = 20.0
CLIENT_INTERVAL_S = 0.02  # mean time between two client proposals during the fault phase
# Mean time between two steps of the run workload, so that its runs span the fault phase.
WORKLOAD_INTERVAL_S = 0.08
POLL_S = 0.1


class FaultKind(enum.StrEnum):
    PARTITION = "partition"
    ISOLATE_LEADER = "isolate-leader"
    CUT_ONE_WAY = "cut-one-way"
    HEAL = "heal"
    CRASH = "crash"
    CRASH_LEADER = "crash-leader"
    RESTART = "restart"
    PAUSE = "pause"
    NETWORK = "network"
    TRANSFER = "transfer"


# Relative frequency of each kind of fault.
FAULT_WEIGHTS = {
    FaultKind.PARTITION: 3,
    FaultKind.ISOLATE_LEADER: 3,
    FaultKind.CUT_ONE_WAY: 1,
    FaultKind.HEAL: 3,
    FaultKind.CRASH: 2,
    FaultKind.CRASH_LEADER: 2,
    FaultKind.RESTART: 3,
    FaultKind.PAUSE: 2,
    FaultKind.NETWORK: 2,
    FaultKind.TRANSFER: 1,
}


@dataclass(frozen=True)
class Fault:
    at: float
    kind: FaultKind
    # PARTITION: the groups; CUT_ONE_WAY: (source, target); CRASH, TRANSFER: (voter,);
    # PAUSE: (voter, seconds); NETWORK: (NetworkProfile,); other kinds: ().
    args: tuple = ()

    def __str__(self) -> str:
        return f"{self.at:6.3f}s {self.kind.value} {' '.join(map(str, self.args))}".rstrip()


@dataclass(frozen=True)
class FaultSchedule:
    seed: int
    voters: int
    simulation_seed: int
    profile: NetworkProfile
    compact_every: int
    faults: tuple[Fault, ...]

    def describe(self) -> str:
        header = (
            f"seed {self.seed}, {self.voters} voters, network {self.profile}, "
            f"compaction every {self.compact_every} entries"
        )
        return "\n".join([header, *(f"  {fault}" for fault in self.faults)])


def _random_profile(rng: random.Random) -> NetworkProfile:
    return NetworkProfile(
        loss=rng.choice([0.0, 0.0, 0.01, 0.05, 0.1, 0.2]),
        duplicate=rng.choice([0.0, 0.01, 0.05]),
        delay_s=(0.0005, rng.choice([0.005, 0.02, 0.1, 0.3, 0.8])),
    )


def generate_schedule(seed: int, voters: int) -> FaultSchedule:
    """Draw the network, compaction interval and faults of one schedule from ``seed``."""
    rng = random.Random(seed)
    ids = [f"n{index}" for index in range(voters)]
    profile = _random_profile(rng)
    compact_every = rng.choice([4, 16, 64])
    kinds = list(FAULT_WEIGHTS)
    weights = list(FAULT_WEIGHTS.values())

    faults = []
    times = sorted(rng.uniform(0.5, FAULT_PHASE_S - 0.5) for _ in range(rng.randint(4, 24)))
    for at in times:
        kind = rng.choices(kinds, weights)[0]
        match kind:
            case FaultKind.PARTITION:
                shuffled = rng.sample(ids, len(ids))
                cut = rng.randint(1, len(ids) - 1)
                args: tuple = (tuple(shuffled[:cut]), tuple(shuffled[cut:]))
            case FaultKind.CUT_ONE_WAY:
                args = tuple(rng.sample(ids, 2))
            case FaultKind.CRASH | FaultKind.TRANSFER:
                args = (rng.choice(ids),)
            case FaultKind.PAUSE:
                args = (rng.choice(ids), round(rng.uniform(0.2, 3.0), 3))
            case FaultKind.NETWORK:
                args = (_random_profile(rng),)
            case _:
                args = ()
        faults.append(Fault(round(at, 3), kind, args))
    return FaultSchedule(seed, voters, rng.getrandbits(64), profile, compact_every, tuple(faults))


def apply_fault(simulation: ConsensusSimulation, fault: Fault) -> None:
    """Make ``fault`` happen now; faults aimed at the leader do nothing while there is none."""
    network = simulation.network
    leader = simulation.leader()
    match fault.kind:
        case FaultKind.PARTITION:
            network.partition(*fault.args)
        case FaultKind.ISOLATE_LEADER if leader is not None:
            network.partition((leader,), tuple(node_id for node_id in simulation.ids if node_id != leader))
        case FaultKind.CUT_ONE_WAY:
            network.cut_one_way(*fault.args)
        case FaultKind.HEAL:
            network.heal()
        case FaultKind.CRASH:
            simulation.crash(fault.args[0])
        case FaultKind.CRASH_LEADER if leader is not None:
            simulation.crash(leader)
        case FaultKind.RESTART:
            crashed = [node_id for node_id in simulation.ids if not simulation.voters[node_id].up]
            if crashed:
                simulation.restart(simulation.rng.choice(crashed))
        case FaultKind.PAUSE:
            simulation.pause(*fault.args)
        case FaultKind.NETWORK:
            network.profile = fault.args[0]
        case FaultKind.TRANSFER:
            simulation.transfer_leadership(fault.args[0])


class ScheduleFailure(AssertionError):
    """A schedule broke an invariant or missed the liveness bound. The message contains the command that replays it."""

    def __init__(self, schedule: FaultSchedule, at: float, reason: str, *, coordinator_state: bool = False) -> None:
        self.schedule = schedule
        self.at = at
        self.reason = reason
        mode = " --coordinator-state" if coordinator_state else ""
        super().__init__(
            f"consensus schedule with seed {schedule.seed} and {schedule.voters} voters failed at "
            f"{at:.3f} s simulated: {reason}\n"
            f"replay it with: python -m swarmctl.sim.consensus --seed {schedule.seed} --voters {schedule.voters}"
            f"{mode} --verbose\n{schedule.describe()}"
        )


@dataclass(frozen=True)
class ScheduleResult:
    seed: int
    voters: int
    trace_digest: str
    # Simulated seconds from the end of the fault phase until every voter applied a
    # command proposed to the new leader.
    recovery_s: float
    stats: Counter[str]


def run_schedule(
    seed: int,
    voters: int,
    config: ConsensusConfig | None = None,
    on_start: Callable[[ConsensusSimulation], None] | None = None,
    coordinator_state: bool = False,
) -> ScheduleResult:
    """Run the schedule drawn from ``seed`` and raise ScheduleFailure if any check fails.

    ``on_start`` is called with the simulation before it runs, to observe it. With
    ``coordinator_state`` the voters run the coordinator's state machine on SQLite and a
    ``RunWorkload`` proposes the commands of test runs, which must all finish with one
    result per test once the faults heal.
    """
    schedule = generate_schedule(seed, voters)
    simulation = ConsensusSimulation(
        voters,
        seed=schedule.simulation_seed,
        config=config,
        profile=schedule.profile,
        compact_every=schedule.compact_every,
        machine=CoordinatorMachine if coordinator_state else HashChain,
    )
    if on_start is not None:
        on_start(simulation)
    try:
        for fault in schedule.faults:
            simulation.schedule(fault.at, lambda fault=fault: apply_fault(simulation, fault))
        if coordinator_state:
            driver = WorkloadDriver(simulation, RunWorkload(runs=6, tests=24))
            driver.start()
            simulation.run_until(FAULT_PHASE_S)
            recovery_s = _recover(simulation, encode(cmd.ExecutorCordoned("marker", True, 0.0)))
            driver.finish()
            simulation.stats.update(driver.workload.stats)
        else:
            _start_clients(simulation)
            simulation.run_until(FAULT_PHASE_S)
            recovery_s = _recover(simulation, b"marker")
    except (AssertionError, SwarmError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise ScheduleFailure(schedule, simulation.now, reason, coordinator_state=coordinator_state) from error
    return ScheduleResult(seed, voters, simulation.trace_digest(), recovery_s, simulation.stats)


class WorkloadDriver:
    """Proposes a RunWorkload's commands to the leader, one at a time, and checks the runs once they end."""

    def __init__(self, simulation: ConsensusSimulation, workload: RunWorkload) -> None:
        self.simulation = simulation
        self.workload = workload
        # The proposal not yet applied by its leader: (leader, term, index, command), or None.
        self.in_flight: tuple[str, int, int, cmd.Command] | None = None
        self.done = False
        self.until = FAULT_PHASE_S  # it proposes until then; the recovery check wants a quiet log
        self.interval_s = WORKLOAD_INTERVAL_S

    def start(self) -> None:
        def drive_and_reschedule() -> None:
            self.drive()
            at = self.simulation.now + self.simulation.rng.expovariate(1 / self.interval_s)
            if not self.done and at < self.until:
                self.simulation.schedule(at, drive_and_reschedule)

        self.simulation.schedule(self.simulation.now + CLIENT_INTERVAL_S, drive_and_reschedule)

    def drive(self) -> None:
        simulation = self.simulation
        leader = simulation.leader()
        if leader is None or self.done:
            return
        voter = simulation.voters[leader]
        node = voter.node
        if voter.paused_until > simulation.now or node.log.term_at(node.commit_index) != node.term:
            return  # its state may still lack entries of earlier terms, as a new coordinator waits too
        if voter.machine.applied != node.commit_index:
            return
        if self.in_flight is not None:
            proposer, term, index, command = self.in_flight
            if proposer == leader and term == node.term and voter.machine.applied < index:
                return  # still in flight
            if simulation.acknowledged.get(index) == (term, encode(command)):
                self.workload.note_acknowledged(command, voter.machine.machine)
            self.in_flight = None
        command = self.workload.next_command(voter.machine.machine, node.term, simulation.now, simulation.rng.random())
        if command is None:
            self.done = True
            return
        index = simulation.propose(encode(command), target=leader)
        if index:
            self.in_flight = (leader, node.term, index, command)

    def finish(self) -> None:
        """Drive until every run ended, then check every voter's database for them."""
        simulation = self.simulation
        deadline = simulation.now + LIVENESS_BOUND_S
        self.until = deadline
        self.interval_s = CLIENT_INTERVAL_S
        self.start()
        while not self.done:
            if simulation.now >= deadline:
                raise AssertionError(f"the runs did not finish within {LIVENESS_BOUND_S} s after the faults healed")
            simulation.run_for(POLL_S)
        # Let every voter apply the last command, then compare them.
        _recover(simulation, encode(cmd.ExecutorCordoned("marker", False, 0.0)))
        digests = set()
        for voter in simulation.voters.values():
            self.workload.check_complete(voter.machine.machine, voter.node_id)
            digests.add((voter.machine.applied, voter.machine.database_digest()))
        if len(digests) != 1:
            raise InvariantViolation(f"voters ended with different databases: {sorted(digests)}")


def _start_clients(simulation: ConsensusSimulation) -> None:
    def propose_and_reschedule() -> None:
        simulation.propose(simulation.next_command())
        at = simulation.now + simulation.rng.expovariate(1 / CLIENT_INTERVAL_S)
        if at < FAULT_PHASE_S:
            simulation.schedule(at, propose_and_reschedule)

    simulation.schedule(simulation.rng.uniform(0, CLIENT_INTERVAL_S), propose_and_reschedule)


def _recover(simulation: ConsensusSimulation, marker: bytes) -> float:
    """Heal every fault, then wait until a leader commits ``marker`` on every voter; return how long that took."""
    healed_at = simulation.now
    simulation.network.heal()
    simulation.network.profile = RELIABLE
    for node_id in simulation.ids:
        simulation.restart(node_id)
    simulation.checker.check_log_matching(simulation.live_nodes())

    deadline = healed_at + LIVENESS_BOUND_S
    marker_index = 0
    marker_leader: tuple[str, int] | None = None  # the (leader, term) that accepted the marker
    while simulation.now < deadline:
        simulation.run_for(POLL_S)
        acknowledged = simulation.acknowledged.get(marker_index)
        marker_committed = acknowledged is not None and acknowledged[1] == marker
        if marker_committed and all(voter.machine.applied >= marker_index for voter in simulation.voters.values()):
            break
        leader = simulation.stable_leader()
        if leader is None:
            continue
        # Propose the marker once per leadership: a new leader may have dropped it.
        current = (leader, simulation.voters[leader].node.term)
        if current != marker_leader:
            marker_index = simulation.propose(marker)
            marker_leader = current if marker_index else None
    else:
        raise AssertionError(_liveness_report(simulation, marker_index))

    _check_acknowledged(simulation)
    simulation.checker.check_log_matching(simulation.live_nodes())
    return simulation.now - healed_at


def _liveness_report(simulation: ConsensusSimulation, marker_index: int) -> str:
    states = ", ".join(
        f"{voter.node_id}: {voter.node.role.value} of term {voter.node.term} following {voter.node.leader_id}, "
        f"applied {voter.machine.applied}"
        for voter in simulation.voters.values()
    )
    return (
        f"no leader committed a new command on every voter within {LIVENESS_BOUND_S} s after the faults healed "
        f"(marker index {marker_index}); {states}"
    )


def _check_acknowledged(simulation: ConsensusSimulation) -> None:
    """Check that every proposal acknowledged to a client as committed is applied on every voter, unchanged."""
    committed = simulation.checker.committed
    applied_everywhere = min(voter.machine.applied for voter in simulation.voters.values())
    for index, (term, command) in simulation.acknowledged.items():
        if index > applied_everywhere:
            raise AssertionError(f"the acknowledged proposal at index {index} is not applied on every voter")
        if committed.get(index) != (term, EntryKind.COMMAND, command):
            raise AssertionError(f"the acknowledged proposal at index {index} (term {term}) was lost")
