"""A pytest plugin that records each node id's outcome, to compare plain pytest with swarmctl.

Load it with ``-p swarmctl_outcome_recorder`` and this folder on PYTHONPATH (the unusual
name cannot clash with a suite's own modules), and set ``OUTCOME_RECORDER_FILE``: it writes
``{node id: outcome}`` as JSON at the end of the session. It reads the reports' own
attributes rather than pytest's status hook, so it does not share swarmctl's way of deciding
outcomes. The rules follow how pytest's terminal summary counts reports, reduced to one
outcome per node id.
"""

import json
import os

collect_outcomes = {}
reports = []


def pytest_collectreport(report):
    if report.failed:
        collect_outcomes[report.nodeid] = "error"
    elif report.skipped:
        collect_outcomes[report.nodeid] = "skipped"


def pytest_runtest_logreport(report):
    # Subtest reports share their test's node id; pytest itself turns the test's own report
    # into a failure when a subtest fails, so only the test's own reports count here.
    if type(report).__name__ != "SubtestReport":
        reports.append(report)


def outcome_of(nodeid_reports):
    outcome = None
    for report in nodeid_reports:
        xfail = hasattr(report, "wasxfail")
        if report.when == "setup":
            if report.failed:
                outcome = "error"
            elif report.skipped:
                outcome = "xfailed" if xfail else "skipped"
        elif report.when == "call":
            if report.passed and xfail:
                outcome = "xpassed"
            elif report.skipped and xfail:
                outcome = "xfailed"
            else:
                outcome = report.outcome
        elif report.failed and outcome not in ("failed", "error"):
            # A failed teardown makes an error of any outcome but a failure.
            outcome = "error"
    return outcome


def pytest_sessionfinish(session):
    # Outcomes are read at the end: pytest's terminal reporter may still change a report's
    # outcome after this plugin first sees it (a test whose subtests failed becomes failed).
    by_nodeid = {}
    for report in reports:
        by_nodeid.setdefault(report.nodeid, []).append(report)
    outcomes = dict(collect_outcomes)
    outcomes.update({nodeid: outcome_of(items) for nodeid, items in by_nodeid.items()})

    path = os.environ.get("OUTCOME_RECORDER_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(outcomes, file, ensure_ascii=False)
