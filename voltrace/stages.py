"""The six stages of a volume create, each a small function over a CreateContext.

Read top to bottom, this module is Nova's ``VolumeController.create`` with
every step given a name. A stage returns a ``StageReport`` (what it decided)
or raises a ``NovaFault`` (what the client will see); it knows nothing of HTTP
framing, spans, logs or metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cinderclient import exceptions as cinder_exception
from keystoneauth1 import exceptions as keystone_exception

from voltrace import errors
from voltrace.context import CreateContext, StageReport
from voltrace.errors import NovaFault, unexpected_api_error
from voltrace.microversion import (
    MAX_PROXY_API_SUPPORT_VERSION,
    check_global_range,
    requested_version,
)

# nova/api/openstack/wsgi.py:get_supported_content_types
SUPPORTED_CONTENT_TYPES = ("application/json", "application/vnd.openstack.compute+json")


def done(**decisions: Any) -> StageReport:
    """A report; ``size__source=`` becomes the attribute ``size.source``."""
    return StageReport(decisions={k.replace("__", "."): v for k, v in decisions.items()})


def skipped(reason: str) -> StageReport:
    return StageReport(skipped=reason)


@dataclass(frozen=True)
class Stage:
    """A named step; the first line of ``run``'s docstring names the Nova code it mirrors."""

    name: str
    run: Callable[[CreateContext], StageReport]

    @property
    def nova_code(self) -> str:
        return (self.run.__doc__ or "").strip().splitlines()[0]


# ---------------------------------------------------------------------------


