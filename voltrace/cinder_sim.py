"""A Cinder v3 API simulator that speaks real HTTP.

nova-api's ``POST /v2.1/os-volumes`` proxies to Cinder. To trace and measure that hop
without a full cinder-api (eventlet, a database, a message bus), this module serves the
handful of Cinder v3 calls Nova makes, with the bodies, headers and error texts that
cinder 29 (OpenStack 2025.x) sends at microversion 3.0. It runs on the standard
library's ``http.server`` with HTTP/1.1 keep-alive, so python-cinderclient and
keystoneauth talk to it exactly as they talk to a real Cinder.

Usage::

    from voltrace.cinder_sim import CinderSimulator, Fault

    with CinderSimulator(deterministic=True) as sim:
        # point nova's [cinder] endpoint_template at sim.endpoint_template
        sim.inject(Fault("volumes.create", status=503, times=1))
        ...
        assert sim.recorded[0].headers["X-OpenStack-Request-ID"].startswith("req-")

From the command line (:func:`add_cli_arguments` and :func:`run_cli` let another CLI
offer the same options)::

    python -m voltrace.cinder_sim --port 8776 --fault volumes.create:latency_ms=300

Cinder API served (``{p}`` is any project id; ``X-Auth-Token`` is required but never
validated, as if keystonemiddleware had accepted every token):

==========  ==============================================  =================
method      path                                            route name
==========  ==============================================  =================
GET         ``/`` (300, no token needed), ``/v3/``          ``versions``
POST        ``/v3/{p}/volumes``                             ``volumes.create``
GET         ``/v3/{p}/volumes/{volume_id}``                 ``volumes.get``
POST        ``/v3/{p}/snapshots``                           ``snapshots.create``
GET         ``/v3/{p}/snapshots/{snapshot_id}``             ``snapshots.get``
GET         ``/v3/{p}/os-quota-sets/{target}[?usage=true]`` ``quotas.get``
PUT         ``/v3/{p}/os-quota-sets/{target}``              ``quotas.update``
GET         ``/v3/{p}/os-quota-sets/{target}/defaults``     ``quotas.defaults``
GET         ``/v3/{p}/os-quota-sets/defaults``              ``quotas.defaults``
==========  ==============================================  =================

The simulated caller is a project member (not an admin), which is what Nova's user token
usually is: a volume show carries ``os-vol-tenant-attr:tenant_id`` but no
``migration_status``; a snapshot show carries the ``os-extended-snapshot-attributes:*``
keys (cinder shows those to project readers). A new volume or snapshot answers
``creating`` and is ``available`` by the time anyone asks again (an instant scheduler).

Faults (:class:`Fault`) are matched by route name. Every matching fault counts one use
(``times``); their latencies add up; the first one with a ``status`` or ``action``
decides the answer:

* ``status`` alone: answer that status (with ``body`` or a cinder-shaped fault body)
  instead of doing the work;
* ``action="drop"``: close the connection without answering (the client sees a FIN);
* ``action="reset"``: close with ``SO_LINGER`` 0 so the client sees a TCP RST;
* ``action="garbage"``: do the work, then answer the success status (or ``status``)
  with a body that is not JSON;
* ``action="truncated"``: do the work, then answer the real status with the first half
  of the real JSON body (``Content-Length`` matches the half, so only the JSON is broken).

Test/demo endpoints under ``/__sim__/`` are neither recorded nor traced:
``GET|POST|DELETE /__sim__/faults`` (POST a Fault as JSON, or ``{"spec": "ROUTE:..."}``),
``GET|DELETE /__sim__/requests`` and ``POST /__sim__/reset``.

Tracing: pass ``tracer_provider`` (whose Resource says ``service.name=cinder-api``) to get
one SERVER span per Cinder request, continuing the caller's W3C ``traceparent``, named
``METHOD /v3/{project_id}/...``, with child INTERNAL spans for the simulator's steps
(``validate``, ``check_quota``, ``persist``, ``lookup``, ``injected_latency``). Without a
provider a no-op tracer is used. The global tracer provider is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "FAULT_ACTIONS",
    "ROUTES",
    "CinderSimulator",
    "Fault",
    "RecordedRequest",
    "add_cli_arguments",
    "run_cli",
]

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

ROUTES = (
    "versions",
    "volumes.create",
    "volumes.get",
    "snapshots.create",
    "snapshots.get",
    "quotas.get",
    "quotas.update",
    "quotas.defaults",
)
FAULT_ACTIONS = ("drop", "reset", "garbage", "truncated")

# cinder/api/openstack/api_version_request.py in cinder 29.0.0
MIN_API_VERSION = "3.0"
MAX_API_VERSION = "3.71"
API_VERSION_UPDATED = "2023-08-31T00:00:00Z"
# The simulator always answers at the base microversion, like cinder does for Nova.
_API_VERSION_HEADER = ("OpenStack-API-Version", f"volume {MIN_API_VERSION}")

# Deterministic mode stamps every resource with this time (naive UTC, as cinder prints it).
DETERMINISTIC_TIME = datetime(2026, 11, 27, 8, 0, 0)
# No token is ever validated, so there is no real user behind a request; every resource
# gets this user id (keystone-style 32 hex digits).
SIMULATED_USER_ID = "5e1f0f3b0c0d4c4e9a0b1c2d3e4f5a6b"
# Namespace for uuid5 ids in deterministic mode (and for volume type ids, always).
_ID_NAMESPACE = uuid.UUID("0c1d5e7a-7e2f-4d0b-9b8e-3f6a2c1d4b5e")

# cinder/quota.py defaults (quota_volumes, per_volume_size_limit, ...), in the order
# cinder lists them in a quota set. Per-volume-type quotas (-1) follow, then "groups".
_BASE_QUOTA_DEFAULTS = {
    "volumes": 10,
    "per_volume_gigabytes": -1,
    "snapshots": 10,
    "gigabytes": 1000,
    "backups": 10,
    "backup_gigabytes": 1000,
}
_GROUP_QUOTA_DEFAULTS = {"groups": 10}
_DB_MAX_INT = 0x7FFFFFFF  # cinder.common.constants.DB_MAX_INT

# oslo.middleware request_id.ID_FORMAT: only such ids become the global request id.
_GLOBAL_REQUEST_ID_RE = re.compile(
    r"^req-[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$"
)

# cinder/api/openstack/wsgi.py Fault._fault_names; anything else is "computeFault".
_FAULT_NAMES = {
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
_DEFAULT_EXPLANATIONS = {
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
_GARBAGE_BODY = b"<html><body><h1>502 Bad Gateway</h1>upstream sent junk</body></html>"

_TRUE_STRINGS = ("1", "t", "true", "on", "y", "yes")
_FALSE_STRINGS = ("0", "f", "false", "off", "n", "no")


# --------------------------------------------------------------------------------------
# Public records: requests seen and faults to inject
# --------------------------------------------------------------------------------------


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
class Fault:
    """A misbehaviour to inject on one route (see the module docstring for semantics)."""

    route: str
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    latency_ms: float = 0
    action: str | None = None
    times: int | None = None

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"unknown route {self.route!r}; expected one of {ROUTES}")
        if self.action is not None and self.action not in FAULT_ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; expected one of {FAULT_ACTIONS}")
        if self.status is not None:
            self.status = int(self.status)
            if not 100 <= self.status <= 599:
                raise ValueError(f"status must be an HTTP status code, got {self.status!r}")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for forever)")
        if self.status is None and self.action is None and not self.latency_ms:
            raise ValueError("a fault needs a status, an action or a latency_ms")

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse the CLI form ``ROUTE:key=value,key=value``.

        Keys: ``status``, ``latency_ms``, ``action``, ``times``, ``body`` (JSON if it
        parses, else text) and ``headers.NAME``. Example:
        ``volumes.create:status=413,headers.Retry-After=0``.
        """
        route, sep, spec = text.partition(":")
        if not sep or not spec:
            raise ValueError(f"fault {text!r} must look like ROUTE:key=value[,key=value]")
        kwargs: dict[str, Any] = {"route": route.strip()}
        headers: dict[str, str] = {}
        for item in spec.split(","):
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key:
                raise ValueError(f"fault item {item!r} must be key=value")
            if key.startswith("headers."):
                headers[key.removeprefix("headers.")] = value
            elif key in ("status", "times"):
                kwargs[key] = int(value)
            elif key == "latency_ms":
                kwargs[key] = float(value)
            elif key == "action":
                kwargs[key] = value
            elif key == "body":
                try:
                    kwargs[key] = json.loads(value)
                except ValueError:
                    kwargs[key] = value
            else:
                raise ValueError(f"unknown fault key {key!r}")
        kwargs["headers"] = headers
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Build from JSON: the dataclass fields, or ``{"spec": "ROUTE:..."}``."""
        if "spec" in data:
            return cls.parse(str(data["spec"]))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """The CLI-style spec of this fault, e.g. ``volumes.create:status=500``."""
        parts = []
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.action:
            parts.append(f"action={self.action}")
        if self.latency_ms:
            parts.append(f"latency_ms={self.latency_ms:g}")
        if self.times is not None:
            parts.append(f"times={self.times}")
        parts.extend(f"headers.{k}={v}" for k, v in self.headers.items())
        return f"{self.route}:{','.join(parts)}"


# --------------------------------------------------------------------------------------
# Errors, shaped the way cinder answers them
# --------------------------------------------------------------------------------------


class _ApiError(Exception):
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


def _fault_body(status: int, message: str, retry_after: str | None = None) -> dict[str, Any]:
    """cinder's ``{"<faultName>": {"code": N, "message": ...}}`` error body."""
    inner: dict[str, Any] = {"code": status, "message": message}
    if status == 413 and retry_after:
        inner["retryAfter"] = retry_after
    return {_FAULT_NAMES.get(status, "computeFault"): inner}


