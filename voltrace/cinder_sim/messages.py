"""What passes between the socket (``server.py``) and the application (``app.py``), and
the headers and bodies every cinder answer carries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from voltrace.cinder_sim.errors import ApiError, explanation, fault_body
from voltrace.cinder_sim.faults import Fault
from voltrace.cinder_sim.views import MIN_API_VERSION

# The simulator always answers at the base microversion, like cinder does for Nova.
_API_VERSION_HEADER = ("OpenStack-API-Version", f"volume {MIN_API_VERSION}")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator received on the Cinder API, exactly as it arrived."""

    method: str
    path: str  # including the query string
    headers: dict[str, str]  # header names in their original case
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON (``None`` for an empty body)."""
        return json.loads(self.body) if self.body else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly form (body as text), as served by ``GET /__sim__/requests``."""
        return {
            "method": self.method,
            "path": self.path,
            "headers": dict(self.headers),
            "body": self.body.decode("utf-8", errors="replace"),
        }


@dataclass
class Request:
    """A Cinder API request as the application sees it."""

    method: str
    target: str  # path + query, as received
    headers: dict[str, str]  # names in their original case
    body: bytes
    server_host: str
    server_port: int
    client_address: str
    path: str = field(init=False)
    query: str = field(init=False)
    lower_headers: dict[str, str] = field(init=False)  # for case-insensitive lookups

    def __post_init__(self) -> None:
        split = urlsplit(self.target)
        self.path = split.path
        self.query = split.query
        self.lower_headers = {k.lower(): v for k, v in self.headers.items()}

    def header(self, name: str) -> str | None:
        return self.lower_headers.get(name.lower())

    @property
    def base_url(self) -> str:
        # cinder builds links from request.application_url, i.e. the Host header.
        host = self.header("Host") or f"{self.server_host}:{self.server_port}"
        return f"http://{host}"


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass
class Disconnect:
    """Close the connection without answering (a ``drop`` or ``reset`` fault)."""

    action: str  # "drop" or "reset"


Outcome = Response | Disconnect


def json_response(
    status: int, body: Any, request_id: str, extra: dict[str, str] | None = None
) -> Response:
    """A cinder response; ``body`` is JSON-able, raw ``bytes``, or None for no body."""
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
    headers = [("Content-Type", "application/json")] if body is not None else []
    headers += [
        _API_VERSION_HEADER,
        ("Vary", "OpenStack-API-Version"),
        # cinder's wsgi layer sets x-compute-request-id (which python-cinderclient
        # reads); oslo.middleware's RequestId adds x-openstack-request-id. Same id.
        ("x-compute-request-id", request_id),
        ("x-openstack-request-id", request_id),
    ]
    headers.extend((extra or {}).items())
    return Response(status, headers, data)


def error_response(error: ApiError, request_id: str) -> Response:
    body = fault_body(error.status, error.message, error.headers.get("Retry-After"))
    return json_response(error.status, body, request_id, error.headers)


def fault_response(fault: Fault, request_id: str) -> Response:
    """The answer for a ``status`` fault: its body, else a cinder-shaped one."""
    status = int(fault.status or 500)
    body = fault.body
    if body is None and status >= 400:
        body = fault_body(status, explanation(status), fault.headers.get("Retry-After"))
    elif isinstance(body, str):
        body = body.encode()  # a text body goes out verbatim, JSON or not
    return json_response(status, body, request_id, fault.headers)


def unauthorized(request: Request, request_id: str) -> Response:
    # keystonemiddleware's auth_token rejection; it never reaches cinder's wsgi layer,
    # so only oslo's x-openstack-request-id is added.
    body = {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }
    return Response(
        401,
        [
            ("Content-Type", "application/json; charset=UTF-8"),
            ("WWW-Authenticate", f'Keystone uri="{request.base_url}/identity"'),
            ("x-openstack-request-id", request_id),
        ],
        json.dumps(body).encode(),
    )
