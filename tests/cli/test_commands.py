"""The command line's entry point: which command modules it imports, and how the process exits."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from swarmctl.cli import COMMAND_MODULES, app, command_name, register_commands


def registered_modules() -> dict[str, str]:
    register_commands([])
    commands = {command.callback.__name__: command.callback.__module__ for command in app.registered_commands}
    groups = {group.name: group.typer_instance.registered_commands[0].callback.__module__ for group in app.registered_groups}
    return {**commands, **groups}


def test_command_modules_match_registrations():
    expected = {name: f"swarmctl.cli.{module}" for name, module in COMMAND_MODULES.items()}
    assert registered_modules() == expected


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["up", "--role", "executor"], "up"),
        (["--config", "swarm.toml", "run", "suite"], "run"),
        (["--version"], None),
        (["--help"], None),
        ([], None),
        (["gossip-key", "list"], "gossip-key"),
    ],
)
def test_command_name_after_root_options(argv, name):
    assert command_name(argv) == name


def test_named_command_imports_only_its_module():
    code = (
        "import sys\n"
        "from swarmctl.cli import register_commands\n"
        "register_commands(['up', '--role', 'executor'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('swarmctl.cli.')))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "['swarmctl.cli.up']"


def test_exit_flushes_output_to_pipe():
    completed = subprocess.run([sys.executable, "-m", "swarmctl", "--version"], capture_output=True, text=True)

    assert completed.returncode == 0
    assert completed.stdout.startswith("swarmctl ")


def test_exit_keeps_error_code_and_message(tmp_path):
    env = {**os.environ, "SWARMCTL_HOME": str(tmp_path / "empty")}
    completed = subprocess.run(
        [sys.executable, "-m", "swarmctl", "report", "no-such-run"], capture_output=True, text=True, env=env
    )

    assert completed.returncode == 4
    assert completed.stderr.startswith("swarmctl: error: no state database at ")
