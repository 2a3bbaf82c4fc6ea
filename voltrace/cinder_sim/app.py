"""The simulated cinder-api: one request in, one outcome out (no socket I/O here).

For each request: find the route, open the SERVER span, apply the faults that match
(latency, then maybe a forced answer or a disconnect), authenticate the way the configured
``auth_strategy`` does, route only project ids cinder's router accepts, run the route's
handler, turn errors into cinder's bodies, and log the request as cinder-api does.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from voltrace.cinder_sim import microversions
from voltrace.cinder_sim.async_create import NULL_LOGGER, AsyncBackend
from voltrace.cinder_sim.errors import DEFAULT_EXPLANATIONS, INTERNAL_ERROR, ApiError
from voltrace.cinder_sim.faults import FaultBook
from voltrace.cinder_sim.handlers import HANDLERS, Call, Caller
from voltrace.cinder_sim.messages import (
    Disconnect,
    Outcome,
    Request,
    Response,
    error_response,
    fault_response,
    json_response,
    noauth_token,
    unauthorized,
    unrouted_not_found,
)
from voltrace.cinder_sim.routes import Match, match_route
from voltrace.cinder_sim.state import State
from voltrace.cinder_sim.tracing import Tracing, finish_server_span

_GARBAGE_BODY = b"<html><body><h1>502 Bad Gateway</h1>upstream sent junk</body></html>"

AUTH_STRATEGIES = ("keystone", "noauth")
# cinder 29's [DEFAULT] project_id_regex: hex digits and dashes (what keystone makes).
DEFAULT_PROJECT_ID_REGEX = r"[0-9a-f\-]+"
# The log event of each request cinder-api answers (cinder's wsgi "returned with HTTP").
LOG_REQUEST = "api.request"


@dataclass(frozen=True)
class ApiSettings:
    """How the simulated cinder-api authenticates and routes (cinder.conf [DEFAULT])."""

    auth_strategy: str = "keystone"
    project_id_regex: str = DEFAULT_PROJECT_ID_REGEX

    def __post_init__(self) -> None:
        if self.auth_strategy not in AUTH_STRATEGIES:
            raise ValueError(
                f"auth_strategy must be one of {AUTH_STRATEGIES}, not {self.auth_strategy!r}"
            )
        re.compile(self.project_id_regex)


class CinderApp:
    """Shared by every request thread; all its state is in ``state``, ``faults``, ``backend``."""

    def __init__(
        self,
        state: State,
        faults: FaultBook,
        tracing: Tracing,
        backend: AsyncBackend,
        *,
        settings: ApiSettings | None = None,
        logger: Any = NULL_LOGGER,
    ) -> None:
        self.state = state
        self.faults = faults
        self.tracing = tracing
        self.backend = backend
        self.settings = settings or ApiSettings()
        self.logger = logger
        self._project_re = re.compile(self.settings.project_id_regex)

    def handle(self, request: Request) -> Outcome:
        """Answer one Cinder API request inside a SERVER span."""
        started = time.perf_counter()
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
        self._log(request, match, request_id, outcome, time.perf_counter() - started)
        return outcome

    def _log(
        self, request: Request, match: Match, request_id: str, outcome: Outcome, took_s: float
    ) -> None:
        fields: dict[str, Any] = {
            "method": request.method,
            "path": request.target,
            "route": match.route.name if match.route else None,
            "request_id": request_id,
            "duration_ms": round(took_s * 1000, 2),
        }
        if isinstance(outcome, Disconnect):
            fields["status"] = None
            fields["disconnect"] = outcome.action
        else:
            fields["status"] = outcome.status
        if request.global_request_id:
            fields["global_request_id"] = request.global_request_id
        if "project_id" in match.params:
            fields["project_id"] = match.params["project_id"]
        with contextlib.suppress(Exception):  # logging must never change an answer
            self.logger.info(LOG_REQUEST, **fields)

    def _handle_in_span(
        self, request: Request, match: Match, request_id: str, span: Span
    ) -> Outcome:
        if match.route is None:
            return self._route(request, match, request_id, span)
        injection = self.faults.take(match.route.name)
        if not injection.faults:
            return self._route(request, match, request_id, span)

        span.set_attribute("cinder_sim.fault", injection.describe())
        latency_ms = injection.latency_ms
        if latency_ms:
            with self.tracing.step(
                self.tracing.parent_context(span),
                "injected_latency",
                {"cinder_sim.latency_ms": latency_ms},
            ):
                time.sleep(latency_ms / 1000.0)
        decisive = injection.decisive
        if decisive is None:  # latency only
            return self._route(request, match, request_id, span)
        if decisive.action in ("drop", "reset"):
            return Disconnect(decisive.action)
        if decisive.action is None:
            return fault_response(decisive, request_id)

        # "garbage" and "truncated" do the work, then spoil the answer.
        response = self._route(request, match, request_id, span)
        if decisive.action == "garbage":
            response.status = decisive.status or match.route.success
            response.body = _GARBAGE_BODY
        elif decisive.action == "truncated":
            response.status = decisive.status or response.status
            response.body = response.body[: len(response.body) // 2]
        response.headers.extend(decisive.headers.items())
        return response

    def _route(self, request: Request, match: Match, request_id: str, span: Span) -> Response:
        if match.route is not None:
            needs_token = match.route.needs_token
        else:
            # Everything under /v3 sits behind the auth middleware; other paths 404 first.
            needs_token = request.path.startswith("/v3")
        caller = Caller()
        if needs_token:
            authenticated = self._authenticate(request, request_id)
            if isinstance(authenticated, Response):
                return authenticated
            caller = authenticated
        project_id = match.params.get("project_id")
        if project_id is not None and not self._project_re.fullmatch(project_id):
            # cinder's router only has routes for such project ids: nothing matches.
            return unrouted_not_found(request, request_id)
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

        version = (3, 0)
        answer_version: str | None = "3.0"
        if match.route.versioned:
            try:
                version = microversions.requested(request)
            except microversions.VersionError as error:
                return error_response(error, request_id, api_version=error.echo)
            answer_version = microversions.to_text(version)
        mismatch = self._project_mismatch(request, caller, project_id)
        if mismatch is not None:
            return error_response(mismatch, request_id, api_version=answer_version)

        call = Call(
            request,
            match.params,
            self.tracing,
            span,
            request_id=request_id,
            backend=self.backend,
            caller=caller,
            version=version,
        )
        handler = HANDLERS[match.route.name]
        try:
            status, body = handler(self.state, call)
        except ApiError as error:
            return error_response(error, request_id, api_version=answer_version)
        return json_response(status, body, request_id, api_version=answer_version)

    def _authenticate(self, request: Request, request_id: str) -> Caller | Response:
        token = request.header("X-Auth-Token")
        if self.settings.auth_strategy == "keystone":
            # keystonemiddleware accepted the token (it is never validated here), scoped
            # to the URL's project, for a project member.
            return Caller() if token else unauthorized(request, request_id)
        if token is None:
            return noauth_token(request, request_id)
        # NoAuthMiddleware: "user:project" (or just "user", which is then the project
        # too), and every caller is an admin.
        user_id, _, project_id = token.partition(":")
        return Caller(user_id=user_id, project_id=project_id or user_id, is_admin=True)

    @staticmethod
    def _project_mismatch(
        request: Request, caller: Caller, url_project: str | None
    ) -> ApiError | None:
        """wsgi.Resource: the URL's project must be the context's (noauth: the token's)."""
        if caller.project_id is None or url_project is None or url_project == caller.project_id:
            return None
        if request.body:
            # The body is decoded before the project check, so a broken body wins.
            try:
                json.loads(request.body)
            except ValueError:
                return ApiError(400, "Malformed request body", "MalformedRequestBody")
        return ApiError(400, "Malformed request url", "HTTPBadRequest")
