"""Benchmark swarmctl's embedded default against plain pytest and pytest-xdist.

Usage: python bench/xdist.py [--tests 10000] [--files 100] [--repeat 3] [--quick]

One invocation does all of this inside a temporary folder:

1. Generate a synthetic suite with bench/gen_suite.py, and download and extract the
   sdists of the pinned pure-Python libraries in LIBRARIES, whose own test suites
   become further benchmark suites.
2. Create one benchmark venv with pytest, pytest-xdist and those libraries. All three
   runners use its interpreter, so they run the same code.
3. For each suite, run plain pytest, ``pytest -n WORKERS`` and
   ``swarmctl run SUITE -n WORKERS`` in turn, ``--repeat`` times, and take the median
   wall-clock time of each whole command. swarmctl keeps one data folder per suite, and
   its first run, with the folder empty, is timed apart and left out of the median.
4. Compare the outcome of every node id in swarmctl's JSON report with the outcomes
   that plain pytest reported, recorded by a small plugin.
5. Write bench/results/xdist.json and print a table.

Uses the standard library only. The benchmark venv installs pytest and pytest-xdist at
the versions of the environment that runs this script, and the libraries from PyPI,
so the machine needs access to PyPI.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
GEN_SUITE = BENCH_DIR / "gen_suite.py"
DEFAULT_OUTPUT = BENCH_DIR / "results" / "xdist.json"

DEFAULT_TESTS = 10000
# A second generated suite whose tests sleep, so that pytest -n 2 takes over 30 s: the
# suites the wall-time target is about.
LONG_TESTS = 4000
LONG_SLEEP_MS = 15.0
DEFAULT_REPEAT = 3
QUICK_TESTS = 2000
QUICK_REPEAT = 1
MAX_MISMATCHES = 20

# NOTE: a guessed upper bound. The slowest default command takes about 20 s on a
# 2-core machine, so a command that runs for 10 minutes is taken to hang.
COMMAND_TIMEOUT_S = 600

# Environment variables that would change what pytest runs or loads in one runner and
# not in another. They are removed from every benchmark command.
CLEARED_ENV = ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_XDIST_AUTO_NUM_WORKERS")

PLUGIN_MODULE = "swarmctl_outcome_recorder"  # bench/plugins/swarmctl_outcome_recorder.py
PLUGIN_DIR = Path(__file__).resolve().parent / "plugins"
OUTCOMES_ENV = "OUTCOME_RECORDER_FILE"


@dataclass(frozen=True)
class Library:
    """A PyPI project whose own test suite, from its sdist, is a benchmark suite."""

    name: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


# Pure-Python libraries whose sdists ship their tests, and whose tests need nothing but
# pytest and the library itself. All three pass under plain pytest 9.2 on Python 3.11.
# more-itertools is a unittest suite with about 21,000 subTest calls, so it also checks
# how swarmctl handles subtests.
LIBRARIES = (
    Library("more-itertools", "11.2.1"),
    Library("toolz", "1.2.0"),
    Library("boltons", "26.2.0"),
)



@dataclass
class Suite:
    """A folder to benchmark, and how many tests it is meant to have (None: as collected)."""

    name: str
    path: Path
    tests: int | None = None


@dataclass
class Timing:
    """The wall-clock time and exit code of one benchmark command."""

    seconds: float | None  # None when the command timed out
    exit_code: int | None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time plain pytest, pytest-xdist and swarmctl's embedded default on a generated suite "
            "and on the test suites of pinned PyPI libraries, and check that swarmctl reports "
            "the same outcome as plain pytest for every node id."
        ),
    )
    parser.add_argument(
        "--tests", type=int, help=f"tests in the generated suite (default: {DEFAULT_TESTS}, or {QUICK_TESTS} with --quick)"
    )
    parser.add_argument("--files", type=int, default=100, help="test files in the generated suite (default: %(default)s)")
    parser.add_argument(
        "--repeat", type=int, help=f"timed runs of each command; the median is reported (default: {DEFAULT_REPEAT}, or {QUICK_REPEAT} with --quick)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes for pytest-xdist (-n) and swarmctl executors (-n) (default: %(default)s)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_REPEAT} repeat and {QUICK_TESTS} generated tests unless given"
    )
    parser.add_argument(
        "--long-tests", type=int, default=LONG_TESTS,
        help="tests in the generated suite whose tests sleep --long-sleep-ms each; 0 leaves it out (default: %(default)s)",
    )
    parser.add_argument(
        "--long-sleep-ms", type=float, default=LONG_SLEEP_MS,
        help="milliseconds each passing or failing test of that suite sleeps (default: %(default)s)",
    )
    parser.add_argument("--no-libraries", action="store_true", help="benchmark the generated suites only, with no download from PyPI")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON results file (default: bench/results/xdist.json)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with the suites, venv and logs, and print its path")
    args = parser.parse_args(argv)

    if args.tests is None:
        args.tests = QUICK_TESTS if args.quick else DEFAULT_TESTS
    if args.repeat is None:
        args.repeat = QUICK_REPEAT if args.quick else DEFAULT_REPEAT
    if args.tests < 1:
        parser.error(f"--tests must be at least 1, got {args.tests}")
    if not 1 <= args.files <= args.tests:
        parser.error(f"--files must be between 1 and --tests ({args.tests}), got {args.files}")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    return args


# ---------------------------------------------------------------------------
# Machine description


def machine_info() -> dict:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "python": platform.python_version(),
        "os": _os_name(),
        # With this set, no run reuses the bytecode or assertion rewrites of an earlier run.
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return round(kib / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _os_name() -> str:
    try:
        release = platform.freedesktop_os_release()["PRETTY_NAME"]
    except (OSError, KeyError):
        release = platform.system()
    return f"{release}, kernel {platform.release()}"


# ---------------------------------------------------------------------------
# Setup: suites and the benchmark venv


def run_checked(command: list[str], step: str) -> None:
    """Run a setup command, and exit with its output when it fails. ``step`` names it in the error."""
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(
            f"error: {step} failed with exit code {completed.returncode}: {shlex.join(command)}\n"
            f"{completed.stdout}{completed.stderr}"
        )


def generate_suite(work: Path, tests: int, files: int, sleep_ms: float = 0.0) -> Suite:
    name = "generated-long" if sleep_ms else "generated"
    folder = work / "suites" / name
    run_checked(
        [sys.executable, str(GEN_SUITE), str(folder), "--tests", str(tests), "--files", str(files), "--sleep-ms", str(sleep_ms)],
        "generating the synthetic suite",
    )
    label = f"generated ({tests} tests of {sleep_ms:g} ms)" if sleep_ms else f"generated ({tests} tests)"
    return Suite(label, folder, tests)


def download_library(work: Path, library: Library) -> tuple[Path, Suite]:
    """Download and extract one library's sdist, and return the sdist file and its suite."""
    download_dir = work / "sdists" / library.name
    run_checked(
        [
            sys.executable, "-m", "pip", "download", "--quiet",
            "--no-binary", ":all:", "--no-deps", "--dest", str(download_dir), library.requirement,
        ],
        f"downloading the sdist of {library.requirement}",
    )
    archives = sorted(download_dir.glob("*.tar.gz"))
    if len(archives) != 1:
        sys.exit(f"error: expected one .tar.gz sdist of {library.requirement} in {download_dir}, found {len(archives)}")

    suites_dir = work / "suites"
    with tarfile.open(archives[0]) as archive:
        top_names = {member.name.split("/", 1)[0] for member in archive.getmembers()}
        if len(top_names) != 1:
            sys.exit(f"error: the sdist {archives[0].name} has {len(top_names)} top-level folders, expected one")
        archive.extractall(suites_dir, filter="data")
    return archives[0], Suite(f"{library.name} {library.version}", suites_dir / top_names.pop())


