"""Progress of one run: result counts, per-executor activity, and an estimate of the time left.

The estimate models the rest of the run instead of extrapolating elapsed time linearly.
Extrapolation misleads on the runs that need an estimate most. ``time-balanced`` starts the
longest tests first, so early on few tests are done and a linear estimate is far too long.
In the tail, a few long tests decide the end, however many short ones are left.

Each runnable test has an expected duration, made by ``expected_durations`` from the
suite's history and imported durations, as planning makes it. Finished tests calibrate
those expectations. Under the model ``actual = factor * expected + noise``, where the
noise variance grows in proportion to the expected duration, the weighted least-squares
estimate of ``factor`` is sum(actual) / sum(expected) over the finished tests. It starts from a prior
of ``PRIOR_CASES`` average tests at factor 1, so a handful of results cannot swing it. A
suite that now runs twice as slow as its history gets a factor near 2. Without any
history, every test expects one unit, and the factor becomes this run's slot time per
finished test: the durations of the finished tests plus the time the running ones have
taken so far, divided by the number of finished tests.

The time left is when the rest of the work ends on the slots the run can use:

- a running shard frees its slot after its current test's expected remainder, which is
  its calibrated duration minus the time since the shard's previous result (or its
  start), floored at 0, plus the calibrated durations of its tests that have not started;
- the pending tests, those in no running shard, are poured into the slots as they free
  up, as though the work could be cut anywhere;
- the result is never below the longest pending test after the first slot frees up, nor
  below the longest remaining dependency chain. Without history the longest pending test
  is unknown, so it is estimated from the spread of this run's durations.

NOTE: pouring treats the pending work as divisible, but it runs in shards, so slots end
up to about one tail shard apart. On a simulated run of tests of about 1 s the estimate
was 2% to 3% short at three quarters of the run for that reason (bench/eta.py).

The range comes from the same model. The spread of the finished tests' residuals gives
the noise variance. The uncertainty of ``factor`` and the noise of the remaining tests
give a standard deviation for each block of work, and the range is the estimate with every
block ``INTERVAL_Z`` standard deviations shorter or longer. Every block moves in the same
direction, so the range is wider than the model's own interval. Before any result, the
range rests on the prior spread ``PRIOR_RELATIVE_SD`` alone. Without history, the high end
also lets the longest pending test start after all the other work, because nothing tells
where it sits in the queue.

The tracker is pure: the coordinator passes assignments, results and the clock in.
"""

from __future__ import annotations

import bisect
import graphlib
import heapq
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from swarmctl.coordinator.state import ShardState, ShardStatus
from swarmctl.coordinator.strategies import PlanInput, expected_durations
from swarmctl.results import FAILED, PASSED, TIMED_OUT, XFAILED, XPASSED

BASIS_DURATIONS = "durations"  # expected durations from history, calibrated by this run's results
BASIS_RATE = "rate"  # no history: this run's slot time per finished test
BASIS_UNKNOWN = "unknown"  # no history and no timed result yet, or no slot to run the rest

# Outcomes whose duration measures how long a test takes: those the coordinator keeps as
# history when a run finishes. Skips and coordinator-made errors ("not run") take no time.
TIMED_OUTCOMES = frozenset({PASSED, FAILED, XFAILED, XPASSED, TIMED_OUT})

# Prior weight of the calibration factor, in average tests at factor 1.
PRIOR_CASES = 3.0
# Prior relative standard deviation of one test of average expected length.
PRIOR_RELATIVE_SD = 0.5
# The factor's standard deviation, relative to it, is never below this. The model takes
# the finished tests as a fair sample of the rest, but time-balanced plans start the
# longest tests by history first, and a test ranked long by noisy history tends to run
# shorter than its recorded duration. On the long-tail runs of bench/eta.py with history noise
# 0.3 (seeds 0 to 2), the tests finished at a quarter of the run had taken 2% to 5% less
# than their history, and the tests left then took 0% to 2% more than theirs.
FACTOR_FLOOR_RELATIVE_SD = 0.05
# Standard deviations between the estimate and each end of its range: 1.28 would bound
# 80% of a normal distribution. The ETA benchmark (bench/eta.py) measures how often the
# true time left falls inside the range.
INTERVAL_Z = 1.28
# Expected durations are floored here so that a ratio actual / expected stays finite.
MIN_EXPECTED_S = 0.001


