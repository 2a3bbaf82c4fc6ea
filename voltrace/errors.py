"""Nova's exceptions and the faults a client sees, for a volume create.

Two layers live here, mirroring Nova:

* **Nova's exceptions** (``nova/exception.py``), the subset that
  ``nova/volume/cinder.py`` and the controller raise for this endpoint.  Their
  ``nova_class`` is the name real Nova prints in a 500 body
  (``Unexpected API Error. ...\\n<class 'nova.exception.NotFound'>``).
* **NovaFault**: the answer a client sees (status, fault name, message), plus
  the *failure class* voltrace uses in spans, logs, metrics and diagnosis.

The failure classes themselves (name, stage, status, next step) are listed in
``voltrace.semconv``, the one module that names everything telemetry emits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# nova.version.NOVA_SUPPORT, as shipped (a `release` file can change it in Nova).
NOVA_SUPPORT = "Please contact the administrator"

# nova/api/openstack/wsgi.py:Fault._fault_names
FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}


# ---------------------------------------------------------------------------
# Nova's exceptions (nova/exception.py), only what this endpoint raises.
# ---------------------------------------------------------------------------


class NovaException(Exception):
    """nova/exception.py:NovaException: ``msg_fmt % kwargs``."""

    msg_fmt = "An unknown exception occurred."
    nova_class = "nova.exception.NovaException"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        self.kwargs = kwargs
        super().__init__(message if message is not None else self.msg_fmt % kwargs)

    def format_message(self) -> str:
        return str(self.args[0])


class Forbidden(NovaException):
    msg_fmt = "Forbidden"
    nova_class = "nova.exception.Forbidden"


class PolicyNotAuthorized(Forbidden):
    msg_fmt = "Policy doesn't allow %(action)s to be performed."
    nova_class = "nova.exception.PolicyNotAuthorized"


class InvalidInput(NovaException):
    msg_fmt = "Invalid input received: %(reason)s"
    nova_class = "nova.exception.InvalidInput"


class NotFound(NovaException):
    msg_fmt = "Resource could not be found."
    nova_class = "nova.exception.NotFound"


class SnapshotNotFound(NotFound):
    msg_fmt = "Snapshot %(snapshot_id)s could not be found."
    nova_class = "nova.exception.SnapshotNotFound"


class OverQuota(NovaException):
    msg_fmt = "Quota exceeded for resources: %(overs)s"
    nova_class = "nova.exception.OverQuota"


class CinderConnectionFailed(NovaException):
    msg_fmt = "Connection to cinder host failed: %(reason)s"
    nova_class = "nova.exception.CinderConnectionFailed"


class UnsupportedCinderAPIVersion(NovaException):
    msg_fmt = "Nova does not support Cinder API version %(version)s"
    nova_class = "nova.exception.UnsupportedCinderAPIVersion"


def class_path(exc: BaseException) -> str:
    """The dotted class name Nova would print for ``exc``."""
    nova_class = getattr(exc, "nova_class", None)
    if nova_class:
        return nova_class
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}" if cls.__module__ != "builtins" else cls.__name__


# ---------------------------------------------------------------------------
# What the client sees.
# ---------------------------------------------------------------------------


@dataclass
class NovaFault(Exception):
    """An HTTP error answer, shaped like nova/api/openstack/wsgi.py:Fault."""

    status: int
    message: str
    failure_class: str
    headers: dict[str, str] = field(default_factory=dict)
    # The exception that caused it (cinderclient's, keystoneauth's, Nova's own).
    cause: BaseException | None = None
    # What the failing layer knew, as span attributes (e.g. the Cinder request id).
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def fault_name(self) -> str:
        return FAULT_NAMES.get(self.status, "computeFault")

    @property
    def cause_type(self) -> str:
        return class_path(self.cause) if self.cause is not None else "NovaFault"

    def body(self) -> dict[str, Any]:
        """Nova's fault body, ``retryAfter`` included for 413/429."""
        inner: dict[str, Any] = {"code": self.status, "message": self.message}
        if self.status in (413, 429) and self.headers.get("Retry-After"):
            inner["retryAfter"] = self.headers["Retry-After"]
        return {self.fault_name: inner}


def unexpected_api_error(exc: BaseException, failure_class: str = "internal_error") -> NovaFault:
    """nova/api/openstack/extensions.py:expected_errors: anything unexpected becomes 500."""
    type_repr = f"<class '{class_path(exc)}'>"
    message = f"Unexpected API Error. {NOVA_SUPPORT}\n{type_repr}"
    return NovaFault(500, message, failure_class, cause=exc)
