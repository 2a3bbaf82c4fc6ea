"""The ``/__sim__/`` endpoints tests and demos use to drive a simulator in another
process. They are neither recorded nor traced.

==============================  ====================================================
``GET|POST|DELETE /faults``     API faults: list, add one (a Fault as JSON, or
                                ``{"spec": "ROUTE:..."}``), remove all
``GET|DELETE /requests``        the recorded requests
``POST /reset``                 everything back to how the simulator started
``GET|PATCH /backend``          the backend settings (timings, capacity_gb,
                                scheduler_max_attempts, service_down_time_s, ...),
                                its faults, services and free capacity
``GET|POST|DELETE               driver faults: list, add one (a BackendFault as JSON,
/backend/faults``               or ``{"spec": "driver_error:times=1"}``), remove all
``GET /services``               cinder-scheduler and cinder-volume: running? up?
``PUT /services/{binary}``      ``{"state": "down"}`` (optionally ``"down_for_s": N``:
                                stopped N seconds ago) or ``{"state": "up"}``
``PUT /volume-types/{name}``    ``{"extra_specs": {"volume_backend_name": "x"}}``
``GET /volumes/{id}``           status, host, the status timeline and the messages
==============================  ====================================================

(every path under ``/__sim__``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from voltrace.cinder_sim.backends import BackendFault
from voltrace.cinder_sim.faults import Fault
from voltrace.cinder_sim.messages import Response
from voltrace.cinder_sim.server import ADMIN_PREFIX

if TYPE_CHECKING:
    from voltrace.cinder_sim.simulator import CinderSimulator

__all__ = ["ADMIN_PREFIX", "admin"]


def _reply(status: int, payload: Any = None) -> Response:
    if payload is None:
        return Response(status, [])
    return Response(status, [("Content-Type", "application/json")], json.dumps(payload).encode())


def _not_allowed(method: str) -> Response:
    return _reply(405, {"error": f"{method} not allowed"})


def _json_object(body: bytes) -> dict[str, Any]:
    data = json.loads(body or b"null")
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def admin(sim: CinderSimulator, method: str, path: str, body: bytes) -> Response:
    """Answer one ``/__sim__/`` request."""
    try:
        return _dispatch(sim, method, path.removeprefix(ADMIN_PREFIX), body)
    except (ValueError, TypeError) as exc:
        return _reply(400, {"error": str(exc)})
    except KeyError as exc:
        return _reply(404, {"error": f"not found: {exc.args[0]}"})


def _dispatch(sim: CinderSimulator, method: str, path: str, body: bytes) -> Response:
    if path == "/faults":
        return _faults(sim, method, body)
    if path == "/requests":
        if method == "GET":
            return _reply(200, [r.to_dict() for r in sim.recorded_requests()])
        if method == "DELETE":
            sim.clear_recorded()
            return _reply(200, [])
        return _not_allowed(method)
    if path == "/reset":
        if method == "POST":
            sim.reset()
            return _reply(204)
        return _not_allowed(method)
    if path == "/backend":
        if method == "PATCH":
            sim.configure_backend(**_json_object(body))
        elif method != "GET":
            return _not_allowed(method)
        return _reply(200, sim.backend_state())
    if path == "/backend/faults":
        return _backend_faults(sim, method, body)
    if path == "/services":
        if method == "GET":
            return _reply(200, sim.backend_state()["services"])
        return _not_allowed(method)
    if path.startswith("/services/"):
        if method != "PUT":
            return _not_allowed(method)
        binary = path.removeprefix("/services/")
        data = _json_object(body)
        if data.get("state") == "down":
            sim.stop_service(binary, down_for_s=float(data.get("down_for_s", 0)))
        elif data.get("state") == "up":
            sim.start_service(binary)
        else:
            raise ValueError('expected {"state": "up"} or {"state": "down"}')
        return _reply(200, sim.backend_state()["services"])
    if path.startswith("/volume-types/"):
        if method != "PUT":
            return _not_allowed(method)
        specs = _json_object(body).get("extra_specs", {})
        if not isinstance(specs, dict):
            raise ValueError("extra_specs must be a JSON object")
        name = path.removeprefix("/volume-types/")
        sim.set_volume_type_extra_specs(name, specs)
        return _reply(200, {"name": name, "extra_specs": specs})
    if path.startswith("/volumes/"):
        if method != "GET":
            return _not_allowed(method)
        return _reply(200, sim.volume_story(path.removeprefix("/volumes/")))
    return _reply(404, {"error": f"no admin endpoint {ADMIN_PREFIX}{path}"})


def _faults(sim: CinderSimulator, method: str, body: bytes) -> Response:
    """GET lists the active faults; POST adds one, DELETE removes all (both list after)."""
    if method == "POST":
        sim.inject(Fault.from_dict(_json_object(body)))
    elif method == "DELETE":
        sim.clear_faults()
    elif method != "GET":
        return _not_allowed(method)
    return _reply(200, [f.to_dict() for f in sim.faults])


def _backend_faults(sim: CinderSimulator, method: str, body: bytes) -> Response:
    if method == "POST":
        sim.inject_backend_fault(BackendFault.from_dict(_json_object(body)))
    elif method == "DELETE":
        sim.clear_backend_faults()
    elif method != "GET":
        return _not_allowed(method)
    return _reply(200, [f.to_dict() for f in sim.backend_faults])
