"""``swarmctl run`` off a terminal: plain progress lines with an ETA instead of the live bar."""

from __future__ import annotations

import re

from tests.conftest import generate_suite, run_swarmctl

PROGRESS_LINE = re.compile(r"^running: (\d+)/56 done, (\d+) failed, ETA (\S+) \((\S+)-(\S+)\)$", re.MULTILINE)


def seconds_of(text: str) -> int:
    """Parse a time such as 45s or 1m20s, as the progress line writes it."""
    match = re.fullmatch(r"(?:(\d+)m)?(\d+)s", text)
    assert match, f"not a time: {text!r}"
    return int(match.group(1) or 0) * 60 + int(match.group(2))


def test_progress_plain_lines_with_eta(tmp_path, swarm_env):
    # 56 tests of 0.5 s on 2 executors run for about 14 s, so at least one line is due.
    suite = generate_suite(tmp_path / "suite", tests=56, files=4, sleep_ms=500, failed=2, skipped=0)

    process = run_swarmctl(["run", str(suite), "-n", "2"], swarm_env, timeout=120)

    output = process.stdout
    assert process.returncode == 1, process.stdout + process.stderr
    lines = PROGRESS_LINE.findall(output)
    assert lines, output
    done, failed, eta, low, high = lines[0]
    assert 0 < int(done) < 56
    assert int(failed) <= 2
    # The tests left take (56 - done) * 0.5 s / 2 executors; the estimate may be off, not wild.
    assert seconds_of(low) <= seconds_of(eta) <= seconds_of(high)
    assert seconds_of(eta) <= 20
    assert "━" not in output  # no rich bar in a log
    assert "2 failed, 54 passed" in output  # the final report follows as before
    assert output.index("running: ") < output.index("short test summary info")
