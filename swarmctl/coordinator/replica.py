"""A coordinator-eligible node of a replicated cluster: consensus shell, replicated state, leadership.

Every voter runs a ``Replica``. It feeds the consensus core (``swarmctl.cluster.consensus``)
with ticks and with the messages other voters send, and persists what the core returns in
``raft.db``. It sends the core's messages over one outgoing WebSocket link per voter, and
applies committed commands to its own ``state.db`` in log order.

The leader runs a ``Coordinator`` over that state. Its commands are proposed to the log
and applied at once (``StateMachine.replicate``), so the scheduler decides on the newest
state as a single coordinator does. Everything the outside world takes as done, such as a
result acknowledgement or a run's acceptance, waits until a majority has the command. A
leader that steps down may have applied commands that were never committed, so it throws
its ``state.db`` away and rebuilds it from its snapshot and the committed entries. A
leader starts serving only once the empty entry of its own term is committed and applied,
because only then does its state contain every committed command.

Executors and clients may connect to any voter: a follower rejects an executor's hello with
the leader's address, and the executor retries there, and it relays a client's frames to
the leader. Voters are named by the address they serve on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import sqlite3
import ssl
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
import trio

from swarmctl import protocol
from swarmctl.cluster.consensus import AppendEntries, ConsensusConfig, EntryKind, Node, Ready, Rejected, Role, Snapshot
from swarmctl.cluster.consensus import Message as ConsensusMessage
from swarmctl.cluster.consensus.wire import from_wire, to_wire
from swarmctl.cluster.transport import TCP, Network, Peer, PeerGone, parse_address
from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator import store
from swarmctl.coordinator.access import authenticate
from swarmctl.coordinator.node import read_hello
from swarmctl.coordinator.raft_store import RAFT_DB, RaftStore
from swarmctl.coordinator.state import StateMachine
from swarmctl.bundle import BundleCache, BundleLimits
from swarmctl.errors import BundleError, ConnectionFailed, ProtocolError, StoreError, UsageError
from swarmctl.tokens import AuthError
from swarmctl.tokens import Role as TokenRole
from swarmctl.tokens import issue

log = logging.getLogger(__name__)

STATE_DB = "state.db"
TICK_S = 0.01  # how often the shell checks the core's timers
COMPACT_EVERY = 5_000  # applied entries between two snapshots
SNAPSHOT_COMMIT_WAIT_S = 60.0  # how long a leader's snapshot waits for its index to be committed
SNAPSHOT_COMMIT_POLL_S = 0.05
LINK_QUEUE = 4_096  # consensus messages waiting for a link; more are dropped, and Raft sends them again
JOIN_MAX_ENTRIES = 1_024  # entries of AppendEntries joined while they wait for a link, at most
JOIN_MAX_BYTES = 1024 * 1024  # and the bytes of their commands
PART_BYTES = 8 * 1024 * 1024  # a consensus message larger than this (a snapshot) travels in pieces of this size
MAX_MESSAGE_BYTES = 4 * 1024 * 1024 * 1024  # the largest snapshot a voter reassembles from pieces
LINK_RETRY_S = 0.2
VOTER_TOKEN_TTL_S = 3_600
CLOSE_TIMEOUT_S = 1.0  # to close the connections of a coordinator that stopped leading
BUNDLE_COPY_ATTEMPTS = 10
BUNDLE_COPY_RETRY_S = 0.5  # times the attempt number
BUNDLE_COPY_TIMEOUT_S = 300.0  # for one copy; a leader that stalls longer is tried again


class NotLeader(StoreError):
    """A command was offered to a voter that does not lead (any more)."""


class Replica:
    """One voter: consensus, replicated state and, while it leads, the coordinator."""

    def __init__(
        self,
        data_dir: Path,
        node_id: str,
        voters: Sequence[str],
        *,
        make_coordinator: Callable[..., Any],
        config: ConsensusConfig | None = None,
        secret: bytes | None = None,
        client_ssl: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
        compact_every: int = COMPACT_EVERY,
        bundle_limits: BundleLimits | None = None,
        network: Network = TCP,
    ) -> None:
        """Open ``raft.db`` and ``state.db`` in ``data_dir``.

        ``make_coordinator(machine=, term=, coordinator_id=, when_committed=)`` builds the
        coordinator of one leadership. ``network`` serves and opens the connections.
        """
        if len(voters) < 2:
            raise UsageError(f"a replicated coordinator needs at least two voters, got {list(voters)}")
        self.data_dir = data_dir
        self.node_id = node_id
        self.voters = tuple(voters)
        self.config = config or ConsensusConfig()
        self.secret = secret
        self.client_ssl = client_ssl
        self.network = network
        self._rng = rng or random.Random()
        self._make_coordinator = make_coordinator
        self.compact_every = compact_every
        self._compact_gap = self._draw_compact_gap()
        self.store = RaftStore(data_dir / RAFT_DB)
        self.bundles = BundleCache(data_dir / "bundles", bundle_limits)  # the same folder as the coordinator's
        self._copying: set[str] = set()  # digests of bundles being copied from the leader
        self._snapshotting = False  # a snapshot is being copied in a worker thread
        self.machine = StateMachine(store.connect(data_dir / STATE_DB, durable=False))
        self.machine.replicate = self._reject_command
        self.applied = 0
        self.node = self._start_node(rebuild=False)
        self.coordinator: Any = None  # the Coordinator while this node leads and serves
        self._leader_scope: trio.CancelScope | None = None  # the coordinator's own tasks
        self._connections: set[trio.CancelScope] = set()  # executors and clients served by the coordinator
        self._relays: dict[trio.CancelScope, str] = {}  # client connections relayed to a leader -> that leader
        self._waiters: list[tuple[int, int, Callable[[], None]]] = []  # (index, order, action) heap
        # The leader's proposals of this moment, persisted together (one fsync) and only then
        # sent, before any other Ready is handled.
        self._unsaved: list[Ready] = []
        self._order = itertools.count()
        self._links = {voter: VoterLink(voter, self) for voter in self.voters if voter != node_id}
        self._nursery: trio.Nursery | None = None
        self._address: tuple[str, int] | None = None

    # --- start and rebuild --------------------------------------------------------------

    def _start_node(self, *, rebuild: bool) -> Node:
        """Return a consensus node over the stored state, rebuilding ``state.db`` when it may hold uncommitted commands."""
        state = self.store.state()
        commit = max(state.hard_state.commit, state.snapshot.index)
        applied = self.machine.last_index
        if rebuild or not state.snapshot.index <= applied <= commit:
            log.info(
                "voter %s rebuilds its state from the snapshot at index %d and the committed log",
                self.node_id, state.snapshot.index,
            )
            self._restore(state.snapshot)
            applied = state.snapshot.index
        self.applied = applied
        self._unsaved = []
        return Node(self.node_id, self.voters, self.config, self._rng, trio.current_time(), state, applied=applied)

    def _restore(self, snapshot: Snapshot) -> None:
        """Replace ``state.db`` with ``snapshot`` (the empty state for the empty snapshot)."""
        path = self.data_dir / STATE_DB
        temporary = path.with_name(path.name + ".restore")
        if snapshot.data:
            with open(temporary, "wb") as file:
                file.write(snapshot.data)
                file.flush()
                os.fsync(file.fileno())
        self.machine.conn.close()
        for suffix in ("-wal", "-shm", ""):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        if snapshot.data:
            os.replace(temporary, path)
        self.machine = StateMachine(store.connect(path, durable=False))
        self.machine.replicate = self._reject_command

    # --- serving ------------------------------------------------------------------------

    async def serve(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, task_status=trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve voters, executors and clients on HOST:PORT and take part in elections until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                from swarmctl.coordinator.http_api import ReplicaApi  # Starlette: only where a coordinator serves

                api = ReplicaApi(self)
                bound = await nursery.start(
                    partial(self.network.serve, self._handle, host, port, ssl_context=ssl_context, http_app=api, websocket_app=api.websocket)
                )
                self._address = (host, bound)
                for link in self._links.values():
                    nursery.start_soon(link.run)
                nursery.start_soon(self._tick_loop)
                self._process(self.node.tick(trio.current_time()))
                log.info("voter %s of %s serving on %s:%d, state in %s", self.node_id, ",".join(self.voters), host, bound, self.data_dir)
                task_status.started(bound)
        finally:
            self.store.close()
            self.machine.conn.close()

    async def _tick_loop(self) -> None:
        while True:
            now = trio.current_time()
            if now >= self.node.next_deadline():
                self._process(self.node.tick(now))
            await trio.sleep(max(0.0, min(TICK_S, self.node.next_deadline() - trio.current_time())))

    async def _handle(self, peer: Peer) -> None:
        hello = await read_hello(peer, (protocol.ROLE_VOTER,))
        if hello is None:
            return
        if hello.role == protocol.ROLE_VOTER:
            await self._serve_voter(peer, hello)
        elif self.coordinator is not None and self._leader_scope is not None:
            await self._serve_with_coordinator(peer, hello)
        else:
            leader = self.node.leader_id if self.node.leader_id != self.node_id else None
            if not leader:
                await peer.send(protocol.Reject(f"{protocol.NO_LEADER} {self.node_id} knows no leader yet; try again shortly"))
            elif hello.role == protocol.ROLE_CLIENT:
                await self._proxy(peer, hello, leader)
            else:
                await peer.send(protocol.Reject(f"{self.node_id} is not the leader", redirect=leader))

    async def _serve_with_coordinator(self, peer: Peer, hello: protocol.Hello) -> None:
        coordinator, scope = self.coordinator, self._leader_scope
        with self.leader_connection() as connection:
            if scope is not None and not scope.cancel_called:
                await coordinator.serve_peer(peer, hello)
        if connection.cancelled_caught:
            # Close at once, so the peer looks for the new leader now rather than after its
            # timeouts.
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await peer.aclose()

    def leading_coordinator(self) -> Any:
        """Return the coordinator while this voter leads and serves, else None."""
        if self.coordinator is not None and self._leader_scope is not None and not self._leader_scope.cancel_called:
            return self.coordinator
        return None

    @contextmanager
    def leader_connection(self) -> Iterator[trio.CancelScope]:
        """Open a scope for serving one connection or call of this leadership, cancelled when the leadership ends."""
        with trio.CancelScope() as connection:
            self._connections.add(connection)
            try:
                yield connection
            finally:
                self._connections.discard(connection)

    async def _proxy(self, peer: Peer, hello: protocol.Hello, leader: str) -> None:
        """Relay a client's connection to the leader, frame by frame, until either side closes.

        Clients are relayed rather than redirected because they may reach the voters by
        other names than the voters use among themselves, such as ports that Docker
        publishes on the host. Executors are redirected: they carry most of the traffic.
        """
        async with AsyncExitStack() as stack:
            # A relay to a leader that lost its office ends, so its client finds the new one.
            scope = stack.enter_context(trio.CancelScope())
            self._relays[scope] = leader
            stack.callback(self._relays.pop, scope, None)
            try:
                upstream = await stack.enter_async_context(self.network.connect([parse_address(leader)], self.client_ssl))
            except ConnectionFailed as exc:
                reason = str(exc).split(". Check")[0]
                log.info("cannot relay client %s to the leader %s: %s", hello.node_id, leader, reason)
                # The leader is probably gone, and the voters will elect another shortly.
                await peer.send(protocol.Reject(f"{protocol.NO_LEADER} the leader {leader} does not answer {self.node_id}"))
                return
            async with trio.open_nursery() as nursery:

                async def relay(source: Peer, target: Peer) -> None:
                    try:
                        while True:
                            await target.send(await source.receive())
                    except (PeerGone, ProtocolError) as exc:
                        log.debug("relay of client %s to the leader %s ended: %s", hello.node_id, leader, exc)
                    finally:
                        nursery.cancel_scope.cancel()

                try:
                    await upstream.send(hello)
                except PeerGone:
                    return
                nursery.start_soon(relay, peer, upstream)
                nursery.start_soon(relay, upstream, peer)

    async def _serve_voter(self, peer: Peer, hello: protocol.Hello) -> None:
        if not self._admit(peer, hello, TokenRole.ADMIN):
            await peer.send(protocol.Reject(f"{protocol.AUTH_FAILED} voters need the cluster secret"))
            return
        if hello.node_id not in self._links:
            await peer.send(protocol.Reject(f"{hello.node_id} is not one of the voters {','.join(self.voters)}; give every voter the same --peers"))
            return
        await peer.send(protocol.Welcome(protocol.PROTOCOL_VERSION, self.node_id, self.node.term))
        pieces = Reassembly(hello.node_id)
        try:
            while True:
                payload = pieces.add(await peer.receive())
                if payload is None:
                    continue
                message = from_wire(payload)
                if message.source != hello.node_id:
                    raise ProtocolError(f"voter {hello.node_id} sent a message as {message.source}")
                self._process(self.node.step(message, trio.current_time()))
        except (PeerGone, ProtocolError) as exc:
            log.debug("voter %s disconnected: %s", hello.node_id, exc)

    def transfer(self, target: str) -> protocol.NodeStatus:
        """Start handing leadership to ``target``; return this node's status. Raise UsageError when it cannot."""
        if self.node.role is not Role.LEADER:
            leader = self.node.leader_id or "not known"
            raise UsageError(f"{self.node_id} is not the leader (the leader is {leader}); ask the leader")
        ready = self.node.transfer_leadership(target, trio.current_time())
        log.info("voter %s hands leadership to %s", self.node_id, target)
        self._process(ready)
        return self.status()

    def _admit(self, peer: Peer, hello: protocol.Hello, role: TokenRole) -> bool:
        """Return whether the hello's token allows ``role``; always true without a cluster secret."""
        if self.secret is None:
            return True
        try:
            token = authenticate(self.secret, hello, self.machine.revoked_tokens)
        except AuthError as exc:
            log.warning("%s: rejected %s %s: %s", peer.name, hello.role, hello.node_id, exc)
            return False
        return token.allows(role)

    def voter_hello(self) -> protocol.Hello:
        return protocol.Hello(protocol.PROTOCOL_VERSION, protocol.ROLE_VOTER, self.node_id, token=self._admin_token())

    def _admin_token(self) -> str:
        """Return a fresh admin token made from the cluster secret, or "" without one."""
        if self.secret is None:
            return ""
        return issue(self.secret, TokenRole.ADMIN, ttl_s=VOTER_TOKEN_TTL_S, subject=self.node_id)[0]

    def status(self) -> protocol.NodeStatus:
        node = self.node
        voters = []
        for voter in self.voters:
            row: dict[str, Any] = {"address": voter}
            match = node.log.last_index if voter == self.node_id else node.match_index(voter)
            if voter == self.node_id:
                row["state"] = node.role.value
            elif voter == node.leader_id:
                row["state"] = "leader"
            elif node.role is Role.LEADER:
                row["state"] = "follower"
            else:
                row["state"] = "unknown"  # only the leader tracks the other voters
            if node.role is Role.LEADER and match is not None:
                row.update(match=match, lag=max(0, node.log.last_index - match))
            voters.append(row)
        return protocol.NodeStatus(
            self.node_id, node.role.value, node.term, node.leader_id or "", node.commit_index, self.applied, voters
        )

    # --- consensus ----------------------------------------------------------------------

    def _process(self, ready: Ready) -> None:
        """Handle one Ready in the order the core requires, then start or stop leading to match the node's role."""
        self._save_proposals()  # they came before this Ready, whose messages may carry their entries
        if ready:
            self.store.save(ready)
            for message in ready.messages:
                self._links[message.target].send(message)
            if ready.snapshot is not None:
                self._restore(ready.snapshot)
                self.applied = ready.snapshot.index
                for run in self.machine.runs.values():
                    self._copy_bundle(run.suite.get("bundle", ""))
            for entry in ready.committed_entries:
                if entry.index <= self.applied:
                    continue  # a command this node applied when it proposed it as leader
                if entry.kind is EntryKind.COMMAND:
                    kind, body = msgpack.unpackb(entry.command)
                    command = cmd.decode_command(kind, body)
                    self.machine.apply(command, entry.term, index=entry.index)
                    if isinstance(command, cmd.RunSubmitted):
                        self._copy_bundle(command.suite.get("bundle", ""))
                self.applied = entry.index
            self._run_waiters()
            self._maybe_compact()
        self._follow_role()

    def _copy_bundle(self, digest: str) -> None:
        """Start copying a replicated run's bundle from the leader, so this node can serve it when it leads."""
        if not digest or self.bundles.has_archive(digest) or digest in self._copying or self._nursery is None:
            return
        self._copying.add(digest)
        self._nursery.start_soon(self._fetch_bundle, digest)

    async def _fetch_bundle(self, digest: str) -> None:
        try:
            for attempt in range(BUNDLE_COPY_ATTEMPTS):
                leader = self.node.leader_id
                if self.bundles.has_archive(digest) or leader == self.node_id:
                    return
                if leader is not None:
                    try:
                        await self._download(parse_address(leader), digest)
                        log.info("voter %s copied bundle %s from the leader %s", self.node_id, digest[:12], leader)
                        return
                    except (ConnectionFailed, PeerGone, ProtocolError, BundleError, OSError, trio.TooSlowError) as exc:
                        log.warning("voter %s cannot copy bundle %s from %s yet: %s", self.node_id, digest[:12], leader, exc)
                await trio.sleep(BUNDLE_COPY_RETRY_S * (attempt + 1))
            log.error("voter %s gave up copying bundle %s; runs that use it fail if this node leads", self.node_id, digest[:12])
        finally:
            self._copying.discard(digest)

    async def _download(self, leader: tuple[str, int], digest: str) -> None:
        hello = protocol.Hello(protocol.PROTOCOL_VERSION, protocol.ROLE_CLIENT, f"voter-{self.node_id}", token=self._admin_token())
        with trio.fail_after(BUNDLE_COPY_TIMEOUT_S):
            await self._download_within(leader, digest, hello)

    async def _download_within(self, leader: tuple[str, int], digest: str, hello: protocol.Hello) -> None:
        async with self.network.connect([leader], self.client_ssl) as peer:
            await peer.send(hello)
            reply = await peer.receive()
            if not isinstance(reply, protocol.Welcome):
                raise ProtocolError(f"{peer.name} did not accept this voter as a client: {getattr(reply, 'reason', reply.KIND)}")
            await peer.send(protocol.BundleFetch(digest))
            writer = self.bundles.open_writer(digest)
            try:
                while True:
                    chunk = await peer.receive()
                    if isinstance(chunk, protocol.ErrorReply):
                        raise BundleError(chunk.message)
                    if not isinstance(chunk, protocol.BundleChunk) or chunk.digest != digest:
                        raise ProtocolError(f"{peer.name} sent {chunk.KIND} instead of a chunk of bundle {digest[:12]}")
                    writer.write(chunk.data)
                    if chunk.last:
                        break
                writer.commit()
            except BaseException:
                writer.abort()
                raise

    def _replicate(self, kind: str, body: bytes) -> int:
        """Append a leader's command to the log; the caller applies it at the returned index.

        NOTE: if applying then fails (a full disk, a bug in a command's handler), the entry
        stays in the log while this leader's state.db lacks it, and nothing makes it step down.
        """
        result = self.node.propose(msgpack.packb([kind, body]), trio.current_time())
        if isinstance(result, Rejected):
            raise NotLeader(str(result))
        self._unsaved.append(result.ready)
        if len(self._unsaved) == 1:
            if self._nursery is None:
                self._save_proposals()
            else:
                self._nursery.start_soon(self._save_proposals_soon)
        self.applied = result.index
        return result.index

    async def _save_proposals_soon(self) -> None:
        self._save_proposals()

    def _save_proposals(self) -> None:
        """Persist the waiting proposals in one transaction, then send their messages.

        A command is committed only once a follower has it too, and followers get it only
        after this, so an entry never counts as committed before the leader stored it.
        """
        if not self._unsaved:
            return
        readies, self._unsaved = self._unsaved, []
        self.store.save_all(readies)
        for ready in readies:
            for message in ready.messages:
                self._links[message.target].send(message)

    def _reject_command(self, kind: str, body: bytes) -> int:
        raise NotLeader(f"voter {self.node_id} does not lead; the {kind} command was not applied")

    def when_committed(self, index: int, action: Callable[[], None]) -> None:
        if index <= self.node.commit_index:
            action()
        else:
            heapq.heappush(self._waiters, (index, next(self._order), action))

    def _run_waiters(self) -> None:
        commit = self.node.commit_index
        while self._waiters and self._waiters[0][0] <= commit:
            heapq.heappop(self._waiters)[2]()

    def _draw_compact_gap(self) -> float:
        """Return the applied entries before the next snapshot: ``compact_every`` plus up to half again, drawn at random.

        A snapshot of a large state.db blocks the event loop for seconds. Followers that take
        theirs at the same index stall together, and the leader, hearing from no majority,
        steps down.
        """
        return self.compact_every * (1 + 0.5 * self._rng.random())

    def _maybe_compact(self) -> None:
        node = self.node
        if self._snapshotting or self.applied - node.log.snapshot.index < self._compact_gap:
            return
        if self._nursery is None and self.applied != node.commit_index:
            return  # not serving: no task to wait for the commit
        self._compact_gap = self._draw_compact_gap()
        # Once every applied command is committed to state.db (a leader groups its commits),
        # a read transaction opened now reads the state at exactly this index, whatever is
        # applied while the copy runs.
        self.machine.flush()
        reader = store.open_reader(self.data_dir / STATE_DB)
        if self._nursery is None:
            self._compact(node, self.applied, self._copy_state(reader))
            return
        self._snapshotting = True
        self._nursery.start_soon(self._snapshot_in_thread, node, self.applied, node.log.term_at(self.applied), reader)

    def _copy_state(self, reader: sqlite3.Connection) -> bytes:
        try:
            return reader.serialize()
        finally:
            reader.close()

    async def _snapshot_in_thread(self, node: Node, index: int, term: int, reader: sqlite3.Connection) -> None:
        """Copy state.db and write the snapshot file in a worker thread, then compact the log on the loop.

        Copying and writing a state.db of a hundred megabytes takes seconds. On the event
        loop, that kept a voter from responding to heartbeats past its election timeout.
        """
        try:
            snapshot = await trio.to_thread.run_sync(self._write_snapshot, index, term, reader)
            # A busy leader has applied commands that are not committed yet, so it waits for
            # the snapshot's index to be committed. If this node lost office with that index
            # uncommitted, it rebuilt its state as a new node, and the snapshot is dropped.
            with trio.move_on_after(SNAPSHOT_COMMIT_WAIT_S):
                while node is self.node and node.commit_index < index:
                    await trio.sleep(SNAPSHOT_COMMIT_POLL_S)
            if node is self.node and node.commit_index >= index and node.log.snapshot.index < index:
                self._compact(node, index, snapshot.data, written=True)
        except (sqlite3.Error, StoreError) as exc:
            log.error("voter %s could not take a snapshot at index %d: %s", self.node_id, index, exc)
        finally:
            self._snapshotting = False

    def _write_snapshot(self, index: int, term: int, reader: sqlite3.Connection) -> Snapshot:
        snapshot = Snapshot(index, term, self._copy_state(reader))
        self.store.write_snapshot(snapshot)
        return snapshot

    def _compact(self, node: Node, index: int, data: bytes, *, written: bool = False) -> None:
        snapshot = node.compact(index, data)
        self.store.compact(snapshot, written=written)
        log.info("voter %s took a snapshot at index %d (%d bytes)", self.node_id, snapshot.index, len(snapshot.data))

    # --- leadership -----------------------------------------------------------------------

    def _follow_role(self) -> None:
        node = self.node
        for relay, leader in list(self._relays.items()):
            if leader != node.leader_id:
                relay.cancel()
        leading = node.role is Role.LEADER and node.transfer_target is None
        if self.coordinator is not None and not leading:
            self._stop_leading()
        if node.role is not Role.LEADER and self.applied > node.commit_index:
            # Commands this node applied as leader may never be committed: start again from
            # committed state. The consensus state on disk is kept.
            self.node = self._start_node(rebuild=True)
            self._process(self.node.tick(trio.current_time()))
        elif (
            self.coordinator is None
            and leading
            and self.applied == node.commit_index
            and node.log.term_at(node.commit_index) == node.term
            and self._nursery is not None
        ):
            self._start_leading()

    def _start_leading(self) -> None:
        term = self.node.term
        self.machine.replicate = self._replicate
        self.coordinator = self._make_coordinator(
            machine=self.machine, term=term, coordinator_id=self.node_id, when_committed=self.when_committed
        )
        self._leader_scope = trio.CancelScope()
        log.info("voter %s leads term %d from index %d", self.node_id, term, self.applied)
        self._nursery.start_soon(self._lead, self.coordinator, self._leader_scope)

    async def _lead(self, coordinator: Any, scope: trio.CancelScope) -> None:
        with scope:
            try:
                async with trio.open_nursery() as nursery:
                    host, port = self._address
                    await coordinator.start_services(nursery, host, port)
            except* NotLeader as group:
                log.info("voter %s stopped leading: %s", self.node_id, group.exceptions[0])
        if self.coordinator is coordinator:
            self._stop_leading()

    def _stop_leading(self) -> None:
        self.coordinator = None
        log.info("voter %s stops leading (now %s in term %d)", self.node_id, self.node.role.value, self.node.term)
        self.machine.replicate = self._reject_command
        # A follower commits each entry it applies; the leader's group ends here.
        self.machine.on_pending = None
        self.machine.flush()
        if self._leader_scope is not None:
            self._leader_scope.cancel()
        for connection in list(self._connections):
            connection.cancel()
        self._waiters.clear()


