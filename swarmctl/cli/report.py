"""``swarmctl report``: write a past run's report from the state database.

The report commands (``report``, ``history``, ``compare``) read ``state.db`` in a data
folder read-only, so they work while a run is going on and on a coordinator's folder.
"""

from __future__ import annotations

import sys
from urllib.parse import quote
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from swarmctl import protocol
from swarmctl.cli import app, fail, setup_logging
from swarmctl.cluster.transport import parse_addresses
from swarmctl.config import config_from_environment
from swarmctl.embedded import data_home
from swarmctl.errors import SwarmError, UsageError
from swarmctl.reports import write_report_file
from swarmctl.reports.formats import FORMATS, render_report
from swarmctl.reports.run_store import RunStore, open_run_store

DATA_DIR_HELP = (
    "Data folder whose state.db holds the runs: a coordinator's --data-dir. "
    "Default: the coordinators of the file SWARMCTL_CONFIG names, through their HTTP API; without one, "
    "$SWARMCTL_HOME or the user data folder, where swarmctl run keeps its runs."
)
REMOTE_HELP = (
    "Ask the coordinators at HOST:PORT[,HOST:PORT...] through their HTTP API instead of reading a local data folder. "
    "The token and CA certificate are found as for every client command (SWARMCTL_TOKEN_FILE, SWARMCTL_CA_FILE)."
)
RUN_HELP = "A run id as swarmctl run printed it, `last` for the newest run, or `last~N` for the N-th before it."

# The format -o implies when --format is not given.
FORMAT_BY_SUFFIX = {".xml": "junit", ".json": "json", ".html": "html", ".htm": "html", ".md": "md"}
DEFAULT_FORMAT = "md"

if TYPE_CHECKING:
    from swarmctl.api_client import ApiClient

T = TypeVar("T")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn a SwarmError into ``swarmctl: error: ...`` on stderr and its exit code."""
    try:
        yield
    except SwarmError as exc:
        raise fail(str(exc), exc.exit_code) from None


def remote_cluster(cluster: str | None, data_dir: Path | None) -> str | None:
    """Return the coordinators to ask: ``--cluster``, else those of the SWARMCTL_CONFIG file unless ``--data-dir`` was given."""
    if cluster or data_dir is not None:
        return cluster
    configured = config_from_environment()
    return configured.coordinators if configured is not None and configured.coordinators else None


def remote(cluster: str) -> ApiClient:
    """Make a client of the HTTP API of the coordinators in ``--cluster``."""
    from swarmctl.api_client import ApiClient  # urllib's HTTP stack: only for commands given --cluster

    return ApiClient.from_environment(parse_addresses(cluster))


def read_store(data_dir: Path | None, reader: Callable[[RunStore], T]) -> T:
    """Open the state database of ``data_dir`` (default: the embedded data folder) and call ``reader``."""
    folder = (data_dir or data_home()).expanduser()
    with open_run_store(folder) as store:
        return reader(store)


@app.command()
def report(
    run_id: str = typer.Argument(..., help=RUN_HELP),
    report_format: str = typer.Option(
        None, "--format", "-f",
        help="junit, json, html or md (Markdown). Default: from the -o file's extension, else md.",
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Write the report to this file instead of stdout."),
    data_dir: Path = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    cluster: str = typer.Option(None, "--cluster", help=REMOTE_HELP),
) -> None:
    """Write the report of a past run as JUnit XML, JSON (as swarmctl run --json), HTML or Markdown."""
    setup_logging(False, quiet=True)
    with cli_errors():
        chosen = _choose_format(report_format, output)
        cluster = remote_cluster(cluster, data_dir)
        if cluster:
            data, headers = remote(cluster).get_response(f"/v1/runs/{quote(run_id, safe='')}/report", {"format": chosen})
            shown_id = headers.get(protocol.RUN_ID_HEADER, run_id)
        else:
            run = read_store(data_dir, lambda store: store.load(run_id))
            data = render_report(run, chosen)
            shown_id = run.header.run_id
        if output is None:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            try:
                write_report_file(output, data)
            except OSError as exc:
                raise UsageError(f"cannot write the report to {output}: {exc.strerror or exc}") from exc
    if output is not None:
        typer.echo(f"wrote the {chosen} report of run {shown_id} to {output}", err=True)


def _choose_format(report_format: str | None, output: Path | None) -> str:
    if report_format is not None:
        if report_format not in FORMATS:
            raise UsageError(f"--format {report_format!r} is invalid: use one of {', '.join(FORMATS)}")
        return report_format
    if output is not None:
        return FORMAT_BY_SUFFIX.get(output.suffix.lower(), DEFAULT_FORMAT)
    return DEFAULT_FORMAT
