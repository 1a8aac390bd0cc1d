"""Lookup of the token that clients and executors send in their hello.

A client (``swarmctl run``, ``executors``, ``dashboard``, ``events``, ``token revoke``) uses
the first of:

1. ``SWARMCTL_TOKEN``: the token itself, for CI systems that hand secrets over as variables;
2. ``SWARMCTL_TOKEN_FILE``: a file that contains a token;
3. ``SWARMCTL_SECRET_FILE``: the cluster secret, from which it makes itself a short-lived
   admin token (a holder of the secret can make any token anyway);
4. the ``cluster.token_file`` of the file ``SWARMCTL_CONFIG`` names;
5. the embedded default's secret, ``$SWARMCTL_HOME/cluster.secret``, if it exists.

With none of them it sends no token, which a coordinator without a secret accepts. An
executor uses its join token file (``--token-file``) if given, else makes a join token from
its ``--secret-file``.

Clients connect over TLS when ``SWARMCTL_CA_FILE``, or else the configuration's
``cluster.ca_file``, names the cluster CA certificate.
"""

from __future__ import annotations

import logging
import os
import stat
import ssl
from pathlib import Path

from swarmctl.config import config_from_environment
from swarmctl.errors import UsageError
from swarmctl.security import load_secret
from swarmctl.tls import client_context
from swarmctl.tokens import MAX_TOKEN_CHARS, Role, issue

log = logging.getLogger(__name__)

TOKEN_ENV = "SWARMCTL_TOKEN"
TOKEN_FILE_ENV = "SWARMCTL_TOKEN_FILE"
SECRET_FILE_ENV = "SWARMCTL_SECRET_FILE"
CA_FILE_ENV = "SWARMCTL_CA_FILE"
SELF_ISSUED_TTL_S = 3600.0  # tokens a node makes for its own connections; a new one is made per connection


def read_token_file(path: Path) -> str:
    """Return the token in ``path``; raise UsageError when the file is missing, unreadable or empty."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"token file {path} not found; create a token with `swarmctl token create --role ROLE > {path}`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read token file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text or len(text) > MAX_TOKEN_CHARS:
        raise UsageError(f"token file {path} does not contain a token; create one with `swarmctl token create`")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is accessible to group or others (mode %03o); restrict it with: chmod 600 %s",
                    path, stat.S_IMODE(mode), path)
    return text


def client_token(embedded_secret: Path | None) -> str:
    """Return the token a client sends, found as the module docstring lists, or "" when there is none."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return value
    token_file = os.environ.get(TOKEN_FILE_ENV)
    if token_file:
        return read_token_file(Path(token_file))
    secret_file = os.environ.get(SECRET_FILE_ENV)
    if secret_file:
        return _self_issued(load_secret(Path(secret_file)), Role.ADMIN)
    configured = config_from_environment()
    if configured is not None and configured.get("cluster", "token_file"):
        return read_token_file(Path(configured.get("cluster", "token_file")))
    if embedded_secret is not None and embedded_secret.is_file():
        return _self_issued(load_secret(embedded_secret), Role.ADMIN)
    return ""


def executor_token(secret: bytes | None, token_file: Path | None) -> str:
    """Return the token an executor sends: its join token file, else one made from the secret, else ""."""
    if token_file is not None:
        return read_token_file(token_file)
    if secret is not None:
        return _self_issued(secret, Role.JOIN)
    return ""


def _self_issued(secret: bytes, role: Role) -> str:
    text, _ = issue(secret, role, ttl_s=SELF_ISSUED_TTL_S, subject=f"self-issued by pid {os.getpid()}")
    return text


def client_tls() -> ssl.SSLContext | None:
    """Return the TLS context for connections to coordinators, or None when no CA certificate is configured."""
    ca_file = os.environ.get(CA_FILE_ENV)
    if not ca_file:
        configured = config_from_environment()
        ca_file = configured.get("cluster", "ca_file") if configured is not None else None
    return client_context(Path(ca_file)) if ca_file else None
