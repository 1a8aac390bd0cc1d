"""The per-executor timeline of a run as an inline SVG drawing.

Each test attempt is a bar from its ``started_at`` to ``started_at + duration``, in one row
per executor. When an executor ran tests at the same time (several slots), its bars are
stacked into as many lanes as needed: each attempt takes the first lane that is free at
its start. Time 0 is the run's submission, so the gap before the first bar is the time
spent on collection and on starting workers.

Every text (executor ids, test ids) is escaped with ``html.escape``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from swarmctl.results import CaseResult

WIDTH = 1000  # SVG user units. The drawing scales to the page width.
LABEL_WIDTH = 150
AXIS_HEIGHT = 20
LANE_HEIGHT = 12
LANE_GAP = 2
GROUP_GAP = 8
MIN_BAR_WIDTH = 0.5  # so a 1 ms test stays visible in a 10 minute run


@dataclass(frozen=True, slots=True)
class Bar:
    """One attempt placed on the timeline."""

    attempt: CaseResult
    lane: int  # 0-based lane within its executor's row
    start_s: float  # seconds since the run's origin
    end_s: float
    final: bool  # False for an earlier failed attempt of a retried test


def pack_lanes(attempts: Iterable[tuple[CaseResult, bool]], origin: float) -> list[Bar]:
    """Place attempts of one executor in lanes so that bars in one lane never overlap."""
    placed = sorted(
        ((attempt, final) for attempt, final in attempts if attempt.started_at > 0),
        key=lambda item: (item[0].started_at, item[0].case_id),
    )
    lane_ends: list[float] = []
    bars = []
    for attempt, final in placed:
        start = attempt.started_at - origin
        end = start + max(attempt.duration, 0.0)
        lane = next((index for index, lane_end in enumerate(lane_ends) if lane_end <= start), len(lane_ends))
        if lane == len(lane_ends):
            lane_ends.append(end)
        else:
            lane_ends[lane] = end
        bars.append(Bar(attempt, lane, start, end, final))
    return bars


def tick_step(span_s: float, target_ticks: int = 8) -> float:
    """Return a tick spacing of 1, 2 or 5 times a power of ten giving about ``target_ticks`` ticks."""
    if span_s <= 0:
        return 1.0
    raw = span_s / target_ticks
    power = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 5, 10):
        if raw <= multiple * power:
            return multiple * power
    return 10 * power


def render_timeline_svg(
    results: Sequence[CaseResult], earlier_attempts: Iterable[CaseResult], *, started_at: float, wall_s: float
) -> str:
    """Return an ``<svg>`` element with one row per executor, or a short note when no test has a start time."""
    by_executor: dict[str, list[tuple[CaseResult, bool]]] = {}
    for attempt, final in [*((result, True) for result in results), *((attempt, False) for attempt in earlier_attempts)]:
        if attempt.executor and attempt.started_at > 0:
            by_executor.setdefault(attempt.executor, []).append((attempt, final))
    if not by_executor:
        return '<p class="note">No test has a start time, so there is no timeline.</p>'

    # Executors on other machines may have clocks slightly behind the coordinator's.
    origin = min([started_at, *(attempt.started_at for pairs in by_executor.values() for attempt, _ in pairs)])
    rows = {executor: pack_lanes(pairs, origin) for executor, pairs in sorted(by_executor.items())}
    span = max([wall_s, *(bar.end_s for bars in rows.values() for bar in bars)])
    span = span if span > 0 else 1.0
    scale = (WIDTH - LABEL_WIDTH) / span

    parts = []
    y = AXIS_HEIGHT
    for executor, bars in rows.items():
        lanes = max(bar.lane for bar in bars) + 1
        height = lanes * (LANE_HEIGHT + LANE_GAP)
        parts.append(
            f'<text class="lane-label" x="4" y="{y + LANE_HEIGHT - 2}">{html.escape(executor)}</text>'
        )
        for bar in bars:
            parts.append(_bar_element(bar, LABEL_WIDTH + bar.start_s * scale, y + bar.lane * (LANE_HEIGHT + LANE_GAP), scale))
        y += height + GROUP_GAP

    axis = _axis_elements(span, scale, y)
    return (
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {y}" width="100%" role="img" '
        f'aria-label="Test attempts per executor over time">{"".join(axis)}{"".join(parts)}</svg>'
    )


def _bar_element(bar: Bar, x: float, y: float, scale: float) -> str:
    attempt = bar.attempt
    width = max((bar.end_s - bar.start_s) * scale, MIN_BAR_WIDTH)
    kind = "final" if bar.final else "earlier"
    title = (
        f"{attempt.case_id}\n{attempt.outcome}, attempt {attempt.attempt}, "
        f"{attempt.duration:.3f}s from +{bar.start_s:.3f}s"
    )
    return (
        f'<rect class="bar {kind} outcome-{html.escape(attempt.outcome)}" x="{x:.2f}" y="{y}" '
        f'width="{width:.2f}" height="{LANE_HEIGHT}"><title>{html.escape(title)}</title></rect>'
    )


def _axis_elements(span: float, scale: float, bottom: float) -> list[str]:
    step = tick_step(span)
    elements = []
    for index in range(int(span / step) + 1):
        seconds = index * step
        x = LABEL_WIDTH + seconds * scale
        elements.append(f'<line class="tick" x1="{x:.2f}" y1="{AXIS_HEIGHT - 4}" x2="{x:.2f}" y2="{bottom}"/>')
        elements.append(f'<text class="tick-label" x="{x:.2f}" y="{AXIS_HEIGHT - 8}">{seconds:g}s</text>')
    return elements
