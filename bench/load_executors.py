"""Executor host of the load benchmark: many simulated executors in one Trio loop.

Usage (bench/load.py starts it): python bench/load_executors.py --join 127.0.0.1:PORT
    --executors 50 --max-tests 100000 --data-dir DIR --stats-file FILE [--slots 4 --seed 1 ...]

Each simulated executor opens its own WebSocket connection with
``swarmctl.cluster.transport.connect`` and speaks the executor side of the real protocol.
It sends a ``Hello`` with role executor and a ``Heartbeat`` every interval the ``Welcome``
gives, and ``Collected`` when a ``PrepareSuite`` requests a collection. For every ``Assign``
it "runs" the shard: it sleeps for each test's synthetic duration and reports a
``CaseResult`` in wire form. Results and ``ShardDone`` go through the real ``Outbox`` of
``swarmctl.executor.node`` and are sent the way its send loop sends them, after a linger of
``SEND_LINGER_S``. As in
the real executor, ``ShardDone`` follows the shard's last result batch on the same
connection without waiting for its ``ResultAck``, because the coordinator reads frames of a
connection in order. ``ReleaseTests`` gives back the end of the shard's unstarted tests, as
the pytest worker does, and ``CancelShard`` stops the shard. Gossip is off: no simulated
executor has a cluster secret.

The host measures on its side, with ``time.monotonic``: for each ``Assign``, the time since
the ``ShardDone`` that freed the slot was sent (``assign_ms``) and since the slot's last test
ended (``idle_ms``, which adds the send linger). It also counts frame bytes, acknowledged
results and event-loop lag. It writes them to ``--stats-file`` once, when it stops (SIGTERM,
SIGINT or ``--max-seconds``): rewriting the growing file while it runs held the loop for
milliseconds, which the assignments that waited behind it would have counted.
"""

from __future__ import annotations

import argparse
import array
import json
import logging
import math
import os
import random
import re
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio_websocket

from swarmctl import __version__, protocol
from swarmctl.cluster.transport import WebSocketPeer, PeerGone, connect, parse_address
from swarmctl.errors import ProtocolError, SwarmError
from swarmctl.executor.node import SEND_LINGER_S, Outbox
from swarmctl.executor.resource_monitor import ResourceMonitor
from swarmctl.executor.runners.pytest_runner import collection_digest
from swarmctl.labels import builtin_labels
from swarmctl.results import ERROR, FAILED, PASSED, CaseResult

log = logging.getLogger("bench.load_executors")

# The suite name carries the test count, from which the collecting executor builds its list of node ids.
SUITE_NAME_FORMAT = "synthetic-load-suite-{tests}-tests"
SUITE_NAME_PATTERN = re.compile(r"synthetic-load-suite-(\d+)-tests")
FAIL_EVERY = 100  # one test in this many fails, with a short traceback in its result
FAILURE_TEXT = (
    "def test_case():\n>       assert compute() == expected\nE       assert 41 == 42\n"
    "E        +  where 41 = compute()\n\ntest_load.py:12: AssertionError"
)
LAG_PROBE_S = 0.05


def case_id(index: int) -> str:
    """Return the node id of synthetic test ``index``; the last six digits are the index."""
    return f"tests/test_load_{index // 1000:03d}.py::test_case_{index:06d}"


def case_index(node_id: str) -> int:
    return int(node_id[-6:])


def test_durations(count: int, *, seed: int, median_s: float, sigma: float, cap_s: float) -> array.array:
    """Draw ``count`` test durations in seconds: lognormal with this median and sigma, capped at ``cap_s``."""
    rng = random.Random(seed)
    mu = math.log(median_s)
    return array.array("d", (min(cap_s, rng.lognormvariate(mu, sigma)) for _ in range(count)))


def tests_of_suite(suite: dict) -> int:
    match = SUITE_NAME_PATTERN.fullmatch(suite.get("name", ""))
    if match is None:
        raise ProtocolError(f"suite name {suite.get('name')!r} is not a synthetic load suite")
    return int(match.group(1))


