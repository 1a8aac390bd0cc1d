"""Durations as users write them: ``90``, ``90s``, ``10m``, ``1h30m``, ``2d``."""

from __future__ import annotations

import re

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
