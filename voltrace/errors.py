"""Every way a volume create can fail, in one place.

Two layers live here, mirroring Nova:

* **Nova's exceptions** (``nova/exception.py``), the subset that
  ``nova/volume/cinder.py`` and the controller raise for this endpoint.  Their
  ``nova_class`` is the name real Nova prints in a 500 body
  (``Unexpected API Error. ...\\n<class 'nova.exception.NotFound'>``).
* **NovaFault**: the answer a client sees (status, fault name, message), plus
  the *failure class* voltrace uses in spans, logs, metrics and diagnosis.

Failure classes, the stage that raises them and the HTTP status (see
``FAILURES`` for the SRE's next step for each)::

    (middleware)     request_too_large ........... 413  body > 114688 bytes
    (middleware)     unauthenticated ............. 401  no X-User-Id
    (middleware)     invalid_service_catalog ..... 500  X-Service-Catalog is not JSON
    parse            invalid_microversion ........ 400  bad version header
                     unsupported_microversion .... 406  outside 2.1..2.104
                     unsupported_media_type ...... 415
                     malformed_body .............. 400  not JSON
                     project_mismatch ............ 400  URL project != token project
                     microversion_not_found ...... 404  version > 2.35
                     schema_invalid .............. 400
    authorize        policy_denied ............... 403
    resolve_snapshot snapshot_not_found .......... 404
                     cinder_forbidden ............ 403
                     cinder_* (below) ............ 500
    call_cinder      cinder_bad_request .......... 400  (500 from resolve_snapshot)
                     cinder_forbidden ............ 403
                     over_quota .................. 403  Cinder 413
                     cinder_not_found ............ 500  e.g. unknown volume type
                     cinder_unreachable .......... 500  after connect retries
                     cinder_unauthorized ......... 500  Cinder 401
                     cinder_server_error ......... 500  Cinder 5xx / other status
                     cinder_endpoint_not_found ... 500  no volumev3 in the catalog
                     cinder_unsupported_version .. 500  endpoint is not /v3
                     cinder_bad_response ......... 500  unparseable Cinder answer
    (router)         no_route .................... 404/405  not POST /v2.1/os-volumes
    any              internal_error .............. 500  anything else
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


@dataclass(frozen=True)
class FailureClass:
    """One row of the table in this module's docstring."""

    name: str
    stage: str
    summary: str
    next_step: str


def _failure_table(*rows: FailureClass) -> dict[str, FailureClass]:
    return {row.name: row for row in rows}


FAILURES: dict[str, FailureClass] = _failure_table(
    FailureClass(
        "request_too_large", "sizelimit", "request body larger than 114688 bytes",
        "Shrink the request body; [oslo_middleware] max_request_body_size caps it.",
    ),
    FailureClass(
        "unauthenticated", "keystonecontext", "no user identity on the request",
        "Put keystonemiddleware auth_token in front, or send X-User-Id/X-Project-Id.",
    ),
    FailureClass(
        "invalid_service_catalog", "keystonecontext", "X-Service-Catalog is not valid JSON",
        "Whatever sets X-Service-Catalog (keystonemiddleware) sends a broken catalog.",
    ),
    FailureClass(
        "invalid_microversion", "parse", "microversion header is not MajorNum.MinorNum",
        "Send 'OpenStack-API-Version: compute 2.35' (or omit it for 2.1).",
    ),
    FailureClass(
        "unsupported_microversion", "parse", "microversion outside 2.1..2.104",
        "Ask for a microversion between 2.1 and 2.35 for os-volumes.",
    ),
    FailureClass(
        "unsupported_media_type", "parse", "Content-Type is not JSON",
        "Send 'Content-Type: application/json'.",
    ),
    FailureClass(
        "malformed_body", "parse", "request body is not valid JSON",
        "Check the JSON the client sends (quoting, UTF-8, trailing commas).",
    ),
    FailureClass(
        "project_mismatch", "parse", "project id in the URL differs from the token's",
        "Use the token's project id in the URL, or drop it: POST /v2.1/os-volumes.",
    ),
    FailureClass(
        "microversion_not_found", "parse", "os-volumes is a proxy API removed after 2.35",
        "Request microversion <= 2.35, or create the volume through Cinder's API directly.",
    ),
    FailureClass(
        "schema_invalid", "parse", "request body fails Nova's schema",
        "Fix the field named in the message; size must be an integer >= 1.",
    ),
    FailureClass(
        "policy_denied", "authorize", "policy os_compute_api:os-volumes:create denied",
        "The caller needs role member (or admin) on the project: "
        "openstack role assignment list --user USER --project PROJECT --names",
    ),
    FailureClass(
        "snapshot_not_found", "resolve_snapshot", "Cinder has no such snapshot",
        "Check the snapshot exists in the caller's project: openstack volume snapshot show ID",
    ),
    FailureClass(
        "cinder_forbidden", "call_cinder", "Cinder answered 403",
        "Cinder's policy refused the caller; read Cinder's message and its policy file.",
    ),
    FailureClass(
        "cinder_bad_request", "call_cinder", "Cinder rejected the request (400)",
        "Read Cinder's message: size, availability zone or metadata were refused.",
    ),
    FailureClass(
        "over_quota", "call_cinder", "Cinder quota exceeded (413)",
        "Check the project's volume quota: openstack quota show --volume PROJECT; "
        "cinder quota-usage PROJECT",
    ),
    FailureClass(
        "cinder_not_found", "call_cinder", "Cinder answered 404 (e.g. unknown volume type)",
        "Check the volume type exists: openstack volume type list",
    ),
    FailureClass(
        "cinder_unreachable", "call_cinder", "no connection to cinder-api",
        "Check cinder-api is up and the endpoint is right: openstack endpoint list "
        "--service volumev3; curl the endpoint from the nova-api host.",
    ),
    FailureClass(
        "cinder_unauthorized", "call_cinder", "Cinder refused the user's token (401)",
        "The token expired or Cinder's keystonemiddleware cannot validate it.",
    ),
    FailureClass(
        "cinder_server_error", "call_cinder", "Cinder answered 5xx",
        "Look up Cinder's request id in cinder-api's log for the traceback.",
    ),
    FailureClass(
        "cinder_endpoint_not_found", "call_cinder", "no volumev3 endpoint in the catalog",
        "Register the endpoint (openstack endpoint list --service volumev3) "
        "or set [cinder] endpoint_template.",
    ),
    FailureClass(
        "cinder_unsupported_version", "call_cinder", "Cinder endpoint is not the v3 API",
        "Point the endpoint at .../v3/%(project_id)s.",
    ),
    FailureClass(
        "cinder_bad_response", "call_cinder", "Cinder's answer could not be read",
        "Something between nova-api and cinder-api mangles responses (proxy, LB); "
        "curl the endpoint and check the body.",
    ),
    FailureClass(
        "no_route", "router", "not POST /v2.1[/{project_id}]/os-volumes",
        "voltrace serves only the volume create; check the method and URL.",
    ),
    FailureClass(
        "internal_error", "any", "unexpected error inside nova-api",
        "Search nova-api's log for the request id; this is a bug or a misconfiguration.",
    ),
)


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
