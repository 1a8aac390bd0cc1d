"""Replicated coordinator state: three voters in one process, talking over real loopback sockets."""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path

import msgpack
import pytest
import trio

from swarmctl import protocol
from swarmctl.bundle import build_bundle
from swarmctl.cluster.consensus import AppendEntries, ConsensusConfig, Entry, EntryKind, Heartbeat
from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator.node import Coordinator
from swarmctl.coordinator import replica as replica_module
from swarmctl.coordinator.replica import NotLeader, Reassembly, Replica, VoterLink, consensus_frames, join_appends
from swarmctl.errors import ProtocolError
from tests.e2e.nodes import free_ports

FAST = ConsensusConfig(election_timeout_s=0.3, heartbeat_interval_s=0.05)


class Voter:
    """A Replica serving in its own cancel scope, so that a test can crash it and start it again."""

    def __init__(self, data_dir: Path, address: str, voters: list[str], compact_every: int) -> None:
        self.data_dir, self.address, self.voters = data_dir, address, voters
        self.compact_every = compact_every
        self.replica: Replica | None = None
        self.scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        self.replica = Replica(
            self.data_dir, self.address, self.voters, config=FAST, compact_every=self.compact_every,
            make_coordinator=partial(Coordinator, self.data_dir),
        )
        self.scope = trio.CancelScope()
        host, port = self.address.split(":")

        async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with self.scope:
                await self.replica.serve(host, int(port), task_status=task_status)

        await nursery.start(run)

    def crash(self) -> None:
        self.scope.cancel()

    def log(self) -> list[tuple]:
        return self.replica.machine.conn.execute("SELECT idx, term, kind, body FROM log ORDER BY idx").fetchall()


