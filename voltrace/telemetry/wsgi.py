"""The SERVER span: opentelemetry-instrumentation-wsgi, plus what Nova's answer meant.

``OpenTelemetryMiddleware`` continues the caller's W3C ``traceparent`` and
records the stable HTTP attributes. Inside it, ``ServerSpanAnnotator`` names
the span by route template, tags it with the outcome an SRE searches for, and
writes the one summary log line of the request.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.metrics import NoOpMeterProvider

from voltrace.api import ENV_CREATE, ENV_ROUTE, request_outcome
from voltrace.identity import ENV_CONTEXT
from voltrace.telemetry.observer import ids

if TYPE_CHECKING:
    from voltrace.telemetry import Telemetry

# Should someone ask the instrumentation to capture request headers, never the secrets.
os.environ.setdefault(
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
    "x-auth-token,x-subject-token,x-service-token,x-trace-hmac,authorization,cookie",
)


class ServerSpanAnnotator:
    """Runs inside the SERVER span; everything it learns comes from the WSGI environ."""

    def __init__(self, app: Any, telemetry: Telemetry) -> None:
        self.app = app
        self.logger = telemetry.logger
        self.metrics = telemetry.metrics

    def __call__(self, environ: dict, start_response: Any) -> Any:
        status_holder: list[int] = []

        def recording_start_response(status: str, headers: list, *args: Any) -> Any:
            status_holder.append(int(status.split(" ", 1)[0]))
            return start_response(status, headers, *args)

        started = time.perf_counter()
        result = self.app(environ, recording_start_response)
        duration_s = time.perf_counter() - started
        self._finish(environ, status_holder[0] if status_holder else 500, duration_s)
        return result

    def _finish(self, environ: dict, http_status: int, duration_s: float) -> None:
        span = trace.get_current_span()
        outcome = request_outcome(environ, http_status)
        route = environ.get(ENV_ROUTE)
        method = environ.get("REQUEST_METHOD", "GET")
        request_id = environ.get("openstack.request_id")
        global_request_id = environ.get("openstack.global_request_id") or request_id
        context = environ.get(ENV_CONTEXT)
        ctx = environ.get(ENV_CREATE)
        cinder_request_id = next(
            (c.request_id for c in reversed(ctx.cinder_calls) if c.request_id), None
        ) if ctx is not None else None
        volume_id = ctx.volume_id if ctx is not None else None

        if route:
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
        attributes = {
            "voltrace.outcome": outcome.outcome,
            "voltrace.failed_stage": outcome.failed_stage or "none",
            "voltrace.failure_class": outcome.failure_class or "none",
            "http.response.status_code": http_status,
            "openstack.request_id": request_id or "",
            "openstack.global_request_id": global_request_id or "",
            "cinder.request_id": cinder_request_id or "",
        }
        if context is not None:
            attributes["openstack.project_id"] = context.project_id or ""
            attributes["openstack.user_id"] = context.user_id or ""
        if volume_id:
            attributes["voltrace.volume.id"] = volume_id
        span.set_attributes(attributes)

        self.metrics.create(outcome.outcome, http_status, outcome.failed_stage,
                            outcome.failure_class, duration_s)
        trace_id, span_id = ids(span)
        fields: dict[str, Any] = {
            "outcome": outcome.outcome,
            "http_status": http_status,
            "duration_ms": round(duration_s * 1000, 3),
            "trace_id": trace_id,
            "span_id": span_id,
            "request_id": request_id,
            "global_request_id": global_request_id,
            "project_id": getattr(context, "project_id", None),
            "user_id": getattr(context, "user_id", None),
            "volume_id": volume_id,
            "route": route,
            "cinder_request_id": cinder_request_id,
        }
        if outcome.failed_stage:
            fault = ctx.fault if ctx is not None else None
            fields.update(
                failed_stage=outcome.failed_stage,
                failure_class=outcome.failure_class,
                error_type=fault.cause_type if fault is not None else None,
                error_message=fault.message if fault is not None else None,
            )
        if ctx is not None:
            fields["stages"] = [
                {"name": r.name, "status": r.status, "duration_ms": round(r.duration_s * 1000, 3)}
                for r in ctx.records
            ]
        log = self.logger.info if http_status < 400 else (
            self.logger.error if http_status >= 500 else self.logger.warning)
        log("request.finished", **fields)


def instrument_app(app: Any, telemetry: Telemetry) -> Any:
    """Wrap a WSGI app in a SERVER span (continuing any incoming traceparent)."""
    return OpenTelemetryMiddleware(
        ServerSpanAnnotator(app, telemetry),
        tracer_provider=telemetry.tracer_provider,
        # voltrace.create.duration and voltrace.creates measure these requests.
        meter_provider=NoOpMeterProvider(),
    )
