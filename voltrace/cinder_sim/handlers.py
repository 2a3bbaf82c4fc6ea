"""The route handlers: what each Cinder call does, step by step.

A handler gets the store and a :class:`Call` and returns ``(status, body)``; it raises
:class:`ApiError` for an error answer. Every step runs in its own span
(``call.step(...)``), which is what a trace of the simulator shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from opentelemetry.trace import Span

from voltrace import semconv
from voltrace.cinder_sim import microversions, validation
from voltrace.cinder_sim.async_create import AsyncBackend
from voltrace.cinder_sim.backends import BINARIES, VOLUME
from voltrace.cinder_sim.errors import INTERNAL_ERROR, ApiError
from voltrace.cinder_sim.messages import Request
from voltrace.cinder_sim.plans import plan_snapshot, plan_volume
from voltrace.cinder_sim.state import SIMULATED_USER_ID, State
from voltrace.cinder_sim.tracing import Tracing
from voltrace.cinder_sim.user_messages import NOT_FILTERS, message_view
from voltrace.cinder_sim.validation import bool_from_string, is_valid_boolstr, parse_json_body
from voltrace.cinder_sim.views import fmt_time, snapshot_view, versions_view, volume_view


@dataclass(frozen=True)
class Caller:
    """Who is asking: a project member (keystone mode) or an admin (every noauth caller)."""

    user_id: str = SIMULATED_USER_ID
    project_id: str | None = None  # None: the URL's project (keystone mode)
    is_admin: bool = False


class Call:
    """One request as a handler sees it: the request, the path parameters, and steps."""

    def __init__(
        self,
        request: Request,
        params: dict[str, str],
        tracing: Tracing,
        server_span: Span,
        *,
        request_id: str,
        backend: AsyncBackend,
        caller: Caller,
        version: microversions.Version = (3, 0),
    ) -> None:
        self.request = request
        self.params = params
        self.request_id = request_id
        self.backend = backend
        self.caller = caller
        self.version = version
        self._tracing = tracing
        self._server_span = server_span
        self._parent = tracing.parent_context(server_span)

    @property
    def server_span(self) -> Span:
        return self._server_span

    def step(self, name: str, **attributes: Any) -> AbstractContextManager[Span]:
        """A child span of the request's SERVER span (None-valued attributes are left out)."""
        return self._tracing.step(self._parent, name, attributes)


Handler = Callable[[State, Call], tuple[int, Any]]


def versions(state: State, call: Call) -> tuple[int, Any]:
    status = 300 if call.request.path == "/" else 200
    return status, versions_view(call.request.base_url)


def volumes_create(state: State, call: Call) -> tuple[int, Any]:
    project_id = call.params["project_id"]
    with call.step("validate", **{"openstack.project_id": project_id}) as span:
        new = plan_volume(state, project_id, call.request.body)
        new.user_id = call.caller.user_id
        span.set_attribute("cinder.volume.size", new.size)
        span.set_attribute("cinder.volume_type", new.volume_type)
        span.set_attribute("cinder.availability_zone", new.availability_zone)
    # Quota check and insert are one critical section, as cinder's reservation is.
    with state.lock:
        with call.step("check_quota", **{"cinder.volume.size": new.size}):
            state.quotas.check_volume(project_id, new.size, new.volume_type)
        with call.step("persist") as span:
            volume = state.insert_volume(project_id, new)
            span.set_attribute(semconv.CINDER_VOLUME_ID, volume.id)
            # The answer shows the volume as created ("creating"), before it settles.
            body = volume_view(
                volume, call.request.base_url, show_extensions=False, admin=call.caller.is_admin
            )
    # VolumeCastTask: the cast to cinder-scheduler, sent while the SERVER span is current.
    call.backend.cast_create(
        volume,
        call.request_id,
        call.request.global_request_id,
        call.server_span.get_span_context(),
    )
    if call.backend.traced:
        # What explain needs to tell "the scheduler never picked it up" (no span of its
        # own) from "this Cinder's services are not traced": the API says it cast it.
        call.server_span.set_attributes(
            {semconv.CINDER_CAST_TO: semconv.SCHEDULER_SERVICE, semconv.CINDER_VOLUME_ID: volume.id}
        )
    return 202, body


