"""A minimal HTTP client for nova-api's os-volumes, built on http.client.

Deliberately not ``requests``: voltrace instruments ``requests`` for its calls
to Cinder, and the caller of nova-api (a demo, a benchmark, a test) must not
appear inside nova-api's trace as if it were part of the create.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def header_values(self, name: str) -> list[str]:
        return self.headers.get_all(name) or []


def identity_headers(
    *,
    user_id: str = "demo-user",
    project_id: str = "de000000000000000000000000000001",
    roles: str = "member,reader",
    token: str = "demo-token",
    catalog: list | None = None,
) -> dict[str, str]:
    """The headers keystonemiddleware's auth_token would set for a valid token."""
    headers = {
        "X-User-Id": user_id,
        "X-Project-Id": project_id,
        "X-Roles": roles,
        "X-Auth-Token": token,
    }
    if catalog is not None:
        headers["X-Service-Catalog"] = json.dumps(catalog)
    return headers


class NovaClient:
    """Keep-alive client for one nova-api base URL; not thread-safe (one per thread)."""

    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        for attempt in (1, 2):
            conn = self._conn or http.client.HTTPConnection(
                self.host, self.port, timeout=self.timeout
            )
            self._conn = conn
            try:
                conn.request(method, path, body=body, headers=headers or {})
                raw = conn.getresponse()
                return Response(raw.status, raw.headers, raw.read())
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.close()
                if attempt == 2:
                    raise
            except BaseException:
                # Never reuse a connection left mid-request (http.client would refuse it).
                self.close()
                raise
        raise AssertionError("unreachable")

    def create_volume(
        self,
        volume: dict | None = None,
        *,
        headers: dict[str, str] | None = None,
        path: str = "/v2.1/os-volumes",
        raw_body: bytes | None = None,
    ) -> Response:
        """POST os-volumes with ``{"volume": volume}`` (or ``raw_body`` as is)."""
        all_headers = {"Content-Type": "application/json", "Accept": "application/json"}
        all_headers.update(headers or {})
        body = raw_body if raw_body is not None else json.dumps({"volume": volume}).encode()
        return self.request("POST", path, body=body, headers=all_headers)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
