"""The SERVER span around nova's API pipeline, as ``voltrace serve`` makes it.

``NovaApiMiddleware`` is what the paste filter returns (and what wraps nova's URL map under
``opentelemetry-instrument``): ``voltrace.telemetry.wsgi.instrument_app`` around
``RouteRecorder``, so the SERVER span, its attributes, the ``request.finished`` line and the
create metrics come from the very code ``voltrace serve`` runs. ``RouteRecorder`` does for
nova what voltrace's own HTTP layers do: it names the route before any filter may refuse
the request, and attributes the answers no stage hook can see (a 413 from sizelimit, a 401
from keystonecontext, nova's own 404 for a path it does not route).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from voltrace import routing
from voltrace.errors import NovaFault
from voltrace.instrumentation.nova_hooks import ENV_CREATE_SEEN
from voltrace.instrumentation.nova_runtime import guarded
from voltrace.record import RequestRecord

# Set by the outermost layer: a second one (paste filter under opentelemetry-instrument)
# passes the request through instead of opening a second SERVER span.
ENV_SERVED = "voltrace.nova.served"
_ENV_UNROUTED = "voltrace.nova.unrouted"

# The pipelines nova serves creates from, by the prefix its URL map strips.
API_PREFIXES = {routing.V21_API: "/v2.1", routing.LEGACY_API: "/v2"}

# What nova's filters in front of the controller answer, when no stage hook ran.
_REFUSALS: dict[int, tuple[str, str]] = {
    413: ("sizelimit", "request_too_large"),
    401: ("keystonecontext", "unauthenticated"),
    500: ("keystonecontext", "invalid_service_catalog"),
}


def _refusal_message(status: int) -> str:
    """The explanation the refusing filter gave (oslo's sizelimit, nova's keystonecontext)."""
    import webob.exc

    if status == 413:
        # oslo.middleware's own text for a Content-Length over the limit, "%s" and all
        # (oslo_middleware/sizelimit.py never interpolates it).
        return "Request is too large. Larger than max_request_body_size (%s)."
    if status == 401:
        return str(webob.exc.HTTPUnauthorized.explanation)
    return "Invalid service catalog json."


def create_route(prefix: str, with_project: bool) -> str:
    """``/v2.1/os-volumes`` (semconv.CREATE_ROUTE), with ``{project_id}``, or under ``/v2``."""
    return f"{prefix}/{{project_id}}/os-volumes" if with_project else f"{prefix}/os-volumes"


class RouteRecorder:
    """Records the route first, and after the answer who refused it if no stage did.

    ``full_path``: it sees the whole path (it wraps nova's URL map) rather than what the URL
    map left in ``PATH_INFO`` (a paste filter inside ``/v2.1/+``).
    """

    def __init__(self, app: Any, full_path: bool) -> None:
        self.app = app
        self.full_path = full_path

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ[ENV_SERVED] = True
        statuses: list[int] = []

        def start_response_noting_status(*args: Any, **kwargs: Any) -> Any:
            guarded("server status", _note_status, statuses, args)
            return start_response(*args, **kwargs)

        guarded("route", self._record_route, environ)
        result = self.app(environ, start_response_noting_status)
        guarded("refusal", _record_refusal, environ, statuses[-1] if statuses else None)
        return result

    def _record_route(self, environ: dict[str, Any]) -> None:
        method = str(environ.get("REQUEST_METHOD", ""))
        if self.full_path:
            mapped = routing.map_url(environ)
            if mapped is None or mapped.app not in API_PREFIXES:
                return
            prefix, path_info = API_PREFIXES[mapped.app], mapped.path_info
        else:
            script_name = str(environ.get("SCRIPT_NAME", ""))
            found = next((p for p in ("/v2.1", "/v2") if script_name.endswith(p)), None)
            if found is None:
                return
            prefix = found
            path_info = str(environ.get("PATH_INFO", ""))
        route = routing.match_route(method, path_info)
        if not self.full_path and not (route and route.is_create):
            # instrumentation-wsgi names the span after PATH_INFO, which nova's URL map has
            # cut: give it the whole path, as voltrace serve's SERVER span has.
            script_name = str(environ.get("SCRIPT_NAME", ""))
            trace.get_current_span().update_name(f"{method} {script_name}{path_info}")
        if route is None:
            environ[_ENV_UNROUTED] = True
        elif route.is_create:
            record = RequestRecord.of(environ)
            record.route = create_route(prefix, route.project_id is not None)
            record.is_create = True


def _note_status(statuses: list[int], args: tuple[Any, ...]) -> None:
    statuses.append(int(str(args[0]).split(" ", 1)[0]))


def _record_refusal(environ: dict[str, Any], status: int | None) -> None:
    record = RequestRecord.of(environ)
    if record.failed_stage is not None or status is None or status < 400:
        return
    if record.is_create and not environ.get(ENV_CREATE_SEEN) and status in _REFUSALS:
        stage, failure_class = _REFUSALS[status]
        record.refused(stage, NovaFault(status, _refusal_message(status), failure_class))
    elif not record.is_create and environ.get(_ENV_UNROUTED) and status in (404, 405):
        import webob.exc

        answer = webob.exc.HTTPNotFound if status == 404 else webob.exc.HTTPMethodNotAllowed
        record.refused("router", NovaFault(status, str(answer.explanation), "no_route"))


class NovaApiMiddleware:
    """A SERVER span per request, from the telemetry of the process serving it.

    ``telemetry_source`` is asked on every request (it is cheap): the paste filter's builds
    the process's telemetry on its first request, so a gunicorn ``--preload`` master or a
    uwsgi master that forks afterwards never hands its exporter threads to the workers.
    """

    def __init__(self, app: Any, telemetry_source: Callable[[], Any], full_path: bool) -> None:
        self.app = app
        self.telemetry_source = telemetry_source
        self.full_path = full_path
        self._instrumented: tuple[Any, Any] | None = None  # (telemetry, wrapped app)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        served = None if ENV_SERVED in environ else guarded("server span", self._served)
        if served is None:
            return self.app(environ, start_response)
        return served(environ, start_response)

    def _served(self) -> Any:
        telemetry = self.telemetry_source()
        if telemetry is None:
            return None
        cached = self._instrumented
        if cached is None or cached[0] is not telemetry:
            from voltrace.telemetry.wsgi import instrument_app

            cached = (telemetry, instrument_app(RouteRecorder(self.app, self.full_path), telemetry))
            self._instrumented = cached
        return cached[1]
