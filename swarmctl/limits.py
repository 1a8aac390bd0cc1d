"""Limits on what a node accepts from its peers, set in ``[limits]`` of swarm.toml or with ``swarmctl up --limit``.

    [limits]
    bundle_max_bytes = 536870912   # a suite bundle: archive size, and size once extracted
    bundle_max_files = 100000      # members of a bundle archive
    bundle_max_ratio = 200         # extracted bytes per archived byte (zip bombs go far higher)
    http_body_max_bytes = 16777216 # the JSON body of an HTTP API call

Coordinators apply the bundle limits to uploads, executors to extraction, so give every node
the same values. The message frame size (16 MiB) is fixed, because both ends of a connection
must agree on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from swarmctl.bundle import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, DEFAULT_MAX_RATIO, BundleLimits
from swarmctl.errors import UsageError

DEFAULT_HTTP_BODY_MAX_BYTES = 16 * 1024**2


@dataclass(frozen=True)
class Limits:
    bundle_max_bytes: int = DEFAULT_MAX_BYTES
    bundle_max_files: int = DEFAULT_MAX_FILES
    bundle_max_ratio: int = DEFAULT_MAX_RATIO
    http_body_max_bytes: int = DEFAULT_HTTP_BODY_MAX_BYTES

    def bundle(self) -> BundleLimits:
        return BundleLimits(self.bundle_max_bytes, self.bundle_max_files, self.bundle_max_ratio)


NAMES = [item.name for item in dataclasses.fields(Limits)]


def parse_limits(configured: dict[str, Any] | None, options: list[str]) -> Limits:
    """Return the limits of ``[limits]`` in the configuration, overridden by ``--limit NAME=VALUE`` options."""
    values = dict(configured or {})
    for option in options:
        name, sep, text = option.partition("=")
        name = name.strip()
        if not sep or name not in NAMES:
            raise UsageError(f"--limit {option!r} is invalid: give NAME=VALUE with NAME one of {', '.join(NAMES)}")
        try:
            values[name] = int(text.replace("_", ""))
        except ValueError:
            raise UsageError(f"--limit {option!r} is invalid: {name} takes a whole number") from None
    for name, value in values.items():
        if name not in NAMES:
            raise UsageError(f"unknown limit {name!r}: the limits are {', '.join(NAMES)}")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UsageError(f"limit {name} = {value!r} is invalid: it must be a whole number above 0")
    return Limits(**values)