def parse(ctx: CreateContext) -> StageReport:
    """nova/api/openstack/wsgi.py:Resource._process_stack, then @validation.schema(create)

    Nova's order: microversion, Content-Type, JSON, URL project, the 2.35 cap, the schema.
    """
    request = ctx.request
    ctx.api_version = requested_version(request.headers)
    check_global_range(ctx.api_version)

    content_type = _content_type(request.headers)
    if content_type is not None and content_type not in SUPPORTED_CONTENT_TYPES:
        raise NovaFault(415, "Unsupported Content-Type", "unsupported_media_type")

    if request.content_length in (0, None):
        ctx.body = None
    else:
        try:
            ctx.body = json.loads(request.body.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise NovaFault(400, "Malformed request body", "malformed_body", cause=exc) from exc

    token_project = request.context.project_id
    if request.path_project_id and request.path_project_id != token_project:
        raise NovaFault(
            400,
            f"Malformed request URL: URL's project_id '{request.path_project_id}' "
            f"doesn't match Context's project_id '{token_project}'",
            "project_mismatch",
        )

    if ctx.api_version > MAX_PROXY_API_SUPPORT_VERSION:
        raise NovaFault(404, "The resource could not be found.", "microversion_not_found")

    ctx.env.validator.validate(ctx.body)
    return done(api_version=str(ctx.api_version), has_snapshot="snapshot_id" in ctx.volume_spec)


def _content_type(headers: Any) -> str | None:
    """nova/api/openstack/wsgi.py:Request.get_content_type: text/plain counts as none."""
    if "Content-Type" not in headers:
        return None
    value = headers["Content-Type"].split(";", 1)[0].strip()
    if not value or value == "text/plain":
        return None
    return value


def authorize(ctx: CreateContext) -> StageReport:
    """nova/api/openstack/compute/volumes.py:VolumeController.create: context.can(BASE_POLICY_NAME)

    Runs after the schema, as in Nova, against the caller's own project.
    """
    ctx.env.policy.authorize(ctx.request.context)
    return done(policy__rule="os_compute_api:os-volumes:create")


def resolve_snapshot(ctx: CreateContext) -> StageReport:
    """nova/volume/cinder.py:API.get_snapshot (GET /v3/{project_id}/snapshots/{id})"""
    snapshot_id = ctx.volume_spec.get("snapshot_id", None)
    if snapshot_id is None:
        ctx.snapshot = None
        return skipped("no snapshot_id in the request")
    try:
        ctx.snapshot = ctx.env.volume_api.get_snapshot(ctx.request.context, snapshot_id)
    except errors.SnapshotNotFound as exc:
        raise NovaFault(404, exc.format_message(), "snapshot_not_found", cause=exc) from exc
    except Exception as exc:
        raise controller_fault(exc) from exc
    return done(snapshot__id=snapshot_id, snapshot__volume_size=ctx.snapshot["volume_size"])


def derive_size(ctx: CreateContext) -> StageReport:
    """nova/api/openstack/compute/volumes.py:VolumeController.create: size = vol.get('size')

    The fallback to the snapshot's size runs only with --size-from-snapshot;
    nova 34's schema requires ``size``, so there it can never happen.
    """
    size = ctx.volume_spec.get("size", None)
    source = "request"
    if size is None and ctx.snapshot is not None:
        size = ctx.snapshot["volume_size"]
        source = "snapshot"
    elif size is None:
        source = "none"
    ctx.size, ctx.size_source = size, source
    return done(size__source=source, size__value=repr(size))


def call_cinder(ctx: CreateContext) -> StageReport:
    """nova/volume/cinder.py:API.create (POST /v3/{project_id}/volumes, then the lazy GET)"""
    vol = ctx.volume_spec
    try:
        ctx.volume = ctx.env.volume_api.create(
            ctx.request.context,
            ctx.size,
            vol.get("display_name"),
            vol.get("display_description"),
            snapshot=ctx.snapshot,
            volume_type=vol.get("volume_type"),
            metadata=vol.get("metadata"),
            availability_zone=vol.get("availability_zone"),
        )
    except errors.InvalidInput as exc:
        raise NovaFault(400, exc.format_message(), "cinder_bad_request", cause=exc) from exc
    except errors.OverQuota as exc:
        raise NovaFault(403, exc.format_message(), "over_quota", cause=exc) from exc
    except Exception as exc:
        raise controller_fault(exc) from exc
    return done(volume__id=ctx.volume["id"], volume__status=ctx.volume["status"])


def translate(ctx: CreateContext) -> StageReport:
    """nova/api/openstack/compute/volumes.py:_translate_volume_detail_view + the Location header"""
    ctx.response_body = {"volume": translate_volume_detail_view(dict(ctx.volume))}
    ctx.location = f"{ctx.request.url}/{ctx.volume['id']}"
    return done(volume__id=ctx.volume["id"])


def translate_volume_detail_view(vol: dict) -> dict:
    """nova/api/openstack/compute/volumes.py:_translate_volume_summary_view."""
    d: dict[str, Any] = {}
    d["id"] = vol["id"]
    d["status"] = vol["status"]
    d["size"] = vol["size"]
    d["availabilityZone"] = vol["availability_zone"]
    d["createdAt"] = vol["created_at"]
    if vol["attach_status"] == "attached":
        server_id, attachment = next(iter(vol["attachments"].items()))
        d["attachments"] = [
            _translate_attachment_view(vol["id"], server_id, attachment.get("mountpoint"))
        ]
    else:
        d["attachments"] = [{}]
    d["displayName"] = vol["display_name"]
    d["displayDescription"] = vol["display_description"]
    if vol["volume_type_id"] and vol.get("volume_type"):
        d["volumeType"] = vol["volume_type"]["name"]
    else:
        d["volumeType"] = vol["volume_type_id"]
    d["snapshotId"] = vol["snapshot_id"]
    d["metadata"] = vol.get("volume_metadata") or {}
    return d


def _translate_attachment_view(volume_id: str, server_id: str, mountpoint: str | None) -> dict:
    """nova/api/openstack/compute/volumes.py:_translate_attachment_summary_view."""
    d = {"id": volume_id, "volumeId": volume_id, "serverId": server_id}
    if mountpoint:
        d["device"] = mountpoint
    return d


# ---------------------------------------------------------------------------
# What Nova's controller does with an exception it did not catch itself.
# ---------------------------------------------------------------------------


def controller_fault(exc: Exception) -> NovaFault:
    """nova/api/openstack/wsgi.py:ResourceExceptionHandler + extensions.expected_errors."""
    if isinstance(exc, errors.Forbidden):
        return NovaFault(403, exc.format_message(), "cinder_forbidden", cause=exc)
    return unexpected_api_error(exc, failure_class_of(exc))


def failure_class_of(exc: BaseException) -> str:
    """Name the failure for an exception that makes Nova answer 500."""
    for exc_type, name in _FAILURE_BY_TYPE:
        if isinstance(exc, exc_type):
            return name
    if isinstance(exc, errors.NovaException):
        return "internal_error"
    # Anything else came out of reading Cinder's answer (garbage or truncated JSON).
    return "cinder_bad_response"


_FAILURE_BY_TYPE: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (errors.CinderConnectionFailed, "cinder_unreachable"),
    (errors.InvalidInput, "cinder_bad_request"),
    (errors.NotFound, "cinder_not_found"),
    (errors.OverQuota, "over_quota"),
    ((errors.UnsupportedCinderAPIVersion, cinder_exception.UnsupportedVersion),
     "cinder_unsupported_version"),
    (keystone_exception.EndpointNotFound, "cinder_endpoint_not_found"),
    (cinder_exception.Unauthorized, "cinder_unauthorized"),
    (cinder_exception.ClientException, "cinder_server_error"),
    (keystone_exception.ClientException, "cinder_server_error"),
)


STAGES: tuple[Stage, ...] = (
    Stage("parse", parse),
    Stage("authorize", authorize),
    Stage("resolve_snapshot", resolve_snapshot),
    Stage("derive_size", derive_size),
    Stage("call_cinder", call_cinder),
    Stage("translate", translate),
)
