"""The ``swarmctl`` command line: a thin typer layer over the library.

Each command turns ``SwarmError`` into one line on stderr that names the value and the fix,
and into pytest's exit codes (4 for a usage error, 3 for an internal error).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import typer

from swarmctl import __version__

app = typer.Typer(
    name="swarmctl",
    help="Run a test suite across many executors and get the results plain pytest would give.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def setup_logging(verbose: bool, *, quiet: bool = False) -> None:
    level = logging.INFO
    if verbose:
        level = logging.DEBUG
    elif quiet:
        level = logging.ERROR
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # trio-websocket logs every frame at DEBUG and every closed connection at INFO.
    logging.getLogger("trio-websocket").setLevel(logging.WARNING)


def fail(message: str, exit_code: int) -> typer.Exit:
    typer.echo(f"swarmctl: error: {message}", err=True)
    return typer.Exit(exit_code)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    config: Path = typer.Option(
        None, "--config",
        help="Cluster configuration file (the swarm.toml of `swarmctl init`) that every command reads its "
        "coordinators, token and CA certificate from: the same as setting SWARMCTL_CONFIG. Give it before the command.",
    ),
) -> None:
    if version:
        typer.echo(f"swarmctl {__version__}")
        raise typer.Exit(0)
    if config is not None:
        from swarmctl.config import CONFIG_ENV

        if not config.is_file():
            raise fail(f"--config {config}: no such file; create one with `swarmctl init DIR`", USAGE_ERROR)
        # Commands read the file through the environment, as they do when SWARMCTL_CONFIG is set.
        os.environ[CONFIG_ENV] = str(config.resolve())


def find_error(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """Return ``exc`` or the first exception of ``kind`` inside it, if it is an exception group.

    Trio nurseries wrap the errors of their tasks in exception groups; the CLI reports the
    underlying error.
    """
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_error(inner, kind)
            if found is not None:
                return found
    return None


USAGE_ERROR = 4  # pytest's exit code for a usage error; click's own is 2, pytest's "interrupted"


def _click_class(name: str) -> type[Exception]:
    """Return click's exception class ``name`` as typer uses it (typer may bundle its own click)."""
    return next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == name)


def cluster_addresses(cluster: str | None) -> list[tuple[str, int]]:
    """Return the addresses of ``--cluster``, else of the file SWARMCTL_CONFIG names, else of the embedded coordinator."""
    from swarmctl.cluster.transport import parse_addresses
    from swarmctl.config import config_from_environment
    from swarmctl.embedded import data_home, embedded_address
    from swarmctl.errors import UsageError

    if cluster:
        return parse_addresses(cluster)
    configured = config_from_environment()
    if configured is not None and configured.coordinators:
        return parse_addresses(configured.coordinators)
    address = embedded_address(data_home())
    if address is None:
        raise UsageError(
            f"no swarmctl run is running with the data folder {data_home()}; "
            "pass --cluster HOST:PORT to reach a cluster's coordinator"
        )
    return [address]


# The module that registers each command. A command line that names one imports only that
# module, so that `swarmctl up` starts about 0.1 s sooner than with every command imported.
COMMAND_MODULES = {
    "cancel": "cancel", "compare": "history", "dashboard": "dashboard", "doctor": "doctor", "events": "events",
    "executors": "executors", "gossip-key": "gossip_key", "history": "history", "init": "init", "leader": "leader",
    "logs": "logs", "report": "report", "run": "run", "status": "status", "token": "token", "up": "up",
}
ROOT_OPTIONS_WITH_VALUE = ("--config",)


def command_name(argv: list[str]) -> str | None:
    """Return the command that ``argv`` (without the program name) names after the root options, or None."""
    args = iter(argv)
    for arg in args:
        if arg in ROOT_OPTIONS_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def register_commands(argv: list[str]) -> None:
    """Import the module of the command ``argv`` names, or every command's module for help and unknown names."""
    module = COMMAND_MODULES.get(command_name(argv))
    if module is not None:
        importlib.import_module(f"swarmctl.cli.{module}")
        return
    from swarmctl.cli import cancel, dashboard, doctor, events, executors, gossip_key, history, init, leader, logs, report, run, status, token, up  # noqa: F401  (registers the commands)


def main() -> None:
    register_commands(sys.argv[1:])
    usage_error, click_exception = _click_class("UsageError"), _click_class("ClickException")
    try:
        code = app(standalone_mode=False)
    except usage_error as exc:
        exc.show()
        raise SystemExit(USAGE_ERROR) from None
    except click_exception as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        raise SystemExit(2) from None
    exit_now(code or 0)


def exit_now(code: int) -> NoReturn:
    """Flush the output and the logs, then end the process with ``code`` at once.

    The interpreter's own exit frees every object of every imported module one at a time:
    about 70 ms after `swarmctl run`'s imports, spent in each process an embedded run waits for.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed pipe or stream: nothing more can be written to it
    os._exit(code)
