"""Durations and times as users write them: ``90``, ``10m``, ``1h30m``; ``14:30``, ``2026-12-05T02:00``."""

from __future__ import annotations

import datetime
import re
import time

from swarmctl.errors import UsageError

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str, option: str = "duration") -> float:
    """Return the number of seconds in ``text``; raise UsageError naming ``option`` if invalid."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is None:
        parts = _PART.findall(value)
        if not parts or "".join(number + unit for number, unit in parts) != value:
            raise UsageError(
                f"{option} {text!r} is invalid: write seconds or a number with a unit s, m, h or d, "
                "for example 90, 90s, 10m or 1h30m"
            )
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise UsageError(f"{option} {text!r} is invalid: it must be longer than zero")
    return seconds


def parse_start_time(text: str, *, now: float | None = None) -> float:
    """Return the Unix time ``text`` names: ``HH:MM`` (local time, the next one to come) or ISO 8601."""
    now = time.time() if now is None else now
    value = text.strip()
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", value)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        if hour > 23 or minute > 59:
            raise UsageError(f"--at {text!r} is invalid: the hour must be 0-23 and the minute 0-59")
        today = datetime.datetime.fromtimestamp(now).replace(hour=hour, minute=minute, second=0, microsecond=0)
        start = today if today.timestamp() > now else today + datetime.timedelta(days=1)
        return start.timestamp()
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--at {text!r} is invalid: write HH:MM or an ISO 8601 date and time, for example 2026-12-05T02:00"
        ) from None
    return moment.timestamp()  # a time without a zone is local time
