"""Access control of a coordinator: which peers may connect, and which requests each token role may make.

A coordinator that has the cluster secret checks the token of every hello: executors need
the ``join`` role (or ``admin``), and clients ``read``, ``submit`` or ``admin``. Each client
request then needs the role in ``REQUIRED_ROLE``. A coordinator without a secret accepts
every peer, and ``swarmctl up`` starts one only on a loopback address.
"""

from __future__ import annotations

from swarmctl import protocol
from swarmctl.tokens import AuthError, Role, Token, verify

REQUIRED_ROLE: dict[type[protocol.Message], Role] = {
    protocol.ListExecutors: Role.READ,
    protocol.ListRuns: Role.READ,
    protocol.Subscribe: Role.READ,
    protocol.BundleQuery: Role.SUBMIT,
    protocol.BundleChunk: Role.SUBMIT,
    protocol.SubmitRun: Role.SUBMIT,
    protocol.CancelRun: Role.SUBMIT,  # and admin for a run that another token submitted
    protocol.ControlExecutor: Role.ADMIN,
    protocol.RevokeToken: Role.ADMIN,
    protocol.GossipKeyRequest: Role.ADMIN,
    protocol.BundleFetch: Role.ADMIN,  # from clients: only other coordinators copy bundles
    protocol.WatchRun: Role.READ,
}


def authenticate(secret: bytes, hello: protocol.Hello, revoked: set[str]) -> Token:
    """Return the hello's verified token; raise AuthError when it is missing, invalid, revoked or of the wrong role."""
    try:
        token = verify(secret, hello.token)
    except AuthError as exc:
        raise AuthError(f"{exc}. {_token_hint(hello.role)}") from None
    if token.token_id in revoked:
        raise AuthError(f"token {token.token_id} was revoked. {_token_hint(hello.role)}")
    needed = {protocol.ROLE_EXECUTOR: Role.JOIN, protocol.ROLE_VOTER: Role.ADMIN}.get(hello.role, Role.READ)
    if not token.allows(needed):
        raise AuthError(f"a token with role {token.role} cannot connect as {hello.role}. {_token_hint(hello.role)}")
    return token


def denial(token: Token | None, message: protocol.Message) -> str:
    """Return why ``token`` may not make the request ``message``, or "" when it may."""
    needed = REQUIRED_ROLE.get(type(message))
    if token is None or needed is None or token.allows(needed):
        return ""
    return f"permission denied: {message.KIND} needs a token with role {needed} or higher; this token ({token.token_id}) has role {token.role}"


def _token_hint(role: str) -> str:
    if role == protocol.ROLE_EXECUTOR:
        return "Give the executor the cluster secret (--secret-file) or a join token (SWARMCTL_TOKEN_FILE)"
    return "Set SWARMCTL_TOKEN_FILE to a file with a token from `swarmctl token create`, or SWARMCTL_SECRET_FILE to the cluster secret"
