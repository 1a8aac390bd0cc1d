"""The exception tree of swarmctl.

    SwarmError                      every error swarmctl raises on purpose
    ├── UsageError                  bad command-line value or configuration (exit code 4)
    │   ├── ManifestError           invalid swarm.toml command manifest
    │   └── AddressError            invalid HOST:PORT
    ├── BundleError                 suite bundle cannot be built, stored or extracted
    ├── ProtocolError               malformed, oversized or unexpected frame; version mismatch
    ├── ConnectionFailed            no node could be reached at the given addresses
    ├── ListenFailed                a node cannot listen on its address (in use, not local)
    ├── StoreError                  SQLite state cannot be read or written
    └── RunFailed                   a run ended without results (collection crashed, cancelled, ...)

Errors carry the ids and values they are about, so the CLI can print what failed,
on which value, and what to do. Lower-layer errors (sqlite3, OSError, msgpack,
trio-websocket) are translated into this tree where they cross into swarmctl code.
"""

from __future__ import annotations


class SwarmError(Exception):
    """Base class of every error swarmctl raises on purpose."""

    exit_code = 3


class UsageError(SwarmError):
    """A value given by the user is invalid; the message names the value and the fix."""

    exit_code = 4


class ManifestError(UsageError):
    """The command manifest of a suite is invalid."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class AddressError(UsageError):
    """An address is not of the form HOST:PORT."""


class BundleError(SwarmError):
    """A suite bundle cannot be built, stored or extracted safely."""


class ProtocolError(SwarmError):
    """A peer sent a frame that is malformed, too large, unexpected or of another version."""


class ConnectionFailed(SwarmError):
    """No node could be reached at any of the given addresses."""


class ListenFailed(SwarmError):
    """A node cannot listen on its address: the port is in use or the address is not local."""

    exit_code = 4


class StoreError(SwarmError):
    """The coordinator's SQLite state cannot be read or written."""


class RunFailed(SwarmError):
    """A run ended without a complete set of results."""

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(f"run {run_id}: {message}")
        self.run_id = run_id