class VoterLink:
    """The outgoing connection to one other voter, carrying this node's consensus messages to it."""

    def __init__(self, address: str, replica: Replica) -> None:
        self.address = address
        self.replica = replica
        # Messages not sent yet. Each goes out whole: the frames of a message in pieces are
        # sent together, and a connection that breaks in the middle of them loses that message,
        # not the next one's start.
        self._queue: deque[ConsensusMessage] = deque()
        self._last_bytes = 0  # the bytes of the commands in the last queued message, for joining
        self._queued = trio.Event()
        self.dropped = 0
        self.merged = 0

    def send(self, message: ConsensusMessage) -> None:
        """Queue ``message`` for the link, or drop it (Raft sends it again) when the queue is full.

        A leader under load appends entries faster than one message per entry can go out,
        so an AppendEntries that continues the last queued one joins it.
        """
        size = command_bytes(message)
        if self._queue and (joined := join_appends(self._queue[-1], message, self._last_bytes)) is not None:
            self._queue[-1] = joined
            self._last_bytes += size
            self.merged += 1
        elif len(self._queue) < LINK_QUEUE:
            self._queue.append(message)
            self._last_bytes = size
        else:
            self.dropped += 1
        self._queued.set()

    async def _next(self) -> list[protocol.Message]:
        while not self._queue:
            await self._queued.wait()
            self._queued = trio.Event()
        return consensus_frames(to_wire(self._queue.popleft()))

    async def run(self) -> None:
        host, port = parse_address(self.address)
        connected_once = failing = False
        while True:
            try:
                async with self.replica.network.connect([(host, port)], self.replica.client_ssl) as peer:
                    await peer.send(self.replica.voter_hello())
                    reply = await peer.receive()
                    if not isinstance(reply, protocol.Welcome):
                        reason = getattr(reply, "reason", reply.KIND)
                        raise ProtocolError(f"voter {self.address} rejected this voter: {reason}")
                    if failing or not connected_once:
                        log.info("voter link to %s open", self.address)
                    connected_once, failing = True, False
                    while True:
                        for frame in await self._next():
                            await peer.send(frame)
            except (ConnectionFailed, PeerGone, ProtocolError, OSError) as exc:
                if not failing:
                    reason = str(exc).split(". Check")[0]  # without the general advice on addresses and TLS
                    log.warning("voter link to %s: %s; retrying", self.address, reason)
                failing = True
            await trio.sleep(LINK_RETRY_S * (0.5 + self.replica._rng.random()))