@dataclass
class HostStats:
    """Measurements of one host process; bench/load.py merges the files of every host."""

    executors: int
    slots: int
    samples: list[list] = field(default_factory=list)  # [run_id, shard_id, attempt, assign_ms, idle_ms]
    first_assigns: dict[str, int] = field(default_factory=dict)  # run_id -> Assigns to a slot free since before the run
    acked: dict[str, int] = field(default_factory=dict)  # run_id -> results acknowledged
    ack_seconds: dict[int, int] = field(default_factory=dict)  # int(time.time()) -> results acknowledged
    sent_seconds: dict[int, int] = field(default_factory=dict)  # int(time.time()) -> bytes of frames sent
    received_seconds: dict[int, int] = field(default_factory=dict)  # int(time.time()) -> bytes of frames received
    frames_sent: int = 0
    frames_received: int = 0
    lag_ms: list[float] = field(default_factory=list)  # oversleep of a 50 ms sleep, one max per second
    digest_mismatches: int = 0
    released_tests: int = 0
    cancelled_shards: int = 0
    sessions: int = 0
    errors: list[str] = field(default_factory=list)

    def add_bytes(self, table: dict[int, int], size: int) -> None:
        second = int(time.time())
        table[second] = table.get(second, 0) + size

    def to_json(self) -> dict:
        return {
            "pid": os.getpid(),
            "executors": self.executors,
            "slots": self.slots,
            "samples": self.samples,
            "first_assigns": self.first_assigns,
            "acked": self.acked,
            "ack_seconds": self.ack_seconds,
            "sent_seconds": self.sent_seconds,
            "received_seconds": self.received_seconds,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "lag_ms": self.lag_ms,
            "digest_mismatches": self.digest_mismatches,
            "released_tests": self.released_tests,
            "cancelled_shards": self.cancelled_shards,
            "sessions": self.sessions,
            "errors": self.errors[:50],
        }


class CountingPeer(WebSocketPeer):
    """A ``Peer`` that counts the bytes of the msgpack frames it sends and receives.

    The counts are frame payloads: the WebSocket and TCP headers are not included.
    NOTE: it reuses the WebSocket of a ``WebSocketPeer`` from ``transport.connect`` through the private
    ``_ws`` attribute, because it exposes no frame sizes.
    """

    def __init__(self, peer: WebSocketPeer, stats: HostStats) -> None:
        super().__init__(peer._ws, peer.name)
        self.stats = stats

    async def send(self, message: protocol.Message) -> None:
        frame = protocol.encode(message)
        try:
            async with self._send_lock:
                await self._ws.send_message(frame)
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(f"{self.name}: connection closed") from exc
        self.stats.frames_sent += 1
        self.stats.add_bytes(self.stats.sent_seconds, len(frame))

    async def receive(self) -> protocol.Message:
        try:
            frame = await self._ws.get_message()
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise PeerGone(f"{self.name}: connection closed") from exc
        if isinstance(frame, str):
            raise ProtocolError(f"{self.name} sent a text frame")
        self.stats.frames_received += 1
        self.stats.add_bytes(self.stats.received_seconds, len(frame))
        return protocol.decode(frame)


class Host:
    """State shared by the simulated executors of one process."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stats = HostStats(args.executors, args.slots)
        self.durations = test_durations(
            args.max_tests, seed=args.seed, median_s=args.median_ms / 1000, sigma=args.sigma, cap_s=args.cap_s,
        )
        self.monitor = ResourceMonitor(Path(args.data_dir))
        self.resources = self.monitor.sample().to_wire()
        self.load = float(self.resources["load"])
        self._digests: dict[int, str] = {}

    def digest(self, tests: int) -> str:
        """Return the collection digest of the first ``tests`` synthetic tests, computed once per host."""
        if tests not in self._digests:
            self._digests[tests] = collection_digest([case_id(i) for i in range(tests)])
        return self._digests[tests]

    async def sample_resources(self) -> None:
        """Take one resource sample per second for every executor's heartbeat, as a real executor takes one per heartbeat."""
        while True:
            await trio.sleep(1.0)
            self.resources = self.monitor.sample().to_wire()
            self.load = float(self.resources["load"])

    async def probe_lag(self) -> None:
        worst, second = 0.0, int(time.monotonic())
        while True:
            before = time.monotonic()
            await trio.sleep(LAG_PROBE_S)
            lag = time.monotonic() - before - LAG_PROBE_S
            worst = max(worst, lag)
            if int(time.monotonic()) != second:
                self.stats.lag_ms.append(round(worst * 1000, 2))
                worst, second = 0.0, int(time.monotonic())

    def write_stats(self) -> None:
        path = Path(self.args.stats_file)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.stats.to_json()))
        temporary.replace(path)