def volumes_get(state: State, call: Call) -> tuple[int, Any]:
    volume_id = call.params["volume_id"]
    with call.step("lookup", **{semconv.CINDER_VOLUME_ID: volume_id}) as span:
        volume = state.get_volume(call.params["project_id"], volume_id)
        span.set_attribute("cinder.volume.status", volume.status)
        return 200, volume_view(
            volume, call.request.base_url, show_extensions=True, admin=call.caller.is_admin
        )


def snapshots_create(state: State, call: Call) -> tuple[int, Any]:
    project_id = call.params["project_id"]
    with call.step("validate", **{"openstack.project_id": project_id}) as span:
        new = plan_snapshot(state, project_id, call.request.body)
        span.set_attribute(semconv.CINDER_VOLUME_ID, new.volume.id)
        span.set_attribute("cinder.snapshot.size", new.volume.size)
    with state.lock:
        with call.step("check_quota", **{"cinder.snapshot.size": new.volume.size}):
            state.quotas.check_snapshot(project_id, new.volume.volume_type, new.volume.size)
        with call.step("persist") as span:
            snapshot = state.insert_snapshot(project_id, new)
            span.set_attribute("cinder.snapshot_id", snapshot.id)
            body = snapshot_view(snapshot, show_extensions=False)
            state.settle_snapshot(snapshot)
    return 202, body


def snapshots_get(state: State, call: Call) -> tuple[int, Any]:
    snapshot_id = call.params["snapshot_id"]
    with call.step("lookup", **{"cinder.snapshot_id": snapshot_id}) as span:
        snapshot = state.get_snapshot(call.params["project_id"], snapshot_id)
        span.set_attribute("cinder.snapshot.status", snapshot.status)
        return 200, snapshot_view(snapshot, show_extensions=True)


def quotas_get(state: State, call: Call) -> tuple[int, Any]:
    target = call.params["target_project_id"]
    with call.step("lookup", **{"cinder.quota.project_id": target}):
        values = parse_qs(call.request.query, keep_blank_values=True).get("usage")
        usage = False
        if values is not None:
            if not is_valid_boolstr(values[-1]):
                raise ApiError(
                    400,
                    f"Value '{values[-1]}' for 'usage' is not a boolean.",
                    "InvalidParameterValue",
                )
            usage = bool_from_string(values[-1])
        quota_set = state.quotas.quota_set(target, usage=usage)
    quota_set["id"] = target
    return 200, {"quota_set": quota_set}


def quotas_update(state: State, call: Call) -> tuple[int, Any]:
    target = call.params["target_project_id"]
    with call.step("validate", **{"cinder.quota.project_id": target}):
        body = parse_json_body(call.request.body)
        validation.QUOTA_UPDATE.validate(body)
        changes = state.quotas.check_changes(body["quota_set"])
    with state.lock, call.step("persist", **{"cinder.quota.project_id": target}):
        state.quotas.update(target, changes)
        # cinder's update answers the new limits without an "id" key.
        return 200, {"quota_set": state.quotas.quota_set(target, usage=False)}


def quotas_defaults(state: State, call: Call) -> tuple[int, Any]:
    target = call.params.get("target_project_id", "defaults")
    with call.step("lookup", **{"cinder.quota.project_id": target}):
        quota_set = state.quotas.default_quota_set()
    quota_set["id"] = target
    return 200, {"quota_set": quota_set}


