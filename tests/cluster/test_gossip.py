"""Tests of GossipNode over real UDP sockets on 127.0.0.1.

The nodes use a fast configuration so that failures show within a second or two. The
time limits are generous and no test asserts how fast something happened, so a busy test
machine slows the tests down without failing them.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import msgpack
import pytest
import trio

from swarmctl.cluster.gossip import GossipNode
from swarmctl.cluster.membership import MemberEvent, MembershipConfig, MemberState
from swarmctl.errors import UsageError
from swarmctl.security import PacketCipher, derive_key

LOOPBACK = "127.0.0.1"
KEY = derive_key(b"a test cluster secret that is long enough", "gossip")
FAST = MembershipConfig(
    probe_interval_s=0.1,
    probe_timeout_s=0.05,
    gossip_interval_s=0.05,
    suspicion_min_multiplier=10.0,  # 1 s in clusters of up to 10 members
    join_retry_s=0.2,
)
LIMIT_S = 30


@dataclass
class RunningNode:
    node: GossipNode
    address: tuple[str, int]
    cancel_scope: trio.CancelScope
    events: list[MemberEvent]


@asynccontextmanager
async def gossip_cluster(count: int) -> AsyncIterator[list[RunningNode]]:
    """Start ``count`` nodes on loopback, each joined through the first, and stop them afterwards."""
    async with trio.open_nursery() as nursery:
        running = [await start_node(nursery, f"node-{index}") for index in range(count)]
        for entry in running[1:]:
            entry.node.join([running[0].address])
        yield running
        nursery.cancel_scope.cancel()


async def start_node(nursery: trio.Nursery, node_id: str, cipher: PacketCipher | None = None) -> RunningNode:
    node = GossipNode(
        node_id, (LOOPBACK, 0), {"role": "executor", "name": node_id}, cipher or PacketCipher([KEY]), config=FAST
    )
    cancel_scope = trio.CancelScope()
    events: list[MemberEvent] = []

    async def run(task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        with cancel_scope:
            await node.run(task_status=task_status)

    async def collect_events() -> None:
        async for event in node.events:
            events.append(event)

    address = await nursery.start(run)
    nursery.start_soon(collect_events)
    return RunningNode(node, address, cancel_scope, events)


def state_of(observer: GossipNode, subject: str) -> MemberState | None:
    member = observer.membership.member(subject)
    return None if member is None else member.state


def event_states(entry: RunningNode, subject: str) -> list[MemberState]:
    return [event.state for event in entry.events if event.node_id == subject]


async def wait_until(condition, poll_s: float = 0.02) -> None:
    while not condition():
        await trio.sleep(poll_s)


async def all_alive(running: list[RunningNode]) -> None:
    ids = [entry.node.node_id for entry in running]
    await wait_until(
        lambda: all(state_of(entry.node, other) == MemberState.ALIVE for entry in running for other in ids)
    )


async def test_gossip_nodes_see_each_other_alive() -> None:
    with trio.fail_after(LIMIT_S):
        async with gossip_cluster(5) as running:
            await all_alive(running)
            first = running[0]
            assert first.address[0] == LOOPBACK
            member = first.node.membership.member("node-3")
            assert member.address == running[3].address
            assert member.meta == {"role": "executor", "name": "node-3"}
            await wait_until(
                lambda: {event.node_id for event in first.events} >= {"node-1", "node-2", "node-3", "node-4"}
            )
            assert all(event.state == MemberState.ALIVE for event in first.events)
            assert first.node.stats["sent"] > 0
            assert first.node.stats["received"] > 0
            assert first.node.stats["bad_packets"] == 0
            assert first.node.stats["oversized"] == 0


async def test_gossip_stopped_node_is_declared_dead() -> None:
    with trio.fail_after(LIMIT_S):
        async with gossip_cluster(5) as running:
            await all_alive(running)
            running[4].cancel_scope.cancel()  # stops without a leave message, like a crash
            survivors = running[:4]
            await wait_until(lambda: all(state_of(entry.node, "node-4") == MemberState.DEAD for entry in survivors))
            for entry in survivors:
                await wait_until(lambda entry=entry: event_states(entry, "node-4")[-1:] == [MemberState.DEAD])
                assert state_of(entry.node, "node-1") != MemberState.DEAD


async def test_gossip_leave_is_seen_as_left() -> None:
    with trio.fail_after(LIMIT_S):
        async with gossip_cluster(4) as running:
            await all_alive(running)
            leaving = running[3].node
            await leaving.leave()
            assert leaving.membership.member("node-3").state == MemberState.LEFT
            others = running[:3]
            await wait_until(lambda: all(state_of(entry.node, "node-3") == MemberState.LEFT for entry in others))
            with pytest.raises(RuntimeError, match="stopped"):
                leaving.join([running[0].address])


async def test_gossip_meta_change_reaches_others() -> None:
    with trio.fail_after(LIMIT_S):
        async with gossip_cluster(3) as running:
            await all_alive(running)
            running[1].node.set_meta({"role": "executor", "slots": 8, "load": 0.5})
            await wait_until(
                lambda: all(entry.node.membership.member("node-1").meta.get("slots") == 8 for entry in running)
            )


async def test_gossip_bad_packets_are_counted_and_dropped() -> None:
    with trio.fail_after(LIMIT_S):
        async with gossip_cluster(2) as running:
            await all_alive(running)
            target = running[0]
            cipher = PacketCipher([KEY])
            garbage = [
                b"not a sealed packet at all, just bytes",
                cipher.seal(b"\xc1 is never valid msgpack"),
                cipher.seal(msgpack.packb({"t": "ping", "from": "intruder"})),  # no seq
                cipher.seal(msgpack.packb(["a", "list"])),
                PacketCipher([derive_key(b"another cluster's secret, also long", "gossip")]).seal(b"x"),
            ]
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                await sender.bind((LOOPBACK, 0))
                for packet in garbage:
                    await sender.sendto(packet, target.address)
            await wait_until(lambda: target.node.stats["bad_packets"] == len(garbage))

            # The node keeps working: a newcomer can still join through it.
            async with trio.open_nursery() as nursery:
                newcomer = await start_node(nursery, "node-new")
                newcomer.node.join([target.address])
                await wait_until(lambda: state_of(target.node, "node-new") == MemberState.ALIVE)
                await wait_until(lambda: state_of(newcomer.node, "node-1") == MemberState.ALIVE)
                nursery.cancel_scope.cancel()
            assert target.node.stats["bad_packets"] == len(garbage)


async def test_gossip_join_before_run_waits_for_run() -> None:
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            first = await start_node(nursery, "first")
            early = GossipNode("early", (LOOPBACK, 0), {}, PacketCipher([KEY]), config=FAST)
            early.join([first.address])
            assert early.members() == []
            await nursery.start(early.run)
            await wait_until(lambda: state_of(first.node, "early") == MemberState.ALIVE)
            nursery.cancel_scope.cancel()


async def test_gossip_wildcard_bind_needs_advertise_address() -> None:
    node = GossipNode("wild", ("0.0.0.0", 0), {}, PacketCipher([KEY]), config=FAST)
    with pytest.raises(UsageError, match="advertise"):
        await node.run()


async def test_gossip_advertise_must_be_an_ip() -> None:
    node = GossipNode("named", (LOOPBACK, 0), {}, PacketCipher([KEY]), config=FAST, advertise=("localhost", 7000))
    with pytest.raises(UsageError, match="not an IP address"):
        await node.run()
