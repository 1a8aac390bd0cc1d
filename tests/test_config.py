"""Tests of swarmctl.config: reading and checking swarm.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmctl.config import load_config
from swarmctl.errors import UsageError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "swarm.toml"
    path.write_text(text)
    return path


def test_config_paths_relative_to_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[cluster]\ncoordinators = ["10.0.0.5:7400", "10.0.0.6:7400"]\nca_file = "ca.pem"\n'
                           '[coordinator]\nsecret_file = "keys/cluster.secret"\n[executor]\nslots = 4\n')

    config = load_config(path)

    assert config.coordinators == "10.0.0.5:7400,10.0.0.6:7400"
    assert config.get("cluster", "ca_file") == str(tmp_path / "ca.pem")
    assert config.get("coordinator", "secret_file") == str(tmp_path / "keys" / "cluster.secret")
    assert config.get("executor", "slots") == 4
    assert config.get("executor", "labels") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cluster]\ncoordinator = []\n", "unknown key 'coordinator' in [cluster]"),
        ("[server]\nlisten = \"x\"\n", "unknown table [server]"),
        ("[executor]\nslots = \"four\"\n", "executor.slots must be an integer, not str 'four'"),
        ("[executor]\nslots = true\n", "executor.slots must be an integer, not bool True"),
        ("[cluster]\ncoordinators = [7400]\n", "must be a list of \"HOST:PORT\" strings"),
        ("cluster = 3\n", "cluster must be a table"),
        ("[cluster\n", "is not valid TOML"),
    ],
)
def test_config_invalid(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text))


def test_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found; `swarmctl init DIR` writes DIR/swarm.toml"):
        load_config(tmp_path / "swarm.toml")
