"""``swarmctl token create|revoke``: issue access tokens from the cluster secret, and revoke them."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

import trio
import typer

from swarmctl.cli import app, cluster_addresses, fail, find_error, setup_logging
from swarmctl.cli.executors import CLUSTER_HELP
from swarmctl.credentials import SECRET_FILE_ENV
from swarmctl.durations import parse_duration
from swarmctl.errors import SwarmError, UsageError
from swarmctl.security import load_secret
from swarmctl.tokens import issue, parse_role

token_app = typer.Typer(help="Create and revoke access tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")

TOKEN_ID = re.compile(r"[0-9a-f]{16}")
SECRET_HELP = "File with the cluster secret that signs the token (cluster.secret from `swarmctl init`). Default: $SWARMCTL_SECRET_FILE."


@token_app.command("create")
def create(
    role: str = typer.Option(..., "--role", help="read (watch and query), submit (also run and cancel own runs), admin (everything), or join (an executor)."),
    ttl: str = typer.Option("30d", "--ttl", help="How long the token is valid, such as 12h or 90d; 'never' for no expiry."),
    name: str = typer.Option("", "--name", help="Whom the token is for; stored in the token and shown in coordinator logs."),
    secret_file: Path = typer.Option(None, "--secret-file", help=SECRET_HELP),
) -> None:
    """Print a new token. Its id and expiry go to stderr and the token alone to stdout, for scripts:

    swarmctl token create --role submit --name ci > ci.token; chmod 600 ci.token
    """
    setup_logging(False, quiet=True)
    try:
        parsed_role = parse_role(role)
        ttl_s = None if ttl == "never" else parse_duration(ttl, "--ttl")
        if ttl_s is not None and ttl_s <= 0:
            raise UsageError(f"--ttl {ttl!r} is invalid: it must be longer than 0s, or 'never'")
        secret_path = _secret_path(secret_file)
        text, token = issue(load_secret(secret_path), parsed_role, ttl_s=ttl_s, subject=name)
    except SwarmError as exc:
        raise fail(str(exc), exc.exit_code) from None
    expiry = "never expires" if token.expires_at is None else f"expires {_format_time(token.expires_at)}"
    typer.echo(f"token {token.token_id}: role {token.role}, {expiry}, signed with the secret in {secret_path}", err=True)
    typer.echo(text)


@token_app.command("revoke")
def revoke(
    token_id: str = typer.Argument(..., help="The token's id, printed by `swarmctl token create`."),
    cluster: str = typer.Option(None, "--cluster", help=CLUSTER_HELP),
) -> None:
    """Make the coordinator reject a token from now on and close its connections (needs an admin token)."""
    from swarmctl.client import revoke_token

    setup_logging(False, quiet=True)
    try:
        # The coordinator keeps no list of issued tokens, so a mistyped id would be revoked without complaint.
        if not TOKEN_ID.fullmatch(token_id):
            raise UsageError(f"token id {token_id!r} is invalid: `swarmctl token create` prints ids of 16 hexadecimal digits")
        closed = trio.run(revoke_token, cluster_addresses(cluster), token_id)
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code) from None
    typer.echo(f"token {token_id} revoked; {closed} connections closed")


def _secret_path(secret_file: Path | None) -> Path:
    # The embedded default's own secret is deliberately not a fallback: a token signed with it
    # would be rejected by every other cluster, long after this command reported success.
    if secret_file is not None:
        return secret_file
    if os.environ.get(SECRET_FILE_ENV):
        return Path(os.environ[SECRET_FILE_ENV])
    raise UsageError(
        f"no cluster secret to sign the token with: pass --secret-file with the cluster's secret, set {SECRET_FILE_ENV}, "
        "or create a cluster with `swarmctl init DIR`"
    )


def _format_time(unix_time: float) -> str:
    return datetime.datetime.fromtimestamp(unix_time, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
