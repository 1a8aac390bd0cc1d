"""A pytest plugin that records each node id's outcome, to compare plain pytest with swarmctl.

Load it with ``-p swarmctl_outcome_recorder`` (this folder on PYTHONPATH; the name is unusual
so that it cannot clash with a suite's own modules) and set ``OUTCOME_RECORDER_FILE``; it writes ``{node id: outcome}`` as JSON at the end of the session.
It reads the reports' own attributes rather than pytest's status hook, so it does not share
swarmctl's way of deciding outcomes.
"""

import json
import os

_outcomes = {}


def pytest_collectreport(report):
    if report.failed:
        _outcomes[report.nodeid] = "error"
    elif report.skipped:
        _outcomes[report.nodeid] = "skipped"


def pytest_runtest_logreport(report):
    if type(report).__name__ == "SubtestReport":
        return
    wasxfail = hasattr(report, "wasxfail")
    if report.when == "setup":
        if report.failed:
            _outcomes[report.nodeid] = "error"
        elif report.skipped:
            _outcomes[report.nodeid] = "xfailed" if wasxfail else "skipped"
    elif report.when == "call":
        if report.passed:
            _outcomes[report.nodeid] = "xpassed" if wasxfail else "passed"
        elif report.skipped:
            _outcomes[report.nodeid] = "xfailed" if wasxfail else "skipped"
        else:
            _outcomes[report.nodeid] = "failed"
    elif report.failed and _outcomes.get(report.nodeid) != "failed":
        _outcomes[report.nodeid] = "error"


def pytest_sessionfinish(session):
    with open(os.environ["OUTCOME_RECORDER_FILE"], "w", encoding="utf-8") as f:
        json.dump(_outcomes, f, ensure_ascii=False)