def command_bytes(message: ConsensusMessage) -> int:
    """Return the bytes of the commands an AppendEntries carries (0 for other messages)."""
    return sum(len(entry.command) for entry in message.entries) if isinstance(message, AppendEntries) else 0


def join_appends(first: ConsensusMessage, second: ConsensusMessage, first_bytes: int | None = None) -> AppendEntries | None:
    """Return one AppendEntries with the entries of both, if ``second`` continues ``first``; else None.

    A follower that accepts the joined message ends in the state the two would leave it
    in, one after the other, and sends one response for both. ``first_bytes``, the bytes of
    the commands in ``first`` when the caller tracks them, saves adding them up again.
    """
    if not (isinstance(first, AppendEntries) and isinstance(second, AppendEntries)):
        return None
    if (first.term, first.source, first.target) != (second.term, second.source, second.target):
        return None
    if first.prev_log_index + len(first.entries) != second.prev_log_index or not second.entries:
        return None
    if len(first.entries) + len(second.entries) > JOIN_MAX_ENTRIES:
        return None
    if first_bytes is None:
        first_bytes = command_bytes(first)
    if first_bytes + command_bytes(second) > JOIN_MAX_BYTES:
        return None
    return AppendEntries(
        first.term, first.source, first.target, first.prev_log_index, first.prev_log_term,
        first.entries + second.entries, max(first.leader_commit, second.leader_commit),
    )


