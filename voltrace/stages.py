"""The six stages of a volume create, each a small function over a CreateState.

Read top to bottom, this module is Nova's ``VolumeController.create`` with
every step given a name. A stage returns a ``StageReport`` (what it decided)
or raises a ``NovaFault`` (what the client will see, with what the stage knew
in ``details``); it knows nothing of HTTP framing, spans, logs or metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import webob.exc
from cinderclient import exceptions as cinder_exception
from keystoneauth1 import exceptions as keystone_exception

from voltrace import errors, semconv
from voltrace.errors import NovaFault, unexpected_api_error
from voltrace.microversion import (
    MAX_PROXY_API_SUPPORT_VERSION,
    check_global_range,
    requested_version,
)
from voltrace.state import CreateState, StageReport

# nova/api/openstack/wsgi.py:get_supported_content_types
SUPPORTED_CONTENT_TYPES = ("application/json", "application/vnd.openstack.compute+json")


@dataclass(frozen=True)
class Stage:
    """A named step of the create and the Nova code it mirrors."""

    name: str
    nova_code: str
    run: Callable[[CreateState], StageReport]


# ---------------------------------------------------------------------------


@dataclass
class UncaughtFault(NovaFault):
    """A failure nova raises outside the controller's handlers, so FaultWrapper answers it:
    the bare 500 of webob's HTTPInternalServerError, not "Unexpected API Error"."""

    @classmethod
    def of(cls, exc: BaseException) -> UncaughtFault:
        return cls(500, webob.exc.HTTPInternalServerError.explanation, "internal_error", cause=exc)


def parse(state: CreateState) -> StageReport:
    """Nova's order: microversion, Content-Type, JSON, URL project, the 2.35 cap, the schema."""
    request = state.request
    state.api_version = requested_version(request.headers)
    check_global_range(state.api_version)

    content_type = _content_type(request.headers)
    if content_type is not None and content_type not in SUPPORTED_CONTENT_TYPES:
        raise NovaFault(415, "Unsupported Content-Type", "unsupported_media_type")

    if request.body:
        # _process_stack logs the body as UTF-8 text before anything parses it, outside
        # every handler: a body that is not UTF-8 is FaultWrapper's 500.
        try:
            request.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UncaughtFault.of(exc) from exc
    if request.content_length in (0, None):
        state.body = None
    else:
        try:
            state.body = json.loads(request.body.decode("utf-8"))
        except ValueError as exc:
            raise NovaFault(400, "Malformed request body", "malformed_body", cause=exc) from exc
        except RecursionError as exc:  # not a ValueError: it escapes to FaultWrapper
            raise UncaughtFault.of(exc) from exc

    token_project = request.identity.project_id
    if request.path_project_id and request.path_project_id != token_project:
        raise NovaFault(
            400,
            f"Malformed request URL: URL's project_id '{request.path_project_id}' "
            f"doesn't match Context's project_id '{token_project}'",
            "project_mismatch",
        )

    if state.api_version > MAX_PROXY_API_SUPPORT_VERSION:
        raise NovaFault(404, "The resource could not be found.", "microversion_not_found")

    state.services.validator.validate(state.body)
    return StageReport(
        {"api_version": str(state.api_version), "has_snapshot": "snapshot_id" in state.volume_spec}
    )


def _content_type(headers: Any) -> str | None:
    """nova/api/openstack/wsgi.py:Request.get_content_type: webob's split on ';', unstripped
    (so 'application/json ; charset=utf-8' is unsupported); text/plain counts as none."""
    if "Content-Type" not in headers:
        return None
    value = headers["Content-Type"].split(";", 1)[0]
    if not value or value == "text/plain":
        return None
    return str(value)


def authorize(state: CreateState) -> StageReport:
    """Runs after the schema, as in Nova, against the caller's own project."""
    state.services.policy.authorize(state.request.identity)
    return StageReport({"policy.rule": "os_compute_api:os-volumes:create"})


def resolve_snapshot(state: CreateState) -> StageReport:
    """Only with a snapshot_id: Nova looks the snapshot up before creating anything."""
    snapshot_id = state.volume_spec.get("snapshot_id", None)
    if snapshot_id is None:
        state.snapshot = None
        return StageReport(skipped="no snapshot_id in the request")
    budget = _cinder_budget(state)
    try:
        _refuse_admin_without_token(state)
        state.snapshot = state.services.volume_api.get_snapshot(state.request.identity, snapshot_id)
    except errors.SnapshotNotFound as exc:
        raise NovaFault(
            404,
            exc.format_message(),
            "snapshot_not_found",
            cause=exc,
            details={**budget, "snapshot.id": snapshot_id},
        ) from exc
    except Exception as exc:
        raise controller_fault(exc, {**budget, "snapshot.id": snapshot_id}) from exc
    return StageReport(
        {
            **budget,
            "snapshot.id": snapshot_id,
            "snapshot.volume_size": state.snapshot["volume_size"],
        }
    )


