"""Group commit: acknowledgements wait until the commit is on disk, synced in a worker thread when the disk is slow."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from swarmctl.coordinator import commands as cmd
from swarmctl.coordinator import store
from swarmctl.coordinator.node import Coordinator
from swarmctl.errors import StoreError


def commit_with_ack(coordinator: Coordinator, token_id: str, acknowledged: list[str], name: str) -> None:
    """Apply one command, ask for ``name`` in ``acknowledged`` once it is on disk, and commit it now."""
    coordinator.machine.apply(cmd.TokenRevoked(token_id, 1.0))
    coordinator.when_committed(lambda: acknowledged.append(name))
    coordinator.flush()


def test_wal_sync_commits_without_fsync(tmp_path: Path) -> None:
    conn = store.connect(tmp_path / "state.db")
    store.WalSync(conn, tmp_path / "state.db")
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: COMMIT does not fsync
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0


def test_wal_sync_checkpoints_a_large_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.db"
    conn = store.connect(path)
    wal = store.WalSync(conn, path)
    conn.execute("CREATE TABLE filler (data BLOB)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(bytes(4096),)] * 64)
    before = path.stat().st_size

    wal.sync()  # under the threshold: the rows stay in the WAL file
    assert not wal.checkpoint_due
    assert path.stat().st_size == before

    monkeypatch.setattr(store, "CHECKPOINT_WAL_BYTES", 1)
    assert wal.checkpoint_due
    wal.checkpoint()
    assert not wal.checkpoint_due  # until the next sync measures the file again
    assert path.stat().st_size >= before + 64 * 4096  # copied into the database file
    assert sqlite3.connect(path).execute("SELECT count(*) FROM filler").fetchone()[0] == 64
    wal.close()


def test_wal_sync_names_the_database_it_cannot_sync(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    wal = store.WalSync(store.connect(path), path)
    wal.wal = path / "not-a-folder"
    with pytest.raises(StoreError, match="state.db to disk"):
        wal.sync()


async def test_acknowledgement_waits_for_the_sync(tmp_path: Path) -> None:
    coordinator = Coordinator(tmp_path)
    release = threading.Event()
    syncing = threading.Event()
    real_sync = coordinator._wal.sync

    def slow_sync() -> None:
        syncing.set()
        release.wait(10)
        real_sync()

    coordinator._wal.sync = slow_sync
    coordinator._wal.average_s = 1.0  # a slow disk: syncs go to a worker thread
    acknowledged: list[str] = []
    async with trio.open_nursery() as nursery:
        await coordinator.start_services(nursery, "127.0.0.1", 0)
        coordinator.machine.apply(cmd.TokenRevoked("a" * 16, 1.0))
        coordinator.when_committed(lambda: acknowledged.append("first"))
        with trio.fail_after(10):
            while not syncing.is_set():
                await trio.sleep(0.01)
        # Committed but not on disk: neither this acknowledgement nor one asked for now is sent.
        assert not coordinator.machine.conn.in_transaction
        coordinator.when_committed(lambda: acknowledged.append("second"))
        await trio.sleep(0.05)
        assert acknowledged == []

        release.set()
        with trio.fail_after(10):
            while len(acknowledged) < 2:
                await trio.sleep(0.01)
        assert acknowledged == ["first", "second"]
        nursery.cancel_scope.cancel()

    reopened = store.connect(tmp_path / "state.db")
    assert reopened.execute("SELECT count(*) FROM revoked_tokens").fetchone()[0] == 1


def test_stopped_coordinator_syncs_before_acknowledging(tmp_path: Path) -> None:
    coordinator = Coordinator(tmp_path)
    synced: list[bool] = []
    real_sync = coordinator._wal.sync
    coordinator._wal.sync = lambda: (synced.append(True), real_sync())
    acknowledged: list[bool] = []

    coordinator.machine.apply(cmd.TokenRevoked("b" * 16, 1.0))  # not serving: committed at once
    coordinator.when_committed(lambda: acknowledged.append(bool(synced)))

    assert acknowledged == [True]


async def test_fast_disk_syncs_on_the_loop(tmp_path: Path) -> None:
    coordinator = Coordinator(tmp_path)
    threads: list[str] = []
    real_sync = coordinator._wal.sync
    coordinator._wal.sync = lambda: (threads.append(threading.current_thread().name), real_sync())
    acknowledged: list[str] = []
    async with trio.open_nursery() as nursery:
        await coordinator.start_services(nursery, "127.0.0.1", 0)
        commit_with_ack(coordinator, "c" * 16, acknowledged, "ack")
        assert acknowledged == ["ack"]
        nursery.cancel_scope.cancel()
    assert threads and set(threads) == {threading.current_thread().name}


async def test_checkpoint_runs_in_worker_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint copies megabytes, so the loop keeps committing and acknowledging meanwhile."""
    monkeypatch.setattr(store, "CHECKPOINT_WAL_BYTES", 1)
    coordinator = Coordinator(tmp_path)
    wal = coordinator._wal
    release = threading.Event()
    threads: list[str] = []
    real_checkpoint = wal.checkpoint

    def blocked_checkpoint() -> None:
        threads.append(threading.current_thread().name)
        release.wait(10)
        real_checkpoint()

    wal.checkpoint = blocked_checkpoint
    acknowledged: list[str] = []
    async with trio.open_nursery() as nursery:
        await coordinator.start_services(nursery, "127.0.0.1", 0)
        commit_with_ack(coordinator, "d" * 16, acknowledged, "first")
        with trio.fail_after(10):
            while not threads:
                await trio.sleep(0.01)
        commit_with_ack(coordinator, "e" * 16, acknowledged, "second")
        assert acknowledged == ["first", "second"]  # while the checkpoint waits
        assert len(threads) == 1  # one checkpoint at a time
        release.set()
        with trio.fail_after(10):
            while coordinator._checkpointing:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert threads[0] != threading.current_thread().name
    reopened = store.connect(tmp_path / "state.db")
    assert reopened.execute("SELECT count(*) FROM revoked_tokens").fetchone()[0] == 2


def test_sync_time_decides_slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.db"
    conn = store.connect(path)
    wal = store.WalSync(conn, path)
    conn.execute("CREATE TABLE filler (data BLOB)")
    conn.execute("INSERT INTO filler VALUES (x'00')")
    monkeypatch.setattr(store, "SLOW_SYNC_S", -1.0)
    wal.sync()
    assert wal.slow and wal.average_s > 0
    monkeypatch.setattr(store, "SLOW_SYNC_S", 60.0)
    assert not wal.slow


def test_wal_starts_over_after_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once checkpointed, the WAL file shrinks, so the next syncs do not checkpoint again."""
    monkeypatch.setattr(store, "CHECKPOINT_WAL_BYTES", 256 * 1024)
    path = tmp_path / "state.db"
    conn = store.connect(path)
    wal = store.WalSync(conn, path)
    conn.execute("CREATE TABLE filler (data BLOB)")
    conn.executemany("INSERT INTO filler VALUES (?)", [(bytes(4096),)] * 100)
    wal.sync()
    assert wal.checkpoint_due
    wal.checkpoint()
    assert wal.wal.stat().st_size >= 400 * 1024

    conn.execute("INSERT INTO filler VALUES (x'00')")  # the first write after the checkpoint starts the WAL over
    wal.sync()
    assert wal.wal.stat().st_size < 64 * 1024
    assert not wal.checkpoint_due
    wal.close()
