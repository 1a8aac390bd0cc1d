"""Executor labels and the requirements that tests place on them.

An executor carries labels, string pairs such as ``os=linux`` or ``browser=chromium``. A test
may require labels (``@pytest.mark.swarm_requires(browser="chromium")`` or a manifest case's
``requires = {os = "linux"}``) and then runs only on an executor whose labels contain every
required pair. Values compare as strings: ``True`` is written ``true`` and ``2`` is ``2``, so a
marker argument and a ``--labels`` value meet on the same text.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping

from swarmctl.errors import UsageError


def label_value(value: object) -> str:
    """Return the text a label value compares as."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_labels(text: str, option: str = "--labels") -> dict[str, str]:
    """Parse ``k=v,k=v`` into labels; raise UsageError naming the bad part."""
    labels = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"invalid label {part!r} in {option}: expected key=value, for example os=linux")
        labels[key.strip()] = value.strip()
    return labels


def builtin_labels() -> dict[str, str]:
    """Return the labels every executor has unless its own ``--labels`` set them otherwise."""
    return {"os": platform.system().lower(), "arch": platform.machine().lower()}


def satisfies(labels: Mapping[str, str], requires: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in requires.items())


def format_labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items())) or "(none)"