class SimulatedExecutor:
    def __init__(self, host: Host, index: int) -> None:
        self.host = host
        self.stats = host.stats
        self.executor_id = f"load-{index:04d}"
        self.slots = host.args.slots
        self.busy = 0
        self.outbox = Outbox()
        self.held: dict[tuple[str, int], int] = {}  # (run_id, shard_id) -> attempt
        self.running: dict[tuple[str, int], deque[str]] = {}  # unstarted tests of each running shard
        self.scopes: dict[tuple[str, int], trio.CancelScope] = {}
        self.pending_releases: dict[tuple[str, int], int] = {}
        self.batch_items: dict[int, dict[str, int]] = {}  # seq -> {run_id: results} of unacknowledged batches
        self.interrupted: set[tuple[str, int]] = set()  # shards whose running test is stopped as an error
        self.ended_at: dict[tuple[str, int, int], float] = {}  # shard attempt -> when its last test ended
        self.freed: deque[tuple[str, float, float]] = deque()  # (run_id, ShardDone sent, last test ended)
        self.jobs_send, self.jobs_receive = trio.open_memory_channel(math.inf)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.slots):
                nursery.start_soon(self._slot, self.jobs_receive.clone())
            while True:
                try:
                    async with connect([self.host.args.join]) as plain_peer:
                        peer = CountingPeer(plain_peer, self.stats)
                        await peer.send(self._hello())
                        welcome = await peer.receive()
                        if not isinstance(welcome, protocol.Welcome):
                            raise ProtocolError(f"coordinator sent {welcome.KIND} instead of welcome: {welcome}")
                        self.stats.sessions += 1
                        await self._session(peer, welcome)
                except* (PeerGone, ProtocolError, SwarmError, OSError) as group:
                    self.stats.errors.append(f"{self.executor_id}: {group.exceptions[0]!r}")
                    log.warning("executor %s: session ended: %r; reconnecting in 1s", self.executor_id, group.exceptions[0])
                await trio.sleep(1.0)

    def _hello(self) -> protocol.Hello:
        return protocol.Hello(
            protocol.PROTOCOL_VERSION, protocol.ROLE_EXECUTOR, self.executor_id, self.slots, builtin_labels(),
            f"swarmctl {__version__}", socket.gethostname(), os.getpid(), resources=self.host.resources,
            held=[[run_id, shard_id, attempt] for (run_id, shard_id), attempt in sorted(self.held.items())],
        )

    async def _session(self, peer: CountingPeer, welcome: protocol.Welcome) -> None:
        for seq in sorted(self.outbox.unacked):
            await peer.send(self.outbox.unacked[seq])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop, peer)
            nursery.start_soon(self._heartbeat_loop, peer, welcome.heartbeat_s)
            try:
                await self._receive_loop(peer)
            finally:
                nursery.cancel_scope.cancel()

    async def _receive_loop(self, peer: CountingPeer) -> None:
        while True:
            message = await peer.receive()
            match message:
                case protocol.Assign():
                    self._on_assign(message, time.monotonic())
                case protocol.ResultAck():
                    self._on_ack(message.seq)
                case protocol.HeartbeatAck():
                    pass
                case protocol.PrepareSuite():
                    if message.collect:
                        tests = tests_of_suite(message.suite)
                        ids = [case_id(i) for i in range(tests)]
                        self.outbox.put(protocol.Collected(message.run_id, ids, []))
                case protocol.ReleaseTests():
                    self._release(message)
                case protocol.CancelShard():
                    self._cancel(message)
                case protocol.Drain():
                    self.stats.errors.append(f"{self.executor_id}: drain requested ({message.reason}); not simulated")
                case protocol.ErrorReply():
                    self.stats.errors.append(f"{self.executor_id}: coordinator reported {message.message}")
                case _:
                    raise ProtocolError(f"coordinator sent unexpected {message.KIND}")

    def _on_assign(self, message: protocol.Assign, now: float) -> None:
        # Slots freed for an earlier run are not waiting for this one: that run ended.
        while self.freed and self.freed[0][0] != message.run_id:
            self.freed.popleft()
        if self.freed:
            _, sent_at, ended_at = self.freed.popleft()
            self.stats.samples.append([
                message.run_id, message.shard_id, message.attempt,
                round((now - sent_at) * 1000, 3), round((now - ended_at) * 1000, 3),
            ])
        else:
            self.stats.first_assigns[message.run_id] = self.stats.first_assigns.get(message.run_id, 0) + 1
        key = (message.run_id, message.shard_id)
        self.held[key] = message.attempt
        self.jobs_send.send_nowait(message)

    def _on_ack(self, seq: int) -> None:
        second = int(time.time())
        for run_id, count in self.batch_items.pop(seq, {}).items():
            self.stats.acked[run_id] = self.stats.acked.get(run_id, 0) + count
            self.stats.ack_seconds[second] = self.stats.ack_seconds.get(second, 0) + count
        self.outbox.acknowledge(seq)

    def _release(self, message: protocol.ReleaseTests) -> None:
        """Give back the last unstarted tests of a running shard, as the pytest worker does."""
        key = (message.run_id, message.shard_id)
        unstarted = self.running.get(key)
        if unstarted is None:
            if key in self.held:
                self.pending_releases[key] = message.count  # its job has not started yet
            return
        count = max(0, min(message.count, len(unstarted)))
        if count == 0:
            return
        released = [unstarted.pop() for _ in range(count)][::-1]
        self.stats.released_tests += len(released)
        self.outbox.put(protocol.TestsReleased(message.run_id, message.shard_id, message.attempt, released))

    def _cancel(self, message: protocol.CancelShard) -> None:
        key = (message.run_id, message.shard_id)
        if self.held.get(key) != message.attempt:
            return
        self.stats.cancelled_shards += 1
        if message.interrupt:
            self.interrupted.add(key)
        scope = self.scopes.get(key)
        if scope is not None:
            scope.cancel()
        if not message.interrupt:
            del self.held[key]
            # The coordinator counts the slot as free at once.
            now = time.monotonic()
            self.freed.append((message.run_id, now, now))

    async def _slot(self, jobs: trio.MemoryReceiveChannel) -> None:
        async for assign in jobs:
            self.busy += 1
            try:
                await self._run_shard(assign)
            finally:
                self.busy -= 1

    async def _run_shard(self, assign: protocol.Assign) -> None:
        key = (assign.run_id, assign.shard_id)
        if self.held.get(key) != assign.attempt:
            return  # cancelled while it waited
        tests = tests_of_suite(assign.suite)
        unstarted = deque(assign.case_ids)
        if assign.collection_digest != self.host.digest(tests):
            # The real slot reports the tests its worker did not collect as errors; the simulation only counts the mismatch.
            self.stats.digest_mismatches += 1

        release = self.pending_releases.pop(key, 0)
        self.running[key] = unstarted
        if release > 0:
            self._release(protocol.ReleaseTests(assign.run_id, assign.shard_id, assign.attempt, release))
        with trio.CancelScope() as scope:
            self.scopes[key] = scope
            while unstarted:
                node_id = unstarted.popleft()
                duration = self.host.durations[case_index(node_id)]
                started_at = time.time()
                try:
                    await trio.sleep(duration)
                except trio.Cancelled:
                    if key in self.interrupted:
                        self.interrupted.discard(key)
                        result = CaseResult(node_id, ERROR, time.time() - started_at, self.executor_id, assign.attempt,
                                            message="interrupted", longrepr="interrupted", started_at=started_at)
                        self._send_result(assign, result)
                    raise
                self._send_result(assign, self._result(node_id, duration, assign.attempt, started_at))

        self.running.pop(key, None)
        self.scopes.pop(key, None)
        if scope.cancelled_caught and self.held.get(key) != assign.attempt:
            return  # dropped: the coordinator took it back
        if self.held.get(key) == assign.attempt:
            del self.held[key]
            self.ended_at[(assign.run_id, assign.shard_id, assign.attempt)] = time.monotonic()
            self.outbox.put(protocol.ShardDone(assign.run_id, assign.shard_id, assign.attempt))

    def _result(self, node_id: str, duration: float, attempt: int, started_at: float) -> CaseResult:
        if case_index(node_id) % FAIL_EVERY == FAIL_EVERY - 1:
            return CaseResult(node_id, FAILED, duration, self.executor_id, attempt, message="assert 41 == 42",
                              longrepr=FAILURE_TEXT, started_at=started_at)
        return CaseResult(node_id, PASSED, duration, self.executor_id, attempt, started_at=started_at)

    def _send_result(self, assign: protocol.Assign, result: CaseResult) -> None:
        self.outbox.put([assign.run_id, assign.shard_id, assign.attempt, result.to_wire()])

    async def _send_loop(self, peer: CountingPeer) -> None:
        """Send the outbox as ``Executor._send_loop`` does: linger, then every pending frame in order."""
        while True:
            await self.outbox.wake.wait()
            await trio.sleep(SEND_LINGER_S)
            for frame in self.outbox.take_frames():
                if isinstance(frame, protocol.ResultBatch):
                    counts: dict[str, int] = {}
                    for item in frame.items:
                        counts[item[0]] = counts.get(item[0], 0) + 1
                    self.batch_items[frame.seq] = counts
                await peer.send(frame)
                if isinstance(frame, protocol.ShardDone):
                    ended_at = self.ended_at.pop((frame.run_id, frame.shard_id, frame.attempt), None)
                    sent_at = time.monotonic()
                    self.freed.append((frame.run_id, sent_at, ended_at if ended_at is not None else sent_at))

    async def _heartbeat_loop(self, peer: CountingPeer, interval: float) -> None:
        # Executors start their heartbeats at different moments, as independent processes would.
        await trio.sleep(random.random() * interval)
        while True:
            held = [[run_id, shard_id, attempt] for (run_id, shard_id), attempt in sorted(self.held.items())]
            await peer.send(protocol.Heartbeat(self.slots - self.busy, self.host.load, self.host.resources, held))
            await trio.sleep(interval)