def messages_list(state: State, call: Call) -> tuple[int, Any]:
    """MessagesController.index: from 3.3; filters (resource_uuid, ...) from 3.5."""
    _require(call, microversions.MESSAGES)
    filters = None
    if call.version >= microversions.MESSAGES_PAGINATION:
        query = parse_qs(call.request.query, keep_blank_values=True)
        # Pagination and sort keys are taken out (and not applied by the simulator).
        filters = {key: values[-1] for key, values in query.items() if key not in NOT_FILTERS}
    with call.step("lookup", **{"cinder.message.filters": str(filters or {})}) as span:
        messages = state.messages.list(_visible_project(call), filters)
        span.set_attribute("cinder.message.count", len(messages))
    url_project = call.params["project_id"]
    base_url = call.request.base_url
    return 200, {"messages": [message_view(m, base_url, url_project) for m in messages]}


def messages_get(state: State, call: Call) -> tuple[int, Any]:
    _require(call, microversions.MESSAGES)
    message_id = call.params["message_id"]
    with call.step("lookup", **{"cinder.message.id": message_id}):
        message = state.messages.get(message_id, _visible_project(call))
        if message is None:
            raise ApiError(404, f"Message {message_id} could not be found.", "MessageNotFound")
    view = message_view(message, call.request.base_url, call.params["project_id"])
    return 200, {"message": view}


def services_list(state: State, call: Call) -> tuple[int, Any]:
    """ServiceController.index: DB-only up to 3.48; from 3.49 an RPC call to the scheduler.

    Only an admin may list services in cinder; the simulator cannot tell an admin's token
    from a member's under keystone, so it answers every caller.
    """
    backend = call.backend
    query = parse_qs(call.request.query, keep_blank_values=True)
    wanted = {key: query[key][-1] for key in ("host", "binary") if key in query}
    with call.step("lookup", **{"cinder.services.filters": str(wanted)}):
        if call.version >= microversions.BACKEND_STATE_REPORT and not backend.services.running(
            semconv.SCHEDULER_SERVICE
        ):
            # scheduler_rpcapi.get_pools: nobody answers, MessagingTimeout, a 500.
            time.sleep(backend.settings.rpc_response_timeout_s)
            raise ApiError(500, INTERNAL_ERROR, "MessagingTimeout")
        services = []
        for binary in BINARIES:
            service = backend.services.get(binary)
            if any(getattr(service, key) != value for key, value in wanted.items()):
                continue
            entry: dict[str, Any] = {
                "binary": binary,
                "host": service.host,
                "zone": service.zone,
                "status": "enabled",
                "state": "up" if backend.services.is_up(binary) else "down",
                "updated_at": fmt_time(backend.services.updated_at(binary)),
            }
            if call.version >= microversions.BACKEND_STATE_REPORT and binary == VOLUME:
                entry["backend_state"] = "up"
            if call.version >= microversions.CLUSTER_SUPPORT:
                entry["cluster"] = None
            entry["disabled_reason"] = None
            if binary == VOLUME:
                entry.update(replication_status="disabled", active_backend_id=None, frozen=False)
            services.append(entry)
    return 200, {"services": services}


def _require(call: Call, version: microversions.Version) -> None:
    """@wsgi.Controller.api_version: below it the method does not exist (404)."""
    if call.version < version:
        raise ApiError(404, "The resource could not be found.", "VersionNotFoundForAPIMethod")


def _visible_project(call: Call) -> str | None:
    """The project whose rows a caller sees (None: every project, for an admin)."""
    return None if call.caller.is_admin else call.params["project_id"]


# Route name (routes.ROUTES) -> handler.
HANDLERS: dict[str, Handler] = {
    "versions": versions,
    "volumes.create": volumes_create,
    "volumes.get": volumes_get,
    "snapshots.create": snapshots_create,
    "snapshots.get": snapshots_get,
    "quotas.get": quotas_get,
    "quotas.update": quotas_update,
    "quotas.defaults": quotas_defaults,
    "messages.list": messages_list,
    "messages.get": messages_get,
    "services.list": services_list,
}
