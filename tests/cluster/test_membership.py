"""Tests of the membership core: scenarios on a small in-memory network, and the rules one by one."""

from __future__ import annotations

import math
import random
from typing import Any

import msgpack
import pytest

from swarmctl.cluster.dissemination import BroadcastQueue
from swarmctl.cluster.membership import (
    Membership,
    MembershipConfig,
    MemberState,
    Outgoing,
)
from swarmctl.cluster.suspicion import Suspicion
from swarmctl.errors import ProtocolError, UsageError

CONFIG = MembershipConfig()
MIN_SUSPICION_S, MAX_SUSPICION_S = CONFIG.suspicion_timeouts(3)


def address_of(node_id: str) -> tuple[str, int]:
    return (node_id, 7946)


def make_core(
    node_id: str, *, now: float = 0.0, config: MembershipConfig = CONFIG, meta: dict | None = None
) -> Membership:
    return Membership(node_id, address_of(node_id), meta or {"role": "executor"}, config, random.Random(node_id), now)


def alive(node_id: str, incarnation: int = 0, meta: dict | None = None) -> dict[str, Any]:
    return {
        "n": node_id,
        "i": incarnation,
        "s": "alive",
        "a": list(address_of(node_id)),
        "m": meta or {"role": "executor"},
    }


def news(node_id: str, state: str, incarnation: int, accuser: str = "someone") -> dict[str, Any]:
    update = {"n": node_id, "i": incarnation, "s": state, "a": list(address_of(node_id))}
    if state in ("suspect", "dead"):
        update["f"] = accuser
    return update


def gossip(sender: str, *updates: dict[str, Any]) -> dict[str, Any]:
    return {"t": "gossip", "from": sender, "g": list(updates)}


class Network:
    """Cores that exchange messages at once, encoded with msgpack, except to or from ``blocked`` nodes."""

    def __init__(self, node_ids: list[str], config: MembershipConfig = CONFIG) -> None:
        self.now = 0.0
        self.config = config
        self.cores = {node_id: make_core(node_id, config=config) for node_id in node_ids}
        self.blocked: set[str] = set()
        self.stopped: set[str] = set()
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._pending: list[tuple[str, Outgoing]] = []

    def join_all(self) -> None:
        """Join every node through the first one, and deliver the sync messages."""
        first, *others = self.cores
        for node_id in others:
            self.send(node_id, self.cores[node_id].join([address_of(first)], self.now))
        self.flush()

    def send(self, source: str, out: list[Outgoing]) -> None:
        self._pending.extend((source, outgoing) for outgoing in out)

    def flush(self) -> None:
        for _ in range(100_000):
            if not self._pending:
                return
            source, (address, message) = self._pending.pop(0)
            data = msgpack.packb(message)
            assert len(data) <= self.config.max_packet_bytes
            self.sent.append((source, message))
            destination = address[0]
            if {source, destination} & (self.blocked | self.stopped):
                continue
            out = self.cores[destination].receive(msgpack.unpackb(data), address_of(source), self.now)
            self.send(destination, out)
        raise AssertionError("messages kept coming")

    def run_for(self, seconds: float) -> None:
        """Advance the clock to now + seconds, running every core's ticks at their deadlines."""
        end = self.now + seconds
        for _ in range(100_000):
            running = [core for node_id, core in self.cores.items() if node_id not in self.stopped]
            deadline = min(core.next_deadline() for core in running)
            if deadline > end:
                self.now = end
                return
            self.now = max(self.now, deadline)
            for core in running:
                if core.next_deadline() <= self.now:
                    self.send(core.node_id, core.tick(self.now))
            self.flush()
        raise AssertionError("the clock did not reach its end")

    def state(self, observer: str, subject: str) -> MemberState | None:
        member = self.cores[observer].member(subject)
        return None if member is None else member.state


def tick_until(core: Membership, kind: str) -> tuple[float, list[Outgoing]]:
    """Run the core's ticks until one sends messages of ``kind``; return its time and those messages."""
    for _ in range(100):
        now = core.next_deadline()
        matching = [outgoing for outgoing in core.tick(now) if outgoing.message["t"] == kind]
        if matching:
            return now, matching
    raise AssertionError(f"no {kind} message in 100 ticks")


