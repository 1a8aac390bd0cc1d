"""``swarmctl init DIR``: create the configuration and credentials of a new cluster."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import typer

from swarmctl.cli import app, fail, setup_logging
from swarmctl.cluster.transport import format_address
from swarmctl.config import CONFIG_FILE
from swarmctl.errors import SwarmError, UsageError
from swarmctl.security import load_secret, write_secret
from swarmctl.tls import CA_CERT_FILE, CA_KEY_FILE, create_ca
from swarmctl.tokens import Role, issue

SECRET_FILE = "cluster.secret"
ADMIN_TOKEN_FILE = "admin.token"
JOIN_TOKEN_FILE = "join.token"


@app.command()
def init(
    directory: Path = typer.Argument(..., help="Folder for the cluster's files; created if missing, must not contain them yet."),
    host: str = typer.Option(
        "127.0.0.1", "--host",
        help="The coordinator's IP address, which executors and clients connect to. A loopback address keeps the "
        "cluster on this machine; any other makes the coordinator listen on every address and advertise this one. "
        "Give three (or five) addresses separated by commas for coordinators that elect a leader among them.",
    ),
    port: int = typer.Option(7400, "--port", help="The coordinator's port."),
) -> None:
    """Create swarm.toml, a cluster secret, a TLS CA, an admin token and an executor join token, and print how to start nodes.

    Every file but the CA certificate and swarm.toml has mode 0600.
    """
    setup_logging(False, quiet=True)
    config_path = directory / CONFIG_FILE
    secret_path = directory / SECRET_FILE
    admin_path = directory / ADMIN_TOKEN_FILE
    join_path = directory / JOIN_TOKEN_FILE
    ca_path = directory / CA_CERT_FILE
    ca_key_path = directory / CA_KEY_FILE
    try:
        hosts = [part.strip() for part in host.split(",") if part.strip()]
        config_text = _config_text(hosts, port)
        for path in (config_path, secret_path, admin_path, join_path, ca_path, ca_key_path):
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
        config_path.write_text(config_text, encoding="utf-8")
    except SwarmError as exc:
        raise fail(str(exc), exc.exit_code) from None

    folder = directory.resolve()
    config = folder / CONFIG_FILE
    typer.echo(
        f"""Created in {folder}:
  {CONFIG_FILE}      the cluster configuration, which names the files below by relative path
  {SECRET_FILE}  the cluster secret: signs tokens and keys gossip; copy it only to coordinator machines
  {CA_KEY_FILE}          the cluster CA key, with which coordinators issue their TLS certificates; coordinators only
  {CA_CERT_FILE}          the cluster CA certificate, which every node and client uses to check the coordinator
  {ADMIN_TOKEN_FILE}     a token with role admin, with no expiry
  {JOIN_TOKEN_FILE}      a token with role join, for executors that do not get the secret

{_start_coordinators(hosts, port, config)}
Start executors (copy {CONFIG_FILE}, {JOIN_TOKEN_FILE} and {CA_CERT_FILE} to each, into one folder):
  swarmctl up --role executor --config {config}
Submit a run, or use any other client command:
  SWARMCTL_CONFIG={config} swarmctl run SUITE
Make tokens for people and CI with fewer rights:
  swarmctl token create --role submit --name ci --secret-file {folder / SECRET_FILE} > ci.token"""
    )


def _config_text(hosts: list[str], port: int) -> str:
    """Return swarm.toml for coordinators reached at ``hosts`` on ``port``, or raise UsageError for an invalid value."""
    if not hosts:
        raise UsageError("--host is empty: give the coordinator's IP address, such as 10.0.0.5")
    if len(set(hosts)) != len(hosts):
        raise UsageError(f"--host {','.join(hosts)!r} names an address twice; give each coordinator's address once")
    addresses = []
    for host in hosts:
        try:
            addresses.append(ipaddress.ip_address(host))
        except ValueError:
            raise UsageError(f"--host {host!r} is invalid: give the coordinator's IP address, such as 10.0.0.5") from None
    if not 0 < port < 65536:
        raise UsageError(f"--port {port} is invalid: it must be between 1 and 65535")
    reach = ", ".join(f'"{format_address(host, port)}"' for host in hosts)
    wildcard = format_address("::" if addresses[0].version == 6 else "0.0.0.0", port)
    if len(hosts) > 1:
        # Each coordinator passes its own address with --listen or --advertise. Loopback
        # coordinators share one machine and keep listening on loopback.
        listen = format_address(hosts[0], port) if addresses[0].is_loopback else wildcard
        advertise = ""
    elif addresses[0].is_loopback:
        listen, advertise = format_address(hosts[0], port), ""
    else:
        listen, advertise = wildcard, f'advertise = "{hosts[0]}"\n'
    return (
        "# The swarmctl cluster configuration. Relative paths are relative to this file's folder.\n"
        "# `swarmctl up --config FILE` takes every option it is not given from here, and client\n"
        "# commands read the file that SWARMCTL_CONFIG names.\n\n"
        "[cluster]\n"
        f"coordinators = [{reach}]\n"
        f'ca_file = "{CA_CERT_FILE}"\n'
        f'token_file = "{ADMIN_TOKEN_FILE}"\n\n'
        "[coordinator]\n"
        f'listen = "{listen}"\n'
        f"{advertise}"
        f'secret_file = "{SECRET_FILE}"\n'
        f'ca_key_file = "{CA_KEY_FILE}"\n\n'
        "[executor]\n"
        f'token_file = "{JOIN_TOKEN_FILE}"\n'
    )


def _start_coordinators(hosts: list[str], port: int, config: Path) -> str:
    """Return the instructions for starting the coordinators of ``hosts``."""
    if len(hosts) == 1:
        return f"Start a coordinator (with the whole folder):\n  swarmctl up --role coordinator --config {config}"
    # Loopback addresses share one machine, so each coordinator listens on its own; other
    # coordinators listen on every address of their machine and advertise theirs.
    loopback = ipaddress.ip_address(hosts[0]).is_loopback
    own = [
        f"--listen {format_address(host, port)} --data-dir coordinator-{i}" if loopback else f"--advertise {host}"
        for i, host in enumerate(hosts, 1)
    ]
    commands = "\n".join(f"  swarmctl up --role coordinator --config {config} {option}" for option in own)
    return f"Start the {len(hosts)} coordinators, one per address (each with the whole folder):\n{commands}"


def _write_private(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(text + "\n")
