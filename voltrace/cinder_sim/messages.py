"""What passes between the socket (``server.py``) and the application (``app.py``), and
the headers and bodies every cinder answer carries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from voltrace.cinder_sim.errors import ApiError, explanation, fault_body
from voltrace.cinder_sim.faults import Fault
from voltrace.cinder_sim.views import MIN_API_VERSION

# oslo_middleware.request_id.ID_FORMAT: RequestId keeps a caller's X-OpenStack-Request-ID
# only in this form. Copied, not imported: importing oslo_middleware loads its whole
# package (about 160 ms), and every `voltrace` command imports this one.
_GLOBAL_REQUEST_ID_RE = re.compile(
    r"^req-[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$"
)


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
    def global_request_id(self) -> str | None:
        """The caller's X-OpenStack-Request-ID, if oslo.middleware would keep it."""
        value = self.header("X-OpenStack-Request-ID")
        return value if value and _GLOBAL_REQUEST_ID_RE.match(value) else None

    @property
    def url(self) -> str:
        """webob's ``request.url``: the base URL, path and query."""
        return self.base_url + self.target

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
    status: int,
    body: Any,
    request_id: str,
    extra: dict[str, str] | None = None,
    *,
    api_version: str | None = MIN_API_VERSION,
) -> Response:
    """A cinder response; ``body`` is JSON-able, raw ``bytes``, or None for no body.

    ``api_version`` is echoed in OpenStack-API-Version (None: no version headers, as in
    the answers cinder's FaultWrapper gives).
    """
    if body is None:
        data = b""
    elif isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
    headers = [("Content-Type", "application/json")] if body is not None else []
    if api_version is not None:
        headers += [
            ("OpenStack-API-Version", f"volume {api_version}"),
            ("Vary", "OpenStack-API-Version"),
        ]
    headers += [
        # cinder's wsgi layer sets x-compute-request-id (which python-cinderclient
        # reads); oslo.middleware's RequestId adds x-openstack-request-id. Same id.
        ("x-compute-request-id", request_id),
        ("x-openstack-request-id", request_id),
    ]
    headers.extend((extra or {}).items())
    return Response(status, headers, data)


def error_response(
    error: ApiError, request_id: str, *, api_version: str | None = MIN_API_VERSION
) -> Response:
    body = fault_body(error.status, error.message, error.headers.get("Retry-After"))
    return json_response(error.status, body, request_id, error.headers, api_version=api_version)


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


# webob.exc.HTTPNotFound() as cinder's router returns it for a path no route matches
# (e.g. a project id outside project_id_regex): no cinder headers, and a body in the
# first of text/html or application/json the Accept header takes, else text/plain.
_NOT_FOUND_BODIES = {
    "text/html": (
        "text/html; charset=UTF-8",
        b"<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n"
        b"  <h1>404 Not Found</h1>\n  The resource could not be found.<br /><br />\n\n\n\n"
        b" </body>\n</html>",
    ),
    "application/json": (
        "application/json",
        b'{"message": "The resource could not be found.<br /><br />\\n\\n\\n", '
        b'"code": "404 Not Found", "title": "Not Found"}',
    ),
    "text/plain": (
        "text/plain; charset=UTF-8",
        b"404 Not Found\n\nThe resource could not be found.\n\n   ",
    ),
}


def unrouted_not_found(request: Request, request_id: str) -> Response:
    content_type, body = _NOT_FOUND_BODIES[_webob_offer(request.header("Accept") or "")]
    return Response(
        404,
        [("Content-Type", content_type), ("x-openstack-request-id", request_id)],
        body,
    )


def _webob_offer(accept: str) -> str:
    """webob's ``acceptable_offers(["text/html", "application/json"])``, first pick."""
    best: tuple[float, int, str] | None = None
    for position, offer in enumerate(("text/html", "application/json")):
        quality = _quality(accept, offer)
        if quality > 0 and (best is None or (quality, -position) > (best[0], best[1])):
            best = (quality, -position, offer)
    return best[2] if best else "text/plain"


def _quality(accept: str, offer: str) -> float:
    """The q of the most specific media range in ``accept`` that matches ``offer``."""
    offer_type, _, offer_sub = offer.partition("/")
    found: tuple[int, float] | None = None
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        kind, _, sub = media.lower().partition("/")
        if (kind, sub) == (offer_type, offer_sub):
            specificity = 2
        elif kind == offer_type and sub == "*":
            specificity = 1
        elif (kind, sub) == ("*", "*"):
            specificity = 0
        else:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if found is None or specificity > found[0]:
            found = (specificity, quality)
    return found[1] if found else 0.0


def noauth_token(request: Request, request_id: str) -> Response:
    """cinder's NoAuthMiddleware without X-Auth-Token: 204 and a ``user:project`` token."""
    user = request.header("X-Auth-User") or "admin"
    project = request.header("X-Auth-Project-Id") or "admin"
    return Response(
        204,
        [
            ("X-Auth-Token", f"{user}:{project}"),
            ("X-Server-Management-Url", request.url.rstrip("/")),
            ("Content-Type", "text/plain; charset=UTF-8"),
            ("x-openstack-request-id", request_id),
        ],
    )
