"""The route handlers: what each Cinder call does, step by step.

A handler gets the store and a :class:`Call` and returns ``(status, body)``; it raises
:class:`ApiError` for an error answer. Every step runs in its own span
(``call.step(...)``), which is what a trace of the simulator shows.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import parse_qs

from opentelemetry.trace import Span

from voltrace.cinder_sim import validation
from voltrace.cinder_sim.errors import ApiError
from voltrace.cinder_sim.messages import Request
from voltrace.cinder_sim.plans import plan_snapshot, plan_volume
from voltrace.cinder_sim.state import State
from voltrace.cinder_sim.tracing import Tracing
from voltrace.cinder_sim.validation import bool_from_string, is_valid_boolstr, parse_json_body
from voltrace.cinder_sim.views import snapshot_view, versions_view, volume_view


class Call:
    """One request as a handler sees it: the request, the path parameters, and steps."""

    def __init__(
        self, request: Request, params: dict[str, str], tracing: Tracing, server_span: Span
    ) -> None:
        self.request = request
        self.params = params
        self._tracing = tracing
        self._parent = tracing.parent_context(server_span)

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
        span.set_attribute("cinder.volume.size", new.size)
        span.set_attribute("cinder.volume_type", new.volume_type)
        span.set_attribute("cinder.availability_zone", new.availability_zone)
    # Quota check and insert are one critical section, as cinder's reservation is.
    with state.lock:
        with call.step("check_quota", **{"cinder.volume.size": new.size}):
            state.quotas.check_volume(project_id, new.size, new.volume_type)
        with call.step("persist") as span:
            volume = state.insert_volume(project_id, new)
            span.set_attribute("cinder.volume_id", volume.id)
            # The answer shows the volume as created ("creating"), before it settles.
            body = volume_view(volume, call.request.base_url, show_extensions=False)
            state.settle_volume(volume)
    return 202, body


def volumes_get(state: State, call: Call) -> tuple[int, Any]:
    volume_id = call.params["volume_id"]
    with call.step("lookup", **{"cinder.volume_id": volume_id}) as span:
        volume = state.get_volume(call.params["project_id"], volume_id)
        span.set_attribute("cinder.volume.status", volume.status)
        return 200, volume_view(volume, call.request.base_url, show_extensions=True)


def snapshots_create(state: State, call: Call) -> tuple[int, Any]:
    project_id = call.params["project_id"]
    with call.step("validate", **{"openstack.project_id": project_id}) as span:
        new = plan_snapshot(state, project_id, call.request.body)
        span.set_attribute("cinder.volume_id", new.volume.id)
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
}
