"""Tests for reading runs from a real state database, created with the coordinator's schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgpack
import pytest

from swarmctl.coordinator import store as coordinator_store
from swarmctl.errors import StoreError, UsageError
from swarmctl.reports.run_store import RunStore, database_path, open_run_store
from swarmctl.results import CaseResult

T0 = 1_700_000_000.0


def pack(result: CaseResult) -> bytes:
    return msgpack.packb(result.to_wire(), use_bin_type=True, unicode_errors="surrogatepass")


def add_run(
    conn: sqlite3.Connection,
    run_id: str,
    *,
    submitted_at: float,
    suite: str = "tests/",
    status: str = "finished",
    exit_code: int | None = 0,
    finished_at: float | None = None,
    results: list[CaseResult] = (),
    earlier: dict[str, list[CaseResult]] | None = None,
    pending: list[CaseResult] = (),
) -> None:
    """Insert a run as the state machine leaves it: runs, cases, results, case_attempts and attempts rows.

    ``earlier`` gives failed tries before a case's final result; ``pending`` gives failed
    tries of cases that never got a final result.
    """
    earlier = earlier or {}
    suite_spec = {"kind": "pytest", "bundle": "0" * 64, "name": suite, "python": "python3", "pytest_args": [], "timeout": None}
    all_ids = [result.case_id for result in results] + [result.case_id for result in pending]
    conn.execute(
        "INSERT INTO runs (run_id, submitted_at, finished_at, status, exit_code, suite, strategy, total, duplicates, fenced) "
        "VALUES (?, ?, ?, ?, ?, ?, 'even', ?, 2, 1)",
        (run_id, submitted_at, finished_at, status, exit_code, msgpack.packb(suite_spec), len(all_ids)),
    )
    for idx, case_id in enumerate(all_ids):
        conn.execute("INSERT INTO cases VALUES (?, ?, ?, 0)", (run_id, idx, case_id))
    for idx, result in enumerate(results):
        tries = [*earlier.get(result.case_id, []), result]
        for number, attempt in enumerate(tries, start=1):
            conn.execute(
                "INSERT INTO case_attempts VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, idx, number, attempt.outcome, attempt.executor, submitted_at + number, pack(attempt)),
            )
        conn.execute(
            "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, idx, result.case_id, result.outcome, result.duration, result.executor, result.attempt,
             submitted_at + 1, pack(result)),
        )
    for offset, attempt in enumerate(pending):
        idx = len(results) + offset
        conn.execute(
            "INSERT INTO case_attempts VALUES (?, ?, 1, ?, ?, ?, ?)",
            (run_id, idx, attempt.outcome, attempt.executor, submitted_at + 5, pack(attempt)),
        )
    conn.execute(
        "INSERT INTO attempts (run_id, shard_id, attempt, executor, term, assigned_at, ended_at) VALUES (?, 0, 1, 'exec-lost', 1, ?, ?)",
        (run_id, submitted_at + 0.5, submitted_at + 7),
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data folder with three runs: two of suite tests/ and one of other/, the newest last."""
    folder = tmp_path / "data"
    conn = coordinator_store.connect(database_path(folder))
    add_run(
        conn, "run-1", submitted_at=T0, finished_at=T0 + 10, exit_code=1,
        results=[
            CaseResult("test_a.py::test_one", "passed", duration=1.0, executor="exec-a"),
            CaseResult("test_a.py::test_two", "failed", duration=2.0, executor="exec-b", attempt=2, message="boom"),
        ],
        earlier={"test_a.py::test_two": [CaseResult("test_a.py::test_two", "failed", executor="exec-a", message="first boom")]},
    )
    add_run(
        conn, "run-2", submitted_at=T0 + 100, finished_at=T0 + 104, suite="other/",
        results=[CaseResult("test_b.py::test_x", "skipped", executor="exec-a")],
    )
    add_run(
        conn, "run-3", submitted_at=T0 + 200, finished_at=T0 + 203,
        results=[
            CaseResult("test_a.py::test_one", "passed", duration=1.0, executor="exec-a"),
            CaseResult("test_a.py::test_two", "passed", duration=2.0, executor="exec-b", attempt=2, flaky=True),
            CaseResult("test_a.py::test_three", "error", executor="", message="not run"),
        ],
        earlier={"test_a.py::test_two": [CaseResult("test_a.py::test_two", "failed", executor="exec-a", message="once")]},
    )
    conn.close()
    return folder


def test_runs_newest_first(data_dir):
    with open_run_store(data_dir) as store:
        runs = store.runs()

    assert [run.run_id for run in runs] == ["run-3", "run-2", "run-1"]
    assert runs[0].suite_name == "tests/"
    assert runs[0].suite_key == "pytest:tests"
    assert runs[0].wall_s == pytest.approx(3.0)


@pytest.mark.parametrize(("reference", "run_id"), [("last", "run-3"), ("last~1", "run-2"), ("last~2", "run-1"), ("run-2", "run-2")])
def test_resolve_references(data_dir, reference, run_id):
    with open_run_store(data_dir) as store:
        assert store.resolve(reference).run_id == run_id


@pytest.mark.parametrize("reference", ["run-9", "last~3", "LAST", ""])
def test_resolve_unknown_lists_newest(data_dir, reference):
    with open_run_store(data_dir) as store, pytest.raises(UsageError) as caught:
        store.resolve(reference)

    message = str(caught.value)
    assert message.startswith(f"run {reference!r} not found in {database_path(data_dir)} (3 runs)")
    assert "The newest are: run-3, run-2, run-1." in message
    assert "swarmctl history" in message


