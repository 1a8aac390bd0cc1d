"""Malformed and hostile frames sent over real WebSocket connections to an in-process coordinator.

Each case opens its own connection and sends what a broken or malicious peer might. The
coordinator must reply with a rejection or an error, or close that connection, and must go
on serving: after every case a well-behaved client lists the runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgpack
import pytest
import trio
import trio_websocket

from swarmctl import protocol
from swarmctl.coordinator.node import Coordinator
from swarmctl.security import new_secret

RAW_TIMEOUT_S = 10.0


def frame(kind: str, **fields) -> bytes:
    return msgpack.packb({"k": kind, **fields}, use_bin_type=True)


def hello(role: str = protocol.ROLE_CLIENT, **changes) -> bytes:
    message = protocol.Hello(protocol.PROTOCOL_VERSION, role, f"hostile-{role}", 1 if role == protocol.ROLE_EXECUTOR else 0)
    return protocol.encode(dataclasses.replace(message, **changes))


# (name, frames to send in order). The first frame is the connection's hello, or the frame sent in its place.
CASES = [
    ("garbage bytes", [b"\x00\xff\xfe garbage"]),
    ("truncated map", [protocol.encode(protocol.ListRuns())[:-1] + b"\x82"]),
    ("not a map", [msgpack.packb([1, 2, 3])]),
    ("map without kind", [msgpack.packb({"x": 1})]),
    ("unknown kind", [frame("make_coffee", strength=9)]),
    ("deep nesting", [b"\x82\xa1k\xa9log_batch\xa5lines" + b"\x91" * 100_000 + b"\xc0"]),
    ("list before hello", [protocol.encode(protocol.ListRuns())]),
    ("old protocol version", [hello(version=1)]),
    ("unknown role", [hello(role="overlord")]),
    ("empty node id", [hello(node_id="")]),
    ("huge node id", [hello(node_id="x" * 100_000)]),
    ("control characters in node id", [hello(node_id="evil\x1b[2J")]),
    ("too many labels", [hello(labels={f"k{i}": "v" for i in range(1000)})]),
    ("hello of wrong types", [frame("hello", version="3", role=1, node_id=None)]),
    ("hello with unknown field", [frame("hello", version=protocol.PROTOCOL_VERSION, role="client", node_id="c", admin=True)]),
    ("client sends unknown field", [hello(), frame("list_runs", everything=True)]),
    ("client sends wrong type", [hello(), frame("cancel_run", run_id=["a"], reason="x")]),
    ("client submits a string suite", [hello(), frame("submit", suite="rm -rf /", strategy="even", case_ids=None)]),
    ("client submits a suite without fields", [hello(), protocol.encode(protocol.SubmitRun({}, "even", None))]),
    ("client sends an executor message", [hello(), protocol.encode(protocol.Heartbeat(1))]),
    ("client bundle digest with a path", [hello(), protocol.encode(protocol.BundleChunk("../../etc/passwd", b"x", True))]),
    ("client subscribes with a huge interval", [hello(), protocol.encode(protocol.Subscribe(interval_s=1e300))]),
    ("executor heartbeat of wrong type", [hello(protocol.ROLE_EXECUTOR), frame("heartbeat", free_slots="many")]),
    ("executor malformed log lines", [hello(protocol.ROLE_EXECUTOR), protocol.encode(protocol.LogBatch([[1, 2], "x", [None] * 4]))]),
    ("executor output of a wrong shape", [hello(protocol.ROLE_EXECUTOR), protocol.encode(protocol.CaseOutput([["r", 0]]))]),
    ("executor output for a shard it does not hold",
     [hello(protocol.ROLE_EXECUTOR), protocol.encode(protocol.CaseOutput([["r", 0, 1, "t", "stdout", 1.0, "x"]]))]),
    ("executor results of garbage", [hello(protocol.ROLE_EXECUTOR), protocol.encode(protocol.ResultBatch(1, [[1, 2, 3, 4], ["r"]]))]),
    ("executor results for an unknown run",
     [hello(protocol.ROLE_EXECUTOR), protocol.encode(protocol.ResultBatch(1, [["no-run", 0, 0, {"case_id": "t", "outcome": "passed"}]]))]),
    ("executor collected for an unknown run", [hello(protocol.ROLE_EXECUTOR), protocol.encode(protocol.Collected("no-run", [], [], 0))]),
    ("executor shard done for an unknown run", [hello(protocol.ROLE_EXECUTOR), protocol.encode(protocol.ShardDone("no-run", 5, 1))]),
    ("executor released tests it never had",
     [hello(protocol.ROLE_EXECUTOR), protocol.encode(protocol.TestsReleased("no-run", 0, 0, ["a", "b"]))]),
    ("executor held attempts of garbage", [hello(protocol.ROLE_EXECUTOR, held=[["r"], [1, 2, 3], "x"])]),
]


async def send_raw(port: int, frames: list[bytes]) -> list[bytes]:
    """Send ``frames`` on a new connection, then read until the coordinator closes it or goes quiet."""
    replies = []
    async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
        with trio.move_on_after(RAW_TIMEOUT_S):
            try:
                for data in frames:
                    await ws.send_message(data)
                while True:
                    with trio.move_on_after(1.0) as quiet:
                        replies.append(await ws.get_message())
                    if quiet.cancelled_caught:
                        break
            except trio_websocket.ConnectionClosed:
                pass
    return replies


async def lists_runs(port: int) -> bool:
    async with trio_websocket.open_websocket("127.0.0.1", port, "/", use_ssl=False) as ws:
        await ws.send_message(hello(node_id="well-behaved"))
        assert isinstance(protocol.decode(await ws.get_message()), protocol.Welcome)
        await ws.send_message(protocol.encode(protocol.ListRuns()))
        return isinstance(protocol.decode(await ws.get_message()), protocol.RunList)


@pytest.mark.parametrize(("name", "frames"), CASES, ids=[name for name, _ in CASES])
async def test_hostile_input_leaves_coordinator_serving(name: str, frames: list[bytes], tmp_path: Path) -> None:
    coordinator = Coordinator(tmp_path / "coordinator")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(coordinator.serve, "127.0.0.1", 0)

        replies = [protocol.decode(reply) for reply in await send_raw(port, frames) if isinstance(reply, bytes)]

        assert not any(isinstance(reply, protocol.Welcome) for reply in replies[1:])
        assert await lists_runs(port), f"the coordinator stopped serving after: {name}"
        nursery.cancel_scope.cancel()


async def test_hostile_oversized_frame(tmp_path: Path) -> None:
    coordinator = Coordinator(tmp_path / "coordinator")
    async with trio.open_nursery() as nursery:
        port = await nursery.start(coordinator.serve, "127.0.0.1", 0)

        await send_raw(port, [hello(), b"\x00" * (protocol.MAX_FRAME_BYTES + 1)])

        assert await lists_runs(port)
        nursery.cancel_scope.cancel()


async def test_hostile_tokens_rejected(tmp_path: Path) -> None:
    coordinator = Coordinator(tmp_path / "coordinator", secret=new_secret().encode())
    garbage = ["", "x", "a.b.c", "e" * 10_000, "eyJhbGciOiJub25lIn0.eyJyb2xlIjoiYWRtaW4ifQ."]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(coordinator.serve, "127.0.0.1", 0)

        for token in garbage:
            (reply,) = [protocol.decode(data) for data in await send_raw(port, [hello(token=token)])]
            assert isinstance(reply, protocol.Reject)
            assert reply.reason.startswith(protocol.AUTH_FAILED)
            assert token not in reply.reason or not token
        nursery.cancel_scope.cancel()
