"""The cluster configuration file, ``swarm.toml``, that ``swarmctl init`` writes.

    [cluster]
    coordinators = ["10.0.0.5:7400"]  # where executors and clients connect
    ca_file = "ca.pem"                # relative paths are relative to this file's folder
    token_file = "admin.token"        # the token clients send

    [coordinator]
    listen = "0.0.0.0:7400"
    advertise = "10.0.0.5"
    secret_file = "cluster.secret"
    ca_key_file = "ca.key"
    data_dir = "/var/lib/swarmctl"

    [executor]
    token_file = "join.token"         # or secret_file, for executors that gossip
    slots = 4
    labels = "browser=chromium"
    data_dir = "/var/lib/swarmctl"

    [limits]                          # see swarmctl/limits.py
    bundle_max_bytes = 536870912

The secret belongs to the node tables, not to [cluster], so that the same file can be
copied to executor machines that get only the join token.

``swarmctl up --config FILE`` takes every option it was not given from the file, so a value
on the command line or in the option's environment variable wins. The client commands read
the file that ``SWARMCTL_CONFIG`` names for the coordinators' addresses, the token and the
CA certificate. Every key is optional. An unknown table or key, or a value of the wrong type,
is an error that names it, because a misspelt key would otherwise be ignored without a word.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmctl.errors import UsageError

CONFIG_ENV = "SWARMCTL_CONFIG"
CONFIG_FILE = "swarm.toml"

# table -> key -> (type, whether it is a path relative to the file)
SCHEMA: dict[str, dict[str, tuple[type, bool]]] = {
    "cluster": {
        "coordinators": (list, False),
        "ca_file": (str, True),
        "token_file": (str, True),
    },
    "coordinator": {
        "listen": (str, False),
        "advertise": (str, False),
        "secret_file": (str, True),
        "ca_key_file": (str, True),
        "data_dir": (str, True),
        "lease": (str, False),
        "unmatched_timeout": (str, False),
    },
    "executor": {
        "secret_file": (str, True),
        "token_file": (str, True),
        "slots": (int, False),
        "labels": (str, False),
        "data_dir": (str, True),
        "drain_timeout": (str, False),
    },
    # Checked further by swarmctl.limits.parse_limits.
    "limits": {
        "bundle_max_bytes": (int, False),
        "bundle_max_files": (int, False),
        "bundle_max_ratio": (int, False),
        "http_body_max_bytes": (int, False),
    },
}


TYPE_NAMES = {str: "a string", int: "an integer", list: "a list"}


@dataclass(frozen=True)
class ClusterConfig:
    path: Path
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # table -> key -> value, paths resolved

    def get(self, table: str, key: str) -> Any:
        """Return the value of ``key`` in ``table``, or None when the file does not set it."""
        return self.tables.get(table, {}).get(key)

    @property
    def coordinators(self) -> str | None:
        """Return the coordinators as a ``--cluster`` value, ``HOST:PORT,HOST:PORT``, or None."""
        addresses = self.get("cluster", "coordinators")
        return ",".join(addresses) if addresses else None


def load_config(path: Path) -> ClusterConfig:
    """Read and check a configuration file; raise UsageError naming what is wrong in it."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"configuration file {path} not found; `swarmctl init DIR` writes DIR/{CONFIG_FILE}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read configuration file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"configuration file {path} is not valid TOML: {exc}") from None

    tables: dict[str, dict[str, Any]] = {}
    for table, values in data.items():
        keys = SCHEMA.get(table)
        if keys is None:
            raise UsageError(f"{path}: unknown table [{table}]; the tables are {', '.join(f'[{name}]' for name in SCHEMA)}")
        if not isinstance(values, dict):
            raise UsageError(f"{path}: {table} must be a table, written [{table}]")
        tables[table] = {key: _check_value(path, table, key, value, keys) for key, value in values.items()}
    return ClusterConfig(path, tables)


def config_from_environment() -> ClusterConfig | None:
    """Return the configuration that ``SWARMCTL_CONFIG`` names, or None when it is not set."""
    name = os.environ.get(CONFIG_ENV)
    return load_config(Path(name)) if name else None


def _check_value(path: Path, table: str, key: str, value: Any, keys: dict[str, tuple[type, bool]]) -> Any:
    if key not in keys:
        raise UsageError(f"{path}: unknown key {key!r} in [{table}]; the keys there are {', '.join(keys)}")
    expected, is_path = keys[key]
    if not isinstance(value, expected) or isinstance(value, bool):
        raise UsageError(f"{path}: {table}.{key} must be {TYPE_NAMES[expected]}, not {type(value).__name__} {value!r}")
    if expected is list and not all(isinstance(item, str) for item in value):
        raise UsageError(f"{path}: {table}.{key} must be a list of \"HOST:PORT\" strings")
    if is_path:
        return str((path.parent / Path(value).expanduser()).resolve())
    return value