@pytest.fixture
def three() -> Network:
    network = Network(["a", "b", "c"])
    network.join_all()
    network.run_for(1.0)  # b learns c through gossip
    return network


# --- scenarios --------------------------------------------------------------------------------


def test_join_full_state_sync(three: Network) -> None:
    for observer in "abc":
        for subject in "abc":
            assert three.state(observer, subject) == MemberState.ALIVE, (observer, subject)
    events = three.cores["c"].drain_events()
    assert {(event.node_id, event.state) for event in events} == {("a", MemberState.ALIVE), ("b", MemberState.ALIVE)}


def test_join_sync_reply_is_split_into_packets() -> None:
    seed = make_core("seed")
    labels = {"role": "executor", "labels": {"gpu": "a100", "zone": "eu-west-1b"}, "slots": 16}
    for index in range(80):
        seed.receive(gossip("x", alive(f"executor-{index:03d}", meta=labels)), address_of("x"), 0.0)
    newcomer = make_core("newcomer")

    request = newcomer.join([address_of("seed")], 0.0)
    assert [message["t"] for _, message in request] == ["sync"]
    reply = seed.receive(msgpack.unpackb(msgpack.packb(request[0].message)), address_of("newcomer"), 0.0)
    sync_replies = [
        message for address, message in reply if message["t"] == "sync" and address == address_of("newcomer")
    ]

    assert len(sync_replies) > 1
    for message in sync_replies:
        assert len(msgpack.packb(message)) <= CONFIG.max_packet_bytes
        assert message["ask"] is False
        newcomer.receive(msgpack.unpackb(msgpack.packb(message)), address_of("seed"), 0.0)
    assert len([m for m in newcomer.members() if m.state == MemberState.ALIVE]) == 82
    assert newcomer.member("executor-042").meta == labels
    assert newcomer.next_deadline() < math.inf


def test_join_retries_until_a_seed_replies() -> None:
    core = make_core("lonely", config=MembershipConfig(join_retry_s=1.0))
    assert len(core.join([address_of("seed")], 0.0)) == 1
    assert not [message for _, message in core.tick(0.5) if message["t"] == "sync"]
    retried = [message for _, message in core.tick(1.0) if message["t"] == "sync"]
    assert len(retried) == 1
    # The next retry waits twice as long.
    assert not [message for _, message in core.tick(2.5) if message["t"] == "sync"]
    assert [message for _, message in core.tick(3.0) if message["t"] == "sync"]


def test_join_retried_after_partial_reply() -> None:
    seed = make_core("seed", config=MembershipConfig(max_packet_bytes=600))
    for index in range(30):
        seed.receive(gossip("x", alive(f"m{index:02d}")), address_of("x"), 0.0)
    newcomer = make_core("newcomer", config=MembershipConfig(join_retry_s=1.0))
    request = newcomer.join([address_of("seed")], 0.0)[0].message
    replies = [message for _, message in seed.receive(request, address_of("newcomer"), 0.0) if message["t"] == "sync"]
    assert len(replies) >= 3

    for message in replies[1:]:  # the first part is lost
        newcomer.receive(message, address_of("seed"), 0.1)
    assert len(newcomer.members()) < replies[0]["rows"]
    retry = [message for _, message in newcomer.tick(1.1) if message["t"] == "sync"]
    assert retry
    assert retry[0]["ask"] is True

    second = [message for _, message in seed.receive(retry[0], address_of("newcomer"), 1.1) if message["t"] == "sync"]
    for message in second:
        newcomer.receive(message, address_of("seed"), 1.2)
    assert len(newcomer.members()) == replies[0]["rows"]
    assert newcomer.next_deadline() < 10.0  # probing goes on...
    assert not [message for _, message in newcomer.tick(5.0) if message["t"] == "sync"]  # ...joining is over


def test_join_announces_newcomer_to_members() -> None:
    newcomer = make_core("newcomer")
    newcomer.join([address_of("seed")], 0.0)
    reply = {"t": "sync", "from": "seed", "ask": False, "rows": 3, "members": [alive("seed"), alive("other")]}
    out = newcomer.receive(reply, address_of("seed"), 0.1)
    assert sorted(address for address, message in out if message["g"] == [alive("newcomer")]) == [
        address_of("other"),
        address_of("seed"),
    ]


