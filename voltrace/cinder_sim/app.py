"""The simulated cinder-api: one request in, one outcome out (no socket I/O here).

For each request: find the route, open the SERVER span, apply the faults that match
(latency, then maybe a forced answer or a disconnect), check the token the way
keystonemiddleware would, run the route's handler, and turn errors into cinder's bodies.
"""

from __future__ import annotations

import time

from opentelemetry.trace import Span

from voltrace.cinder_sim.errors import DEFAULT_EXPLANATIONS, INTERNAL_ERROR, ApiError
from voltrace.cinder_sim.faults import FaultBook
from voltrace.cinder_sim.handlers import HANDLERS, Call
from voltrace.cinder_sim.messages import (
    Disconnect,
    Outcome,
    Request,
    Response,
    error_response,
    fault_response,
    json_response,
    unauthorized,
)
from voltrace.cinder_sim.routes import Match, match_route
from voltrace.cinder_sim.state import State
from voltrace.cinder_sim.tracing import Tracing, finish_server_span

_GARBAGE_BODY = b"<html><body><h1>502 Bad Gateway</h1>upstream sent junk</body></html>"


class CinderApp:
    """Shared by every request thread; all its state is in ``state`` and ``faults``."""

    def __init__(self, state: State, faults: FaultBook, tracing: Tracing) -> None:
        self.state = state
        self.faults = faults
        self.tracing = tracing

    def handle(self, request: Request) -> Outcome:
        """Answer one Cinder API request inside a SERVER span."""
        match = match_route(request.method, request.path)
        request_id = "req-" + self.state.ids.new("request")
        with self.tracing.server_span(request, match, request_id) as span:
            try:
                outcome = self._handle_in_span(request, match, request_id, span)
            except Exception as exc:  # a bug in the simulator: answer like cinder would
                span.record_exception(exc)
                outcome = error_response(
                    ApiError(500, INTERNAL_ERROR, type(exc).__name__), request_id
                )
            finish_server_span(span, outcome)
        # The span ends before the bytes go out, so a client that has its answer can
        # already find the span in an in-memory exporter.
        return outcome

    def _handle_in_span(
        self, request: Request, match: Match, request_id: str, span: Span
    ) -> Outcome:
        call = Call(request, match.params, self.tracing, span)
        if match.route is None:
            return self._route(call, match, request_id)
        injection = self.faults.take(match.route.name)
        if not injection.faults:
            return self._route(call, match, request_id)

        span.set_attribute("cinder_sim.fault", injection.describe())
        latency_ms = injection.latency_ms
        if latency_ms:
            with call.step("injected_latency", **{"cinder_sim.latency_ms": latency_ms}):
                time.sleep(latency_ms / 1000.0)
        decisive = injection.decisive
        if decisive is None:  # latency only
            return self._route(call, match, request_id)
        if decisive.action in ("drop", "reset"):
            return Disconnect(decisive.action)
        if decisive.action is None:
            return fault_response(decisive, request_id)

        # "garbage" and "truncated" do the work, then spoil the answer.
        response = self._route(call, match, request_id)
        if decisive.action == "garbage":
            response.status = decisive.status or match.route.success
            response.body = _GARBAGE_BODY
        elif decisive.action == "truncated":
            response.status = decisive.status or response.status
            response.body = response.body[: len(response.body) // 2]
        response.headers.extend(decisive.headers.items())
        return response

    def _route(self, call: Call, match: Match, request_id: str) -> Response:
        request = call.request
        if match.route is not None:
            needs_token = match.route.needs_token
        else:
            # Everything under /v3 sits behind keystonemiddleware; other paths 404 first.
            needs_token = request.path.startswith("/v3")
        if needs_token and not request.header("X-Auth-Token"):
            return unauthorized(request, request_id)
        if match.route is None:
            if match.allowed:
                error = ApiError(
                    405,
                    f"The method {request.method} is not allowed for this resource.",
                    "HTTPMethodNotAllowed",
                    {"Allow": ", ".join(match.allowed)},
                )
            else:
                error = ApiError(404, DEFAULT_EXPLANATIONS[404], "HTTPNotFound")
            return error_response(error, request_id)
        handler = HANDLERS[match.route.name]
        try:
            status, body = handler(self.state, call)
        except ApiError as error:
            return error_response(error, request_id)
        return json_response(status, body, request_id)
