"""A client of the coordinator's HTTP API, for the commands that read a remote coordinator's stored runs.

``swarmctl report``, ``history`` and ``compare`` read the local data folder by default; with
``--cluster`` they ask a coordinator through the HTTP API instead, with the same token and CA
certificate as every other client command. A follower redirects to the leader, and urllib
follows the redirect.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from swarmctl.cluster.transport import format_address
from swarmctl.credentials import client_tls, client_token
from swarmctl.errors import ConnectionFailed, SwarmError, UsageError
from swarmctl.tokens import AuthError

TIMEOUT_S = 60.0


class ApiClient:
    def __init__(self, addresses: Sequence[tuple[str, int]], token: str, ssl_context: ssl.SSLContext | None) -> None:
        self.addresses = list(addresses)
        self.token = token
        self.scheme = "https" if ssl_context is not None else "http"
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPSHandler(context=ssl_context)] if ssl_context else []
        self._opener = urllib.request.build_opener(*handlers)

    @classmethod
    def from_environment(cls, addresses: Sequence[tuple[str, int]]) -> ApiClient:
        """Make a client with the token and CA certificate that every client command uses."""
        return cls(addresses, client_token(None), client_tls())

    def get(self, path: str, params: dict[str, Any] | None = None) -> bytes:
        """Return the body of ``GET path``; raise a SwarmError with the coordinator's reason on failure."""
        return self.get_response(path, params)[0]

    def get_response(self, path: str, params: dict[str, Any] | None = None) -> tuple[bytes, Any]:
        """Return the body and headers of ``GET path`` from the first coordinator that serves it.

        A coordinator that cannot serve the call now (503, such as a follower during an
        election) or cannot be reached is skipped for the next address.
        """
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        failures = []
        for host, port in self.addresses:
            address = format_address(host, port)
            request = urllib.request.Request(f"{self.scheme}://{address}{path}{query}", headers=headers)
            try:
                with self._opener.open(request, timeout=TIMEOUT_S) as response:
                    return response.read(), response.headers
            except urllib.error.HTTPError as error:
                failure = _api_error(error, address)
                if error.code != 503:
                    raise failure from None
                failures.append(str(failure))
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                failures.append(f"{address}: {reason}")
        raise ConnectionFailed(
            "could not reach the HTTP API at " + "; ".join(failures) + ". Check that a coordinator runs there and that "
            "TLS is used on both sides or neither: the cluster CA certificate comes from SWARMCTL_CA_FILE, or from the "
            "configuration that SWARMCTL_CONFIG or swarmctl --config FILE names."
        )

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return json.loads(self.get(path, params))


def _api_error(error: urllib.error.HTTPError, address: str) -> SwarmError:
    try:
        reason = json.loads(error.read()).get("error") or error.reason
    except (ValueError, AttributeError):
        reason = error.reason
    if error.code in (401, 403):
        return AuthError(f"{address} rejected the request: {reason}")
    if error.code < 500:
        return UsageError(str(reason))
    return SwarmError(f"{address} returned HTTP {error.code}: {reason}")