def test_silent_member_becomes_suspect_then_dead(three: Network) -> None:
    three.blocked.add("c")
    three.run_for(3 * CONFIG.probe_interval_s)
    assert three.state("a", "c") == MemberState.SUSPECT or three.state("b", "c") == MemberState.SUSPECT

    three.run_for(MIN_SUSPICION_S / 2)
    assert MemberState.DEAD not in (three.state("a", "c"), three.state("b", "c"))

    three.run_for(MAX_SUSPICION_S)
    assert three.state("a", "c") == MemberState.DEAD
    assert three.state("b", "c") == MemberState.DEAD
    assert three.state("a", "b") == MemberState.ALIVE


def test_crashed_member_declared_dead_within_bound() -> None:
    network = Network([f"n{index}" for index in range(8)])
    network.join_all()
    network.run_for(1.0)
    network.stopped.add("n7")
    minimum, _ = CONFIG.suspicion_timeouts(8)
    # Every other member probes n7 within a few intervals, confirmations bring the timeout
    # down to the minimum, and gossip takes a few more intervals.
    network.run_for(minimum + 12 * CONFIG.probe_interval_s)
    for observer in [f"n{index}" for index in range(7)]:
        assert network.state(observer, "n7") == MemberState.DEAD, observer


def test_suspected_member_refutes(three: Network) -> None:
    core = three.cores["c"]
    out = core.receive(gossip("a", news("c", "suspect", 0, accuser="a")), address_of("a"), three.now)
    assert core.incarnation == 1
    assert core.local_health == 1
    refutations = [message for _, message in out if message["t"] == "gossip"]
    assert {address for address, message in out} == {address_of("a"), address_of("b")}
    assert all(message["g"] == [alive("c", 1)] for message in refutations)

    three.send("c", out)
    three.flush()
    assert three.cores["a"].member("c").incarnation == 1
    assert three.state("b", "c") == MemberState.ALIVE


def test_blocked_member_refutes_when_unblocked(three: Network) -> None:
    three.blocked.add("c")
    for _ in range(40):
        three.run_for(CONFIG.probe_interval_s)
        if three.state("a", "c") == MemberState.SUSPECT:
            break
    assert three.state("a", "c") == MemberState.SUSPECT

    three.blocked.clear()
    three.run_for(MIN_SUSPICION_S)
    assert three.state("a", "c") == MemberState.ALIVE
    assert three.state("b", "c") == MemberState.ALIVE
    assert three.cores["c"].incarnation >= 1


def test_dead_member_rejoins_higher_incarnation() -> None:
    core = make_core("c")
    core.receive(gossip("a", alive("a")), address_of("a"), 0.0)
    out = core.receive(gossip("a", news("c", "dead", 4, accuser="a")), address_of("a"), 1.0)
    assert core.incarnation == 5
    assert [message["g"] for _, message in out] == [[alive("c", 5)]]


def test_stale_suspicion_gets_correction() -> None:
    core = make_core("c")
    core.receive(gossip("a", alive("a")), address_of("a"), 0.0)
    core.receive(gossip("a", news("c", "suspect", 0)), address_of("a"), 0.0)
    assert core.incarnation == 1

    out = core.receive(gossip("b", news("c", "suspect", 0)), address_of("b"), 1.0)
    assert core.incarnation == 1
    assert out == [Outgoing(address_of("b"), gossip("c", alive("c", 1)))]


INCARNATION_RULES = [
    # (state held, incarnation held, state heard, incarnation heard, state after, incarnation after)
    ("alive", 1, "suspect", 1, MemberState.SUSPECT, 1),
    ("alive", 1, "suspect", 0, MemberState.ALIVE, 1),
    ("alive", 1, "suspect", 2, MemberState.SUSPECT, 2),
    ("suspect", 1, "alive", 1, MemberState.SUSPECT, 1),
    ("suspect", 1, "alive", 2, MemberState.ALIVE, 2),
    ("suspect", 1, "suspect", 2, MemberState.SUSPECT, 2),
    ("alive", 1, "dead", 1, MemberState.DEAD, 1),
    ("alive", 2, "dead", 1, MemberState.ALIVE, 2),
    ("suspect", 1, "dead", 1, MemberState.DEAD, 1),
    ("dead", 1, "alive", 1, MemberState.DEAD, 1),
    ("dead", 1, "alive", 2, MemberState.ALIVE, 2),
    ("dead", 1, "suspect", 1, MemberState.DEAD, 1),
    ("alive", 1, "left", 1, MemberState.LEFT, 1),
    ("left", 1, "alive", 1, MemberState.LEFT, 1),
    ("left", 1, "dead", 1, MemberState.LEFT, 1),
    ("dead", 1, "left", 1, MemberState.LEFT, 1),
]


