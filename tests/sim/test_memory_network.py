"""The memory network of the whole-coordinator simulation behaves as a stream transport does."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from swarmctl import protocol
from swarmctl.cluster.transport import PeerGone
from swarmctl.errors import ConnectionFailed
from swarmctl.sim.coordinator.network import RELIABLE, MemoryNetwork, NetworkProfile


def run(test) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


async def echo_server(network: MemoryNetwork, nursery: trio.Nursery, received: list) -> None:
    async def handler(peer) -> None:
        while True:
            received.append(await peer.receive())

    await nursery.start(network.endpoint("server").serve, handler, "server", 7400)


def hello(number: int) -> protocol.Hello:
    return protocol.Hello(protocol.PROTOCOL_VERSION, protocol.ROLE_CLIENT, f"client-{number}")


def test_stream_order_and_cut() -> None:
    async def main() -> None:
        network = MemoryNetwork(random.Random(1), NetworkProfile(slow=0.5, slow_s=0.5))
        received: list = []
        async with trio.open_nursery() as nursery:
            await echo_server(network, nursery, received)
            async with network.endpoint("client").connect([("server", 7400)]) as peer:
                for number in range(20):
                    await peer.send(hello(number))
                await trio.sleep(1)
                assert [m.node_id for m in received] == [f"client-{n}" for n in range(20)]
                network.isolate("client", ["server"])
                await peer.send(hello(20))
                await trio.sleep(30)
                assert len(received) == 20
                network.heal()
                await trio.sleep(1)
                assert received[-1].node_id == "client-20"
            nursery.cancel_scope.cancel()

    run(main)


def test_close_after_frames() -> None:
    async def main() -> None:
        network = MemoryNetwork(random.Random(2), RELIABLE)
        received: list = []
        ended = trio.Event()

        async def handler(peer) -> None:
            try:
                while True:
                    received.append(await peer.receive())
            except PeerGone:
                ended.set()
                raise

        async with trio.open_nursery() as nursery:
            await nursery.start(network.endpoint("server").serve, handler, "server", 7400)
            async with network.endpoint("client").connect([("server", 7400)]) as peer:
                await peer.send(hello(1))
                await peer.send(hello(2))
            await ended.wait()
            assert [m.node_id for m in received] == ["client-1", "client-2"]
            with pytest.raises(ConnectionFailed, match="connection refused"):
                async with network.endpoint("client").connect([("server", 7401)]):
                    pass
            nursery.cancel_scope.cancel()

    run(main)


def test_consensus_frame_faults() -> None:
    async def main() -> None:
        network = MemoryNetwork(random.Random(3), NetworkProfile(drop=0.2, duplicate=0.2, slow=0.3, slow_s=0.5))
        received: list = []
        async with trio.open_nursery() as nursery:
            await echo_server(network, nursery, received)
            async with network.endpoint("client").connect([("server", 7400)]) as peer:
                for number in range(200):
                    await peer.send(protocol.ConsensusFrame({"number": number}))
                await trio.sleep(2)
            numbers = [message.payload["number"] for message in received]
            assert len(set(numbers)) < 200  # some lost
            assert len(numbers) > len(set(numbers))  # some twice
            assert numbers != sorted(numbers)  # some out of order
            nursery.cancel_scope.cancel()

    run(main)
