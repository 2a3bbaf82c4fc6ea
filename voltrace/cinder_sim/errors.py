"""How the simulated cinder says no: :class:`ApiError` and the body it turns into.

Anything below a route handler raises :class:`ApiError`; ``app.py`` turns it into
cinder's ``{"<faultName>": {"code": N, "message": ...}}`` answer (:func:`fault_body`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

# cinder/api/openstack/wsgi.py Fault._fault_names; anything else is "computeFault".
FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    501: "notImplemented",
    503: "serviceUnavailable",
}
# webob.exc explanations, which cinder uses when an error carries no message of its own.
DEFAULT_EXPLANATIONS = {
    400: "The server could not comply with the request since it is either malformed "
    "or otherwise incorrect.",
    401: "This server could not verify that you are authorized to access the document "
    "you requested. Either you supplied the wrong credentials (e.g., bad password), or "
    "your browser does not understand how to supply the credentials required.",
    403: "Access was denied to this resource.",
    404: "The resource could not be found.",
    409: "There was a conflict when trying to complete your request.",
    413: "The body of your request was too large for this server.",
    429: "The client has sent too many requests in a given amount of time",
    500: "The server has either erred or is incapable of performing the requested operation.",
    501: "The server has either erred or is incapable of performing the requested operation.",
    502: "Bad gateway.",
    503: "The server is currently unavailable. Please try again at a later time.",
    504: "The gateway has timed out.",
}
INTERNAL_ERROR = DEFAULT_EXPLANATIONS[500]


class ApiError(Exception):
    """An error answer. ``kind`` is the cinder exception class it stands for;
    ``span_attributes`` are added to the step span that fails with it."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str,
        headers: dict[str, str] | None = None,
        span_attributes: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers or {}
        self.span_attributes = span_attributes or {}


def invalid_input(reason: str) -> ApiError:
    # cinder.exception.InvalidInput is an Invalid, so wsgi turns it into a plain 400.
    return ApiError(400, f"Invalid input received: {reason}", "InvalidInput")


def quota_error(kind: str, message: str, resource: str) -> ApiError:
    # QuotaError subclasses are not Invalid/NotFound, so they reach cinder's FaultWrapper,
    # which prefixes the class name and copies QuotaError.headers (Retry-After: 0).
    return ApiError(
        413,
        f"{kind}: {message}",
        kind,
        {"Retry-After": "0"},
        span_attributes={"cinder.quota.resource": resource},
    )


def fault_body(status: int, message: str, retry_after: str | None = None) -> dict[str, Any]:
    """cinder's ``{"<faultName>": {"code": N, "message": ...}}`` error body."""
    inner: dict[str, Any] = {"code": status, "message": message}
    if status == 413 and retry_after:
        inner["retryAfter"] = retry_after
    return {FAULT_NAMES.get(status, "computeFault"): inner}


def explanation(status: int) -> str:
    """webob's default text for a status, as cinder shows it when nothing more is known."""
    if status in DEFAULT_EXPLANATIONS:
        return DEFAULT_EXPLANATIONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"