@pytest.mark.parametrize(
    ("held", "held_incarnation", "heard", "heard_incarnation", "after", "after_incarnation"), INCARNATION_RULES
)
def test_incarnation_rules(
    held: str, held_incarnation: int, heard: str, heard_incarnation: int, after: MemberState, after_incarnation: int
) -> None:
    core = make_core("observer")
    first = alive("x", held_incarnation) if held == "alive" else news("x", held, held_incarnation)
    if held != "alive":
        core.receive(gossip("y", alive("x", 0)), address_of("y"), 0.0)
    core.receive(gossip("y", first), address_of("y"), 0.0)
    assert core.member("x").state == held

    second = alive("x", heard_incarnation) if heard == "alive" else news("x", heard, heard_incarnation)
    core.receive(gossip("z", second), address_of("z"), 1.0)
    assert core.member("x").state == after
    assert core.member("x").incarnation == after_incarnation


def test_leave_is_disseminated() -> None:
    network = Network(["a", "b", "c", "d"])
    network.join_all()
    network.run_for(0.5)
    leaving = network.cores["d"]
    out = leaving.leave(network.now)
    assert out
    assert all(message["g"] == [news("d", "left", 0)] for _, message in out)
    network.send("d", out)
    network.flush()
    network.run_for(1.0)

    for observer in "abc":
        assert network.state(observer, "d") == MemberState.LEFT
    assert leaving.tick(network.now + 10) == []
    assert leaving.next_deadline() == math.inf
    assert leaving.receive(gossip("a", alive("a")), address_of("a"), network.now) == []


def test_meta_update_is_disseminated(three: Network) -> None:
    for core in three.cores.values():
        core.drain_events()
    three.cores["b"].set_meta({"role": "executor", "slots": 32, "load": 0.25}, three.now)
    assert three.cores["b"].incarnation == 1
    three.run_for(1.0)

    for observer in "ac":
        member = three.cores[observer].member("b")
        assert member.incarnation == 1
        assert member.meta == {"role": "executor", "slots": 32, "load": 0.25}
        events = three.cores[observer].drain_events()
        assert [(event.node_id, event.meta["slots"]) for event in events] == [("b", 32)]


def test_meta_too_large_is_rejected() -> None:
    with pytest.raises(UsageError, match="meta of node big"):
        make_core("big", meta={"labels": "x" * 2000})
    core = make_core("small")
    with pytest.raises(UsageError, match="bytes"):
        core.set_meta({"labels": "x" * 2000}, 1.0)
    assert core.incarnation == 0


def test_piggyback_respects_max_packet_bytes() -> None:
    config = MembershipConfig(max_packet_bytes=600)
    core = make_core("busy", config=config)
    core.receive(gossip("peer", alive("peer")), address_of("peer"), 0.0)
    meta = {"role": "executor", "labels": {"zone": "z" * 40}}
    for index in range(100):
        core.receive(gossip("peer", alive(f"m{index:03d}", meta=meta)), address_of("peer"), 0.0)

    carried: set[str] = set()
    now = 0.0
    for _ in range(200):
        now += config.gossip_interval_s
        for _, message in core.tick(now):
            assert len(msgpack.packb(message)) <= config.max_packet_bytes
            carried.update(update["n"] for update in message.get("g", []))
    assert {f"m{index:03d}" for index in range(100)} <= carried


def test_dead_member_forgotten_after_reap_time() -> None:
    config = MembershipConfig(dead_member_reap_s=10.0)
    core = make_core("observer", config=config)
    core.receive(gossip("y", alive("x", 3)), address_of("y"), 0.0)
    core.receive(gossip("y", news("x", "dead", 3)), address_of("y"), 1.0)

    core.tick(5.0)
    core.receive(gossip("y", alive("x", 3)), address_of("y"), 5.0)  # delayed old message
    assert core.member("x").state == MemberState.DEAD

    core.tick(11.5)
    assert core.member("x") is None


