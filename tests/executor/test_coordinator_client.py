"""The executor's coordinator client: backoff with jitter, redirects, reconnects (real sockets)."""

from __future__ import annotations

import random

import trio
from hypothesis import given
from hypothesis import strategies as st

from swarmctl import protocol
from swarmctl.cluster.transport import serve
from swarmctl.executor.coordinator_client import CoordinatorClient, backoff_delay


def hello() -> protocol.Hello:
    return protocol.Hello(protocol.PROTOCOL_VERSION, protocol.ROLE_EXECUTOR, "exec-t", 1)


@given(failures=st.integers(1, 50), seed=st.integers(0, 2**32))
def test_backoff_doubles_within_jitter(failures, seed):
    delay = backoff_delay(failures, random.Random(seed), min_delay=0.2, max_delay=10.0)

    base = min(10.0, 0.2 * 2 ** (failures - 1))
    assert 0.5 * base <= delay <= 1.5 * base


def test_backoff_jitter_spreads_executors():
    delays = {round(backoff_delay(3, random.Random(seed), min_delay=0.2, max_delay=10.0), 3) for seed in range(20)}

    assert len(delays) > 10


async def test_client_follows_redirect(nursery):
    sessions = []

    async def leader(peer):
        await peer.receive()
        await peer.send(protocol.Welcome(protocol.PROTOCOL_VERSION, "leader", 3))
        sessions.append("leader")
        await trio.sleep_forever()

    leader_port = await nursery.start(serve, leader, "127.0.0.1", 0)

    async def follower(peer):
        await peer.receive()
        await peer.send(protocol.Reject("not the leader", redirect=f"127.0.0.1:{leader_port}"))

    follower_port = await nursery.start(serve, follower, "127.0.0.1", 0)
    client = CoordinatorClient([("127.0.0.1", follower_port)], rng=random.Random(1))
    welcomed = trio.Event()

    async def session(peer, welcome):
        assert welcome.coordinator_id == "leader"
        assert welcome.term == 3
        welcomed.set()
        await trio.sleep_forever()

    with trio.fail_after(10):
        nursery.start_soon(client.run, hello, session)
        await welcomed.wait()

    assert sessions == ["leader"]
    assert client.addresses[0] == ("127.0.0.1", leader_port)
    nursery.cancel_scope.cancel()


async def test_client_reconnects_after_close(nursery):
    connections = []

    async def coordinator(peer):
        await peer.receive()
        await peer.send(protocol.Welcome(protocol.PROTOCOL_VERSION, "c", 1))
        connections.append(peer.name)
        if len(connections) < 3:
            await peer.aclose()  # the connection breaks; the executor comes back
            return
        await trio.sleep_forever()

    port = await nursery.start(serve, coordinator, "127.0.0.1", 0)
    client = CoordinatorClient([("127.0.0.1", port)], rng=random.Random(2), min_delay=0.01, max_delay=0.05)
    third = trio.Event()

    async def session(peer, welcome):
        if client.sessions == 3:
            third.set()
        await peer.receive()  # raises PeerGone when the coordinator closes

    with trio.fail_after(10):
        nursery.start_soon(client.run, hello, session)
        await third.wait()

    assert len(connections) == 3
    nursery.cancel_scope.cancel()


async def test_client_retries_while_rejected(nursery):
    attempts = []

    async def coordinator(peer):
        await peer.receive()
        attempts.append(1)
        if len(attempts) < 2:
            await peer.send(protocol.Reject("executor id 'exec-t' is in use"))
            return
        await peer.send(protocol.Welcome(protocol.PROTOCOL_VERSION, "c", 1))
        await trio.sleep_forever()

    port = await nursery.start(serve, coordinator, "127.0.0.1", 0)
    client = CoordinatorClient([("127.0.0.1", port)], rng=random.Random(3), min_delay=0.01, max_delay=0.05)
    welcomed = trio.Event()

    async def session(peer, welcome):
        welcomed.set()
        await trio.sleep_forever()

    with trio.fail_after(10):
        nursery.start_soon(client.run, hello, session)
        await welcomed.wait()

    assert len(attempts) == 2
    nursery.cancel_scope.cancel()


async def test_client_refuses_a_deposed_leader(nursery):
    """After a session with term 5, a coordinator that still claims term 4 is refused for the next one."""
    terms = [5, 4, 6]
    welcomed = []

    async def coordinator(peer):
        await peer.receive()
        term = terms.pop(0)
        await peer.send(protocol.Welcome(protocol.PROTOCOL_VERSION, f"leader-of-{term}", term))
        if term == 5:
            return  # close the session, so the client connects again
        await trio.sleep_forever()

    port = await nursery.start(serve, coordinator, "127.0.0.1", 0)
    client = CoordinatorClient([("127.0.0.1", port)], rng=random.Random(1), min_delay=0.01, max_delay=0.05)
    done = trio.Event()

    async def session(peer, welcome):
        welcomed.append(welcome.term)
        if len(welcomed) == 2:
            done.set()
        await peer.receive()

    with trio.fail_after(10):
        nursery.start_soon(client.run, hello, session)
        await done.wait()

    assert welcomed == [5, 6]
    assert client.term == 6