async def wait_for(predicate, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def start_voters(tmp_path: Path, nursery: trio.Nursery, compact_every: int = 5_000) -> list[Voter]:
    addresses = [f"127.0.0.1:{port}" for port in free_ports(3)]
    voters = [Voter(tmp_path / f"voter-{i}", address, addresses, compact_every) for i, address in enumerate(addresses)]
    for voter in voters:
        await voter.start(nursery)
    return voters


def leader_of(voters: list[Voter]) -> Voter | None:
    leaders = [v for v in voters if v.replica.coordinator is not None and not v.scope.cancel_called]
    assert len(leaders) <= 1
    return leaders[0] if leaders else None


async def test_voters_apply_same_log(tmp_path, nursery):
    voters = await start_voters(tmp_path, nursery)
    await wait_for(lambda: leader_of(voters) is not None)
    leader = leader_of(voters)
    for i in range(20):
        leader.replica.machine.apply(cmd.ExecutorCordoned(f"exec-{i}", i % 2 == 0, float(i)), leader.replica.node.term)

    await wait_for(lambda: all(len(v.log()) == 20 for v in voters))
    assert voters[0].log() == voters[1].log() == voters[2].log()
    assert all(v.replica.machine.cordoned == {f"exec-{i}" for i in range(0, 20, 2)} for v in voters)


async def test_leader_stores_proposals_of_one_moment_together(tmp_path, nursery):
    voters = await start_voters(tmp_path, nursery)
    await wait_for(lambda: leader_of(voters) is not None)
    leader = leader_of(voters)
    saves = []
    save_all = leader.replica.store.save_all
    leader.replica.store.save_all = lambda readies: (saves.append(len(readies)), save_all(readies))
    for i in range(30):
        leader.replica.machine.apply(cmd.ExecutorCordoned(f"exec-{i}", True, float(i)), leader.replica.node.term)
    assert saves == []  # nothing is stored or sent before the moment ends

    await wait_for(lambda: all(len(v.log()) == 30 for v in voters))
    assert saves[0] == 30
    assert voters[0].log() == voters[1].log() == voters[2].log()


async def test_deposed_leader_drops_its_uncommitted_commands(tmp_path, nursery):
    voters = await start_voters(tmp_path, nursery)
    await wait_for(lambda: leader_of(voters) is not None)
    leader = leader_of(voters)
    followers = [v for v in voters if v is not leader]
    leader.replica.machine.apply(cmd.ExecutorCordoned("committed", True, 1.0), leader.replica.node.term)
    await wait_for(lambda: all("committed" in v.replica.machine.cordoned for v in followers))

    for follower in followers:
        follower.crash()
    await trio.sleep(0.1)
    # Applied at once, as the scheduler needs, but no majority will ever store it.
    leader.replica.machine.apply(cmd.ExecutorCordoned("uncommitted", True, 2.0), leader.replica.node.term)
    assert leader.replica.machine.cordoned == {"committed", "uncommitted"}

    # Without a majority the leader steps down, and its state returns to what was committed.
    await wait_for(lambda: leader.replica.coordinator is None)
    assert leader.replica.machine.cordoned == {"committed"}
    try:
        leader.replica.machine.apply(cmd.ExecutorCordoned("refused", True, 3.0))
    except NotLeader:
        pass
    else:
        raise AssertionError("a voter that does not lead applied a command of its own")

    for follower in followers:
        await follower.start(nursery)
    await wait_for(lambda: leader_of(voters) is not None)
    new_leader = leader_of(voters)
    new_leader.replica.machine.apply(cmd.ExecutorCordoned("after", True, 4.0), new_leader.replica.node.term)
    await wait_for(lambda: all("after" in v.replica.machine.cordoned for v in voters))
    # The dropped command may still be committed later, as Raft allows: a new leader elected
    # with it in its log replicates it. Either way, every voter ends with the same state.
    states = [v.replica.machine.cordoned for v in voters]
    assert states[0] == states[1] == states[2]
    assert states[0] - {"uncommitted"} == {"committed", "after"}
    assert voters[0].log() == voters[1].log() == voters[2].log()


async def test_voter_reapplies_lost_commits(tmp_path, nursery):
    """state.db commits without an fsync on a voter; the consensus log restores what a power loss took."""
    voters = await start_voters(tmp_path, nursery)
    await wait_for(lambda: leader_of(voters) is not None)
    leader = leader_of(voters)
    for i in range(10):
        leader.replica.machine.apply(cmd.ExecutorCordoned(f"exec-{i}", True, float(i)), leader.replica.node.term)
    await wait_for(lambda: all(len(v.log()) == 10 for v in voters))
    follower = next(v for v in voters if v is not leader)
    assert follower.replica.machine.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL

    follower.crash()
    await trio.sleep(0.1)
    # What a power loss leaves of a WAL database without fsync: a consistent prefix of its commits.
    applied = sqlite3.connect(follower.data_dir / replica_module.STATE_DB)
    lost = [row[0] for row in applied.execute("SELECT idx FROM log ORDER BY idx DESC LIMIT 4")]
    with applied:
        applied.execute(f"DELETE FROM log WHERE idx >= {min(lost)}")
        applied.execute("DELETE FROM cordons WHERE executor_id IN ('exec-6', 'exec-7', 'exec-8', 'exec-9')")
    applied.close()
    await follower.start(nursery)
    await wait_for(lambda: len(follower.log()) == 10)
    assert follower.log() == leader.log()
    assert follower.replica.machine.cordoned == {f"exec-{i}" for i in range(10)}


@pytest.mark.parametrize("part_bytes", [replica_module.PART_BYTES, 4096], ids=["one-frame", "in-pieces"])
async def test_lagging_voter_catches_up_from_a_snapshot(tmp_path, nursery, monkeypatch, part_bytes):
    # With 4 KiB pieces the snapshot (a state.db of some 100 KiB) travels as ConsensusPart frames.
    monkeypatch.setattr(replica_module, "PART_BYTES", part_bytes)
    pieces = []

    def counted(payload):
        frames = consensus_frames(payload)
        pieces.extend(frame for frame in frames if isinstance(frame, protocol.ConsensusPart))
        return frames

    monkeypatch.setattr(replica_module, "consensus_frames", counted)
    voters = await start_voters(tmp_path, nursery, compact_every=10)
    await wait_for(lambda: leader_of(voters) is not None)
    leader = leader_of(voters)
    behind = next(v for v in voters if v is not leader)
    behind.crash()
    for i in range(40):
        leader.replica.machine.apply(cmd.ExecutorCordoned(f"exec-{i}", True, float(i)), leader.replica.node.term)
    await wait_for(lambda: leader.replica.node.log.snapshot.index >= 30)  # the entries it missed are gone

    await behind.start(nursery)
    await wait_for(lambda: len(behind.replica.machine.cordoned) == 40)
    assert behind.replica.node.log.snapshot.index >= 30
    assert behind.log() == leader.log()
    assert (len(pieces) > 1) == (part_bytes == 4096)
    # The leader copied state.db in a worker thread into a file beside raft.db.
    snapshot_index = leader.replica.store.state().snapshot.index
    assert [p.name for p in leader.data_dir.glob("raft-snapshot-*")] == [f"raft-snapshot-{snapshot_index}.db"]

    # A voter without state.db rebuilds it from its snapshot file and its log.
    behind.crash()
    await trio.sleep(0.1)
    for suffix in ("", "-wal", "-shm"):
        (behind.data_dir / f"state.db{suffix}").unlink(missing_ok=True)
    await behind.start(nursery)
    assert len(behind.replica.machine.cordoned) == 40


async def test_busy_leader_snapshots_before_commit(tmp_path, nursery):
    """A leader with uncommitted commands copies its state now and compacts once that index is committed."""
    voters = await start_voters(tmp_path, nursery, compact_every=10)
    await wait_for(lambda: leader_of(voters) is not None)
    leader = leader_of(voters)
    replica = leader.replica
    for i in range(30):
        replica.machine.apply(cmd.ExecutorCordoned(f"exec-{i}", True, float(i)), replica.node.term)
    index = replica.applied
    assert replica.node.commit_index < index  # the followers have not responded yet

    replica._maybe_compact()
    assert replica._snapshotting

    await wait_for(lambda: replica.node.log.snapshot.index == index)
    assert replica.store.state().snapshot.index == index
    assert (leader.data_dir / f"raft-snapshot-{index}.db").exists()


async def test_followers_copy_the_bundle_of_a_run(tmp_path, nursery):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_one.py").write_text("def test_one():\n    pass\n")
    bundle = build_bundle(suite, tmp_path / "built")
    voters = await start_voters(tmp_path, nursery)
    await wait_for(lambda: leader_of(voters) is not None)
    leader = leader_of(voters)
    writer = leader.replica.bundles.open_writer(bundle.digest)
    writer.write(bundle.path.read_bytes())
    writer.commit()

    suite_spec = {"kind": "pytest", "bundle": bundle.digest, "name": "suite"}
    leader.replica.machine.apply(cmd.RunSubmitted("run-1", 1.0, suite_spec, "even", None), leader.replica.node.term)

    followers = [v for v in voters if v is not leader]
    await wait_for(lambda: all(v.replica.bundles.has_archive(bundle.digest) for v in followers))
    for follower in followers:
        assert follower.replica.bundles.archive_path(bundle.digest).read_bytes() == bundle.path.read_bytes()


def snapshot_payload(size: int) -> dict:
    return {"t": "snapshot", "term": 3, "from": "a:1", "to": "b:2", "snapshot": [7, 3, bytes(range(256)) * (size // 256)]}


def test_consensus_frames_split_large_snapshot(monkeypatch):
    monkeypatch.setattr(replica_module, "PART_BYTES", 1000)
    payload = snapshot_payload(10_240)

    frames = consensus_frames(payload)
    pieces = Reassembly("a:1")
    results = [pieces.add(frame) for frame in frames]

    assert all(isinstance(frame, protocol.ConsensusPart) for frame in frames)
    assert [frame.last for frame in frames] == [False] * (len(frames) - 1) + [True]
    assert all(len(frame.data) <= 1000 for frame in frames)
    assert results[:-1] == [None] * (len(frames) - 1)
    assert results[-1] == payload
    assert consensus_frames({"t": "heartbeat", "term": 3}) == [protocol.ConsensusFrame({"t": "heartbeat", "term": 3})]


def test_reassembly_rejects_bad_sequences(monkeypatch):
    monkeypatch.setattr(replica_module, "PART_BYTES", 1000)
    monkeypatch.setattr(replica_module, "MAX_MESSAGE_BYTES", 5000)
    frames = consensus_frames(snapshot_payload(4096))

    interleaved = Reassembly("a:1")
    interleaved.add(frames[0])
    with pytest.raises(ProtocolError, match="before the last piece"):
        interleaved.add(protocol.ConsensusFrame({"t": "heartbeat"}))
    oversized = Reassembly("a:1")
    with pytest.raises(ProtocolError, match="larger than 5000 bytes"):
        for frame in consensus_frames(snapshot_payload(8192)):
            oversized.add(frame)
    garbage = Reassembly("a:1")
    with pytest.raises(ProtocolError, match="malformed"):
        garbage.add(protocol.ConsensusPart(msgpack.packb([1, 2])[:1], True))
    with pytest.raises(ProtocolError, match="instead of a consensus message"):
        Reassembly("a:1").add(protocol.ListRuns())


def appends(first: int, count: int, *, term: int = 2, target: str = "b:2", commit: int = 0) -> AppendEntries:
    entries = tuple(Entry(index, term, EntryKind.COMMAND, b"x" * 10) for index in range(first, first + count))
    return AppendEntries(term, "a:1", target, first - 1, term, entries, commit)


def test_join_appends_continues_the_first():
    joined = join_appends(appends(5, 2, commit=4), appends(7, 3, commit=6))
    assert joined == AppendEntries(2, "a:1", "b:2", 4, 2, appends(5, 5).entries, 6)


def test_join_appends_refuses_what_does_not_follow():
    assert join_appends(appends(5, 2), appends(8, 1)) is None  # a gap
    assert join_appends(appends(5, 2), appends(6, 1)) is None  # an overlap
    assert join_appends(appends(5, 2), appends(7, 1, term=3)) is None
    assert join_appends(appends(5, 2), appends(7, 1, target="c:3")) is None
    assert join_appends(appends(5, 2), Heartbeat(2, "a:1", "b:2", 4)) is None
    assert join_appends(appends(5, replica_module.JOIN_MAX_ENTRIES), appends(5 + replica_module.JOIN_MAX_ENTRIES, 1)) is None


def test_voter_link_joins_queued_appends():
    link = VoterLink("b:2", replica=None)
    for first in (1, 3, 5):
        link.send(appends(first, 2))
    link.send(Heartbeat(2, "a:1", "b:2", 0))
    link.send(appends(7, 1))  # after the heartbeat: queued on its own

    assert [type(message).__name__ for message in link._queue] == ["AppendEntries", "Heartbeat", "AppendEntries"]
    assert [entry.index for entry in link._queue[0].entries] == [1, 2, 3, 4, 5, 6]
    assert link.merged == 2


def test_voter_link_drops_when_full(monkeypatch):
    monkeypatch.setattr(replica_module, "LINK_QUEUE", 2)
    link = VoterLink("b:2", replica=None)
    for _ in range(3):
        link.send(Heartbeat(2, "a:1", "b:2", 0))
    assert len(link._queue) == 2
    assert link.dropped == 1


def test_voter_link_stops_joining_at_byte_cap(monkeypatch):
    monkeypatch.setattr(replica_module, "JOIN_MAX_BYTES", 45)  # each entry's command has 10 bytes
    link = VoterLink("b:2", replica=None)
    for first in (1, 3, 5):
        link.send(appends(first, 2))

    assert [len(message.entries) for message in link._queue] == [4, 2]
