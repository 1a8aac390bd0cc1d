"""``swarmctl up``: start a long-running coordinator or executor node."""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
from enum import Enum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio
import typer

from swarmctl.cli import app, fail, find_error, setup_logging
from swarmctl.cluster.transport import format_address, parse_address, parse_addresses
from swarmctl.config import CONFIG_ENV, ClusterConfig, load_config
from swarmctl.coordinator.settings import CoordinatorSettings
from swarmctl.durations import parse_duration
from swarmctl.embedded import data_home
from swarmctl.errors import SwarmError, UsageError
from swarmctl.labels import parse_labels
from swarmctl.limits import NAMES as LIMIT_NAMES, Limits, parse_limits
from swarmctl.security import load_secret
from swarmctl.tls import client_context, server_context, server_hosts

if TYPE_CHECKING:
    from swarmctl.protocol import SuiteSpec

log = logging.getLogger(__name__)

COORDINATOR_LOCK = "coordinator.lock"
DRAIN_TIMEOUT = "60s"  # how long a SIGTERM lets an executor finish its tests


class Role(str, Enum):
    coordinator = "coordinator"
    executor = "executor"


@app.command()
def up(
    ctx: typer.Context,
    role: Role = typer.Option(..., "--role", help="What this node does: coordinator or executor."),
    config: Path = typer.Option(
        None, "--config", envvar=CONFIG_ENV,
        help="Cluster configuration file (swarm.toml from `swarmctl init`). Options not given on the command line or "
        "in their environment variables are taken from it.",
    ),
    listen: str = typer.Option("127.0.0.1:7400", "--listen", help="Coordinator: HOST:PORT to serve executors and clients on."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Folder for state, bundles and logs. Default: $SWARMCTL_HOME or the user data folder."),
    join: str = typer.Option(None, "--join", help="Executor: coordinator addresses, HOST:PORT[,HOST:PORT...]."),
    peers: str = typer.Option(
        None, "--peers",
        help="Coordinator: the HOST:PORT of every coordinator-eligible node, this one's included, the same list on each. "
        "They elect a leader and replicate its state, and keep working while a majority is up, so give three or five. "
        "Default: the coordinators listed in --config.",
    ),
    slots: int = typer.Option(
        os.cpu_count() or 1, "--slots", show_default=False,
        help="Executor: tests run at once (one pytest worker each). Default: CPU count.",
    ),
    labels: str = typer.Option("", "--labels", help="Executor: labels as k=v,k=v, for example os=linux,browser=chromium."),
    node_id: str = typer.Option(None, "--id", help="Executor: node id. Default: hostname plus a random suffix."),
    lease: str = typer.Option(
        "5s", "--lease",
        help="Coordinator: how long a shard stays with an executor that stops sending heartbeats (killed, frozen or cut off) before it is reassigned.",
    ),
    unmatched_timeout: str = typer.Option(
        "60s", "--unmatched-timeout",
        help="Coordinator: how long a test whose required labels no executor has waits before it is reported as an error.",
    ),
    advertise: str = typer.Option(
        None, "--advertise",
        help="Coordinator: the IP address executors reach it at, for gossip and, with --peers, to find this node in the "
        "list. Needed when --listen binds every address (0.0.0.0).",
    ),
    secret_file: Path = typer.Option(
        None, "--secret-file", envvar="SWARMCTL_SECRET_FILE",
        help="File with the cluster secret (mode 0600), the same on every node. It keys the gossip membership and "
        "signs access tokens: a coordinator with a secret accepts only peers with a valid token. Without it the node "
        "does not gossip, and a coordinator listens on loopback addresses only.",
    ),
    token_file: Path = typer.Option(
        None, "--token-file", envvar="SWARMCTL_TOKEN_FILE",
        help="Executor: file with a join token (`swarmctl token create --role join`), for an executor that is not "
        "given the cluster secret. Default: a token made from --secret-file.",
    ),
    ca_file: Path = typer.Option(
        None, "--ca-file", envvar="SWARMCTL_CA_FILE",
        help="The cluster CA certificate (ca.pem from `swarmctl init`). A coordinator serves TLS with a certificate it "
        "issues itself from the CA (it also needs --ca-key-file); an executor connects over TLS and checks the "
        "coordinator's certificate against it.",
    ),
    ca_key_file: Path = typer.Option(
        None, "--ca-key-file", envvar="SWARMCTL_CA_KEY_FILE",
        help="Coordinator: the cluster CA key (ca.key, mode 0600), with which it issues its TLS certificate.",
    ),
    drain_timeout: str = typer.Option(
        DRAIN_TIMEOUT, "--drain-timeout",
        help="Executor: on SIGTERM, how long to finish running tests before stopping anyway. A second SIGTERM, or SIGINT, stops at once.",
    ),
    limit: list[str] = typer.Option(
        None, "--limit",
        help="A limit on what the node accepts, as NAME=VALUE; repeat for several. Names: "
        + ", ".join(LIMIT_NAMES) + ". Default: \\[limits] of --config, else the values in docs/security.md.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
) -> None:
    """Start a coordinator or an executor and run until SIGINT or SIGTERM."""
    setup_logging(verbose)
    try:
        configured = load_config(config) if config is not None else None
        limits = parse_limits(configured.tables.get("limits") if configured else None, limit or [])
        if configured is not None:
            merged = _merge_config(ctx, configured, role)
            (listen, data_dir, join, peers, slots, labels, lease, unmatched_timeout, advertise, secret_file, token_file,
             ca_file, ca_key_file, drain_timeout) = (merged[name] for name in CONFIG_KEYS)
        folder = (data_dir or data_home()).resolve()
        secret = load_secret(secret_file) if secret_file else None
        if secret is None:
            log.info("no --secret-file: this node does not gossip; lost executors are found by their leases alone")
        if role is Role.coordinator:
            host, port = parse_address(listen)
            _check_exposure(host, secret is not None, ca_file is not None)
            if secret is not None and advertise is None and _is_unspecified(host):
                # Checked here, not when gossip starts: a voter starts gossip only once it
                # leads, and would fail then.
                raise UsageError(
                    f"--listen {host} binds every address, so gossip needs --advertise IP: "
                    "the address at which executors reach this coordinator"
                )
            settings = CoordinatorSettings(
                lease_s=_positive_duration(lease, "--lease"),
                unmatched_timeout_s=_positive_duration(unmatched_timeout, "--unmatched-timeout"),
            )
            ssl_context = _server_tls(folder, host, advertise, ca_file, ca_key_file)
            voters = _voters(peers, host, port, advertise)
            client_ssl = client_context(ca_file) if ca_file else None
            trio.run(
                _until_signal,
                _run_coordinator(folder, host, port, settings, secret, advertise, ssl_context, voters, client_ssl, limits),
            )
        else:
            ssl_context = client_context(ca_file) if ca_file else None
            executor = _make_executor(folder, join, slots, parse_labels(labels), node_id, secret, token_file, ssl_context, limits)
            trio.run(_serve_executor, executor, _positive_duration(drain_timeout, "--drain-timeout"))
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        raise fail(str(error), error.exit_code) from None


# Option of `swarmctl up` -> (table, key) in swarm.toml; "node" is the table of --role.
CONFIG_KEYS: dict[str, tuple[str, str]] = {
    "listen": ("coordinator", "listen"),
    "data_dir": ("node", "data_dir"),
    "join": ("cluster", "coordinators"),
    "peers": ("cluster", "coordinators"),
    "slots": ("executor", "slots"),
    "labels": ("executor", "labels"),
    "lease": ("coordinator", "lease"),
    "unmatched_timeout": ("coordinator", "unmatched_timeout"),
    "advertise": ("coordinator", "advertise"),
    "secret_file": ("node", "secret_file"),
    "token_file": ("executor", "token_file"),
    "ca_file": ("cluster", "ca_file"),
    "ca_key_file": ("coordinator", "ca_key_file"),
    "drain_timeout": ("executor", "drain_timeout"),
}
PATH_OPTIONS = {"data_dir", "secret_file", "token_file", "ca_file", "ca_key_file"}


def _merge_config(ctx: typer.Context, config: ClusterConfig, role: Role) -> dict:
    """Return the options, with those left at their defaults taken from ``config`` where it sets them."""
    merged = {name: ctx.params[name] for name in CONFIG_KEYS}
    for name in PATH_OPTIONS:
        # ctx.params contains click's values, and typer 0.28 converts paths to Path only in the call.
        if merged[name] is not None:
            merged[name] = Path(merged[name])
    for name, (table, key) in CONFIG_KEYS.items():
        # Compared by name: typer may bundle its own click, whose enum is another class.
        if ctx.get_parameter_source(name).name != "DEFAULT":
            continue  # given on the command line or in its environment variable
        value = config.get(role.value if table == "node" else table, key)
        if value is None:
            continue
        if name in ("join", "peers"):
            value = config.coordinators
        elif name in PATH_OPTIONS:
            value = Path(value)
        merged[name] = value
    return merged


def _server_tls(folder: Path, host: str, advertise: str | None, ca_file: Path | None, ca_key_file: Path | None):
    """Return the coordinator's TLS server context, or None without --ca-file."""
    if ca_file is None:
        if ca_key_file is not None:
            raise UsageError("--ca-key-file needs --ca-file, the CA certificate that goes with the key")
        return None
    if ca_key_file is None:
        raise UsageError(f"--ca-file {ca_file} needs --ca-key-file too: the coordinator issues its TLS certificate with the CA key")
    return server_context(ca_file, ca_key_file, server_hosts(host, advertise), folder / "tls")


def _check_exposure(host: str, has_secret: bool, has_tls: bool) -> None:
    """Refuse to serve a non-loopback address without a cluster secret, since nothing would check who connects."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return
    if not has_secret:
        raise UsageError(
            f"--listen {host} is not a loopback address, and without --secret-file anyone who reaches it could run "
            "code on the executors. Create a secret (swarmctl init DIR, or: python3 -c 'import secrets; "
            "print(secrets.token_hex(32))' > cluster.secret; chmod 600 cluster.secret) and pass --secret-file on every node"
        )
    if not has_tls:
        log.warning(
            "listening on %s without TLS: tokens, suites and test output cross the network in clear text; "
            "pass --ca-file and --ca-key-file to encrypt them", host,
        )


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _positive_duration(text: str, option: str) -> float:
    seconds = parse_duration(text, option)
    if seconds <= 0:
        raise UsageError(f"{option} {text!r} is invalid: it must be longer than 0s")
    return seconds


def _voters(peers: str | None, host: str, port: int, advertise: str | None) -> tuple[list[str], str] | None:
    """Return the voter ids and this node's id, or None for a single coordinator."""
    if not peers:
        return None
    voters = [format_address(*address) for address in parse_addresses(peers)]
    if len(voters) < 2:
        return None
    if len(set(voters)) != len(voters):
        raise UsageError(f"--peers {peers!r} names a node twice; list each coordinator-eligible node once")
    # This node is the entry with its advertised or listening address, or its host name
    # (as in Docker Compose, where nodes reach each other by service host names).
    names = [advertise or host, host, socket.gethostname()]
    own = next((format_address(name, port) for name in names if format_address(name, port) in voters), None)
    if own is None:
        raise UsageError(
            f"--peers {peers!r} does not include this node: none of {format_address(advertise or host, port)} "
            f"(--advertise or --listen) or {format_address(socket.gethostname(), port)} (host name); list every "
            "coordinator-eligible node, this one included, with the port of its --listen"
        )
    return voters, own


async def _run_coordinator(
    folder: Path, host: str, port: int, settings: CoordinatorSettings, secret: bytes | None, advertise: str | None,
    ssl_context: ssl.SSLContext | None, voters: tuple[list[str], str] | None, client_ssl: ssl.SSLContext | None,
    limits: Limits,
) -> None:
    from swarmctl.coordinator import http_api  # noqa: F401 (imported before the collector is tuned)
    from swarmctl.coordinator.node import Coordinator, tune_garbage_collection
    from swarmctl.coordinator.replica import Replica

    if advertise is not None:
        try:
            ipaddress.ip_address(advertise)
        except ValueError:
            raise UsageError(f"--advertise {advertise!r} is invalid: give an IP address, such as 10.0.0.5") from None
    lock = _lock_data_folder(folder)  # held until the process exits
    tune_garbage_collection()
    if voters is None:
        coordinator = Coordinator(folder, settings=settings, secret=secret, advertise=advertise, limits=limits)
        try:
            await coordinator.serve(host, port, ssl_context=ssl_context)
        finally:
            coordinator.close()
    else:
        replica = Replica(
            folder, voters[1], voters[0], secret=secret, client_ssl=client_ssl, bundle_limits=limits.bundle(),
            make_coordinator=partial(Coordinator, folder, settings=settings, secret=secret, advertise=advertise, limits=limits),
        )
        await replica.serve(host, port, ssl_context=ssl_context)
    await trio.sleep_forever()


def _lock_data_folder(folder: Path):
    """Return the open lock file that makes this process the only coordinator on ``folder``.

    Two coordinators on one folder would overwrite each other's state and votes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / COORDINATOR_LOCK, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise UsageError(
            f"the data folder {folder} is in use by the coordinator with pid {holder}; give each coordinator "
            "its own --data-dir"
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _make_executor(
    folder: Path, join: str | None, slots: int, labels: dict[str, str], node_id: str | None, secret: bytes | None,
    token_file: Path | None, ssl_context: ssl.SSLContext | None, limits: Limits,
):
    from swarmctl.executor.node import Executor, default_executor_id

    if not join:
        raise UsageError("an executor needs --join HOST:PORT with the coordinator's address")
    if slots < 1:
        raise UsageError(f"--slots {slots} is invalid: it must be at least 1")
    return Executor(
        executor_id=node_id or default_executor_id(), join=parse_addresses(join), slots=slots, labels=labels,
        data_dir=folder, secret=secret, token_file=token_file, ssl_context=ssl_context, bundle_limits=limits.bundle(),
    )


def executor_main(
    folder: Path, join: str, node_id: str, labels: dict[str, str], secret_file: Path, *, verbose: bool,
    prestart: SuiteSpec | None = None,
) -> int:
    """Run a local executor of the embedded default in this (forked) process; return its exit code.

    The same as ``swarmctl up --role executor`` with one slot and the default limits. With
    ``prestart``, the executor starts that suite's pytest worker before it connects.
    """
    setup_logging(verbose)
    try:
        executor = _make_executor(folder, join, 1, labels, node_id, load_secret(secret_file), None, None, parse_limits(None, []))
        if prestart is not None:
            executor.prepare(prestart)
        trio.run(_serve_executor, executor, parse_duration(DRAIN_TIMEOUT, "--drain-timeout"))
    except BaseException as exc:
        error = find_error(exc, SwarmError)
        if error is None:
            raise
        print(f"swarmctl: error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


async def _serve_executor(executor, drain_timeout: float) -> None:
    """Run the executor; the first SIGTERM drains it, SIGINT or a second SIGTERM stops it at once."""
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if signum == signal.SIGTERM and not executor.draining:
                        log.info("received %s; draining (at most %.0fs, send it again to stop now)", name, drain_timeout)
                        executor.drain(f"{name} received")
                        nursery.start_soon(stop_after, drain_timeout)
                        continue
                    log.info("received %s; stopping", name)
                    nursery.cancel_scope.cancel()
                    return

        async def stop_after(seconds: float) -> None:
            await trio.sleep(seconds)
            log.warning("drain did not finish within %.0fs; stopping", seconds)
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_signals)
        await executor.run()
        nursery.cancel_scope.cancel()
    log.info("stopped")


async def _until_signal(main) -> None:
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s; stopping", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch_signals)
        await main
        nursery.cancel_scope.cancel()
    log.info("stopped")