@dataclass(frozen=True, slots=True)
class Eta:
    """An estimate of the seconds until a run ends, with a range around it."""

    eta_s: float | None  # None when there is nothing to estimate from
    low_s: float | None  # low_s <= eta_s <= high_s whenever they are set
    high_s: float | None
    basis: str  # BASIS_DURATIONS, BASIS_RATE or BASIS_UNKNOWN

    def aged(self, seconds: float) -> Eta:
        """Return this estimate ``seconds`` later: every time less the elapsed seconds, never below 0."""

        def less(value: float | None) -> float | None:
            return None if value is None else max(0.0, value - seconds)

        return Eta(less(self.eta_s), less(self.low_s), less(self.high_s), self.basis)


UNKNOWN_ETA = Eta(None, None, None, BASIS_UNKNOWN)


@dataclass(frozen=True, slots=True)
class ExecutorActivity:
    """One executor's share of a run."""

    running: int  # tests running now, one per running shard that has tests left
    queued: int  # tests of its running shards that have not started
    done: int  # final results recorded from it


@dataclass(slots=True, eq=False)
class _RunningShard:
    attempt: int
    executor: str
    last_result_at: float  # when the shard started or its previous result arrived
    order: list[int]  # case indexes in the order the executor runs them
    position: int = 0  # order[:position] have a result or moved to another shard
    expected_left: float = 0.0  # expected seconds of its cases without a result
    cases_left: int = 0


@dataclass(frozen=True, slots=True)
class _Calibration:
    factor: float  # actual seconds per expected second
    variance: float  # noise variance of one expected second, in seconds squared
    factor_variance: float  # of ``factor``

    def seconds(self, expected: float, deviations: float) -> float:
        """Return the seconds that ``expected`` seconds of work take, ``deviations`` standard deviations off."""
        mean, spread = self.mean_and_spread(expected)
        return max(0.0, mean + deviations * spread)

    def mean_and_spread(self, expected: float) -> tuple[float, float]:
        """Return the mean and standard deviation of the seconds that ``expected`` seconds of work take."""
        return self.factor * expected, math.sqrt(self.variance * expected + self.factor_variance * expected * expected)


