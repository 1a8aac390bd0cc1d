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
import random
import secrets
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from swarmctl import __version__, protocol
from swarmctl.bundle import BundleCache, BundleLimits
from swarmctl.cluster.gossip import GossipNode
from swarmctl.cluster.node_gossip import apply_keyring, gossip_node, local_address_towards
from swarmctl.cluster.transport import TCP, Network, Peer, PeerGone, format_address
from swarmctl.credentials import executor_token
from swarmctl.errors import BundleError, ProtocolError
from swarmctl.executor.coordinator_client import CoordinatorClient
from swarmctl.executor.log_shipping import LogBuffer, OutputBuffer, shipping
from swarmctl.executor.processes import become_subreaper, kill_orphans
from swarmctl.executor.resource_monitor import ResourceMonitor
from swarmctl.executor.slot import Job, Slot
from swarmctl.labels import builtin_labels, format_labels

log = logging.getLogger(__name__)

SEND_LINGER_S = 0.02
GOSSIP_META_INTERVAL_S = 10.0


def _wake_soon(token: trio.lowlevel.TrioToken, wake: Callable[[], None]) -> None:
    """Schedule ``wake`` on the executor's Trio loop from any thread. Does nothing once the loop has ended."""
    try:
        token.run_sync_soon(wake)
    except trio.RunFinishedError:
        pass


def default_executor_id() -> str:
    return f"{socket.gethostname()}-{secrets.token_hex(2)}"


