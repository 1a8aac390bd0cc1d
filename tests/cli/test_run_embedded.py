"""``swarmctl run`` on the embedded default, called in this process."""

from __future__ import annotations

import io
import sys

import psutil
from rich.console import Console

from swarmctl.cli.run import RunOptions, _check_request, _run
from swarmctl.embedded import LocalNodes
from tests.conftest import generate_suite


async def test_report_written_while_executors_stop(tmp_path, monkeypatch) -> None:
    """The report does not wait for the executor processes to exit: they stop meanwhile."""
    suite = generate_suite(tmp_path / "suite", tests=6, files=2, sleep_ms=0)
    monkeypatch.setenv("SWARMCTL_HOME", str(tmp_path / "home"))  # the client makes its token from this folder's secret
    reports = []

    def report(summary, results, earlier_attempts) -> None:
        # Exited or not, an executor stays this process's child until it is waited for.
        reports.append((summary.exit_code, len(results), len(psutil.Process().children())))

    options = RunOptions(retries=0, priority=0, delay=None, at=None, durations_from=None, group="none", labels="")
    console = Console(file=io.StringIO())
    request = _check_request(suite, [], None, 2, "even", sys.executable, None, None, options)
    with LocalNodes(tmp_path / "home", 2) as nodes:  # not forked, so embedded_cluster starts them
        summary, results, _ = await _run(request, console, report, tmp_path, nodes)

    assert summary.exit_code == 0
    assert len(results) == 6
    assert reports == [(0, 6, 2)]
    assert psutil.Process().children() == []