async def serve(args: argparse.Namespace) -> None:
    host = Host(args)
    simulated = [SimulatedExecutor(host, args.first_index + i) for i in range(args.executors)]

    try:
        with trio.move_on_after(args.max_seconds):
            async with trio.open_nursery() as nursery:

                async def stop_on_signal() -> None:
                    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                        async for _ in signals:
                            nursery.cancel_scope.cancel()
                            return

                nursery.start_soon(stop_on_signal)
                nursery.start_soon(host.sample_resources)
                nursery.start_soon(host.probe_lag)
                for executor in simulated:
                    nursery.start_soon(executor.run)
                    await trio.sleep(args.connect_spacing_s)
    finally:
        host.write_stats()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--join", required=True, type=parse_address, help="Coordinator address, HOST:PORT.")
    parser.add_argument("--executors", type=int, required=True, help="Simulated executors in this process.")
    parser.add_argument("--first-index", type=int, default=0, help="Number of the first executor; ids are load-NNNN.")
    parser.add_argument("--slots", type=int, default=4, help="Slots per simulated executor.")
    parser.add_argument("--max-tests", type=int, required=True, help="Largest suite of the benchmark, in tests.")
    parser.add_argument("--seed", type=int, default=1, help="Seed of the test durations.")
    parser.add_argument("--median-ms", type=float, default=20.0, help="Median test duration in milliseconds.")
    parser.add_argument("--sigma", type=float, default=3.0, help="Sigma of the lognormal test durations.")
    parser.add_argument("--cap-s", type=float, default=30.0, help="Maximum test duration in seconds; longer draws are cut to it.")
    parser.add_argument("--data-dir", required=True, help="Folder whose disk the heartbeat's resource sample reports.")
    parser.add_argument("--stats-file", required=True, help="JSON file the measurements are written to.")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="Stop after this many seconds.")
    parser.add_argument("--connect-spacing-s", type=float, default=0.005, help="Pause between two executors' first connections.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("trio-websocket").setLevel(logging.WARNING)
    if args.max_tests > 999_999:
        parser.error(f"--max-tests {args.max_tests} is too large: node ids carry six digits, so at most 999999")
    trio.run(serve, args)


if __name__ == "__main__":
    main()
