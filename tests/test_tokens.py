"""Tests of swarmctl.tokens: issuing and checking access tokens, and what each role includes."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from swarmctl.errors import UsageError
from swarmctl.security import derive_key, new_secret
from swarmctl.tokens import MAX_TOKEN_CHARS, AuthError, Role, issue, parse_role, verify

SECRET = new_secret().encode()
OTHER_SECRET = new_secret().encode()


def test_token_round_trip() -> None:
    text, issued = issue(SECRET, Role.SUBMIT, ttl_s=3600, subject="ci")

    token = verify(SECRET, text)

    assert token == issued
    assert token.role is Role.SUBMIT
    assert token.subject == "ci"
    assert token.expires_at == token.issued_at + 3600


def test_token_without_expiry() -> None:
    text, _ = issue(SECRET, Role.READ, ttl_s=None)

    assert verify(SECRET, text).expires_at is None


def test_token_expired() -> None:
    text, _ = issue(SECRET, Role.ADMIN, ttl_s=60, now=time.time() - 3600)

    with pytest.raises(AuthError, match="token expired"):
        verify(SECRET, text)


def test_token_other_secret() -> None:
    text, _ = issue(OTHER_SECRET, Role.ADMIN, ttl_s=60)

    with pytest.raises(AuthError, match="signature is invalid"):
        verify(SECRET, text)


def test_token_changed_role_rejected() -> None:
    text, _ = issue(SECRET, Role.READ, ttl_s=60)
    header, payload, signature = text.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    with pytest.raises(AuthError, match="signature is invalid"):
        verify(SECRET, f"{header}.{forged_payload}.{signature}")


def test_token_unsigned_rejected() -> None:
    unsigned = jwt.encode({"jti": "x", "role": "admin", "iat": int(time.time()), "iss": "swarmctl"}, None, algorithm="none")

    with pytest.raises(AuthError, match="token is invalid"):
        verify(SECRET, unsigned)


def test_token_unknown_role_rejected() -> None:
    signed = jwt.encode(
        {"jti": "x", "role": "root", "iat": int(time.time()), "iss": "swarmctl"}, derive_key(SECRET, "token signing"), algorithm="HS256"
    )

    with pytest.raises(AuthError, match="unknown role 'root'"):
        verify(SECRET, signed)


@pytest.mark.parametrize("text", ["", "not-a-token", "a.b.c", "x" * (MAX_TOKEN_CHARS + 1)])
def test_token_malformed_rejected(text: str) -> None:
    with pytest.raises(AuthError):
        verify(SECRET, text)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.READ, {Role.READ}),
        (Role.SUBMIT, {Role.READ, Role.SUBMIT}),
        (Role.ADMIN, {Role.READ, Role.SUBMIT, Role.ADMIN, Role.JOIN}),
        (Role.JOIN, {Role.JOIN}),
    ],
)
def test_token_role_allows(role: Role, allowed: set[Role]) -> None:
    _, token = issue(SECRET, role, ttl_s=60)

    assert {needed for needed in Role if token.allows(needed)} == allowed


def test_parse_role_invalid() -> None:
    with pytest.raises(UsageError, match="invalid role 'owner'"):
        parse_role("owner")


def test_hello_repr_hides_token() -> None:
    from swarmctl import protocol

    text, _ = issue(SECRET, Role.ADMIN, ttl_s=60)

    assert text not in repr(protocol.Hello(1, "client", "c1", token=text))
