"""Tests of swarmctl.coordinator.log_collector: storing, querying and pruning executor log lines."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from swarmctl.coordinator.log_collector import LOGS_DB, MAX_OUTPUT_PIECE_CHARS, LogCollector, LogReader

DAY_S = 24 * 3600.0


def line(time: float, message: str, level: str = "INFO") -> list:
    return [time, level, "swarmctl.executor.node", message]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / LOGS_DB


def messages(reader: LogReader, executors: list[str], **window) -> list[str]:
    return [stored.message for stored in reader.lines(executors, **window)]


def test_log_collector_stores_batch(path: Path) -> None:
    collector = LogCollector(path)
    collector.add("local-1", [line(10.0, "first"), line(11.0, "second", "WARNING")], now=12.0)

    stored = LogReader(path).lines(["local-1"])

    assert [s.message for s in stored] == ["first", "second"]
    assert [s.level for s in stored] == ["INFO", "WARNING"]
    assert {s.executor for s in stored} == {"local-1"}
    assert stored[0].logger == "swarmctl.executor.node"
    assert stored[0].time == 10.0


def test_log_collector_uses_wal_and_normal_sync(path: Path) -> None:
    collector = LogCollector(path)

    assert collector.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert collector.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_log_collector_has_executor_time_index(path: Path) -> None:
    LogCollector(path)
    conn = sqlite3.connect(path)

    columns = [row[2] for row in conn.execute("PRAGMA index_info(log_lines_executor_time)")]

    assert columns == ["executor", "time"]


def test_log_reader_filters_executor_and_time(path: Path) -> None:
    collector = LogCollector(path)
    collector.add("local-1", [line(10.0, "a1"), line(30.0, "a3")], now=31.0)
    collector.add("local-2", [line(20.0, "b2"), line(40.0, "b4")], now=41.0)
    collector.add("other", [line(25.0, "other run")], now=41.0)
    reader = LogReader(path)

    assert messages(reader, ["local-1", "local-2"]) == ["a1", "b2", "a3", "b4"]
    assert messages(reader, ["local-2"]) == ["b2", "b4"]
    assert messages(reader, ["local-1", "local-2"], since=15.0, until=35.0) == ["b2", "a3"]
    assert messages(reader, []) == []


def test_log_reader_reads_after_id(path: Path) -> None:
    collector = LogCollector(path)
    collector.add("local-1", [line(10.0, "old")], now=10.0)
    reader = LogReader(path)
    seen = reader.lines(["local-1"])[-1].id
    collector.add("local-1", [line(11.0, "new")], now=11.0)

    assert messages(reader, ["local-1"], after_id=seen) == ["new"]


def test_log_collector_prunes_by_age(path: Path) -> None:
    collector = LogCollector(path, max_age_s=DAY_S)
    collector.add("local-1", [line(0.0, "old"), line(1.5 * DAY_S, "recent")], now=1.5 * DAY_S)

    assert messages(LogReader(path), ["local-1"]) == ["recent"]

    collector.add("local-1", [line(3 * DAY_S, "new")], now=3 * DAY_S)

    assert messages(LogReader(path), ["local-1"]) == ["new"]


def test_log_collector_prunes_by_rows(path: Path) -> None:
    collector = LogCollector(path, max_rows=3)
    collector.add("local-1", [line(float(t), f"m{t}") for t in range(5)], now=10.0)

    assert messages(LogReader(path), ["local-1"]) == ["m2", "m3", "m4"]
    assert collector.count() == 3


def test_log_collector_prune_cadence(path: Path) -> None:
    collector = LogCollector(path, max_rows=2, prune_interval_s=60.0)
    collector.add("local-1", [line(1.0, "a")], now=100.0)  # the first write prunes
    collector.add("local-1", [line(2.0, "b"), line(3.0, "c")], now=130.0)

    assert collector.count() == 3  # 30 s after the last prune: none is due

    collector.add("local-1", [line(4.0, "d")], now=160.0)

    assert collector.count() == 2
    assert messages(LogReader(path), ["local-1"]) == ["c", "d"]


def test_log_collector_one_transaction_per_batch(path: Path) -> None:
    collector = LogCollector(path)
    statements: list[str] = []
    collector.conn.set_trace_callback(statements.append)

    collector.add("local-1", [line(float(t), "x") for t in range(3)], now=1.0)

    assert statements.count("BEGIN") == 2  # the batch, then the first prune
    assert sum(s.startswith("INSERT") for s in statements) == 3
    assert statements.count("COMMIT") == 2


def test_log_collector_drops_batch_on_sqlite_error(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    collector = LogCollector(path)
    collector.conn.execute("DROP TABLE log_lines")

    collector.add("local-1", [line(1.0, "lost")], now=1.0)

    assert collector.failures == 1
    assert "dropped a batch of 1 log lines of executor local-1" in caplog.text


def test_log_collector_drops_malformed_batch(path: Path) -> None:
    collector = LogCollector(path)

    collector.add("local-1", [[1.0, "INFO", "swarmctl.x"]], now=1.0)
    collector.add("local-1", [["not a time", "INFO", "swarmctl.x", "m"]], now=2.0)

    assert collector.failures == 2
    assert collector.count() == 0


# --- live test output ------------------------------------------------------------------------


def piece(text: str, *, run_id: str = "run-1", case_id: str = "t.py::a", stream: str = "stdout", time: float = 10.0) -> list:
    return [run_id, 0, 1, case_id, stream, time, text]


def test_log_collector_stores_output_per_test(path: Path) -> None:
    collector = LogCollector(path)
    collector.add_output("local-1", [piece("one\n"), piece("oops\n", stream="stderr"), piece("other\n", case_id="t.py::b")], now=11.0)
    collector.add_output("local-1", [piece("two\n", time=12.0)], now=12.0)

    pieces = LogReader(path).output("run-1", "t.py::a")

    assert [p.text for p in pieces] == ["one\n", "oops\n", "two\n"]
    assert [p.stream for p in pieces] == ["stdout", "stderr", "stdout"]
    assert {(p.executor, p.attempt) for p in pieces} == {("local-1", 1)}
    assert [p.text for p in LogReader(path).output("run-1", "t.py::a", after_id=pieces[1].id)] == ["two\n"]
    assert LogReader(path).output("run-2", "t.py::a") == []


def test_log_collector_drops_malformed_output(path: Path, caplog) -> None:
    collector = LogCollector(path)
    collector.add_output("local-1", [piece("fine\n"), piece("bad", stream="stdin")], now=11.0)

    assert LogReader(path).output("run-1", "t.py::a") == []
    assert collector.failures == 1
    assert "invalid output stream 'stdin'" in caplog.text


def test_log_collector_cuts_huge_output_piece(path: Path) -> None:
    collector = LogCollector(path)
    collector.add_output("local-1", [piece("x" * (MAX_OUTPUT_PIECE_CHARS + 10))], now=11.0)

    (stored,) = LogReader(path).output("run-1", "t.py::a")

    assert len(stored.text) == MAX_OUTPUT_PIECE_CHARS


def test_log_collector_prunes_old_output(path: Path) -> None:
    collector = LogCollector(path, max_age_s=DAY_S, max_rows=2)
    collector.add_output("local-1", [piece("ancient\n", time=0.0)], now=1.0)
    collector.add_output("local-1", [piece(f"{i}\n", time=2 * DAY_S) for i in range(3)], now=2 * DAY_S)

    collector.prune(2 * DAY_S + 1)

    assert [p.text for p in LogReader(path).output("run-1", "t.py::a")] == ["1\n", "2\n"]
