"""The ``/__sim__/`` endpoints tests and demos use to drive a simulator in another
process. They are neither recorded nor traced.

``GET|POST|DELETE /__sim__/faults``, ``GET|DELETE /__sim__/requests``,
``POST /__sim__/reset``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from voltrace.cinder_sim.faults import Fault
from voltrace.cinder_sim.messages import Response

if TYPE_CHECKING:
    from voltrace.cinder_sim.simulator import CinderSimulator

ADMIN_PREFIX = "/__sim__"


def _reply(status: int, payload: Any = None) -> Response:
    if payload is None:
        return Response(status, [])
    return Response(status, [("Content-Type", "application/json")], json.dumps(payload).encode())


def _not_allowed(method: str) -> Response:
    return _reply(405, {"error": f"{method} not allowed"})


def admin(sim: CinderSimulator, method: str, path: str, body: bytes) -> Response:
    if path == "/__sim__/faults":
        return _faults(sim, method, body)
    if path == "/__sim__/requests":
        if method == "GET":
            return _reply(200, [r.to_dict() for r in sim._recorded_copy()])
        if method == "DELETE":
            sim.clear_recorded()
            return _reply(200, [])
        return _not_allowed(method)
    if path == "/__sim__/reset":
        if method == "POST":
            sim.reset()
            return _reply(204)
        return _not_allowed(method)
    return _reply(404, {"error": f"no admin endpoint {path}"})


def _faults(sim: CinderSimulator, method: str, body: bytes) -> Response:
    """GET lists the active faults; POST adds one, DELETE removes all (both list after)."""
    if method == "GET":
        return _fault_list(sim)
    if method == "DELETE":
        sim.clear_faults()
        return _fault_list(sim)
    if method == "POST":
        try:
            data = json.loads(body or b"null")
            if not isinstance(data, dict):
                raise ValueError("expected a JSON object describing a Fault")
            sim.inject(Fault.from_dict(data))
        except (ValueError, TypeError) as exc:
            return _reply(400, {"error": str(exc)})
        return _fault_list(sim)
    return _not_allowed(method)


def _fault_list(sim: CinderSimulator) -> Response:
    return _reply(200, [f.to_dict() for f in sim.faults])