def _installed_pin(name: str) -> str:
    """Pin ``name`` to the version installed with this script, so the benchmark venv matches it."""
    try:
        return f"{name}=={importlib.metadata.version(name)}"
    except importlib.metadata.PackageNotFoundError:
        return name


def create_bench_venv(work: Path, sdists: list[Path]) -> Path:
    """Create the benchmark venv with pytest, pytest-xdist and the libraries, and return its python."""
    venv_dir = work / "venv"
    run_checked([sys.executable, "-m", "venv", str(venv_dir)], "creating the benchmark venv")
    python = venv_dir / "bin" / "python"
    run_checked(
        [str(python), "-m", "pip", "install", "--quiet", _installed_pin("pytest"), _installed_pin("pytest-xdist")]
        + [str(sdist) for sdist in sdists],
        "installing pytest, pytest-xdist and the libraries into the benchmark venv",
    )
    return python


def swarmctl_command() -> list[str]:
    """Return the command of the swarmctl installed beside this interpreter, else ``python -m swarmctl``."""
    script = Path(sys.executable).parent / "swarmctl"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "swarmctl"]


# ---------------------------------------------------------------------------
# Timed runs


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in CLEARED_ENV}
    env.update(extra)
    return env


def run_timed(command: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> Timing:
    """Run ``command`` with its output in ``log_path``, and return its wall-clock time and exit code.

    This is ``subprocess.run`` with a timeout, written out so that the command gets its own
    process group and a timeout kills its child processes (xdist workers, swarmctl
    executors) along with it.
    """
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            exit_code = process.wait(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            print(f"  timed out after {COMMAND_TIMEOUT_S} s: {shlex.join(command)} (output: {log_path})")
            return Timing(None, None)
        seconds = time.perf_counter() - started

    # Exit codes 0 and 1 mean that the suite ran. Code 1 is expected where tests fail on purpose.
    if exit_code not in (0, 1):
        print(f"  failed with exit code {exit_code}: {shlex.join(command)} (output: {log_path})")
    return Timing(seconds, exit_code)


def median_seconds(timings: list[Timing]) -> float | None:
    values = [timing.seconds for timing in timings if timing.seconds is not None]
    if not values:
        return None
    return round(statistics.median(values), 3)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def compare_outcomes(reference: dict[str, str], report: dict | None) -> list[dict]:
    """List the node ids whose outcome in swarmctl's report differs from plain pytest's.

    An id that one side lacks shows ``"missing"`` there.
    """
    if report is None:
        return [{"id": "", "plain": "", "swarmctl": "no JSON report"}]
    swarmctl = {case["id"]: case["outcome"] for case in report.get("cases", [])}
    mismatches = []
    for node_id in sorted(reference.keys() | swarmctl.keys()):
        plain_outcome = reference.get(node_id, "missing")
        swarmctl_outcome = swarmctl.get(node_id, "missing")
        if plain_outcome != swarmctl_outcome:
            mismatches.append({"id": node_id, "plain": plain_outcome, "swarmctl": swarmctl_outcome})
    return mismatches


def bench_suite(suite: Suite, index: int, work: Path, python: Path, args: argparse.Namespace) -> dict:
    """Time the three runners on one suite and compare swarmctl's outcomes with plain pytest's."""
    runs_dir = work / "runs" / f"{index}"
    runs_dir.mkdir(parents=True)
    plugin_env = {"PYTHONPATH": str(PLUGIN_DIR)}
    plain = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    xdist = plain + ["-n", str(args.workers)]

    # An untimed first run warms the OS file cache and records the reference outcomes.
    reference_path = runs_dir / "reference-outcomes.json"
    print(f"{suite.name}: reference run of plain pytest")
    warm = run_timed(
        plain + ["-p", PLUGIN_MODULE], suite.path,
        clean_env(**plugin_env, **{OUTCOMES_ENV: str(reference_path)}), runs_dir / "reference.log",
    )
    reference = read_json(reference_path) or {}
    if not reference:
        print(f"  plain pytest recorded no outcomes (exit code {warm.exit_code}); see {runs_dir / 'reference.log'}")

    # swarmctl keeps its data folder between runs, as pytest keeps __pycache__ beside the
    # suite. The first run, with an empty folder as on a fresh machine, is timed on its own
    # and left out of the medians, like plain pytest's reference run.
    swarmctl_env = clean_env(SWARMCTL_HOME=str(runs_dir / "swarmctl-home"))
    mismatches: list[dict] = []

    def run_swarmctl(repeat: int) -> Timing:
        report_path = runs_dir / f"swarmctl-{repeat}.json"
        swarmctl = swarmctl_command() + [
            "run", str(suite.path), "-n", str(args.workers), "--json", str(report_path), "--python", str(python),
        ]
        timing = run_timed(swarmctl, work, swarmctl_env, runs_dir / f"swarmctl-{repeat}.log")
        # Every run's report is checked, so an outcome that changes between runs shows up.
        for mismatch in compare_outcomes(reference, read_json(report_path)):
            mismatches.append({"repeat": repeat, **mismatch})
        return timing

    print(f"{suite.name}: first swarmctl run, with an empty data folder")
    first = run_swarmctl(0)

    timings: dict[str, list[Timing]] = {"plain": [], "xdist": [], "swarmctl": []}
    for repeat in range(1, args.repeat + 1):
        print(f"{suite.name}: repeat {repeat} of {args.repeat}")
        # The timed plain runs load the plugin too, so every plain run does the same work.
        plain_env = clean_env(**plugin_env, **{OUTCOMES_ENV: str(runs_dir / f"plain-{repeat}-outcomes.json")})
        timings["plain"].append(
            run_timed(plain + ["-p", PLUGIN_MODULE], suite.path, plain_env, runs_dir / f"plain-{repeat}.log")
        )
        timings["xdist"].append(run_timed(xdist, suite.path, clean_env(), runs_dir / f"xdist-{repeat}.log"))
        timings["swarmctl"].append(run_swarmctl(repeat))

    plain_s = median_seconds(timings["plain"])
    xdist_s = median_seconds(timings["xdist"])
    swarmctl_s = median_seconds(timings["swarmctl"])
    return {
        "name": suite.name,
        "tests": suite.tests if suite.tests is not None else len(reference),
        "plain_s": plain_s,
        "xdist_s": xdist_s,
        "swarmctl_s": swarmctl_s,
        "swarmctl_first_s": _round(first.seconds),
        "ratio_swarmctl_over_xdist": ratio(swarmctl_s, xdist_s),
        "ratio_swarmctl_over_plain": ratio(swarmctl_s, plain_s),
        "results_equal": bool(reference) and not mismatches,
        "mismatches": mismatches[:MAX_MISMATCHES],
        "mismatch_count": len(mismatches),
        "runs_s": {runner: [_round(t.seconds) for t in runs] for runner, runs in timings.items()},
        "exit_codes": {
            **{runner: [t.exit_code for t in runs] for runner, runs in timings.items()},
            "swarmctl_first": first.exit_code,
        },
    }


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


# ---------------------------------------------------------------------------
# Output


def print_table(suites: list[dict]) -> None:
    header = (
        "suite", "tests", "plain s", "xdist s", "swarmctl s", "first swarmctl s", "swarmctl/xdist", "swarmctl/plain", "equal",
    )
    rows = [header]
    for suite in suites:
        rows.append((
            suite["name"],
            str(suite["tests"]),
            _format(suite["plain_s"], 2),
            _format(suite["xdist_s"], 2),
            _format(suite["swarmctl_s"], 2),
            _format(suite["swarmctl_first_s"], 2),
            _format(suite["ratio_swarmctl_over_xdist"], 2),
            _format(suite["ratio_swarmctl_over_plain"], 2),
            "yes" if suite["results_equal"] else f"NO ({suite['mismatch_count']})",
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        print("  ".join(cells))
        if number == 0:
            print("  ".join("-" * width for width in widths))


def _format(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="swarmctl-bench-xdist-"))
    try:
        return run_benchmark(args, argv, work)
    finally:
        if args.keep:
            print(f"kept the temporary folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, argv: list[str], work: Path) -> int:
    started = time.perf_counter()
    print(f"setting up in {work}")
    suites = [generate_suite(work, args.tests, args.files)]
    if args.long_tests > 0:
        suites.append(generate_suite(work, args.long_tests, min(args.files, args.long_tests), args.long_sleep_ms))
    sdists = []
    if not args.no_libraries:
        for library in LIBRARIES:
            sdist, suite = download_library(work, library)
            sdists.append(sdist)
            suites.append(suite)
    python = create_bench_venv(work, sdists)
    print(f"setup took {time.perf_counter() - started:.0f} s")

    results = [bench_suite(suite, index, work, python, args) for index, suite in enumerate(suites)]

    document = {
        "machine": machine_info(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "bench/xdist.py", *argv]),
        "workers": args.workers,
        "repeat": args.repeat,
        "suites": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    print()
    print_table(results)
    print(f"\nmedian wall-clock seconds of {args.repeat} run(s) each, {args.workers} workers; wrote {args.output}")
    print(f"total time {time.perf_counter() - started:.0f} s")
    for suite in results:
        for mismatch in suite["mismatches"]:
            print(f"  mismatch in {suite['name']}: {mismatch}")
    return 0 if all(suite["results_equal"] for suite in results) else 1


if __name__ == "__main__":
    sys.exit(main())
