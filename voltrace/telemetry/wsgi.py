"""The SERVER span: opentelemetry-instrumentation-wsgi, plus what Nova's answer meant.

``OpenTelemetryMiddleware`` opens the SERVER span and records the stable HTTP
attributes. Inside it, ``ServerSpanAnnotator`` names the span by route template, tags
it with the outcome an SRE searches for, and writes the one summary log line of the
request. Outside it, ``IncomingTraceContext`` decides what the caller's W3C headers
may do:

* ``trust_incoming_trace_context=False`` (the default: nova-api is a public API, and
  anyone can send a ``traceparent``): the request starts a trace of its own, and the
  SERVER span carries a *link* to the caller's span context, so a caller's trace can
  still be found from ours, but no caller chooses our trace id, sampling or
  ``tracestate``;
* ``True`` (behind a proxy or gateway you run, which sets or checks the headers): the
  caller's trace is continued, as W3C Trace Context says, with ``tracestate`` cut to
  its first 512 characters (whole list members; W3C's propagation minimum).

``baggage`` is never forwarded to Cinder unless ``forward_baggage=True``: callers put
anything in it, tokens included. When forwarded, it is cut to W3C's limits (64 members,
8192 bytes).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import voltrace.telemetry.hygiene as hygiene
from voltrace import semconv
from voltrace.identity import ENV_CONTEXT
from voltrace.pipeline import OBSERVER_ERRORS
from voltrace.record import RequestRecord
from voltrace.telemetry.components import components_of
from voltrace.telemetry.observer import identity_fields, ids

if TYPE_CHECKING:
    from voltrace.telemetry import Telemetry

# Where IncomingTraceContext leaves an untrusted caller's context for the annotator's link.
ENV_CALLER_CONTEXT = "voltrace.caller_trace_context"
TRACESTATE_MAX_CHARS = 512
BAGGAGE_MAX_MEMBERS = 64
BAGGAGE_MAX_BYTES = 8192

_TRACE_CONTEXT = TraceContextTextMapPropagator()


def _cut_list(header: str, max_members: int, max_chars: int) -> str:
    """The longest prefix of whole comma-separated members within both limits."""
    kept: list[str] = []
    size = 0
    for member in header.split(","):
        member = member.strip()
        if not member:
            continue
        if len(kept) == max_members or size + len(member) + bool(kept) > max_chars:
            break
        size += len(member) + bool(kept)
        kept.append(member)
    return ",".join(kept)


class IncomingTraceContext:
    """What a caller's ``traceparent``, ``tracestate`` and ``baggage`` may do (module doc)."""

    def __init__(self, app: Any, trust: bool = False, forward_baggage: bool = False) -> None:
        self.app = app
        self.trust = trust
        self.forward_baggage = forward_baggage

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if self.trust:
            tracestate = environ.get("HTTP_TRACESTATE")
            if tracestate is not None and len(tracestate) > TRACESTATE_MAX_CHARS:
                environ["HTTP_TRACESTATE"] = _cut_list(tracestate, 32, TRACESTATE_MAX_CHARS)
        else:
            traceparent = environ.pop("HTTP_TRACEPARENT", None)
            tracestate = environ.pop("HTTP_TRACESTATE", None)
            if traceparent is not None:
                environ[ENV_CALLER_CONTEXT] = (traceparent, tracestate)
        baggage = environ.get("HTTP_BAGGAGE")
        if baggage is not None:
            if not self.forward_baggage:
                del environ["HTTP_BAGGAGE"]
            elif len(baggage) > BAGGAGE_MAX_BYTES or baggage.count(",") >= BAGGAGE_MAX_MEMBERS:
                environ["HTTP_BAGGAGE"] = _cut_list(baggage, BAGGAGE_MAX_MEMBERS, BAGGAGE_MAX_BYTES)
        return self.app(environ, start_response)


def caller_span_context(environ: dict) -> SpanContext | None:
    """The untrusted caller's span context, if it sent a valid ``traceparent``."""
    headers = environ.get(ENV_CALLER_CONTEXT)
    if headers is None:
        return None
    traceparent, tracestate = headers
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = _cut_list(tracestate, 32, TRACESTATE_MAX_CHARS)
    context = trace.get_current_span(_TRACE_CONTEXT.extract(carrier)).get_span_context()
    return context if context.is_valid else None


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

        if ENV_CALLER_CONTEXT in environ:
            self._link_caller(environ)
        # Whatever is recorded while this request runs never carries its token.
        with hygiene.redacting(environ.get("HTTP_X_AUTH_TOKEN")):
            started = time.perf_counter()
            result = self.app(environ, recording_start_response)
            duration_s = time.perf_counter() - started
            try:
                self._finish(environ, status_holder[0] if status_holder else 500, duration_s)
            except Exception as exc:  # telemetry never changes an answer
                OBSERVER_ERRORS.record("server span", exc)
        return result

    @staticmethod
    def _link_caller(environ: dict) -> None:
        try:
            caller = caller_span_context(environ)
            if caller is not None:
                trace.get_current_span().add_link(caller)
        except Exception as exc:  # telemetry never changes an answer
            OBSERVER_ERRORS.record("server span", exc)

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
            self.metrics.create(
                outcome, http_status, record.failed_stage, record.failure_class, duration_s
            )
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
        log = (
            self.logger.info
            if http_status < 400
            else (self.logger.error if http_status >= 500 else self.logger.warning)
        )
        log(semconv.REQUEST_FINISHED, **fields)


def _outcome(http_status: int) -> str:
    if http_status < 400:
        return "success"
    return "server_error" if http_status >= 500 else "client_error"


def instrument_app(app: Any, telemetry: Telemetry) -> Any:
    """Wrap a WSGI app in a SERVER span (continuing a caller's trace only if trusted)."""
    hygiene.enforce_sensitive_headers()
    if "server" not in components_of(telemetry):  # the bench knob: no SERVER span
        return IncomingTraceContext(
            app,
            trust=telemetry.config.trust_incoming_trace_context,
            forward_baggage=telemetry.config.forward_baggage,
        )
    return IncomingTraceContext(
        OpenTelemetryMiddleware(
            ServerSpanAnnotator(app, telemetry),
            tracer_provider=telemetry.tracer_provider,
            # voltrace.create.duration and voltrace.creates measure these requests.
            meter_provider=NoOpMeterProvider(),
        ),
        trust=telemetry.config.trust_incoming_trace_context,
        forward_baggage=telemetry.config.forward_baggage,
    )
