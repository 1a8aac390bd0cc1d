"""``swarmctl doctor``: check this machine before it runs a node or a suite."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import typer

from swarmctl.cli import app, setup_logging
from swarmctl.cli.report import cli_errors
from swarmctl.cluster.transport import parse_address
from swarmctl.doctor import CHECK_NAMES, CheckResult, run_checks
from swarmctl.embedded import data_home
from swarmctl.errors import UsageError


def default_listen_address() -> tuple[str, int]:
    """Return the host and port of ``swarmctl up --listen``'s default, so the two never disagree."""
    from swarmctl.cli.up import up

    return parse_address(inspect.signature(up).parameters["listen"].default.default)


@app.command()
def doctor(
    python: str = typer.Option("python3", "--python", help="The suite's Python interpreter, a path or a name looked up on PATH."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Data folder to check for write access and free space. Default: $SWARMCTL_HOME or the user data folder."),
    host: str = typer.Option(None, "--host", help="Address to check the ports on. Default: the host of swarmctl up's default --listen, 127.0.0.1."),
    ports: list[int] = typer.Option(None, "--port", min=1, max=65535, help="Port to check for TCP and UDP, repeatable. Default: the port of swarmctl up's default --listen, 7400."),
    secret_file: Path = typer.Option(
        None, "--secret-file", envvar="SWARMCTL_SECRET_FILE",
        help="Cluster secret file to check: it must exist, have at least 32 characters, and mode 0600.",
    ),
    skip: list[str] = typer.Option(
        None, "--skip", help=f"A check to leave out, repeatable: {', '.join(CHECK_NAMES)}. For example python on a host whose suites run in containers.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of lines."),
) -> None:
    """Check the suite's Python and pytest, glibc, free disk, ports, Docker and the secret file.

    Exits 0 when nothing is a problem, 1 otherwise. Docker is reported but never a problem.
    """
    setup_logging(False, quiet=True)
    with cli_errors():
        unknown = sorted(set(skip or ()) - set(CHECK_NAMES))
        if unknown:
            raise UsageError(f"--skip {unknown[0]!r} is invalid: use one of {', '.join(CHECK_NAMES)}")
        default_host, default_port = default_listen_address()
        results = run_checks(
            python=python,
            data_dir=(data_dir or data_home()).expanduser().absolute(),
            host=host or default_host,
            ports=ports or [default_port],
            secret_file=secret_file,
            skip=frozenset(skip or ()),
        )
    problems = sum(result.problem for result in results)
    if as_json:
        typer.echo(json.dumps({"ok": problems == 0, "problems": problems, "checks": [r.to_json() for r in results]}, indent=2))
    else:
        for result in results:
            typer.echo(format_result(result))
        typer.echo("no problems found" if problems == 0 else f"{problems} problem{'s' if problems != 1 else ''} found")
    raise typer.Exit(0 if problems == 0 else 1)


def format_result(result: CheckResult) -> str:
    """Return the lines of one check: ``ok``, ``problem`` or ``info``, then ``fix`` when there is one."""
    if result.ok:
        status = "ok"
    elif result.informational:
        status = "info"
    else:
        status = "problem"
    lines = [f"{status:<8} {result.name}: {result.detail}"]
    if result.fix and not result.ok:
        lines.append(f"{'fix':<8} {result.fix}")
    return "\n".join(lines)