def _refuse_admin_without_token(state: CreateState) -> None:
    """nova/volume/cinder.py:_get_auth: an admin context without a token uses the [cinder]
    auth plugin, and with none configured nova raises cinderclient's Unauthorized before
    any call ("Unknown auth type: None"), which the controller turns into a 500."""
    identity = state.request.identity
    if identity.is_admin and not identity.auth_token:
        raise cinder_exception.Unauthorized(401, message="Unknown auth type: None")


def _cinder_budget(state: CreateState) -> dict[str, Any]:
    """How many times keystoneauth may retry a refused connection ([cinder] http_retries)."""
    return {"cinder.connect_retries": state.services.volume_api.settings.http_retries}


def derive_size(state: CreateState) -> StageReport:
    """The fallback to the snapshot's size runs only with --size-from-snapshot;
    nova 34's schema requires ``size``, so there it can never happen.
    """
    size = state.volume_spec.get("size", None)
    source = "request"
    if size is None and state.snapshot is not None:
        size = state.snapshot["volume_size"]
        source = "snapshot"
    elif size is None:
        source = "none"
    state.size, state.size_source = size, source
    return StageReport({"size.source": source, "size.value": repr(size)})


def call_cinder(state: CreateState) -> StageReport:
    """The POST, then cinderclient's lazy GET inside Nova's _untranslate_volume_summary_view."""
    vol = state.volume_spec
    budget = _cinder_budget(state)
    try:
        _refuse_admin_without_token(state)
        state.volume = state.services.volume_api.create(
            state.request.identity,
            state.size,
            vol.get("display_name"),
            vol.get("display_description"),
            snapshot=state.snapshot,
            volume_type=vol.get("volume_type"),
            metadata=vol.get("metadata"),
            availability_zone=vol.get("availability_zone"),
        )
    except errors.InvalidInput as exc:
        raise NovaFault(
            400, exc.format_message(), "cinder_bad_request", cause=exc, details=budget
        ) from exc
    except errors.OverQuota as exc:
        raise NovaFault(403, exc.format_message(), "over_quota", cause=exc, details=budget) from exc
    except Exception as exc:
        raise controller_fault(exc, budget) from exc
    return StageReport(
        {**budget, "volume.id": state.volume["id"], "volume.status": state.volume["status"]}
    )


def translate(state: CreateState) -> StageReport:
    """Nova's 11-key view of the volume, and Location = the request URL + the id."""
    assert state.volume is not None  # call_cinder succeeded
    state.response_body = {"volume": translate_volume_detail_view(dict(state.volume))}
    state.location = f"{state.request.url}/{state.volume['id']}"
    return StageReport({"volume.id": state.volume["id"]})


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


def controller_fault(exc: Exception, details: dict[str, Any]) -> NovaFault:
    """nova/api/openstack/wsgi.py:ResourceExceptionHandler + extensions.expected_errors."""
    if isinstance(exc, errors.Forbidden):
        return NovaFault(403, exc.format_message(), "cinder_forbidden", cause=exc, details=details)
    fault = unexpected_api_error(exc, failure_class_of(exc))
    fault.details.update(details)
    return fault


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
    (
        (errors.UnsupportedCinderAPIVersion, cinder_exception.UnsupportedVersion),
        "cinder_unsupported_version",
    ),
    (keystone_exception.EndpointNotFound, "cinder_endpoint_not_found"),
    (cinder_exception.Unauthorized, "cinder_unauthorized"),
    (cinder_exception.ClientException, "cinder_server_error"),
    (keystone_exception.ClientException, "cinder_server_error"),
)


STAGES: tuple[Stage, ...] = tuple(
    Stage(name, semconv.NOVA_CODE[name], run)
    for name, run in (
        ("parse", parse),
        ("authorize", authorize),
        ("resolve_snapshot", resolve_snapshot),
        ("derive_size", derive_size),
        ("call_cinder", call_cinder),
        ("translate", translate),
    )
)
