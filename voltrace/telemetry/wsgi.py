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

from voltrace import semconv
from voltrace.identity import ENV_CONTEXT
from voltrace.pipeline import OBSERVER_ERRORS
from voltrace.record import RequestRecord
from voltrace.telemetry.observer import identity_fields, ids

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
        try:
            self._finish(environ, status_holder[0] if status_holder else 500, duration_s)
        except Exception as exc:  # telemetry never changes an answer
            OBSERVER_ERRORS.record("server span", exc)
        return result

    def _finish(self, environ: dict, http_status: int, duration_s: float) -> None:
        span = trace.get_current_span()
        record = RequestRecord.of(environ)
        identity = environ.get(ENV_CONTEXT)
        ids_ = identity_fields(identity)
        # Before keystonecontext ran (a 413) the ids come from oslo's RequestId alone.
        request_id = ids_["request_id"] or environ.get("openstack.request_id")
        global_request_id = ids_["global_request_id"] or request_id
        outcome = _outcome(http_status)
        method = environ.get("REQUEST_METHOD", "GET")

        if record.route:
            span.update_name(f"{method} {record.route}")
            span.set_attribute("http.route", record.route)
        attributes: dict[str, Any] = {
            semconv.REQUEST_KIND: "create" if record.is_create else "other",
            semconv.OUTCOME: outcome,
            semconv.FAILED_STAGE: record.failed_stage or "none",
            semconv.FAILURE_CLASS: record.failure_class or "none",
            "http.response.status_code": http_status,
            semconv.REQUEST_ID: request_id or "",
            semconv.GLOBAL_REQUEST_ID: global_request_id or "",
            semconv.CINDER_REQUEST_ID: record.cinder_request_id or "",
        }
        if identity is not None:
            attributes[semconv.PROJECT_ID] = identity.project_id or ""
            attributes[semconv.USER_ID] = identity.user_id or ""
        if record.volume_id:
            attributes[semconv.VOLUME_ID] = record.volume_id
        span.set_attributes(attributes)

        if record.is_create:  # probes and other routes are not failed creates
            self.metrics.create(outcome, http_status, record.failed_stage,
                                record.failure_class, duration_s)
        trace_id, span_id = ids(span)
        fields: dict[str, Any] = {
            "kind": "create" if record.is_create else "other",
            "outcome": outcome,
            "http_status": http_status,
            "duration_ms": round(duration_s * 1000, 3),
            "trace_id": trace_id,
            "span_id": span_id,
            **ids_,
            "request_id": request_id,
            "global_request_id": global_request_id,
            "volume_id": record.volume_id,
            "route": record.route,
            "cinder_request_id": record.cinder_request_id,
        }
        if record.failed_stage:
            fields.update(
                failed_stage=record.failed_stage,
                failure_class=record.failure_class,
                error_type=record.error_type,
                error_message=record.error_message,
            )
        if record.stages:
            fields["stages"] = [
                {"name": r.name, "status": r.status, "duration_ms": round(r.duration_s * 1000, 3)}
                for r in record.stages
            ]
        log = self.logger.info if http_status < 400 else (
            self.logger.error if http_status >= 500 else self.logger.warning)
        log(semconv.REQUEST_FINISHED, **fields)


def _outcome(http_status: int) -> str:
    if http_status < 400:
        return "success"
    return "server_error" if http_status >= 500 else "client_error"


def instrument_app(app: Any, telemetry: Telemetry) -> Any:
    """Wrap a WSGI app in a SERVER span (continuing any incoming traceparent)."""
    return OpenTelemetryMiddleware(
        ServerSpanAnnotator(app, telemetry),
        tracer_provider=telemetry.tracer_provider,
        # voltrace.create.duration and voltrace.creates measure these requests.
        meter_provider=NoOpMeterProvider(),
    )