@dataclass
class Outbox:
    """Frames waiting to be sent, and result batches waiting for their acknowledgement."""

    pending: list[protocol.Message | list] = field(default_factory=list)  # a list is one result item
    unacked: dict[int, protocol.ResultBatch] = field(default_factory=dict)
    next_seq: int = 1
    wake: trio.Event = field(default_factory=trio.Event)
    _settled: trio.Event = field(default_factory=trio.Event)

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
        if not self.unacked:
            self._settled.set()
        return frames

    def acknowledge(self, seq: int) -> None:
        self.unacked.pop(seq, None)
        if not self.unacked:
            self._settled.set()

    async def flushed(self) -> None:
        """Wait until every pending frame was sent and every result batch acknowledged."""
        while self.pending or self.unacked:
            self._settled = trio.Event()
            await self._settled.wait()

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
        rng: random.Random | None = None,
        secret: bytes | None = None,
        token_file: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        bundle_limits: BundleLimits | None = None,
        network: Network = TCP,
    ) -> None:
        self.executor_id = executor_id
        self.secret = secret  # the cluster secret; without it the executor does not gossip
        self.token_file = token_file  # a join token, for executors that do not have the secret
        self.gossip: GossipNode | None = None
        self.gossip_address: tuple[str, int] | None = None
        self.join = join
        self.labels = {**builtin_labels(), **labels}
        self.data_dir = data_dir
        self.bundles = BundleCache(data_dir / "bundles", bundle_limits)
        self.outbox = Outbox()
        self.log_buffer = LogBuffer()  # records of the swarmctl loggers, sent as LogBatch frames
        self.output_buffer = OutputBuffer()  # running tests' captured output, sent as CaseOutput frames
        self.slots = [Slot(self, i) for i in range(slots)]
        self.jobs_send, self.jobs_receive = trio.open_memory_channel(math.inf)
        self.monitor = ResourceMonitor(data_dir)
        self.client = CoordinatorClient(join, rng=rng, ssl_context=ssl_context, network=network)
        self.held: dict[tuple[str, int], int] = {}  # (run, shard) -> attempt, assigned and not yet done
        self.pending_releases: dict[tuple[str, int], int] = {}  # (run, shard) -> tests to give back
        self.draining = False
        self._fetches: dict[str, trio.MemorySendChannel] = {}
        self._fetch_done: dict[str, trio.Event] = {}
        self._peer: Peer | None = None
        self._connected = trio.Event()
        self._idle = trio.Event()  # set when a draining executor has no shard left
        self._left = trio.Event()  # set once the Leave message was sent, or could not be

    async def run(self) -> None:
        """Serve until cancelled, or until a drain ends with every held shard finished."""
        if not become_subreaper():
            log.warning("cannot become a child subreaper; processes left by crashed tests may outlive them")
        token = trio.lowlevel.current_trio_token()
        self.log_buffer.notify = lambda: _wake_soon(token, self._wake_for_logs)
        with self.log_buffer.installed():
            await self._serve()

    def _wake_for_logs(self) -> None:
        self.outbox.wake.set()

    async def _serve(self) -> None:
        log.info(
            "executor %s starting: slots %d, labels %s, joining %s",
            self.executor_id, len(self.slots), format_labels(self.labels), ", ".join(format_address(*a) for a in self.join),
        )
        async with trio.open_nursery() as nursery:
            for slot in self.slots:
                nursery.start_soon(slot.serve, self.jobs_receive.clone())
            if self.secret is not None:
                host = local_address_towards(*self.join[0])
                self.gossip = gossip_node(self.executor_id, (host, 0), self._gossip_meta(0.0), self.secret)
                self.gossip_address = await nursery.start(self.gossip.run)
            client_scope = trio.CancelScope()

            async def stay_connected() -> None:
                with client_scope:
                    await self.client.run(self._hello, self._session)

            nursery.start_soon(stay_connected)
            try:
                await self._left.wait()
                log.info("executor %s drained; leaving", self.executor_id)
                client_scope.cancel()
                if self.gossip is not None:
                    await self.gossip.leave()
            finally:
                with trio.CancelScope(shield=True):
                    for slot in self.slots:
                        await slot.shutdown()
                nursery.cancel_scope.cancel()

    def prepare(self, suite: protocol.SuiteSpec) -> None:
        """Start a pytest worker of ``suite`` on each slot before any run requests one.

        A run of that suite then finds the workers collected. The embedded default calls this
        so that its workers start while the coordinator is still starting.
        """
        for _ in self.slots:
            self.jobs_send.send_nowait(Job(kind="prepare", run_id="", suite=suite.to_wire()))

    def drain(self, reason: str) -> None:
        """Take no new work, finish the held shards, then leave (``run`` returns)."""
        if self.draining:
            return
        self.draining = True
        log.info("executor %s draining (%s): %d shards to finish", self.executor_id, reason, len(self.held))
        self.send(protocol.Draining(reason))
        self._check_idle()

    def _check_idle(self) -> None:
        if self.draining and not self.held:
            self._idle.set()
            if self._peer is None and not self.outbox.unacked:
                # No coordinator to tell, and nothing it still has to acknowledge.
                self._left.set()

    def _hello(self) -> protocol.Hello:
        return protocol.Hello(
            protocol.PROTOCOL_VERSION, protocol.ROLE_EXECUTOR, self.executor_id, len(self.slots),
            self.labels, f"swarmctl {__version__}", socket.gethostname(), os.getpid(),
            resources=self.monitor.sample().to_wire(),
            held=self._held_attempts(),
            gossip=list(self.gossip_address) if self.gossip_address else None,
            token=executor_token(self.secret, self.token_file),
        )

    def _held_attempts(self) -> list[list]:
        """Return the shard attempts this executor runs or has queued, as ``[run_id, shard_id, attempt]``."""
        return [[run_id, shard_id, attempt] for (run_id, shard_id), attempt in sorted(self.held.items())]

    def _gossip_meta(self, load: float) -> dict:
        return {"role": "executor", "slots": len(self.slots), "labels": self.labels, "load": round(load, 2)}

    async def _session(self, peer: Peer, welcome: protocol.Welcome) -> None:
        # Batches the last coordinator never acknowledged go first.
        for seq in sorted(self.outbox.unacked):
            await peer.send(self.outbox.unacked[seq])
        if self.draining:
            await peer.send(protocol.Draining("the executor is stopping"))
        if self.gossip is not None and welcome.gossip:
            self.gossip.join([(welcome.gossip[0], int(welcome.gossip[1]))])
        self._peer = peer
        self._connected.set()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, peer)
                nursery.start_soon(self._heartbeat_loop, peer, welcome.heartbeat_s)
                nursery.start_soon(self._leave_when_idle, peer)
                try:
                    await self._receive_loop(peer, nursery, silence_limit=max(2 * welcome.lease_s, 3 * welcome.heartbeat_s))
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._peer = None
            self._connected = trio.Event()
            self._check_idle()

    async def _leave_when_idle(self, peer: Peer) -> None:
        await self._idle.wait()
        await self.outbox.flushed()
        try:
            with shipping():
                for batch in self.log_buffer.take_all():
                    await peer.send(batch)
            await peer.send(protocol.Leave("drained"))
        finally:
            self._left.set()

    async def _receive_loop(self, peer: Peer, nursery: trio.Nursery, *, silence_limit: float) -> None:
        while True:
            # The coordinator acknowledges every heartbeat, so silence means that it, or the
            # network to it, is gone.
            with trio.move_on_after(silence_limit) as timer:
                message = await peer.receive()
            if timer.cancelled_caught:
                raise PeerGone(f"no message from the coordinator {peer.name} in {silence_limit:.0f}s")
            match message:
                case protocol.HeartbeatAck():
                    pass
                case protocol.PrepareSuite():
                    self.jobs_send.send_nowait(Job(kind="prepare", run_id=message.run_id, suite=message.suite, collect=message.collect))
                case protocol.Assign():
                    self._on_assign(message)
                case protocol.ResultAck():
                    self.outbox.acknowledge(message.seq)
                case protocol.ReleaseTests():
                    if not any(slot.release_tests(message.run_id, message.shard_id, message.count) for slot in self.slots):
                        # Its job still waits in the queue; the slot that takes it applies this.
                        self.pending_releases[(message.run_id, message.shard_id)] = message.count
                case protocol.CancelShard():
                    self._cancel(message)
                case protocol.Drain():
                    self.drain(message.reason)
                case protocol.GossipKeyring():
                    if self.gossip is not None:
                        apply_keyring(self.gossip.cipher, self.secret, message.generations, message.primary)
                        log.info("gossip keys: generations %s, sealing with %d", message.generations, message.primary)
                        await peer.send(protocol.GossipKeyring(message.generations, message.primary))
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

    def _cancel(self, message: protocol.CancelShard) -> None:
        for slot in self.slots:
            slot.cancel_shard(message.run_id, message.shard_id, message.attempt, message.reason, interrupt=message.interrupt)
        if not message.interrupt:
            # An interrupted shard still reports its stopped test and ShardDone; a dropped one is forgotten.
            self.forget(message.run_id, message.shard_id, message.attempt)

    def _on_assign(self, message: protocol.Assign) -> None:
        """Queue an assigned shard attempt, unless this executor already runs or queues that attempt."""
        key = (message.run_id, message.shard_id)
        if self.held.get(key) == message.attempt:
            # A new leader can repeat the attempt number that a deposed leader's uncommitted
            # assignment gave this executor. Running it once is enough: tests of the new
            # assignment that the old one lacked come back to the coordinator as missing.
            log.info("run %s: shard %d attempt %d is already running here; ignoring its repeated assignment",
                     message.run_id, message.shard_id, message.attempt)
            return
        self.held[key] = message.attempt
        self.jobs_send.send_nowait(Job(kind="shard", run_id=message.run_id, suite=message.suite, assign=message))

    async def _send_loop(self, peer: Peer) -> None:
        while True:
            await self.outbox.wake.wait()
            # Linger a moment so results of fast tests share a frame and one SQLite commit on
            # the coordinator, instead of one of each per test.
            await trio.sleep(SEND_LINGER_S)
            for frame in self.outbox.take_frames():
                await peer.send(frame)

            # Live output and logs go after results, one frame of each per pass, so a backlog
            # delays results by two frames at most. A frame lost with the connection is not
            # sent again.
            output = self.output_buffer.take_frame()
            if output is not None:
                await peer.send(output)
            if self.output_buffer.dropped_chars:
                log.warning("dropped %d characters of live test output waiting to be sent; results keep their output",
                            self.output_buffer.dropped_chars)
                self.output_buffer.dropped_chars = 0
            batch = self.log_buffer.take_batch()
            if batch is not None:
                with shipping():
                    await peer.send(batch)
            if len(self.log_buffer) or len(self.output_buffer):
                self.outbox.wake.set()

    async def _heartbeat_loop(self, peer: Peer, interval: float) -> None:
        published_at = -math.inf
        while True:
            busy = sum(1 for slot in self.slots if slot.busy)
            resources = self.monitor.sample()
            heartbeat = protocol.Heartbeat(len(self.slots) - busy, resources.load, resources.to_wire(), self._held_attempts())
            await peer.send(heartbeat)
            if self.gossip is not None and trio.current_time() - published_at >= GOSSIP_META_INTERVAL_S:
                # Every change of meta is disseminated to every member: publish load rarely.
                self.gossip.set_meta(self._gossip_meta(resources.load))
                published_at = trio.current_time()
            await trio.sleep(interval)

    # --- called by slots -------------------------------------------------------------------

    def kill_orphans(self) -> list[str]:
        """Kill processes re-parented to this executor after their parent died."""
        return kill_orphans()

    def send(self, message: protocol.Message) -> None:
        self.outbox.put(message)

    def holds(self, run_id: str, shard_id: int, attempt: int) -> bool:
        return self.held.get((run_id, shard_id)) == attempt

    def forget(self, run_id: str, shard_id: int, attempt: int) -> None:
        """Drop a shard the coordinator took back; it gets no ShardDone."""
        if self.holds(run_id, shard_id, attempt):
            del self.held[(run_id, shard_id)]
            self.pending_releases.pop((run_id, shard_id), None)
            self._check_idle()

    def shard_done(self, message: protocol.ShardDone) -> None:
        """Report a finished shard, unless the coordinator took it back meanwhile."""
        if self.holds(message.run_id, message.shard_id, message.attempt):
            del self.held[(message.run_id, message.shard_id)]
            self.outbox.put(message)
            self._check_idle()

    def send_result(self, run_id: str, shard_id: int, attempt: int, result: dict) -> None:
        self.outbox.put([run_id, shard_id, attempt, result])

    def send_output(self, run_id: str, shard_id: int, attempt: int, case_id: str, stream: str, text: str) -> None:
        self.output_buffer.add(run_id, shard_id, attempt, case_id, stream, text)
        self.outbox.wake.set()

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
