"""The executor node: joins a coordinator, runs the shards it is assigned, sends results.

Slots are long-lived tasks that take jobs from one channel, so a slot that finishes a shard
picks the next job at once. Results go into an ordered outbox; a sender task cuts it into
batches and keeps each batch until the coordinator acknowledges it (after a durable write),
resending unacknowledged batches after a reconnect.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import trio

from swarmctl import __version__, protocol
from swarmctl.bundle import BundleCache
from swarmctl.cluster.transport import Peer, PeerGone, connect, format_address
from swarmctl.errors import BundleError, ConnectionFailed, ProtocolError
from swarmctl.executor.processes import become_subreaper, kill_orphans
from swarmctl.executor.slot import Job, Slot

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 2.0
SEND_LINGER_S = 0.02
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 10.0


def default_executor_id() -> str:
    return f"{socket.gethostname()}-{secrets.token_hex(2)}"


@dataclass
class Outbox:
    """Frames waiting to be sent, and result batches waiting for their acknowledgement."""

    pending: list[protocol.Message | list] = field(default_factory=list)  # a list is one result item
    unacked: dict[int, protocol.ResultBatch] = field(default_factory=dict)
    next_seq: int = 1
    wake: trio.Event = field(default_factory=trio.Event)

    def put(self, item: protocol.Message | list) -> None:
        self.pending.append(item)
        self.wake.set()

    def take_frames(self) -> list[protocol.Message]:
        """Turn pending items into frames, results batched up to BATCH_BYTES per frame."""
        frames: list[protocol.Message] = []
        batch: list[list] = []
        size = 0
        for item in self.pending:
            if isinstance(item, list):
                batch.append(item)
                size += _approximate_size(item)
                if size >= protocol.BATCH_BYTES:
                    frames.append(self._seal(batch))
                    batch, size = [], 0
            else:
                if batch:
                    frames.append(self._seal(batch))
                    batch, size = [], 0
                frames.append(item)
        if batch:
            frames.append(self._seal(batch))
        self.pending.clear()
        self.wake = trio.Event()
        return frames

    def _seal(self, items: list[list]) -> protocol.ResultBatch:
        batch = protocol.ResultBatch(self.next_seq, items)
        self.unacked[batch.seq] = batch
        self.next_seq += 1
        return batch


def _approximate_size(item: list) -> int:
    result = item[3]
    return 200 + sum(len(v) for v in result.values() if isinstance(v, str))


class Executor:
    def __init__(
        self,
        *,
        executor_id: str,
        join: list[tuple[str, int]],
        slots: int,
        labels: dict[str, str],
        data_dir: Path,
    ) -> None:
        self.executor_id = executor_id
        self.join = join
        self.labels = labels
        self.data_dir = data_dir
        self.bundles = BundleCache(data_dir / "bundles")
        self.outbox = Outbox()
        self.slots = [Slot(self, i) for i in range(slots)]
        self.jobs_send, self.jobs_receive = trio.open_memory_channel(math.inf)
        self._fetches: dict[str, trio.MemorySendChannel] = {}
        self.pending_releases: dict[tuple[str, int], int] = {}  # (run, shard) -> tests to give back
        self._fetch_done: dict[str, trio.Event] = {}
        self._peer: Peer | None = None
        self._connected = trio.Event()

    async def run(self) -> None:
        if not become_subreaper():
            log.warning("cannot become a child subreaper; processes left by crashed tests may outlive them")
        log.info(
            "executor %s starting: slots %d, labels %s, joining %s",
            self.executor_id, len(self.slots), self.labels, ", ".join(format_address(*a) for a in self.join),
        )
        async with trio.open_nursery() as nursery:
            for slot in self.slots:
                nursery.start_soon(slot.serve, self.jobs_receive.clone())
            try:
                await self._stay_connected()
            finally:
                with trio.CancelScope(shield=True):
                    for slot in self.slots:
                        await slot.shutdown()
                nursery.cancel_scope.cancel()

    async def _stay_connected(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            try:
                async with connect(self.join) as peer:
                    await self._session(peer)
                    delay = RECONNECT_MIN_S
            except* (ConnectionFailed, PeerGone, ProtocolError) as group:
                # The session's nursery wraps these in an exception group.
                log.warning("executor %s: %s Reconnecting in %.1fs.", self.executor_id, group.exceptions[0], delay)
            self._peer = None
            self._connected = trio.Event()
            await trio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _session(self, peer: Peer) -> None:
        hello = protocol.Hello(
            protocol.PROTOCOL_VERSION, protocol.ROLE_EXECUTOR, self.executor_id, len(self.slots),
            self.labels, f"swarmctl {__version__}", socket.gethostname(), os.getpid(),
        )
        await peer.send(hello)
        reply = await peer.receive()
        if isinstance(reply, protocol.Reject):
            raise ProtocolError(f"coordinator rejected this executor: {reply.reason}")
        if not isinstance(reply, protocol.Welcome):
            raise ProtocolError(f"expected welcome, got {reply.KIND}")
        log.info("executor %s connected to %s (%s, term %d)", self.executor_id, peer.name, reply.coordinator_id, reply.term)

        # Batches the last coordinator never acknowledged go first.
        for seq in sorted(self.outbox.unacked):
            await peer.send(self.outbox.unacked[seq])
        self._peer = peer
        self._connected.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop, peer)
            nursery.start_soon(self._heartbeat_loop, peer)
            try:
                await self._receive_loop(peer, nursery)
            finally:
                nursery.cancel_scope.cancel()

    async def _receive_loop(self, peer: Peer, nursery: trio.Nursery) -> None:
        while True:
            message = await peer.receive()
            match message:
                case protocol.PrepareSuite():
                    self.jobs_send.send_nowait(Job(kind="prepare", run_id=message.run_id, suite=message.suite, collect=message.collect))
                case protocol.Assign():
                    self.jobs_send.send_nowait(Job(kind="shard", run_id=message.run_id, suite=message.suite, assign=message))
                case protocol.ResultAck():
                    self.outbox.unacked.pop(message.seq, None)
                case protocol.ReleaseTests():
                    if not any(slot.release_tests(message.run_id, message.shard_id, message.count) for slot in self.slots):
                        # Its job still waits in the queue; the slot that takes it applies this.
                        self.pending_releases[(message.run_id, message.shard_id)] = message.count
                case protocol.CancelShard():
                    for slot in self.slots:
                        slot.cancel_shard(message.run_id, message.shard_id, message.reason, interrupt=message.interrupt)
                case protocol.BundleChunk():
                    channel = self._fetches.get(message.digest)
                    if channel is not None:
                        channel.send_nowait(message)
                case protocol.ErrorReply():
                    log.error("coordinator reported an error: %s", message.message)
                    for channel in self._fetches.values():
                        channel.send_nowait(message)
                case _:
                    raise ProtocolError(f"coordinator sent unexpected {message.KIND}")

    async def _send_loop(self, peer: Peer) -> None:
        while True:
            await self.outbox.wake.wait()
            # Linger a moment so results of fast tests share a frame and one SQLite commit on
            # the coordinator, instead of one of each per test.
            await trio.sleep(SEND_LINGER_S)
            for frame in self.outbox.take_frames():
                await peer.send(frame)

    async def _heartbeat_loop(self, peer: Peer) -> None:
        while True:
            busy = sum(1 for slot in self.slots if slot.busy)
            await peer.send(protocol.Heartbeat(len(self.slots) - busy, psutil.cpu_percent(interval=None)))
            await trio.sleep(HEARTBEAT_INTERVAL_S)

    # --- called by slots -------------------------------------------------------------------

    def kill_orphans(self) -> list[str]:
        """Kill processes re-parented to this executor after their parent died."""
        return kill_orphans()

    def send(self, message: protocol.Message) -> None:
        self.outbox.put(message)

    def send_result(self, run_id: str, shard_id: int, attempt: int, result: dict) -> None:
        self.outbox.put([run_id, shard_id, attempt, result])

    async def suite_dir(self, digest: str) -> Path:
        """Return the extracted suite folder of a bundle, downloading the bundle if needed."""
        if not self.bundles.has_archive(digest):
            await self._fetch_bundle(digest)
        return await trio.to_thread.run_sync(self.bundles.extracted, digest)

    async def _fetch_bundle(self, digest: str) -> None:
        if digest in self._fetch_done:
            await self._fetch_done[digest].wait()
            if self.bundles.has_archive(digest):
                return
        done = self._fetch_done[digest] = trio.Event()
        send, receive = trio.open_memory_channel(math.inf)
        self._fetches[digest] = send
        writer = self.bundles.open_writer(digest)
        try:
            await self._connected.wait()
            await self._peer.send(protocol.BundleFetch(digest))
            async for chunk in receive:
                if isinstance(chunk, protocol.ErrorReply):
                    raise BundleError(f"cannot download bundle {digest}: {chunk.message}")
                writer.write(chunk.data)
                if chunk.last:
                    break
            writer.commit()
            log.info("downloaded bundle %s", digest[:12])
        except BaseException:
            writer.abort()
            raise
        finally:
            del self._fetches[digest]
            del self._fetch_done[digest]
            done.set()