def test_resolve_in_empty_database(tmp_path):
    coordinator_store.connect(database_path(tmp_path)).close()

    with open_run_store(tmp_path) as store, pytest.raises(UsageError, match="has no runs yet"):
        store.resolve("last")


def test_missing_database_names_path(tmp_path):
    with pytest.raises(UsageError) as caught:
        RunStore(database_path(tmp_path / "nowhere"))

    assert f"no state database at {tmp_path / 'nowhere' / 'state.db'}" in str(caught.value)
    assert "--data-dir" in str(caught.value)
    assert not (tmp_path / "nowhere").exists()


def test_not_a_database(tmp_path):
    database_path(tmp_path).write_text("not sqlite at all, just text that is long enough" * 40)

    with pytest.raises(StoreError, match="cannot read the state database"):
        RunStore(database_path(tmp_path))


def test_other_schema_version(data_dir):
    conn = sqlite3.connect(database_path(data_dir))
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    with pytest.raises(StoreError, match="schema version 99"):
        RunStore(database_path(data_dir))


def test_load_summary_and_results(data_dir):
    with open_run_store(data_dir) as store:
        run = store.load("run-1")

    assert [result.case_id for result in run.results] == ["test_a.py::test_one", "test_a.py::test_two"]
    assert run.summary.run_id == "run-1"
    assert run.summary.exit_code == 1
    assert run.summary.wall_s == pytest.approx(10.0)
    assert run.summary.started_at == T0
    assert run.summary.suite == "tests/"
    assert run.summary.executors == ["exec-a", "exec-b", "exec-lost"]
    assert run.summary.duplicates == 2
    assert run.summary.fenced == 1
    assert run.summary.error == ""


def test_load_earlier_attempts_only(data_dir):
    with open_run_store(data_dir) as store:
        run = store.load("run-1")

    assert list(run.earlier_attempts) == ["test_a.py::test_two"]
    assert [attempt.message for attempt in run.earlier_attempts["test_a.py::test_two"]] == ["first boom"]
    assert [attempt.message for attempt in run.all_earlier_attempts()] == ["first boom"]


def test_load_leaves_out_tries_without_final_result(tmp_path):
    conn = coordinator_store.connect(database_path(tmp_path))
    add_run(
        conn, "run-i", submitted_at=T0, status="interrupted", exit_code=2, finished_at=T0 + 3,
        results=[CaseResult("t.py::done", "passed", executor="exec-a")],
        pending=[CaseResult("t.py::waiting", "failed", executor="exec-a")],
    )
    conn.close()

    with open_run_store(tmp_path) as store:
        run = store.load("last")

    assert run.earlier_attempts == {}
    assert [result.case_id for result in run.results] == ["t.py::done"]


def test_load_active_run(tmp_path):
    conn = coordinator_store.connect(database_path(tmp_path))
    add_run(
        conn, "run-a", submitted_at=T0, status="running", exit_code=None,
        results=[CaseResult("t.py::one", "failed", executor="exec-a")],
        pending=[CaseResult("t.py::two", "failed", executor="exec-a")],
    )
    conn.close()

    with open_run_store(tmp_path) as store:
        run = store.load("last")

    assert run.summary.exit_code == 1
    assert run.summary.error == "run is still running: 1 of 2 tests have a result"
    assert run.summary.wall_s == pytest.approx(7.0)  # the last attempt ended at T0 + 7


def test_run_counts_with_flaky(data_dir):
    with open_run_store(data_dir) as store:
        counts = store.run_counts(["run-3", "run-1", "run-3"])

    assert list(counts) == ["run-3", "run-1"]
    assert counts["run-3"].counts == {"passed": 2, "error": 1}
    assert counts["run-3"].flaky == 1
    assert counts["run-3"].pass_rate == pytest.approx(2 / 3)
    assert counts["run-1"].counts == {"passed": 1, "failed": 1}
    assert counts["run-1"].flaky == 0


@pytest.mark.parametrize(("name", "matches"), [("tests/", True), ("tests", True), ("./tests", True), ("pytest:tests", True), ("other", False)])
def test_matches_suite(data_dir, name, matches):
    with open_run_store(data_dir) as store:
        newest = store.resolve("last")

    assert newest.matches_suite(name) is matches


def test_store_is_read_only(data_dir):
    path = database_path(data_dir)
    before = path.read_bytes()

    with open_run_store(data_dir) as store:
        store.load("last")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            store.conn.execute("DELETE FROM runs")

    assert path.read_bytes() == before


def test_store_reads_while_coordinator_writes(data_dir):
    writer = coordinator_store.connect(database_path(data_dir))
    writer.execute("BEGIN IMMEDIATE")
    add_run(writer, "run-4", submitted_at=T0 + 300, finished_at=T0 + 301)
    try:
        with open_run_store(data_dir) as store:
            # The uncommitted run is invisible, and the read does not wait for the writer.
            assert store.resolve("last").run_id == "run-3"
            assert len(store.load("last").results) == 3
    finally:
        writer.execute("COMMIT")

    with open_run_store(data_dir) as store:
        assert store.resolve("last").run_id == "run-4"
    writer.close()


def test_folder_with_uri_characters(tmp_path):
    folder = tmp_path / "odd ?#% name"
    conn = coordinator_store.connect(database_path(folder))
    add_run(conn, "run-u", submitted_at=T0, finished_at=T0 + 1)
    conn.close()

    with open_run_store(folder) as store:
        assert store.resolve("last").run_id == "run-u"