def _explanation(status: int) -> str:
    """webob's default text for a status, as cinder shows it when nothing more is known."""
    if status in _DEFAULT_EXPLANATIONS:
        return _DEFAULT_EXPLANATIONS[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _invalid_input(reason: str) -> _ApiError:
    # cinder.exception.InvalidInput is an Invalid, so wsgi turns it into a plain 400.
    return _ApiError(400, f"Invalid input received: {reason}", "InvalidInput")


def _quota_error(kind: str, message: str, resource: str) -> _ApiError:
    # QuotaError subclasses are not Invalid/NotFound, so they reach cinder's FaultWrapper,
    # which prefixes the class name and copies QuotaError.headers (Retry-After: 0).
    return _ApiError(
        413,
        f"{kind}: {message}",
        kind,
        {"Retry-After": "0"},
        span_attributes={"cinder.quota.resource": resource},
    )


_INTERNAL_ERROR = _DEFAULT_EXPLANATIONS[500]


# --------------------------------------------------------------------------------------
# Request validation (cinder/api/schemas/*.py and cinder/api/validation/*.py)
# --------------------------------------------------------------------------------------


def _is_uuid_like(value: Any) -> bool:
    """oslo_utils.uuidutils.is_uuid_like: any spelling ``uuid.UUID`` accepts."""
    try:
        canonical = str(value).replace("urn:", "").replace("uuid:", "").strip("{}")
        return str(uuid.UUID(value)).replace("-", "") == canonical.replace("-", "").lower()
    except (TypeError, ValueError, AttributeError):
        return False


def _check_name_length(value: Any, entity: str) -> bool:
    """cinder's ``*_non_mandatory_remove_white_spaces`` formats: <= 255 after strip."""
    if not isinstance(value, str) or not value:
        return True
    length = len(value.strip())
    if length > 255:
        # Raised inside the format checker, so it escapes jsonschema as InvalidInput.
        raise _invalid_input(f"{entity} has {length} characters, more than 255.")
    return True


def _number_from_str(value: Any) -> float | None:
    try:
        return int(value)
    except (ValueError, TypeError):
        try:
            return float(value)
        except (ValueError, TypeError):
            return None


def _string_aware(keyword: str) -> Callable[..., Iterator[jsonschema.ValidationError]]:
    """cinder checks minimum/maximum on numeric strings too (``"0"`` is below 1)."""
    original = jsonschema.Draft4Validator.VALIDATORS[keyword]

    def check(validator: Any, bound: Any, instance: Any, schema: Any) -> Iterator[Any]:
        number = _number_from_str(instance)
        if number is not None:
            yield from original(validator, bound, number, schema)

    return check


_FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
_FORMAT_CHECKER.checks("uuid")(_is_uuid_like)
_FORMAT_CHECKER.checks("name_non_mandatory_remove_white_spaces")(
    lambda value: _check_name_length(value, "name")
)
_FORMAT_CHECKER.checks("description_non_mandatory_remove_white_spaces")(
    lambda value: _check_name_length(value, "description")
)
_Validator = jsonschema.validators.extend(
    jsonschema.Draft4Validator,
    {"minimum": _string_aware("minimum"), "maximum": _string_aware("maximum")},
)

_NULLABLE_NAME = {"type": ["string", "null"], "minLength": 0, "maxLength": 255}
_OPTIONAL_UUID = {"oneOf": [{"type": "null"}, {"type": "string", "format": "uuid"}]}
_METADATA = {
    "type": ["object", "null"],
    "patternProperties": {"^[a-zA-Z0-9-_:. /]{1,255}$": {"type": "string", "maxLength": 255}},
    "additionalProperties": False,
}
_BOOLEAN = {
    "type": ["boolean", "string"],
    "enum": [True, "True", "TRUE", "true", "1", "ON", "On", "on", "YES", "Yes", "yes", "y", "t",
             False, "False", "FALSE", "false", "0", "OFF", "Off", "off", "NO", "No", "no", "n",
             "f"],
}  # fmt: skip

# cinder/api/schemas/volumes.py ``create`` (microversions 3.0 - 3.12).
_VOLUME_CREATE_SCHEMA = {
    "type": "object",
    "properties": {
        "volume": {
            "type": "object",
            "properties": {
                "name": {"type": ["string", "null"],
                         "format": "name_non_mandatory_remove_white_spaces"},
                "description": {"type": ["string", "null"],
                                "format": "description_non_mandatory_remove_white_spaces"},
                "display_name": {"type": ["string", "null"],
                                 "format": "name_non_mandatory_remove_white_spaces"},
                "display_description": {
                    "type": ["string", "null"],
                    "format": "description_non_mandatory_remove_white_spaces"},
                "volume_type": _NULLABLE_NAME,
                "metadata": _METADATA,
                "snapshot_id": _OPTIONAL_UUID,
                "source_volid": _OPTIONAL_UUID,
                "consistencygroup_id": _OPTIONAL_UUID,
                "size": {"type": ["integer", "string", "null"], "pattern": "^[0-9]+$",
                         "minimum": 1, "maximum": _DB_MAX_INT},
                "availability_zone": {"type": ["string", "null"], "minLength": 1,
                                      "maxLength": 255},
                "multiattach": {"oneOf": [{"type": "null"}, _BOOLEAN]},
                "image_id": {"type": ["string", "null"], "minLength": 0, "maxLength": 255},
                "imageRef": {"type": ["string", "null"], "minLength": 0, "maxLength": 255},
            },
            "additionalProperties": True,
        },
        "OS-SCH-HNT:scheduler_hints": {"type": ["object", "null"]},
    },
    "required": ["volume"],
    "additionalProperties": False,
}  # fmt: skip

# cinder/api/schemas/snapshots.py ``create`` (the description pattern is left out).
_SNAPSHOT_CREATE_SCHEMA = {
    "type": "object",
    "properties": {
        "snapshot": {
            "type": "object",
            "properties": {
                "name": _NULLABLE_NAME,
                "display_name": _NULLABLE_NAME,
                "description": {"type": ["string", "null"], "minLength": 0, "maxLength": 255},
                "volume_id": {"oneOf": [{"type": "string", "format": "uuid"},
                                        {"type": "null"}]},
                "force": _BOOLEAN,
                "metadata": _METADATA,
            },
            "required": ["volume_id"],
            "additionalProperties": False,
        },
    },
    "required": ["snapshot"],
    "additionalProperties": False,
}  # fmt: skip

# cinder/api/schemas/quotas.py ``update``; the key check is done in code (it needs the
# configured volume types).
_QUOTA_UPDATE_SCHEMA = {
    "type": "object",
    "properties": {"quota_set": {"type": "object", "minProperties": 1}},
    "required": ["quota_set"],
    "additionalProperties": False,
}


_VOLUME_CREATE = _Validator(_VOLUME_CREATE_SCHEMA, format_checker=_FORMAT_CHECKER)
_SNAPSHOT_CREATE = _Validator(_SNAPSHOT_CREATE_SCHEMA, format_checker=_FORMAT_CHECKER)
_QUOTA_UPDATE = _Validator(_QUOTA_UPDATE_SCHEMA, format_checker=_FORMAT_CHECKER)


def _validate(validator: Any, body: Any) -> None:
    """Validate like cinder's ``_SchemaValidator``: first error, cinder's wording."""
    try:
        validator.validate(body)
    except jsonschema.ValidationError as exc:
        if len(exc.path) > 0:
            detail = (
                f"Invalid input for field/attribute {exc.path.pop()}. "
                f"Value: {exc.instance}. {exc.message}"
            )
        else:
            detail = exc.message
        raise _ApiError(400, detail, "ValidationError") from None


def _parse_json_body(raw: bytes) -> Any:
    if not raw:
        # cinder 29's schema decorator reads kwargs['body'] before anything checks it is
        # there; the KeyError surfaces as an unexplained 500. Reproduced on purpose.
        raise _ApiError(500, _INTERNAL_ERROR, "KeyError")
    try:
        return json.loads(raw)
    except ValueError:
        raise _ApiError(400, "Malformed request body", "MalformedRequestBody") from None


def _is_valid_boolstr(value: Any) -> bool:
    return str(value).strip().lower() in _TRUE_STRINGS + _FALSE_STRINGS


def _bool_from_string(value: Any) -> bool:
    return str(value).strip().lower() in _TRUE_STRINGS


def _is_int_like(value: Any) -> bool:
    try:
        return str(int(value)) == str(value)
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------
# State: volumes, snapshots, quotas, ids and clock
# --------------------------------------------------------------------------------------


@dataclass
class _Volume:
    id: str
    project_id: str
    size: int
    availability_zone: str
    volume_type: str
    status: str
    created_at: datetime
    name: str | None
    description: str | None
    metadata: dict[str, str]
    snapshot_id: str | None = None
    source_volid: str | None = None
    bootable: bool = False
    host: str | None = None
    updated_at: datetime | None = None


@dataclass
class _Snapshot:
    id: str
    project_id: str
    volume_id: str
    size: int
    status: str
    progress: str
    created_at: datetime
    name: str | None
    description: str | None
    metadata: dict[str, str]
    updated_at: datetime | None = None


class _Ids:
    """Ids and timestamps: random/now normally, counter-based/fixed when deterministic."""

    def __init__(self, deterministic: bool) -> None:
        self.deterministic = deterministic
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def new(self, kind: str) -> str:
        if not self.deterministic:
            return str(uuid.uuid4())
        # One counter per kind, so e.g. a retried request does not shift volume ids.
        with self._lock:
            n = self._counters.get(kind, 0) + 1
            self._counters[kind] = n
        return str(uuid.uuid5(_ID_NAMESPACE, f"{kind}-{n}"))

    def now(self) -> datetime:
        if self.deterministic:
            return DETERMINISTIC_TIME
        return datetime.now(UTC).replace(tzinfo=None)

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()


def _fmt_time(value: datetime | None) -> str | None:
    # oslo_serialization.jsonutils prints datetimes with PERFECT_TIME_FORMAT.
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


# --------------------------------------------------------------------------------------
# Views (cinder/api/v3/views/volumes.py, cinder/api/views/snapshots.py, contrib/*)
# --------------------------------------------------------------------------------------


def _volume_view(vol: _Volume, base_url: str, *, show_extensions: bool) -> dict[str, Any]:
    """``legacy_detail`` at microversion 3.0 for a non-admin caller, keys in cinder order."""
    body = {
        "id": vol.id,
        "status": vol.status,
        "size": vol.size,
        "availability_zone": vol.availability_zone,
        "created_at": _fmt_time(vol.created_at),
        "updated_at": _fmt_time(vol.updated_at),
        "name": vol.name,
        "description": vol.description,
        "volume_type": vol.volume_type,
        "snapshot_id": vol.snapshot_id,
        "source_volid": vol.source_volid,
        "metadata": dict(vol.metadata),
        "links": [
            {"rel": "self", "href": f"{base_url}/v3/{vol.project_id}/volumes/{vol.id}"},
            {"rel": "bookmark", "href": f"{base_url}/{vol.project_id}/volumes/{vol.id}"},
        ],
        "user_id": SIMULATED_USER_ID,
        "bootable": str(vol.bootable).lower(),
        "encrypted": False,
        "replication_status": "disabled",
        "consistencygroup_id": None,
        "multiattach": False,
        "attachments": [],
    }
    if show_extensions:
        # Controller extensions only extend show/detail, never create; a project reader
        # passes the os-vol-tenant-attr policy.
        body["os-vol-tenant-attr:tenant_id"] = vol.project_id
    return {"volume": body}


def _snapshot_view(snap: _Snapshot, *, show_extensions: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": snap.id,
        "created_at": _fmt_time(snap.created_at),
        "updated_at": _fmt_time(snap.updated_at),
        "name": snap.name,
        "description": snap.description,
        "volume_id": snap.volume_id,
        "status": snap.status,
        "size": snap.size,
        "metadata": dict(snap.metadata),
    }
    if show_extensions:
        body["os-extended-snapshot-attributes:project_id"] = snap.project_id
        body["os-extended-snapshot-attributes:progress"] = snap.progress
    return {"snapshot": body}


def _versions_view(base_url: str) -> dict[str, Any]:
    """cinder/api/versions.py ``_KNOWN_VERSIONS`` through views/versions.py."""
    return {
        "versions": [
            {
                "id": "v3.0",
                "status": "CURRENT",
                "version": MAX_API_VERSION,
                "min_version": MIN_API_VERSION,
                "updated": API_VERSION_UPDATED,
                "links": [
                    {
                        "rel": "describedby",
                        "type": "text/html",
                        "href": "https://docs.openstack.org/",
                    },
                    {"rel": "self", "href": f"{base_url}/v3/"},
                ],
                "media-types": [
                    {
                        "base": "application/json",
                        "type": "application/vnd.openstack.volume+json;version=3",
                    }
                ],
            }
        ]
    }


# --------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Route:
    name: str  # one of ROUTES; faults match on it
    method: str
    template: str  # also the span name and http.route
    success: int  # the status a good answer has (a "garbage" fault reuses it)
    needs_token: bool = True


def _compile_template(template: str) -> re.Pattern[str]:
    """``/v3/{project_id}/volumes`` -> a regex with one named group per placeholder."""
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{pattern}$")


_ROUTE_TABLE = (
    _Route("versions", "GET", "/", 300, needs_token=False),
    _Route("versions", "GET", "/v3/", 200),
    _Route("versions", "GET", "/v3", 200),
    _Route("volumes.create", "POST", "/v3/{project_id}/volumes", 202),
    _Route("volumes.get", "GET", "/v3/{project_id}/volumes/{volume_id}", 200),
    _Route("snapshots.create", "POST", "/v3/{project_id}/snapshots", 202),
    _Route("snapshots.get", "GET", "/v3/{project_id}/snapshots/{snapshot_id}", 200),
    # Real cinder serves this as ``show`` of a project literally named "defaults", which
    # equals the defaults unless someone set quotas for that project.
    _Route("quotas.defaults", "GET", "/v3/{project_id}/os-quota-sets/defaults", 200),
    _Route(
        "quotas.defaults",
        "GET",
        "/v3/{project_id}/os-quota-sets/{target_project_id}/defaults",
        200,
    ),
    _Route("quotas.get", "GET", "/v3/{project_id}/os-quota-sets/{target_project_id}", 200),
    _Route("quotas.update", "PUT", "/v3/{project_id}/os-quota-sets/{target_project_id}", 200),
)
_COMPILED_ROUTES = tuple((route, _compile_template(route.template)) for route in _ROUTE_TABLE)


@dataclass
class _Match:
    route: _Route | None  # None: no route for this method (or path)
    params: dict[str, str]
    template: str | None = None  # the path template, even when the method is wrong
    allowed: list[str] = field(default_factory=list)  # methods the path does accept


def _match_route(method: str, path: str) -> _Match:
    allowed: list[str] = []
    template = None
    for route, regex in _COMPILED_ROUTES:
        found = regex.match(path)
        if not found:
            continue
        if route.method == method:
            return _Match(route, found.groupdict(), route.template)
        allowed.append(route.method)
        template = template or route.template
    return _Match(None, {}, template, sorted(set(allowed)))


# --------------------------------------------------------------------------------------
# The application: request in, outcome out (no socket I/O here)
# --------------------------------------------------------------------------------------


@dataclass
class _Request:
    method: str
    target: str  # path + query, as received
    headers: dict[str, str]
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
class _Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass
class _Disconnect:
    action: str  # "drop" or "reset"


_Outcome = _Response | _Disconnect


class _Call:
    """Per-request context handed to the route handlers."""

    def __init__(
        self,
        request: _Request,
        params: dict[str, str],
        tracer: Tracer,
        parent: otel_context.Context,
    ) -> None:
        self.request = request
        self.params = params
        self._tracer = tracer
        self._parent = parent

    @contextlib.contextmanager
    def step(self, name: str, **attributes: Any) -> Iterator[Span]:
        """A child INTERNAL span; an error inside marks it ERROR and records it."""
        with self._tracer.start_as_current_span(
            name,
            context=self._parent,
            kind=SpanKind.INTERNAL,
            attributes={k: v for k, v in attributes.items() if v is not None},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except _ApiError as exc:
                span.set_attributes(exc.span_attributes)
                # Name the exception after the cinder class it mirrors, not our wrapper.
                span.record_exception(exc, attributes={"exception.type": exc.kind})
                span.set_status(Status(StatusCode.ERROR, exc.message))
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise


class _Cinder:
    """The simulated cinder-api: routing, faults, tracing and the handlers."""

    def __init__(self, sim: CinderSimulator, tracer: Tracer, tracing: bool) -> None:
        self.sim = sim
        self.tracer = tracer
        self.tracing = tracing
        self.propagator = TraceContextTextMapPropagator()

    # ---- entry point ------------------------------------------------------------------

    def handle(self, request: _Request) -> _Outcome:
        """Answer one Cinder API request inside a SERVER span."""
        match = _match_route(request.method, request.path)
        request_id = "req-" + self.sim._ids.new("request")
        template = match.template
        parent = otel_context.Context()
        if self.tracing:
            parent = self.propagator.extract(request.lower_headers)
        with self.tracer.start_as_current_span(
            f"{request.method} {template}" if template else request.method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=self._server_attributes(request, template, request_id, match),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                outcome = self._handle_in_span(request, match, request_id, span)
            except Exception as exc:  # a bug in the simulator: answer like cinder would
                span.record_exception(exc)
                outcome = self._error_response(
                    _ApiError(500, _INTERNAL_ERROR, type(exc).__name__), request_id
                )
            self._finish_span(span, outcome)
        # The span ends before the bytes go out, so a client that has its answer can
        # already find the span in an in-memory exporter.
        return outcome

    def _server_attributes(
        self, request: _Request, template: str | None, request_id: str, match: _Match
    ) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "url.scheme": "http",
            "url.path": request.path,
            "server.address": request.server_host,
            "server.port": request.server_port,
            "network.protocol.version": "1.1",
            "client.address": request.client_address,
            "cinder.request_id": request_id,
        }
        if request.query:
            attributes["url.query"] = request.query
        if template:
            attributes["http.route"] = template
        if match.route:
            attributes["cinder_sim.route"] = match.route.name
        if "project_id" in match.params:
            attributes["openstack.project_id"] = match.params["project_id"]
        user_agent = request.header("User-Agent")
        if user_agent:
            attributes["user_agent.original"] = user_agent
        global_id = request.header("X-OpenStack-Request-ID")
        if global_id and _GLOBAL_REQUEST_ID_RE.match(global_id):
            # oslo.middleware drops anything that is not req-<uuid>; so do we.
            attributes["openstack.global_request_id"] = global_id
        return attributes

    @staticmethod
    def _finish_span(span: Span, outcome: _Outcome) -> None:
        if isinstance(outcome, _Disconnect):
            span.set_attribute("error.type", f"connection_{outcome.action}")
            span.set_status(
                Status(StatusCode.ERROR, f"fault injection: connection {outcome.action}")
            )
            return
        span.set_attribute("http.response.status_code", outcome.status)
        if outcome.status >= 500:
            span.set_attribute("error.type", str(outcome.status))
            span.set_status(Status(StatusCode.ERROR))

    def _handle_in_span(
        self, request: _Request, match: _Match, request_id: str, span: Span
    ) -> _Outcome:
        call = _Call(request, match.params, self.tracer, trace.set_span_in_context(span))
        faults = self.sim._take_faults(match.route.name) if match.route else []
        latency_ms = sum(f.latency_ms for f in faults)
        if latency_ms:
            with call.step("injected_latency", **{"cinder_sim.latency_ms": latency_ms}):
                time.sleep(latency_ms / 1000.0)
        decisive = next((f for f in faults if f.action or f.status is not None), None)
        if faults:
            span.set_attribute("cinder_sim.fault", ";".join(f.describe() for f in faults))
        if decisive is not None and decisive.action in ("drop", "reset"):
            return _Disconnect(decisive.action)
        if decisive is not None and decisive.action is None:
            return self._forced_response(decisive, request_id)

        response = self._route(call, match, request_id)
        if decisive is None:
            return response
        assert match.route is not None  # faults only ever match a known route
        if decisive.action == "garbage":
            response.status = decisive.status or match.route.success
            response.body = _GARBAGE_BODY
        elif decisive.action == "truncated":
            response.status = decisive.status or response.status
            response.body = response.body[: len(response.body) // 2]
        response.headers.extend(decisive.headers.items())
        return response

    # ---- responses --------------------------------------------------------------------

    @staticmethod
    def _standard_headers(request_id: str, *, with_body: bool) -> list[tuple[str, str]]:
        headers = [("Content-Type", "application/json")] if with_body else []
        headers += [
            _API_VERSION_HEADER,
            ("Vary", "OpenStack-API-Version"),
            # cinder's wsgi layer sets x-compute-request-id (which python-cinderclient
            # reads); oslo.middleware's RequestId adds x-openstack-request-id. Same id.
            ("x-compute-request-id", request_id),
            ("x-openstack-request-id", request_id),
        ]
        return headers

    def _json_response(
        self, status: int, body: Any, request_id: str, extra: dict[str, str] | None = None
    ) -> _Response:
        """A cinder response; ``body`` is JSON-able, raw ``bytes``, or None for no body."""
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        headers = self._standard_headers(request_id, with_body=body is not None)
        headers.extend((extra or {}).items())
        return _Response(status, headers, data)

    def _error_response(self, error: _ApiError, request_id: str) -> _Response:
        body = _fault_body(error.status, error.message, error.headers.get("Retry-After"))
        return self._json_response(error.status, body, request_id, error.headers)

    def _forced_response(self, fault: Fault, request_id: str) -> _Response:
        """The answer for a ``status`` fault: its body, else a cinder-shaped one."""
        status = int(fault.status or 500)
        body = fault.body
        if body is None and status >= 400:
            body = _fault_body(status, _explanation(status), fault.headers.get("Retry-After"))
        elif isinstance(body, str):
            body = body.encode()  # a text body goes out verbatim, JSON or not
        return self._json_response(status, body, request_id, fault.headers)

    @staticmethod
    def _unauthorized(request: _Request, request_id: str) -> _Response:
        # keystonemiddleware's auth_token rejection; it never reaches cinder's wsgi layer,
        # so only oslo's x-openstack-request-id is added.
        body = {
            "error": {
                "code": 401,
                "title": "Unauthorized",
                "message": "The request you have made requires authentication.",
            }
        }
        return _Response(
            401,
            [
                ("Content-Type", "application/json; charset=UTF-8"),
                ("WWW-Authenticate", f'Keystone uri="{request.base_url}/identity"'),
                ("x-openstack-request-id", request_id),
            ],
            json.dumps(body).encode(),
        )

    # ---- routing ----------------------------------------------------------------------

    def _route(self, call: _Call, match: _Match, request_id: str) -> _Response:
        request = call.request
        if match.route is not None:
            needs_token = match.route.needs_token
        else:
            # Everything under /v3 sits behind keystonemiddleware; other paths 404 first.
            needs_token = request.path.startswith("/v3")
        if needs_token and not request.header("X-Auth-Token"):
            return self._unauthorized(request, request_id)
        if match.route is None:
            if match.allowed:
                error = _ApiError(
                    405,
                    f"The method {request.method} is not allowed for this resource.",
                    "HTTPMethodNotAllowed",
                    {"Allow": ", ".join(match.allowed)},
                )
            else:
                error = _ApiError(404, _DEFAULT_EXPLANATIONS[404], "HTTPNotFound")
            return self._error_response(error, request_id)
        handler = self._handlers[match.route.name]
        try:
            status, body = handler(self, call)
        except _ApiError as error:
            return self._error_response(error, request_id)
        return self._json_response(status, body, request_id)

    # ---- handlers ---------------------------------------------------------------------

    def _versions(self, call: _Call) -> tuple[int, Any]:
        status = 300 if call.request.path == "/" else 200
        return status, _versions_view(call.request.base_url)

    def _volumes_create(self, call: _Call) -> tuple[int, Any]:
        state = self.sim._state
        project_id = call.params["project_id"]
        with call.step("validate", **{"openstack.project_id": project_id}) as span:
            plan = state.plan_volume(project_id, call.request.body)
            span.set_attribute("cinder.volume.size", plan["size"])
            span.set_attribute("cinder.volume_type", plan["volume_type"])
            span.set_attribute("cinder.availability_zone", plan["availability_zone"])
        # Quota check and insert are one critical section, as cinder's reservation is.
        with state.lock:
            with call.step("check_quota", **{"cinder.volume.size": plan["size"]}):
                state.check_volume_quota(project_id, plan["size"], plan["volume_type"])
            with call.step("persist") as span:
                volume = state.insert_volume(project_id, plan)
                span.set_attribute("cinder.volume_id", volume.id)
                body = _volume_view(volume, call.request.base_url, show_extensions=False)
                state.settle_volume(volume)
        return 202, body

    def _volumes_get(self, call: _Call) -> tuple[int, Any]:
        volume_id = call.params["volume_id"]
        with call.step("lookup", **{"cinder.volume_id": volume_id}) as span:
            volume = self.sim._state.get_volume(call.params["project_id"], volume_id)
            span.set_attribute("cinder.volume.status", volume.status)
            return 200, _volume_view(volume, call.request.base_url, show_extensions=True)

    def _snapshots_create(self, call: _Call) -> tuple[int, Any]:
        state = self.sim._state
        project_id = call.params["project_id"]
        with call.step("validate", **{"openstack.project_id": project_id}) as span:
            plan = state.plan_snapshot(project_id, call.request.body)
            span.set_attribute("cinder.volume_id", plan["volume"].id)
            span.set_attribute("cinder.snapshot.size", plan["volume"].size)
        with state.lock:
            with call.step("check_quota", **{"cinder.snapshot.size": plan["volume"].size}):
                state.check_snapshot_quota(project_id, plan["volume"])
            with call.step("persist") as span:
                snapshot = state.insert_snapshot(project_id, plan)
                span.set_attribute("cinder.snapshot_id", snapshot.id)
                body = _snapshot_view(snapshot, show_extensions=False)
                state.settle_snapshot(snapshot)
        return 202, body

    def _snapshots_get(self, call: _Call) -> tuple[int, Any]:
        snapshot_id = call.params["snapshot_id"]
        with call.step("lookup", **{"cinder.snapshot_id": snapshot_id}) as span:
            snapshot = self.sim._state.get_snapshot(call.params["project_id"], snapshot_id)
            span.set_attribute("cinder.snapshot.status", snapshot.status)
            return 200, _snapshot_view(snapshot, show_extensions=True)

    def _quotas_get(self, call: _Call) -> tuple[int, Any]:
        target = call.params["target_project_id"]
        with call.step("lookup", **{"cinder.quota.project_id": target}):
            values = parse_qs(call.request.query, keep_blank_values=True).get("usage")
            usage = False
            if values is not None:
                if not _is_valid_boolstr(values[-1]):
                    raise _ApiError(
                        400,
                        f"Value '{values[-1]}' for 'usage' is not a boolean.",
                        "InvalidParameterValue",
                    )
                usage = _bool_from_string(values[-1])
            quota_set = self.sim._state.quota_set(target, usage=usage)
        quota_set["id"] = target
        return 200, {"quota_set": quota_set}

    def _quotas_update(self, call: _Call) -> tuple[int, Any]:
        target = call.params["target_project_id"]
        state = self.sim._state
        with call.step("validate", **{"cinder.quota.project_id": target}):
            body = _parse_json_body(call.request.body)
            _validate(_QUOTA_UPDATE, body)
            changes = state.validate_quota_changes(body["quota_set"])
        with state.lock, call.step("persist", **{"cinder.quota.project_id": target}):
            state.update_quotas(target, changes)
            # cinder's update answers the new limits without an "id" key.
            return 200, {"quota_set": state.quota_set(target, usage=False)}

    def _quotas_defaults(self, call: _Call) -> tuple[int, Any]:
        target = call.params.get("target_project_id", "defaults")
        with call.step("lookup", **{"cinder.quota.project_id": target}):
            quota_set = self.sim._state.default_quota_set()
        quota_set["id"] = target
        return 200, {"quota_set": quota_set}

    _handlers: dict[str, Callable[[_Cinder, _Call], tuple[int, Any]]] = {
        "versions": _versions,
        "volumes.create": _volumes_create,
        "volumes.get": _volumes_get,
        "snapshots.create": _snapshots_create,
        "snapshots.get": _snapshots_get,
        "quotas.get": _quotas_get,
        "quotas.update": _quotas_update,
        "quotas.defaults": _quotas_defaults,
    }


class _State:
    """Everything the simulated Cinder stores. Public methods take ``lock`` themselves."""

    def __init__(
        self,
        ids: _Ids,
        availability_zones: tuple[str, ...],
        volume_types: tuple[str, ...],
        default_quotas: dict[str, int],
    ) -> None:
        self.lock = threading.RLock()
        self.ids = ids
        self.availability_zones = availability_zones
        self.volume_types = {
            name: str(uuid.uuid5(_ID_NAMESPACE, f"volume-type-{name}")) for name in volume_types
        }
        self.defaults = self._full_defaults(default_quotas)
        self.volumes: dict[str, _Volume] = {}
        self.snapshots: dict[str, _Snapshot] = {}
        self.quotas: dict[str, dict[str, int]] = {}
        self._usage: dict[str, dict[str, int]] = {}  # project -> resource -> in_use

    def _full_defaults(self, overrides: dict[str, int]) -> dict[str, int]:
        defaults = dict(_BASE_QUOTA_DEFAULTS)
        for name in self.volume_types:
            for part in ("volumes", "gigabytes", "snapshots"):
                defaults[f"{part}_{name}"] = -1
        defaults.update(_GROUP_QUOTA_DEFAULTS)
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ValueError(f"unknown quota resource(s): {', '.join(unknown)}")
        defaults.update({k: int(v) for k, v in overrides.items()})
        return defaults

    def clear(self) -> None:
        with self.lock:
            self.volumes.clear()
            self.snapshots.clear()
            self.quotas.clear()
            self._usage.clear()

    # ---- volumes ----------------------------------------------------------------------

    def _resolve_type(self, requested: str) -> str:
        """objects.VolumeType.get_by_name_or_id; returns the type name."""
        if _is_uuid_like(requested):
            for name, type_id in self.volume_types.items():
                if type_id == requested:
                    return name
            raise _ApiError(
                404, f"Volume type {requested} could not be found.", "VolumeTypeNotFound"
            )
        if requested not in self.volume_types:
            raise _ApiError(
                404,
                f"Volume type with name {requested} could not be found.",
                "VolumeTypeNotFoundByName",
            )
        return requested

    def plan_volume(self, project_id: str, raw_body: bytes) -> dict[str, Any]:
        """Every check cinder 29 makes before reserving quota, in cinder's order."""
        body = _parse_json_body(raw_body)
        _validate(_VOLUME_CREATE, body)
        volume = body["volume"]
        for key in ("name", "description", "display_name", "display_description"):
            if isinstance(volume.get(key), str):
                volume[key] = volume[key].strip()
        name = volume["name"] if "name" in volume else volume.get("display_name")
        if "description" in volume:
            description = volume["description"]
        else:
            description = volume.get("display_description")
        image_ref = volume.get("imageRef", volume.get("image_id"))

        with self.lock:
            volume_type = None
            if volume.get("volume_type"):  # "" and null both mean "the default type"
                volume_type = self._resolve_type(volume["volume_type"])
            snapshot = source = None
            if volume.get("snapshot_id") is not None:
                snapshot = self.get_snapshot(project_id, volume["snapshot_id"])
            if volume.get("source_volid") is not None:
                source = self.get_volume(project_id, volume["source_volid"])
            if volume.get("consistencygroup_id") is not None:
                group_id = volume["consistencygroup_id"]
                raise _ApiError(404, f"Group {group_id} could not be found.", "GroupNotFound")
            if image_ref is not None:
                # There is no Glance behind the simulator, so no image can be found.
                raise _ApiError(
                    400,
                    "Invalid image identifier or unable to access requested image.",
                    "HTTPBadRequest",
                )
            if volume.get("backup_id"):
                backup_id = volume["backup_id"]
                raise _ApiError(404, f"Backup {backup_id} could not be found.", "BackupNotFound")
            source_volume = None
            if snapshot is not None:
                source_volume = self.volumes.get(snapshot.volume_id)
            elif source is not None:
                source_volume = source

            size = volume.get("size")
            if size is None and snapshot is not None:
                size = snapshot.size
            elif size is None and source is not None:
                size = source.size
            if volume.get("multiattach") is not None and _bool_from_string(volume["multiattach"]):
                raise _ApiError(
                    400,
                    "multiattach parameter has been removed. The default "
                    "behavior is to use multiattach enabled volume types. "
                    "Contact your administrator to create a multiattach "
                    "enabled volume type and use it to create multiattach "
                    "volumes.",
                    "HTTPBadRequest",
                )
            # volume/api.py API.create
            if size and (not _is_int_like(size) or int(size) <= 0):
                raise _invalid_input(
                    f"Invalid volume size provided for create request: {size} (size argument "
                    "must be an integer (or string representation of an integer) and greater "
                    "than zero)."
                )
            # volume/flows/api/create_volume.py ExtractVolumeRequestTask
            if snapshot is not None and source is not None:
                # utils.check_exclusive_options lists every option it was given.
                raise _invalid_input(
                    "May specify only one of backup, imageRef, snapshot, source volume"
                )
            if snapshot is not None and snapshot.status != "available":
                raise _ApiError(
                    400,
                    "Invalid snapshot: Originating snapshot status must be "
                    "one of 'available' values",
                    "InvalidSnapshot",
                )
            if source is not None and source.status not in ("available", "in-use"):
                raise _ApiError(
                    400,
                    "Invalid volume: Originating source volume status must "
                    "be one of 'available, in-use' values",
                    "InvalidVolume",
                )
            size = int(size) if _is_int_like(size) else size
            if not isinstance(size, int) or size <= 0:
                raise _invalid_input(f"Volume size '{size}' must be an integer and greater than 0")
            if source is not None and size < source.size:
                raise _invalid_input(
                    f"Volume size '{size}'GB cannot be smaller than original volume size  "
                    f"{source.size}GB. They must be >= original volume size."
                )
            if snapshot is not None and source is None and size < snapshot.size:
                raise _invalid_input(
                    f"Volume size '{size}'GB cannot be smaller than the snapshot size "
                    f"{snapshot.size}GB. They must be >= original snapshot size."
                )
            availability_zone = self._pick_zone(
                volume.get("availability_zone"), source_volume, snapshot is not None
            )
            if volume_type is None:
                # _get_volume_type: inherit the source's type, else the default type.
                volume_type = (
                    source_volume.volume_type if source_volume is not None else "__DEFAULT__"
                )
        return {
            "size": size,
            "name": name,
            "description": description,
            "volume_type": volume_type,
            "availability_zone": availability_zone,
            "metadata": volume.get("metadata") or {},
            "snapshot_id": snapshot.id if snapshot else None,
            "source_volid": source.id if source else None,
            "bootable": source_volume.bootable if source_volume else False,
        }

    def _pick_zone(
        self, requested: str | None, source_volume: _Volume | None, from_snapshot: bool
    ) -> str:
        """_extract_availability_zones with cinder's default options."""
        zone = requested
        if zone is None and source_volume is not None:
            zone = source_volume.availability_zone
        if zone is None:
            zone = self.availability_zones[0]  # default_availability_zone
        if zone not in self.availability_zones:
            raise _ApiError(
                400, f"Availability zone '{zone}' is invalid.", "InvalidAvailabilityZone"
            )
        # cloned_volume_same_az defaults to True.
        if source_volume is not None and source_volume.availability_zone != zone:
            what = "snapshot" if from_snapshot else "source volume"
            raise _invalid_input(f"Volume must be in the same availability zone as the {what}")
        return zone

    def check_volume_quota(self, project_id: str, size: int, volume_type: str) -> None:
        """QuotaReserveTask: per_volume_gigabytes, then volumes/gigabytes (+ per type)."""
        per_volume = self.limits(project_id)["per_volume_gigabytes"]
        if per_volume >= 0 and size > per_volume:
            raise _quota_error(
                "VolumeSizeExceedsLimit",
                f"Requested volume size {size}G is larger than maximum allowed limit "
                f"{per_volume}G.",
                "per_volume_gigabytes",
            )
        deltas = {
            "volumes": 1,
            "gigabytes": size,
            f"volumes_{volume_type}": 1,
            f"gigabytes_{volume_type}": size,
        }
        self._reserve(project_id, deltas, size, resource="volumes")

    def _reserve(self, project_id: str, deltas: dict[str, int], size: int, resource: str) -> None:
        """db.quota_reserve + quota_utils.process_reserve_over_quota, minus the bookkeeping
        (usage is counted from the stored volumes and snapshots instead)."""
        limits = self.limits(project_id)
        usage = self.usage(project_id)
        overs = sorted(
            name
            for name, delta in deltas.items()
            if limits.get(name, -1) >= 0 and limits[name] < delta + usage.get(name, 0)
        )
        # The first over in sorted order decides the message, as in cinder.
        for over in overs:
            if "gigabytes" in over:
                raise _quota_error(
                    "VolumeSizeExceedsAvailableQuota",
                    f"Requested volume or snapshot exceeds allowed {over} quota. Requested "
                    f"{size}G, quota is {limits[over]}G and {usage.get(over, 0)}G has been "
                    "consumed.",
                    over,
                )
            if resource in over and resource == "snapshots":
                raise _quota_error(
                    "SnapshotLimitExceeded",
                    f"Maximum number of snapshots allowed ({limits[over]}) exceeded",
                    over,
                )
            if resource in over:
                raise _quota_error(
                    "VolumeLimitExceeded",
                    f"Maximum number of volumes allowed ({limits[over]}) exceeded for quota "
                    f"'{over}'.",
                    over,
                )

    def insert_volume(self, project_id: str, plan: dict[str, Any]) -> _Volume:
        volume = _Volume(
            id=self.ids.new("volume"),
            project_id=project_id,
            size=plan["size"],
            availability_zone=plan["availability_zone"],
            volume_type=plan["volume_type"],
            status="creating",
            created_at=self.ids.now(),
            name=plan["name"],
            description=plan["description"],
            metadata=dict(plan["metadata"]),
            snapshot_id=plan["snapshot_id"],
            source_volid=plan["source_volid"],
            bootable=plan["bootable"],
        )
        with self.lock:
            self.volumes[volume.id] = volume
            self._count(project_id, "volumes", volume.volume_type, volume.size)
        return volume

    def settle_volume(self, volume: _Volume) -> None:
        """The instant scheduler: the volume lands on a backend and becomes available."""
        with self.lock:
            volume.status = "available"
            volume.host = f"cinder-sim@{volume.volume_type}#{volume.volume_type}"
            volume.updated_at = self.ids.now()

    def get_volume(self, project_id: str, volume_id: str) -> _Volume:
        with self.lock:
            volume = self.volumes.get(volume_id)
        if volume is None or volume.project_id != project_id:
            raise _ApiError(404, f"Volume {volume_id} could not be found.", "VolumeNotFound")
        return volume

    # ---- snapshots --------------------------------------------------------------------

    def plan_snapshot(self, project_id: str, raw_body: bytes) -> dict[str, Any]:
        body = _parse_json_body(raw_body)
        _validate(_SNAPSHOT_CREATE, body)
        snapshot = body["snapshot"]
        volume = self.get_volume(project_id, str(snapshot["volume_id"]))
        force = snapshot.get("force")
        force = _bool_from_string(force) if force is not None else False
        for key in ("name", "description", "display_name"):
            if isinstance(snapshot.get(key), str):
                snapshot[key] = snapshot[key].strip()
        name = snapshot["name"] if "name" in snapshot else snapshot.get("display_name")
        if not volume.host:
            raise _ApiError(
                400,
                "Invalid volume: The snapshot cannot be created because "
                "volume has not been scheduled to any host.",
                "InvalidVolume",
            )
        if volume.status == "error":
            raise _ApiError(
                400,
                "Invalid volume: The snapshot cannot be created when the "
                "volume is in error status.",
                "InvalidVolume",
            )
        valid = ("available", "in-use") if force else ("available",)
        if volume.status not in valid:
            raise _ApiError(
                400,
                f"Invalid volume: Volume {volume.id} status must be "
                f"{', '.join(valid)}, but current status is: {volume.status}.",
                "InvalidVolume",
            )
        return {
            "volume": volume,
            "name": name,
            "description": snapshot.get("description"),
            "metadata": snapshot.get("metadata") or {},
        }

    def check_snapshot_quota(self, project_id: str, volume: _Volume) -> None:
        deltas = {
            "snapshots": 1,
            "gigabytes": volume.size,
            f"snapshots_{volume.volume_type}": 1,
            f"gigabytes_{volume.volume_type}": volume.size,
        }
        self._reserve(project_id, deltas, volume.size, resource="snapshots")

    def insert_snapshot(
        self, project_id: str, plan: dict[str, Any], *, snapshot_id: str | None = None
    ) -> _Snapshot:
        snapshot = _Snapshot(
            id=snapshot_id or self.ids.new("snapshot"),
            project_id=project_id,
            volume_id=plan["volume"].id,
            size=plan["volume"].size,
            status="creating",
            progress="0%",
            created_at=self.ids.now(),
            name=plan["name"],
            description=plan["description"],
            metadata=dict(plan["metadata"]),
        )
        with self.lock:
            self.snapshots[snapshot.id] = snapshot
            self._count(project_id, "snapshots", plan["volume"].volume_type, snapshot.size)
        return snapshot

    def settle_snapshot(self, snapshot: _Snapshot, status: str = "available") -> None:
        with self.lock:
            snapshot.status = status
            snapshot.progress = "100%" if status == "available" else snapshot.progress
            snapshot.updated_at = self.ids.now()

    def get_snapshot(self, project_id: str, snapshot_id: str) -> _Snapshot:
        with self.lock:
            snapshot = self.snapshots.get(snapshot_id)
        if snapshot is None or snapshot.project_id != project_id:
            raise _ApiError(404, f"Snapshot {snapshot_id} could not be found.", "SnapshotNotFound")
        return snapshot

    # ---- quotas -----------------------------------------------------------------------

    def limits(self, project_id: str) -> dict[str, int]:
        with self.lock:
            return {**self.defaults, **self.quotas.get(project_id, {})}

    def usage(self, project_id: str) -> dict[str, int]:
        """in_use per quota resource (nothing is ever deleted, so it only grows)."""
        with self.lock:
            return dict(self._usage.get(project_id, {}))

    def _count(self, project_id: str, kind: str, type_name: str, size: int) -> None:
        """Book a new volume or snapshot against its project's usage."""
        used = self._usage.setdefault(project_id, {})
        for suffix in ("", f"_{type_name}"):
            used[f"{kind}{suffix}"] = used.get(f"{kind}{suffix}", 0) + 1
            # Snapshots count against gigabytes too (no_snapshot_gb_quota is False).
            used[f"gigabytes{suffix}"] = used.get(f"gigabytes{suffix}", 0) + size

    def quota_set(self, project_id: str, *, usage: bool) -> dict[str, Any]:
        limits = self.limits(project_id)
        if not usage:
            return limits
        used = self.usage(project_id)
        return {
            name: {"limit": limit, "in_use": used.get(name, 0), "reserved": 0}
            for name, limit in limits.items()
        }

    def default_quota_set(self) -> dict[str, Any]:
        return dict(self.defaults)

    def validate_quota_changes(self, quota_set: dict[str, Any]) -> dict[str, int]:
        """cinder's ``quota_set`` format check: known keys, integers >= -1."""
        bad = [
            key for key in quota_set if key not in self.defaults and key not in ("tenant_id", "id")
        ]
        changes: dict[str, int] = {}
        for key, value in quota_set.items():
            if key in bad or key in ("tenant_id", "id"):
                continue
            try:
                number = int(str(value))
            except ValueError:
                raise _ApiError(400, f"{key} must be an integer", "HTTPBadRequest") from None
            if number < -1:
                raise _ApiError(400, f"{key} must be >= -1", "HTTPBadRequest")
            if number > _DB_MAX_INT:
                raise _ApiError(400, f"{key} must be <= {_DB_MAX_INT}", "HTTPBadRequest")
            changes[key] = number
        if bad:
            raise _invalid_input(f"Bad key(s) in quota set: {', '.join(bad)}")
        return changes

    def update_quotas(self, project_id: str, changes: dict[str, int]) -> None:
        with self.lock:
            used = self.usage(project_id)
            for key, value in changes.items():
                in_use = used.get(key, 0)
                if key != "per_volume_gigabytes" and value != -1 and value < in_use:
                    raise _ApiError(
                        400,
                        f"Quota {key} limit must be equal or greater than existing resources. "
                        f"Current usage is {in_use} and the requested limit is {value}.",
                        "HTTPBadRequest",
                    )
            self.quotas.setdefault(project_id, {}).update(changes)


# --------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: CinderSimulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """Socket I/O only: read the request, hand it to the simulator, write the outcome."""

    protocol_version = "HTTP/1.1"  # keep-alive, like cinder-api behind uwsgi/apache
    disable_nagle_algorithm = True  # else delayed ACK stalls each keep-alive request ~40 ms
    server_version = "cinder-sim"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.simulator._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.simulator._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: nothing (least of all a token) goes to stderr."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        """The request body (Content-Length or chunked); ValueError if it is malformed."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length else b""

    def _dispatch(self) -> None:
        sim = self.server.simulator
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True  # we no longer know where the next request starts
            self._write(_Response(400, [("Content-Type", "text/plain")], b"bad request body"))
            return
        path = urlsplit(self.path).path
        if path == "/__sim__" or path.startswith("/__sim__/"):
            self._write(sim._admin(self.command, path, body))
            return
        headers = dict(self.headers.items())
        sim._record(RecordedRequest(self.command, self.path, headers, body))
        host, port = self.server.server_address[:2]
        request = _Request(
            self.command, self.path, headers, body, str(host), int(port), self.client_address[0]
        )
        outcome = sim._app.handle(request)
        if isinstance(outcome, _Disconnect):
            self._disconnect(outcome.action)
        else:
            self._write(outcome)

    def _write(self, response: _Response) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.body:
                self.wfile.write(response.body)
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it

    def _disconnect(self, action: str) -> None:
        self.close_connection = True
        if action == "reset":
            # Linger on with a 0 s timeout: close() sends RST instead of FIN. The fd really
            # closes when finish() drops the last file object (before socketserver's own
            # shutdown(SHUT_WR), which would otherwise send a FIN first).
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()


# --------------------------------------------------------------------------------------
# Public simulator
# --------------------------------------------------------------------------------------


class CinderSimulator:
    """A Cinder v3 API on a real socket; see the module docstring for what it serves."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        deterministic: bool = False,
        tracer_provider: trace.TracerProvider | None = None,
        availability_zones: tuple[str, ...] = ("nova",),
        volume_types: tuple[str, ...] = ("__DEFAULT__", "lvmdriver-1"),
        default_quotas: dict[str, int] | None = None,
        faults: Iterable[Fault] = (),
    ) -> None:
        if not availability_zones:
            raise ValueError("at least one availability zone is needed")
        if "__DEFAULT__" not in volume_types:
            # cinder refuses to create untyped volumes without its default type.
            volume_types = ("__DEFAULT__", *volume_types)
        self.deterministic = deterministic
        self._ids = _Ids(deterministic)
        self._state = _State(
            self._ids, tuple(availability_zones), tuple(volume_types), dict(default_quotas or {})
        )
        if tracer_provider is not None:
            tracer: Tracer = tracer_provider.get_tracer("voltrace.cinder_sim")
        else:
            tracer = trace.NoOpTracer()
        self._app = _Cinder(self, tracer, tracing=tracer_provider is not None)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        for fault in faults:
            self.inject(fault)
        self.recorded: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False

        # Bind now, so url and endpoint_template are known before start().
        self._server = _HTTPServer((host, port), self)
        bound_host, bound_port = self._server.server_address[:2]
        shown_host = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self.host = str(bound_host)
        self.port = int(bound_port)
        self.url = f"http://{shown_host}:{self.port}"
        self.endpoint_template = self.url + "/v3/%(project_id)s"

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> CinderSimulator:
        """Serve in a daemon thread; returns self. Calling it twice is harmless."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("a stopped CinderSimulator cannot be restarted")
            if self._thread is None:
                self._serving = True
                self._thread = threading.Thread(
                    target=self._server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"cinder-sim:{self.port}",
                    daemon=True,
                )
                self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another one."""
        with self._lock:
            if self._stopped or self._serving:
                raise RuntimeError("the simulator is already serving or was stopped")
            self._serving = True
        self._server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections, close the socket. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            serving = self._serving
        if serving:
            self._server.shutdown()  # only safe once serve_forever has been entered
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> CinderSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- recorded requests and faults -------------------------------------------------

    def clear_recorded(self) -> None:
        """Forget the recorded requests (the list object stays the same)."""
        with self._lock:
            self.recorded.clear()

    def inject(self, fault: Fault) -> None:
        """Add a fault at runtime. A copy is kept, so ``times`` counts down privately."""
        if not isinstance(fault, Fault):
            raise TypeError(f"expected a Fault, got {type(fault).__name__}")
        with self._lock:
            self._faults.append(copy.deepcopy(fault))

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """The active faults (copies), with their remaining ``times``."""
        with self._lock:
            return copy.deepcopy(self._faults)

    def reset(self) -> None:
        """Drop volumes, snapshots, quotas, recorded requests and faults; restart ids."""
        self._state.clear()
        self._ids.reset()
        with self._lock:
            self.recorded.clear()
            self._faults.clear()

    def add_snapshot(
        self,
        project_id: str,
        *,
        size: int = 1,
        status: str = "available",
        snapshot_id: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Create a backing volume and a snapshot of it directly (no quota, no HTTP).

        Returns the snapshot as ``GET /v3/{p}/snapshots/{id}`` shows it.
        """
        if size < 1:
            raise ValueError("size must be >= 1")
        state = self._state
        with state.lock:
            volume = state.insert_volume(
                project_id,
                {
                    "size": size,
                    "availability_zone": state.availability_zones[0],
                    "volume_type": "__DEFAULT__",
                    "name": None,
                    "description": None,
                    "metadata": {},
                    "snapshot_id": None,
                    "source_volid": None,
                    "bootable": False,
                },
            )
            state.settle_volume(volume)
            plan = {"volume": volume, "name": name, "description": None, "metadata": {}}
            snapshot = state.insert_snapshot(project_id, plan, snapshot_id=snapshot_id)
            state.settle_snapshot(snapshot, status=status)
            return _snapshot_view(snapshot, show_extensions=True)["snapshot"]

    # ---- internals used by the handler ------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.recorded.append(request)

    def _take_faults(self, route: str) -> list[Fault]:
        """The faults that apply to this request; each one counts one use."""
        taken: list[Fault] = []
        with self._lock:
            for fault in list(self._faults):
                if fault.route != route:
                    continue
                taken.append(copy.copy(fault))
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
        return taken

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _admin(self, method: str, path: str, body: bytes) -> _Response:
        """``/__sim__/`` endpoints for tests and demos (never recorded or traced)."""

        def reply(status: int, payload: Any = None) -> _Response:
            if payload is None:
                return _Response(status, [])
            return _Response(
                status, [("Content-Type", "application/json")], json.dumps(payload).encode()
            )

        def fault_list() -> list[dict[str, Any]]:
            return [f.to_dict() for f in self.faults]

        if path == "/__sim__/faults":
            if method == "GET":
                return reply(200, fault_list())
            if method == "DELETE":
                self.clear_faults()
                return reply(200, fault_list())
            if method == "POST":
                try:
                    data = json.loads(body or b"null")
                    if not isinstance(data, dict):
                        raise ValueError("expected a JSON object describing a Fault")
                    self.inject(Fault.from_dict(data))
                except (ValueError, TypeError) as exc:
                    return reply(400, {"error": str(exc)})
                return reply(200, fault_list())
            return reply(405, {"error": f"{method} not allowed"})
        if path == "/__sim__/requests":
            if method == "GET":
                with self._lock:
                    return reply(200, [r.to_dict() for r in self.recorded])
            if method == "DELETE":
                self.clear_recorded()
                return reply(200, [])
            return reply(405, {"error": f"{method} not allowed"})
        if path == "/__sim__/reset":
            if method == "POST":
                self.reset()
                return reply(204)
            return reply(405, {"error": f"{method} not allowed"})
        return reply(404, {"error": f"no admin endpoint {path}"})


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def _fault_argument(text: str) -> Fault:
    try:
        return Fault.parse(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to an argparse parser."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8776, help="port to bind (8776)")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="counter-based ids and a fixed created_at, for repeatable runs",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault_argument,
        metavar="ROUTE:SPEC",
        help="inject a fault, e.g. volumes.create:status=500 (repeatable); "
        f"routes: {', '.join(ROUTES)}",
    )
    parser.add_argument(
        "--availability-zone",
        action="append",
        dest="availability_zones",
        metavar="AZ",
        help="an availability zone (repeatable; default nova)",
    )
    parser.add_argument(
        "--volume-type",
        action="append",
        dest="volume_types",
        metavar="NAME",
        help="a volume type (repeatable; default __DEFAULT__ and lvmdriver-1)",
    )


def run_cli(args: argparse.Namespace, tracer_provider: trace.TracerProvider | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then stop cleanly. Returns the exit code (0)."""
    options: dict[str, Any] = {}
    if getattr(args, "availability_zones", None):
        options["availability_zones"] = tuple(args.availability_zones)
    if getattr(args, "volume_types", None):
        options["volume_types"] = tuple(args.volume_types)
    sim = CinderSimulator(
        args.host,
        args.port,
        deterministic=args.deterministic,
        tracer_provider=tracer_provider,
        faults=args.fault or (),
        **options,
    )
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        sim.start()
        print(f"cinder-sim listening on {sim.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


if __name__ == "__main__":  # pragma: no cover - convenience entry point
    _parser = argparse.ArgumentParser(prog="cinder-sim", description=__doc__.splitlines()[0])
    add_cli_arguments(_parser)
    sys.exit(run_cli(_parser.parse_args()))
