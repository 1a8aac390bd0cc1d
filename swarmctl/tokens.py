"""Access tokens: signed JSON Web Tokens that name a role, made with the cluster secret.

A token is an HS256 JWT (RFC 7519) signed with a key derived from the cluster secret
(``security.derive_key(secret, "token signing")``), so every node that has the secret can
check a token without asking anyone, and a token cannot be made without it. Its claims:

    jti   token id, what ``swarmctl token revoke`` takes
    role  read, submit, admin or join
    sub   a name for whom it was made, free text
    iat   issue time, exp  expiry time (Unix seconds; no exp means no expiry)
    iss   "swarmctl"

Roles: ``read`` may watch and query; ``submit`` may also run suites and cancel its own runs;
``admin`` may do everything, including drain, cordon, cancelling any run and revoking tokens;
``join`` lets an executor join and nothing else. A token is checked at a connection's hello.
Revoked token ids are stored by the coordinator, which closes the revoked token's
connections at once.

A bearer token can be replayed by anyone who sees it, so on a network others can watch,
connections must use TLS (``swarmctl.tls``).
"""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass

import jwt

from swarmctl.errors import UsageError
from swarmctl.security import derive_key

ISSUER = "swarmctl"
ALGORITHM = "HS256"
LEEWAY_S = 30  # clock difference between nodes tolerated on iat and exp
MAX_TOKEN_CHARS = 4096  # a token longer than this is rejected before it is parsed


class Role(enum.StrEnum):
    READ = "read"
    SUBMIT = "submit"
    ADMIN = "admin"
    JOIN = "join"


# Client roles from least to most rights: admin may do what submit may, and submit what read may.
CLIENT_ROLES = (Role.READ, Role.SUBMIT, Role.ADMIN)


class AuthError(UsageError):
    """A token is missing, invalid, expired or revoked, or its role does not allow the request."""


@dataclass(frozen=True, slots=True)
class Token:
    token_id: str
    role: Role
    subject: str
    issued_at: float
    expires_at: float | None

    def allows(self, needed: Role) -> bool:
        """Return True when this token's role includes ``needed``."""
        if needed is Role.JOIN:
            return self.role in (Role.JOIN, Role.ADMIN)
        if self.role is Role.JOIN:
            return False
        return CLIENT_ROLES.index(self.role) >= CLIENT_ROLES.index(needed)


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise UsageError(f"invalid role {text!r}: expected one of {', '.join(r.value for r in Role)}") from None


def issue(secret: bytes, role: Role, *, ttl_s: float | None, subject: str = "", now: float | None = None) -> tuple[str, Token]:
    """Make a token for ``role`` valid ``ttl_s`` seconds (None: no expiry); return its text and its claims."""
    issued_at = int(time.time() if now is None else now)
    token = Token(secrets.token_hex(8), role, subject, issued_at, None if ttl_s is None else issued_at + int(ttl_s))
    claims = {"jti": token.token_id, "role": role.value, "sub": subject, "iat": issued_at, "iss": ISSUER}
    if token.expires_at is not None:
        claims["exp"] = token.expires_at
    return jwt.encode(claims, _signing_key(secret), algorithm=ALGORITHM), token


def verify(secret: bytes, text: str) -> Token:
    """Check a token's signature, issuer and expiry against the current time; raise AuthError naming what is wrong."""
    if not text:
        raise AuthError("no token given")
    if len(text) > MAX_TOKEN_CHARS:
        raise AuthError(f"token of {len(text)} characters is longer than the limit of {MAX_TOKEN_CHARS}")
    try:
        claims = jwt.decode(
            text, _signing_key(secret), algorithms=[ALGORITHM], issuer=ISSUER, leeway=LEEWAY_S,
            options={"require": ["jti", "role", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired; create a new one with `swarmctl token create`") from None
    except jwt.InvalidSignatureError:
        raise AuthError("token signature is invalid: it was made with another cluster secret, or changed") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"token is invalid: {exc}") from None
    try:
        role = Role(claims["role"])
        return Token(str(claims["jti"]), role, str(claims.get("sub", "")), float(claims["iat"]), _expiry(claims))
    except (ValueError, TypeError):
        raise AuthError(f"token is invalid: unknown role {claims.get('role')!r}") from None


def _expiry(claims: dict) -> float | None:
    return float(claims["exp"]) if "exp" in claims else None


def _signing_key(secret: bytes) -> bytes:
    return derive_key(secret, "token signing")