class ProgressTracker:
    """Tracks one run from its collected case ids; feed it assignments and results."""

    def __init__(
        self,
        case_ids: Sequence[str],
        runnable: Iterable[int],
        durations: Mapping[str, float] | None = None,
        dependencies: Mapping[int, Sequence[int]] | None = None,
    ) -> None:
        """Start tracking a run.

        ``runnable`` contains the indexes into ``case_ids`` of the tests that run (those
        without a collection-time result). ``durations`` maps case ids to expected seconds,
        as planning gets them, and ``dependencies`` maps a case index to the indexes it needs.
        """
        self.case_ids = case_ids
        self.runnable = sorted(set(runnable))
        durations = durations or {}
        self.has_history = any(_is_valid_duration(seconds) for seconds in durations.values())
        self.index: dict[str, int] = {}
        for position, case_id in enumerate(case_ids):
            self.index.setdefault(case_id, position)

        # Without history every case expects one unit, and calibration turns the unit into
        # this run's slot time per test.
        estimates = expected_durations(PlanInput(case_ids, self.runnable, 1, durations)) if self.has_history else {}
        self.expected = [0.0] * len(case_ids)
        self._is_runnable = [False] * len(case_ids)
        for case in self.runnable:
            self.expected[case] = max(MIN_EXPECTED_S, estimates.get(case, 1.0))
            self._is_runnable[case] = True

        self.total = len(self.runnable)
        self.done = 0  # runnable cases with a final result
        self.counts: Counter[str] = Counter()  # outcome -> final results, collection-time ones included
        self._has_result = [False] * len(self.case_ids)
        self._done_by_executor: Counter[str] = Counter()

        self._running: dict[int, _RunningShard] = {}
        self._owner: dict[int, int] = {}  # case index -> running shard that contains it
        self._pending_expected = math.fsum(self.expected[case] for case in self.runnable)
        self._longest_pending = [(-self.expected[case], case) for case in self.runnable]
        heapq.heapify(self._longest_pending)  # lazy: entries of done or running cases are skipped

        self._samples = 0
        self._actual_sum = 0.0
        self._expected_sum = 0.0
        self._squares_sum = 0.0  # sum of actual**2 / expected, for the residual variance
        self._durations_seen: list[float] = []  # without history: timed durations, sorted
        self._mean_expected = self._pending_expected / self.total if self.total else 1.0

        self._chain_order, self._needs = self._dependency_graph(dependencies or {})
        self._last_estimate: tuple[float, Eta] | None = None  # (when, estimate), see recent_estimate

    # --- events ---------------------------------------------------------------------------

    def shard_started(self, shard_id: int, attempt: int, executor: str, cases: Iterable[int], now: float) -> None:
        """Record that an attempt of a shard started on ``executor``; cases that have a result are ignored.

        A case that another running shard contains moves to this one, as when an executor gives
        back unstarted tests for an idle slot.
        """
        if shard_id in self._running:
            self.shard_ended(shard_id)
        shard = _RunningShard(attempt, executor, now, [])
        for case in cases:
            if not self._is_runnable[case] or self._has_result[case]:
                continue
            previous = self._owner.get(case)
            if previous is None:
                self._pending_expected -= self.expected[case]
            else:
                self._leave_shard(self._running[previous], case)
            self._owner[case] = shard_id
            shard.order.append(case)
            shard.expected_left += self.expected[case]
            shard.cases_left += 1
        self._running[shard_id] = shard

    def shard_ended(self, shard_id: int) -> None:
        """Forget a shard attempt that ended; its cases without a result are pending again."""
        shard = self._running.pop(shard_id, None)
        if shard is None:
            return
        for case in shard.order:
            if self._owner.get(case) == shard_id:
                del self._owner[case]
                self._pending_expected += self.expected[case]
                heapq.heappush(self._longest_pending, (-self.expected[case], case))

    def sync_shards(self, shards: Mapping[int, ShardState]) -> None:
        """End every tracked shard attempt that the run's state no longer shows as assigned."""
        for shard_id, shard in list(self._running.items()):
            state = shards.get(shard_id)
            if state is None or state.status is not ShardStatus.ASSIGNED or state.attempt != shard.attempt:
                self.shard_ended(shard_id)

    def record(self, case_id: str, outcome: str, duration: float, executor: str, now: float) -> None:
        """Record a case's final result; a second result for the same case is ignored."""
        case = self.index.get(case_id)
        if case is None or self._has_result[case]:
            return
        self._has_result[case] = True
        self.counts[outcome] += 1
        if executor:
            self._done_by_executor[executor] += 1
        if not self._is_runnable[case]:
            return

        self.done += 1
        shard_id = self._owner.pop(case, None)
        if shard_id is None:
            self._pending_expected -= self.expected[case]
        else:
            shard = self._running[shard_id]
            self._leave_shard(shard, case)
            shard.last_result_at = now

        # Only results an executor timed calibrate: the coordinator records skips for
        # failed dependencies and errors for lost shards itself, with no duration. With
        # history, a skip would compare its near-zero time with a duration it never had.
        # Without history the mean is per test, and a skip counts as a test like any other.
        timed = outcome in TIMED_OUTCOMES or not self.has_history
        if executor and timed and _is_valid_duration(duration):
            expected = self.expected[case]
            self._samples += 1
            self._actual_sum += duration
            self._expected_sum += expected
            self._squares_sum += duration * duration / expected
            if not self.has_history:
                bisect.insort(self._durations_seen, duration)

    def _leave_shard(self, shard: _RunningShard, case: int) -> None:
        shard.expected_left = max(0.0, shard.expected_left - self.expected[case])
        shard.cases_left -= 1

    # --- reading --------------------------------------------------------------------------

    def executors(self) -> dict[str, ExecutorActivity]:
        """Return the activity of every executor that runs or ran tests of the run, by executor id."""
        running: Counter[str] = Counter()
        queued: Counter[str] = Counter()
        for shard in self._running.values():
            if shard.cases_left > 0:
                running[shard.executor] += 1
                queued[shard.executor] += shard.cases_left - 1
        names = sorted(set(running) | set(self._done_by_executor))
        return {name: ExecutorActivity(running[name], queued[name], self._done_by_executor[name]) for name in names}

    def running_by_executor(self) -> list[dict[str, Any]]:
        """Describe the running shards, one row per executor in id order, as ``RunProgress.activity``.

        A row counts the executor's shards and their tests without a result, and lists each
        shard's current test (its first test without a result). Tests given back for an idle
        slot count in the shard that took them.
        """
        rows: dict[str, dict[str, Any]] = {}
        for shard_id, shard in sorted(self._running.items()):
            current = self._current_test(shard_id, shard)
            row = rows.setdefault(shard.executor, {"executor": shard.executor, "shards": 0, "current": [], "remaining": 0})
            row["shards"] += 1
            row["remaining"] += shard.cases_left
            if current is not None:
                row["current"].append(self.case_ids[current])
        return [rows[executor] for executor in sorted(rows)]

    def tests_left(self, shard_id: int) -> int:
        """Return how many tests of the running shard have no result, 0 for a shard not running."""
        shard = self._running.get(shard_id)
        return shard.cases_left if shard is not None else 0

    def recent_estimate(self, now: float, free_slots: int, max_age_s: float) -> Eta:
        """Return ``estimate``, made again only once the last one is ``max_age_s`` old, else the last one aged.

        With hundreds of running shards an estimate takes milliseconds (1.5 ms for 800 on an
        idle 2-core Xeon, 4 to 5 ms under the load benchmark), and the event loop that hands
        out work waits meanwhile.
        """
        if self._last_estimate is not None and 0.0 <= now - self._last_estimate[0] < max_age_s:
            made_at, eta = self._last_estimate
            return eta.aged(now - made_at)
        eta = self.estimate(now, free_slots)
        self._last_estimate = (now, eta)
        return eta

    def estimate(self, now: float, free_slots: int) -> Eta:
        """Estimate the seconds until every runnable test has a result.

        ``free_slots`` counts the slots that could start a shard now. The run's running
        shards hold the other slots it uses, so slots busy with other runs are left out.
        """
        basis = BASIS_DURATIONS if self.has_history else BASIS_RATE
        if self.done >= self.total:
            return Eta(0.0, 0.0, 0.0, basis)
        running = self._running_tests(now)
        calibration = self._calibration(math.fsum(spent for _, current, spent in running if current is not None))
        slots = len(self._running) + max(0, free_slots)
        if calibration is None or slots == 0:
            return UNKNOWN_ETA

        # NOTE: a shard's current test is taken to be the first of its tests without a
        # result, in the order the shard was assigned. The pytest runner runs them in that
        # order. A failed try that waits for a retry stays first until its retry starts.
        blocks = []
        for shard, current, spent in running:
            if current is not None:
                current_expected = self.expected[current]
                rest_expected = max(0.0, shard.expected_left - current_expected)
                blocks.append((current, spent, *calibration.mean_and_spread(current_expected),
                               *calibration.mean_and_spread(rest_expected)))
        idle_slots = max(0, free_slots) + len(running) - len(blocks)
        low, eta, high = (
            self._finish(calibration, blocks, idle_slots, deviations)
            for deviations in (-INTERVAL_Z, 0.0, INTERVAL_Z)
        )
        return Eta(eta, low, high, basis)

    def _calibration(self, spent: float) -> _Calibration | None:
        """Return the factor and noise of actual against expected durations, or None without any basis.

        ``spent`` is the time the running tests have taken so far, in seconds.
        """
        if self.has_history:
            prior = PRIOR_CASES * self._mean_expected
            weight = self._expected_sum + prior
            factor = (self._actual_sum + prior) / weight
        elif self._samples:
            # Every expected duration is one unit, so the factor is the mean duration. The
            # tests still running are the longer ones, so the mean of the finished tests
            # alone is too short. Slot time per finished test, the running tests' time
            # included, has no such bias once each slot has finished a few tests.
            weight = self._expected_sum
            factor = (self._actual_sum + spent) / weight
        else:
            return None

        # Residuals of the finished tests around the fitted factor, each divided by its
        # expected duration, plus PRIOR_CASES pseudo-residuals of the prior spread.
        residual = self._squares_sum - 2.0 * factor * self._actual_sum + factor * factor * self._expected_sum
        prior_variance = (PRIOR_RELATIVE_SD * factor) ** 2 * self._mean_expected
        variance = (max(0.0, residual) + PRIOR_CASES * prior_variance) / (max(0, self._samples - 1) + PRIOR_CASES)
        factor_variance = variance / weight + (FACTOR_FLOOR_RELATIVE_SD * factor) ** 2
        return _Calibration(factor, variance, factor_variance)

    def _running_tests(self, now: float) -> list[tuple[_RunningShard, int | None, float]]:
        """Return each running shard with its current case (None when it has none left) and seconds spent on it."""
        return [
            (shard, self._current_test(shard_id, shard), max(0.0, now - shard.last_result_at))
            for shard_id, shard in self._running.items()
        ]

    def _current_test(self, shard_id: int, shard: _RunningShard) -> int | None:
        """Return the shard's first test without a result that it still owns, or None."""
        order = shard.order
        while shard.position < len(order) and (
            self._has_result[order[shard.position]] or self._owner.get(order[shard.position]) != shard_id
        ):
            shard.position += 1
        return order[shard.position] if shard.position < len(order) else None

    def _finish(
        self,
        calibration: _Calibration,
        blocks: list[tuple[int, float, float, float, float, float]],
        idle_slots: int,
        deviations: float,
    ) -> float:
        """Return the seconds until the rest of the run ends, with every block of work ``deviations`` off.

        ``blocks`` has a tuple per running shard with a current test: that test, the seconds
        it has run, then the mean and spread of its seconds and of the shard's tests after it.
        """

        def seconds(expected: float) -> float:
            return calibration.seconds(expected, deviations)

        # This inlines calibration.seconds, because it runs for every running shard.
        current_left = [
            max(0.0, max(0.0, current_mean + deviations * current_spread) - spent)
            for _, spent, current_mean, current_spread, _, _ in blocks
        ]
        free_at = [0.0] * idle_slots
        free_at += [
            left + max(0.0, rest_mean + deviations * rest_spread)
            for left, (_, _, _, _, rest_mean, rest_spread) in zip(current_left, blocks)
        ]
        poured = _pour(free_at, seconds(max(0.0, self._pending_expected)))
        finish = poured
        longest = self._longest_pending_expected(calibration.factor)
        if longest is not None:
            start = min(free_at)
            if deviations > 0 and not self.has_history:
                # Without history nothing tells when the longest test starts, so the high
                # end of the range lets it start after all the other work.
                start = poured
            finish = max(finish, start + seconds(longest))
        if self._chain_order:
            left_by_case = {block[0]: left for block, left in zip(blocks, current_left)}
            finish = max(finish, self._longest_chain(seconds, left_by_case))
        return finish

    def _longest_pending_expected(self, factor: float) -> float | None:
        """Return the expected duration of the longest pending test, or None when no test is pending."""
        heap = self._longest_pending
        while heap and (self._has_result[heap[0][1]] or heap[0][1] in self._owner):
            heapq.heappop(heap)
        if not heap:
            return None
        if self.has_history or not self._durations_seen or factor <= 0.0:
            return -heap[0][0]

        # Without history, the longest of n tests left is taken to be the duration that one
        # finished test in n + 1 exceeded, in units of the mean. On a long-tail suite, one
        # long test that starts late decides the end of the run.
        left = self.total - self.done
        seen = self._durations_seen
        rank = min(len(seen) - 1, len(seen) * left // (left + 1))
        return max(1.0, seen[rank] / factor)

    # --- dependencies ----------------------------------------------------------------------

    def _dependency_graph(self, dependencies: Mapping[int, Sequence[int]]) -> tuple[list[int], dict[int, list[int]]]:
        """Return the runnable cases that take part in a dependency, in topological order, and their needs."""
        needs: dict[int, list[int]] = {}
        for case, required in dependencies.items():
            if 0 <= case < len(self._is_runnable) and self._is_runnable[case]:
                runnable_needs = [need for need in required if 0 <= need < len(self._is_runnable) and self._is_runnable[need]]
                if runnable_needs:
                    needs[case] = runnable_needs
        if not needs:
            return [], {}
        # The coordinator rejects cyclic dependencies before a run is planned.
        order = list(graphlib.TopologicalSorter(needs).static_order())
        return order, needs

    def _longest_chain(self, seconds: Callable[[float], float], current_left: Mapping[int, float]) -> float:
        """Return the seconds of the longest chain of dependent tests without a result."""
        finish: dict[int, float] = {}
        longest = 0.0
        for case in self._chain_order:
            if self._has_result[case]:
                continue
            start = max((finish.get(need, 0.0) for need in self._needs.get(case, ())), default=0.0)
            left = current_left[case] if case in current_left else seconds(self.expected[case])
            finish[case] = start + left
            longest = max(longest, finish[case])
        return longest


def _pour(free_at: list[float], work: float) -> float:
    """Return when ``work`` seconds end if poured into slots that free up at ``free_at``.

    The slots that free up first take the work until all of them reach one level, so the
    answer is that level, and never before the last slot frees up.
    """
    if not free_at:
        return math.inf if work > 0 else 0.0
    ordered = sorted(free_at)
    busy_sum = 0.0
    level = 0.0
    for count, free in enumerate(ordered, 1):
        busy_sum += free
        level = (work + busy_sum) / count
        if count == len(ordered) or level <= ordered[count]:
            break
    return max(level, ordered[-1])


def _is_valid_duration(seconds: object) -> bool:
    return isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds) and seconds >= 0