def test_local_health_follows_nacks_and_acks() -> None:
    core = make_core("a")
    for peer in ("b", "c", "d", "e"):
        core.receive(gossip(peer, alive(peer)), address_of(peer), 0.0)

    started, pings = tick_until(core, "ping")
    target = pings[0].message["to"]
    _, requests = tick_until(core, "ping_req")
    assert len(requests) == 3
    assert target not in {address[0] for address, _ in requests}

    # The interval ends without ack or nack; the same tick starts the next probe.
    ended = core.next_deadline()
    out = core.tick(ended)
    assert ended == pytest.approx(started + CONFIG.probe_interval_s)
    assert core.local_health == 3
    assert core.member(target).state == MemberState.SUSPECT

    # A node in poor health waits (health + 1) probe intervals between probes.
    started = ended
    probe = next(message for _, message in out if message["t"] == "ping")
    core.receive({"t": "ack", "seq": probe["seq"], "from": probe["to"]}, address_of(probe["to"]), started + 0.01)
    assert core.local_health == 2
    next_probe = started + 4 * CONFIG.probe_interval_s
    while core.next_deadline() < next_probe - 1e-9:
        assert all(message["t"] != "ping" for _, message in core.tick(core.next_deadline()))
    assert core.next_deadline() == pytest.approx(next_probe)


def test_late_tick_keeps_indirect_window() -> None:
    core = make_core("a")
    for peer in ("b", "c", "d", "e"):
        core.receive(gossip(peer, alive(peer)), address_of(peer), 0.0)
    started, pings = tick_until(core, "ping")
    target = pings[0].message["to"]

    # The node was paused past the end of the probe interval: it sends the ping_reqs now
    # and waits for their replies instead of suspecting the target at once.
    late = started + 5.0
    out = core.tick(late)
    assert len([message for _, message in out if message["t"] == "ping_req"]) == 3
    assert core.member(target).state == MemberState.ALIVE
    assert core.next_deadline() == pytest.approx(late + CONFIG.probe_interval_s - CONFIG.probe_timeout_s)


def test_nacks_spare_local_health() -> None:
    core = make_core("a")
    for peer in ("b", "c", "d", "e"):
        core.receive(gossip(peer, alive(peer)), address_of(peer), 0.0)
    tick_until(core, "ping")
    _, requests = tick_until(core, "ping_req")
    assert len(requests) == 3
    for address, message in requests:
        core.receive({"t": "nack", "seq": message["seq"], "from": address[0]}, address, core.next_deadline() - 0.01)
    core.tick(core.next_deadline())
    assert core.local_health == 0


def test_relay_forwards_ack_and_sends_nack() -> None:
    relay = make_core("relay")
    request = {"t": "ping_req", "seq": 7, "from": "asker", "to": "target", "addr": list(address_of("target"))}
    out = relay.receive(request, address_of("asker"), 0.0)
    assert [(address, message["t"], message["to"]) for address, message in out] == [
        (address_of("target"), "ping", "target")
    ]
    relay_seq = out[0].message["seq"]

    forwarded = relay.receive({"t": "ack", "seq": relay_seq, "from": "target"}, address_of("target"), 0.01)
    assert [(address, message["t"], message["seq"]) for address, message in forwarded] == [
        (address_of("asker"), "ack", 7)
    ]

    relay.receive(dict(request, seq=8), address_of("asker"), 1.0)
    nacks = relay.tick(1.0 + CONFIG.probe_timeout_s)
    assert [(address, message["t"], message["seq"]) for address, message in nacks] == [(address_of("asker"), "nack", 8)]


def test_ping_for_other_node_id_ignored() -> None:
    core = make_core("new-id")
    assert core.receive({"t": "ping", "seq": 1, "from": "a", "to": "old-id"}, address_of("a"), 0.0) == []
    acks = core.receive({"t": "ping", "seq": 2, "from": "a", "to": "new-id"}, address_of("a"), 0.0)
    assert [(message["t"], message["seq"]) for _, message in acks] == [("ack", 2)]