def consensus_frames(payload: dict[str, Any]) -> list[protocol.Message]:
    """Return the frames that carry ``payload``: one ``ConsensusFrame``, or ``ConsensusPart`` pieces when it is large."""
    snapshot = payload.get("snapshot")
    if not (isinstance(snapshot, list) and len(snapshot) == 3 and len(snapshot[2]) > PART_BYTES):
        return [protocol.ConsensusFrame(payload)]
    data = msgpack.packb(payload, use_bin_type=True)
    pieces = range(0, len(data), PART_BYTES)
    return [protocol.ConsensusPart(data[start:start + PART_BYTES], start + PART_BYTES >= len(data)) for start in pieces]


class Reassembly:
    """The pieces of a large consensus message received so far on one connection."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self._pieces: list[bytes] = []
        self._size = 0

    def add(self, frame: protocol.Message) -> dict[str, Any] | None:
        """Return the consensus payload that ``frame`` completes, or None while pieces are missing."""
        match frame:
            case protocol.ConsensusFrame() if not self._pieces:
                return frame.payload
            case protocol.ConsensusPart():
                self._size += len(frame.data)
                if self._size > MAX_MESSAGE_BYTES:
                    raise ProtocolError(f"voter {self.sender} sent a consensus message larger than {MAX_MESSAGE_BYTES} bytes")
                self._pieces.append(frame.data)
                if not frame.last:
                    return None
                data, self._pieces, self._size = b"".join(self._pieces), [], 0
                try:
                    payload = msgpack.unpackb(data, raw=False, strict_map_key=True, unicode_errors="surrogatepass")
                except (ValueError, msgpack.UnpackException) as exc:
                    raise ProtocolError(f"voter {self.sender} sent a malformed consensus message in pieces: {exc}") from None
                return payload
            case protocol.ConsensusFrame():
                raise ProtocolError(f"voter {self.sender} sent a consensus message before the last piece of the previous one")
        raise ProtocolError(f"voter {self.sender} sent {frame.KIND} instead of a consensus message")


def voter_id(address: str) -> str:
    """Return the canonical id of the voter serving at ``address``."""
    host, port = parse_address(address)
    return f"{host}:{port}"

