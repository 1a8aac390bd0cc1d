"""``swarmctl init DIR``: create the credentials of a new cluster."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from swarmctl.cli import app, fail, setup_logging
from swarmctl.errors import SwarmError, UsageError
from swarmctl.security import load_secret, write_secret
from swarmctl.tls import CA_CERT_FILE, CA_KEY_FILE, create_ca
from swarmctl.tokens import Role, issue

SECRET_FILE = "cluster.secret"
ADMIN_TOKEN_FILE = "admin.token"
JOIN_TOKEN_FILE = "join.token"


@app.command()
def init(
    directory: Path = typer.Argument(..., help="Folder for the cluster's credentials; created if missing, must not contain them yet."),
) -> None:
    """Create a cluster secret, a TLS CA, an admin token and an executor join token, and print how to start nodes.

    Every file but the CA certificate has mode 0600.
    """
    setup_logging(False, quiet=True)
    secret_path = directory / SECRET_FILE
    admin_path = directory / ADMIN_TOKEN_FILE
    join_path = directory / JOIN_TOKEN_FILE
    ca_path = directory / CA_CERT_FILE
    ca_key_path = directory / CA_KEY_FILE
    try:
        for path in (secret_path, admin_path, join_path, ca_path, ca_key_path):
            if path.exists():
                raise UsageError(f"{path} already exists; choose an empty folder, or remove the old credentials first")
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"cannot create {directory}: {exc.strerror or exc}") from None
        write_secret(secret_path)
        secret = load_secret(secret_path)
        admin, _ = issue(secret, Role.ADMIN, ttl_s=None, subject="swarmctl init")
        join, _ = issue(secret, Role.JOIN, ttl_s=None, subject="swarmctl init")
        _write_private(admin_path, admin)
        _write_private(join_path, join)
        create_ca(ca_path, ca_key_path)
    except SwarmError as exc:
        raise fail(str(exc), exc.exit_code) from None

    folder = directory.resolve()
    typer.echo(
        f"""Created in {folder}:
  {SECRET_FILE}  the cluster secret: signs tokens and keys gossip; copy it only to coordinator machines
  {CA_KEY_FILE}          the cluster CA key, with which coordinators issue their TLS certificates; coordinators only
  {CA_CERT_FILE}          the cluster CA certificate, which every node and client uses to check the coordinator
  {ADMIN_TOKEN_FILE}     a token with role admin, with no expiry
  {JOIN_TOKEN_FILE}      a token with role join, for executors that do not get the secret

Start a coordinator:
  swarmctl up --role coordinator --listen 0.0.0.0:7400 --advertise IP --secret-file {folder / SECRET_FILE} \\
    --ca-file {folder / CA_CERT_FILE} --ca-key-file {folder / CA_KEY_FILE}
Start executors (copy {JOIN_TOKEN_FILE} and {CA_CERT_FILE}, or also the secret to gossip):
  swarmctl up --role executor --join IP:7400 --token-file {folder / JOIN_TOKEN_FILE} --ca-file {folder / CA_CERT_FILE}
Submit a run:
  SWARMCTL_TOKEN_FILE={folder / ADMIN_TOKEN_FILE} SWARMCTL_CA_FILE={folder / CA_CERT_FILE} swarmctl run SUITE --cluster IP:7400
Make tokens for people and CI with fewer rights:
  swarmctl token create --role submit --name ci --secret-file {folder / SECRET_FILE} > ci.token"""
    )


def _write_private(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(text + "\n")