@pytest.mark.parametrize(
    "message",
    [
        [],
        {"from": "a"},
        {"t": "ping", "from": 3},
        {"t": "ping", "from": "a", "seq": -1, "to": "x"},
        {"t": "ping", "from": "a", "seq": 1, "to": "x", "g": "not a list"},
        {"t": "gossip", "from": "a", "g": [{"n": "x", "i": 0, "s": "zombie", "a": ["h", 1]}]},
        {"t": "gossip", "from": "a", "g": [{"n": "x", "i": 0, "s": "alive", "a": ["h", 1]}]},
        {"t": "gossip", "from": "a", "g": [{"n": "x", "i": 0, "s": "dead", "a": ["h", 70000]}]},
        {"t": "ping_req", "from": "a", "seq": 1, "to": "x", "addr": "h:1"},
        {"t": "sync", "from": "a", "ask": "yes", "rows": 1, "members": []},
        {"t": "sync", "from": "a", "ask": False, "members": []},
        {"t": "launch", "from": "a"},
    ],
)
def test_receive_rejects_malformed_message(message: Any) -> None:
    core = make_core("a")
    with pytest.raises(ProtocolError):
        core.receive(message, address_of("x"), 0.0)


def test_config_rejects_timeout_not_below_interval() -> None:
    with pytest.raises(UsageError, match="probe_timeout_s"):
        MembershipConfig(probe_interval_s=0.2, probe_timeout_s=0.2)


def test_config_rejects_small_packets() -> None:
    with pytest.raises(UsageError, match="max_packet_bytes"):
        MembershipConfig(max_packet_bytes=100)


def test_config_timing_scales_with_cluster_size() -> None:
    small_min, _ = CONFIG.suspicion_timeouts(8)
    large_min, large_max = CONFIG.suspicion_timeouts(512)
    assert small_min == pytest.approx(CONFIG.suspicion_min_floor_s)
    assert CONFIG.suspicion_min_multiplier * CONFIG.probe_interval_s < CONFIG.suspicion_min_floor_s
    assert large_min == pytest.approx(CONFIG.suspicion_min_multiplier * math.log10(512) * CONFIG.probe_interval_s)
    assert large_max == pytest.approx(large_min * CONFIG.suspicion_max_multiplier)
    assert CONFIG.retransmit_limit(128) == CONFIG.retransmit_multiplier * 3


def test_suspicion_timeout_falls_with_confirmations() -> None:
    suspicion = Suspicion("a", started=10.0, min_s=2.0, max_s=12.0, needed=3)
    assert suspicion.deadline == 22.0
    assert suspicion.confirm("a") is False
    assert suspicion.confirm("b") is True
    after_one = suspicion.deadline
    assert 12.0 < after_one < 22.0
    assert suspicion.confirm("c") is True
    assert suspicion.deadline < after_one
    assert suspicion.confirm("d") is True
    assert suspicion.deadline == pytest.approx(12.0)
    assert suspicion.confirm("e") is False


# --- the piggyback queue ----------------------------------------------------------------------


def test_broadcast_queue_keeps_newest_per_member() -> None:
    queue = BroadcastQueue(max_update_bytes=500)
    queue.push(alive("x", 1))
    queue.push(news("x", "suspect", 1, accuser="a"))
    queue.push(news("x", "suspect", 1, accuser="b"))
    assert len(queue) == 2  # confirmations by different accusers travel side by side
    queue.push(alive("x", 2))
    assert queue.take(budget=1000, limit=5) == [alive("x", 2)]


def test_broadcast_queue_sends_each_update_limit_times() -> None:
    queue = BroadcastQueue(max_update_bytes=500)
    queue.push(alive("x"))
    queue.push(alive("y"))
    sent = [update["n"] for _ in range(4) for update in queue.take(budget=1000, limit=3)]
    assert sorted(sent) == ["x", "x", "x", "y", "y", "y"]
    assert len(queue) == 0


def test_broadcast_queue_fills_budget_least_sent_first() -> None:
    queue = BroadcastQueue(max_update_bytes=500)
    queue.push(alive("old"))
    queue.take(budget=1000, limit=10)
    queue.push(alive("new"))
    size = len(msgpack.packb(alive("new")))
    assert queue.take(budget=size, limit=10) == [alive("new")]


def test_broadcast_queue_drops_oversized_update() -> None:
    queue = BroadcastQueue(max_update_bytes=100)
    queue.push(alive("x", meta={"labels": "l" * 200}))
    assert len(queue) == 0
    assert queue.dropped_oversized == 1
