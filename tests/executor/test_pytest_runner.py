"""Tests of the pytest runner with real worker processes on small suites written into tmp_path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from swarmctl.bundle import _ENTRY_MTIME
from swarmctl.executor.runners.pytest_runner import (
    PytestWorker,
    WorkerStartFailed,
    crash_hint,
    describe_exit,
)

PYTEST_INI = "[pytest]\naddopts = -p no:cacheprovider\n"

BASIC_SUITE = {
    "test_basic.py": """
        import pytest

        def test_pass():
            print("hello from test_pass")

        def test_fail():
            assert 1 == 2

        @pytest.mark.skip(reason="not on this box")
        def test_skip():
            pass

        @pytest.mark.xfail(reason="known bug")
        def test_xfail():
            assert False

        class TestGroup:
            @pytest.mark.parametrize("value", [1, "é"])
            def test_param(self, value):
                assert value
    """,
    "test_skipped_module.py": """
        import pytest

        pytest.skip("needs a gpu", allow_module_level=True)

        def test_never_collected():
            pass
    """,
    "test_import_error.py": """
        import module_that_does_not_exist

        def test_never_collected():
            pass
    """,
}

BASIC_IDS = [
    "test_basic.py::test_pass",
    "test_basic.py::test_fail",
    "test_basic.py::test_skip",
    "test_basic.py::test_xfail",
    "test_basic.py::TestGroup::test_param[1]",
    "test_basic.py::TestGroup::test_param[\\xe9]",
]


@pytest.fixture(autouse=True)
def plain_pytest_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep options and plugins of the outer pytest out of the workers.

    The suites here need no plugins, and loading the ones installed in this venv (hypothesis,
    trio, xdist) would take most of each worker's start-up time.
    """
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def write_suite(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pytest.ini").write_text(PYTEST_INI)
    for name, source in files.items():
        (folder / name).write_text(textwrap.dedent(source))
    return folder


@asynccontextmanager
async def started_worker(
    suite: Path,
    log_path: Path,
    pytest_args: Sequence[str] = (),
    python: str = sys.executable,
    bytecode_dir: Path | None = None,
) -> AsyncIterator[PytestWorker]:
    """Start a worker on ``suite`` and stop its process group when the block ends."""
    async with trio.open_nursery() as nursery:
        worker = await PytestWorker.start(
            nursery, python=python, suite_dir=suite, pytest_args=list(pytest_args), log_path=log_path,
            bytecode_dir=bytecode_dir,
        )
        try:
            yield worker
        finally:
            await worker.stop()


async def start_failure(
    suite: Path, log_path: Path, pytest_args: Sequence[str] = (), python: str = sys.executable
) -> WorkerStartFailed:
    """Start a worker that is expected to fail before collecting, and return the error."""
    async with trio.open_nursery() as nursery:
        with pytest.raises(WorkerStartFailed) as caught:
            await PytestWorker.start(
                nursery, python=python, suite_dir=suite, pytest_args=list(pytest_args), log_path=log_path
            )
    return caught.value


async def run_batch(worker: PytestWorker, ids: Sequence[str], **options: Any) -> tuple[list[dict], list[str]]:
    results: list[dict] = []
    rest = await worker.run(ids, results.append, **options)
    return results, rest


# --- collection ---------------------------------------------------------------------------


async def test_pytest_worker_collection_ids(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", BASIC_SUITE)

    async with started_worker(suite, tmp_path / "logs" / "worker.log") as worker:
        collection = worker.collection

    assert collection is not None
    assert collection.case_ids == BASIC_IDS
    assert collection.deselected == 0
    assert len(collection.digest) == 64


async def test_pytest_worker_collect_results(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", BASIC_SUITE)

    async with started_worker(suite, tmp_path / "worker.log") as worker:
        collect_results = {r["case_id"]: r for r in worker.collection.collect_results}

    assert sorted(collect_results) == ["test_import_error.py", "test_skipped_module.py"]
    broken = collect_results["test_import_error.py"]
    assert broken["outcome"] == "error"
    assert broken["when"] == "collect"
    assert "module_that_does_not_exist" in broken["longrepr"]
    skipped = collect_results["test_skipped_module.py"]
    assert skipped["outcome"] == "skipped"
    assert skipped["when"] == "collect"
    assert skipped["message"] == "needs a gpu"


async def test_pytest_worker_deselected(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", BASIC_SUITE)

    async with started_worker(suite, tmp_path / "worker.log", ["-k", "not param"]) as worker:
        collection = worker.collection

    assert collection.case_ids == BASIC_IDS[:4]
    assert collection.deselected == 2


# --- running -----------------------------------------------------------------------------


async def test_pytest_worker_batch_results_in_order(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", BASIC_SUITE)
    order = [BASIC_IDS[5], BASIC_IDS[1], BASIC_IDS[0], BASIC_IDS[3], BASIC_IDS[2], BASIC_IDS[4]]

    async with started_worker(suite, tmp_path / "worker.log") as worker:
        results, rest = await run_batch(worker, order)
        alive = worker.alive

    by_id = {r["case_id"]: r for r in results}
    assert rest == []
    assert alive
    assert [r["case_id"] for r in results] == order
    assert by_id["test_basic.py::test_pass"]["outcome"] == "passed"
    assert "hello from test_pass" in by_id["test_basic.py::test_pass"]["stdout"]
    assert by_id["test_basic.py::test_fail"]["outcome"] == "failed"
    assert "assert 1 == 2" in by_id["test_basic.py::test_fail"]["message"]
    assert by_id["test_basic.py::test_skip"]["outcome"] == "skipped"
    assert by_id["test_basic.py::test_skip"]["message"] == "not on this box"
    assert by_id["test_basic.py::test_xfail"]["outcome"] == "xfailed"
    assert by_id["test_basic.py::TestGroup::test_param[1]"]["outcome"] == "passed"


async def test_pytest_worker_several_batches(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", BASIC_SUITE)

    async with started_worker(suite, tmp_path / "worker.log") as worker:
        first, _ = await run_batch(worker, BASIC_IDS[:2])
        second, _ = await run_batch(worker, BASIC_IDS[:1])

    assert [(r["case_id"], r["outcome"]) for r in first] == [(BASIC_IDS[0], "passed"), (BASIC_IDS[1], "failed")]
    assert [(r["case_id"], r["outcome"]) for r in second] == [(BASIC_IDS[0], "passed")]


async def test_pytest_worker_unknown_id(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", BASIC_SUITE)

    async with started_worker(suite, tmp_path / "worker.log") as worker:
        results, rest = await run_batch(worker, ["test_basic.py::test_missing", BASIC_IDS[0]])

    assert rest == []
    assert [(r["case_id"], r["outcome"]) for r in results] == [
        ("test_basic.py::test_missing", "error"),
        (BASIC_IDS[0], "passed"),
    ]
    assert results[0]["message"] == "not collected by this worker"


# --- crashes and timeouts -----------------------------------------------------------------

CRASH_SUITE = {
    "test_crash.py": """
        import os
        import signal
        import sys

        def test_before():
            pass

        def test_exit():
            os._exit(3)

        def test_segfault():
            os.kill(os.getpid(), signal.SIGSEGV)

        def test_after():
            pass

        def test_last():
            pass
    """,
}


async def test_pytest_worker_exit_in_test(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", CRASH_SUITE)
    ids = ["test_crash.py::test_before", "test_crash.py::test_exit", "test_crash.py::test_after", "test_crash.py::test_last"]

    async with started_worker(suite, tmp_path / "worker.log") as worker:
        results, rest = await run_batch(worker, ids)
        alive = worker.alive
        exit_code = worker.exit_code

    assert rest == ["test_crash.py::test_after", "test_crash.py::test_last"]
    assert [(r["case_id"], r["outcome"]) for r in results] == [
        ("test_crash.py::test_before", "passed"),
        ("test_crash.py::test_exit", "error"),
    ]
    assert "exit code 3" in results[1]["message"]
    assert not alive
    assert exit_code == 3


async def test_pytest_worker_restart_runs_rest(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", CRASH_SUITE)
    ids = ["test_crash.py::test_exit", "test_crash.py::test_after", "test_crash.py::test_last"]

    async with started_worker(suite, tmp_path / "first.log") as worker:
        _, rest = await run_batch(worker, ids)
    async with started_worker(suite, tmp_path / "second.log") as worker:
        results, rest_after_restart = await run_batch(worker, rest)

    assert [(r["case_id"], r["outcome"]) for r in results] == [
        ("test_crash.py::test_after", "passed"),
        ("test_crash.py::test_last", "passed"),
    ]
    assert rest_after_restart == []


async def test_pytest_worker_signal_in_test(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", CRASH_SUITE)

    async with started_worker(suite, tmp_path / "worker.log") as worker:
        results, rest = await run_batch(worker, ["test_crash.py::test_segfault", "test_crash.py::test_last"])

    assert rest == ["test_crash.py::test_last"]
    assert len(results) == 1
    assert results[0]["outcome"] == "error"
    assert "signal SIGSEGV (11)" in results[0]["message"]
    # pytest enables faulthandler, which writes the crashing stack to the worker log.
    assert "test_segfault" in results[0]["longrepr"]


async def test_pytest_worker_timeout(tmp_path: Path) -> None:
    suite = write_suite(
        tmp_path / "suite",
        {
            "test_slow.py": """
                import time

                def test_quick():
                    pass

                def test_sleeps():
                    time.sleep(30)

                def test_after():
                    pass
            """,
        },
    )
    ids = ["test_slow.py::test_quick", "test_slow.py::test_sleeps", "test_slow.py::test_after"]

    async with started_worker(suite, tmp_path / "worker.log") as worker:
        pgid = worker.process.pid
        results, rest = await run_batch(worker, ids, timeout=1)

        with pytest.raises(ProcessLookupError):
            os.killpg(pgid, 0)

    assert rest == ["test_slow.py::test_after"]
    assert [(r["case_id"], r["outcome"]) for r in results] == [
        ("test_slow.py::test_quick", "passed"),
        ("test_slow.py::test_sleeps", "failed"),
    ]
    assert "Timeout (>1.0s)" in results[1]["message"]
    assert "test_sleeps" in results[1]["longrepr"]


# --- start failures --------------------------------------------------------------------


async def test_pytest_worker_python_without_pytest(tmp_path: Path) -> None:
    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    suite = write_suite(tmp_path / "suite", BASIC_SUITE)

    error = await start_failure(suite, tmp_path / "worker.log", python=str(venv / "bin" / "python"))

    assert error.exit_code == 3
    assert "exit code 3" in str(error)
    assert "cannot import pytest" in error.output


async def test_pytest_worker_python_missing(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", BASIC_SUITE)
    missing = str(tmp_path / "no-such-python")

    error = await start_failure(suite, tmp_path / "worker.log", python=missing)

    assert error.exit_code is None
    assert missing in error.output


async def test_pytest_worker_usage_error(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", BASIC_SUITE)

    error = await start_failure(suite, tmp_path / "worker.log", ["--no-such-option"])

    assert error.exit_code == 4
    assert "--no-such-option" in error.output


# --- bytecode ---------------------------------------------------------------------------

async def run_once(suite: Path, log_path: Path, bytecode_dir: Path) -> list[tuple[str, str]]:
    async with started_worker(suite, log_path, bytecode_dir=bytecode_dir) as worker:
        results, _ = await run_batch(worker, worker.collection.case_ids)
    return [(result["case_id"], result["outcome"]) for result in results]


async def test_pytest_worker_bytecode_writing_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    # While the test runs, the setting is as the user set it: only collection writes bytecode.
    source = "import sys\n\ndef test_add():\n    assert sys.dont_write_bytecode\n    assert 1 + 1 == 2\n"
    suite = write_suite(tmp_path / "suite", {"test_math.py": source})
    bytecode = tmp_path / "bytecode"

    assert await run_once(suite, tmp_path / "worker.log", bytecode) == [("test_math.py::test_add", "passed")]
    rewritten = list(bytecode.rglob("test_math.*-pytest-*.pyc"))
    assert [path.parent for path in rewritten] == [bytecode / suite.relative_to(suite.anchor)]
    assert not list(suite.rglob("__pycache__"))
    cached = rewritten[0].stat()

    assert await run_once(suite, tmp_path / "worker.log", bytecode) == [("test_math.py::test_add", "passed")]
    # Read, not written again: pytest replaces the file whenever it rewrites the module.
    assert rewritten[0].stat().st_ino == cached.st_ino
    assert rewritten[0].stat().st_mtime_ns == cached.st_mtime_ns


async def test_pytest_worker_bytecode_per_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Extracted bundles give every file the same modification time, and these two sources
    # have the same size too: their bytecode differs only in the folder it is kept under.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    bytecode = tmp_path / "bytecode"
    outcomes = []
    for name, expression in (("old", "1 + 1 == 2"), ("new", "1 + 1 == 3")):
        suite = write_suite(tmp_path / name, {"test_math.py": f"def test_add():\n    assert {expression}\n"})
        os.utime(suite / "test_math.py", (_ENTRY_MTIME, _ENTRY_MTIME))
        outcomes += await run_once(suite, tmp_path / "worker.log", bytecode)

    assert outcomes == [("test_math.py::test_add", "passed"), ("test_math.py::test_add", "failed")]


async def test_pytest_worker_bytecode_writing_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    suite = write_suite(tmp_path / "suite", {"test_math.py": "def test_add():\n    assert 1 + 1 == 2\n"})
    bytecode = tmp_path / "bytecode"

    assert await run_once(suite, tmp_path / "worker.log", bytecode) == [("test_math.py::test_add", "passed")]
    assert not bytecode.exists()
    assert list((suite / "__pycache__").glob("test_math.*-pytest-*.pyc"))


# --- describe_exit -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [
        (0, "exit code 0"),
        (3, "exit code 3"),
        (255, "exit code 255"),
        (-signal.SIGSEGV, "signal SIGSEGV (11)"),
        (-signal.SIGKILL, "signal SIGKILL (9)"),
        (-signal.SIGTERM, "signal SIGTERM (15)"),
        (None, "an unknown status"),
    ],
)
def test_describe_exit(returncode: int | None, expected: str) -> None:
    assert describe_exit(returncode) == expected


def test_describe_exit_unnamed_signal() -> None:
    assert describe_exit(-32) == "signal 32"


def test_crash_hint_sigkill() -> None:
    assert "out-of-memory" in crash_hint(-signal.SIGKILL)
    assert crash_hint(-signal.SIGSEGV) == ""
    assert crash_hint(3) == ""


# --- giving tests back to an idle slot ---------------------------------------------------

CLASSES = {
    "test_classes.py": """
        import time


        class TestFirst:
            def test_a(self):
                # The release request is sent right after the batch. This sleep gives the
                # worker time to receive it before it moves past test_b, even on a busy machine.
                time.sleep(1.0)

            def test_b(self):
                pass


        class TestSecond:
            def test_c(self):
                pass

            def test_d(self):
                pass
    """,
}


async def test_pytest_worker_release_keeps_next_item(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", CLASSES)
    ids = [
        "test_classes.py::TestFirst::test_a",
        "test_classes.py::TestFirst::test_b",
        "test_classes.py::TestSecond::test_c",
        "test_classes.py::TestSecond::test_d",
    ]
    released: list[list[str]] = []

    async with started_worker(suite, tmp_path / "worker.log") as worker:
        # Asking for everything back: test_b stays, because pytest ran test_a with test_b as
        # its next item and kept the TestFirst class set up for it.
        first, rest = await run_batch(worker, ids, release=10, on_release=released.append)
        # The next batch starts elsewhere in the suite, as another shard would.
        second, _ = await run_batch(worker, [ids[3]])

    assert rest == []
    assert released == [ids[2:]]
    assert [(r["case_id"], r["outcome"]) for r in first] == [(ids[0], "passed"), (ids[1], "passed")]
    assert [(r["case_id"], r["outcome"]) for r in second] == [(ids[3], "passed")]


# --- live output ------------------------------------------------------------------------------

LIVE_SUITE = {
    "test_live.py": """
        import os
        import sys
        import time

        def test_waits_for_reader():
            print("first", flush=True)
            os.write(2, b"raw fd\\n")
            deadline = time.monotonic() + 30
            while not os.path.exists(os.environ["SWARMCTL_TEST_RELEASE"]):
                assert time.monotonic() < deadline, "live output never reached the executor"
                time.sleep(0.05)
            print("after")
    """,
}


async def test_pytest_worker_streams_output_while_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = tmp_path / "release"
    monkeypatch.setenv("SWARMCTL_TEST_RELEASE", str(release))
    suite = write_suite(tmp_path / "suite", LIVE_SUITE)
    pieces: list[tuple[str, str, str]] = []

    def on_output(case_id: str, stream: str, text: str) -> None:
        pieces.append((case_id, stream, text))
        if "first" in "".join(text for _, s, text in pieces if s == "stdout"):
            release.touch()

    async with started_worker(suite, tmp_path / "logs" / "worker.log") as worker:
        results, rest = await run_batch(worker, ["test_live.py::test_waits_for_reader"], on_output=on_output)

    assert rest == []
    assert [r["outcome"] for r in results] == ["passed"]
    assert {case_id for case_id, _, _ in pieces} == {"test_live.py::test_waits_for_reader"}
    assert "first\n" in "".join(text for _, stream, text in pieces if stream == "stdout")
    assert "raw fd\n" in "".join(text for _, stream, text in pieces if stream == "stderr")
    assert "first" in results[0]["stdout"] and "after" in results[0]["stdout"]


async def test_pytest_worker_no_live_output_without_capture(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", BASIC_SUITE)
    pieces: list[tuple[str, str, str]] = []

    async with started_worker(suite, tmp_path / "logs" / "worker.log", ["-s"]) as worker:
        results, _ = await run_batch(worker, ["test_basic.py::test_pass"], on_output=lambda *piece: pieces.append(piece))

    assert [r["outcome"] for r in results] == ["passed"]
    assert pieces == []
