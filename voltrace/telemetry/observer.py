"""The pipeline observer that turns stage runs into spans, log lines and metrics.

This is the single place where telemetry wraps the stages: the runner calls
``request()`` around a create and ``stage()`` around each stage (guarding both,
so nothing here can change an answer); the stages themselves never import
anything from here. Everything written comes from what the stages reported on
their ``StageRecord``: decisions, the fault and its details, the Cinder calls.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from voltrace import semconv
from voltrace.errors import NovaFault
from voltrace.stages import Stage
from voltrace.state import CreateState, StageRecord
from voltrace.telemetry.components import components_of
from voltrace.telemetry.hygiene import MIN_SECRET_LENGTH, clean_attributes, clean_text

if TYPE_CHECKING:
    from voltrace.identity import NovaRequestContext
    from voltrace.telemetry import Telemetry


def ids(span: Span) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def identity_fields(identity: NovaRequestContext | None) -> dict[str, Any]:
    """The ids every log line of a create carries (never the token)."""
    if identity is None:
        return {"request_id": None, "global_request_id": None, "project_id": None, "user_id": None}
    return {
        "request_id": identity.request_id,
        "global_request_id": identity.global_id,
        "project_id": identity.project_id,
        "user_id": identity.user_id,
    }


def secrets_of(identity: NovaRequestContext | None) -> tuple[str, ...]:
    """What must never be recorded for this request: its token."""
    token = getattr(identity, "auth_token", None)
    return (token,) if token and len(token) >= MIN_SECRET_LENGTH else ()


def fault_attributes(fault: NovaFault) -> dict[str, Any]:
    return {
        semconv.ERROR_TYPE: fault.failure_class,
        semconv.FAILURE_CLASS: fault.failure_class,
        semconv.HTTP_STATUS: fault.status,
    }


def record_fault(span: Span, fault: NovaFault, secrets: Sequence[str] = ()) -> None:
    """ERROR status plus an ``exception`` event naming the root cause.

    Only an unexpected error (a bug) carries a stack trace: for a refusal or a
    Cinder answer the trace is noise, and formatting it costs more than the span.
    Messages are cleaned (``hygiene.clean_text``): client input and Cinder's answers
    reach them, the token included when Cinder echoes it.
    """
    cause = fault.cause if fault.cause is not None else fault
    span.set_status(Status(StatusCode.ERROR, clean_text(fault.message, secrets)))
    attributes = {
        "exception.type": fault.cause_type,
        "exception.message": clean_text(str(cause), secrets),
    }
    if fault.failure_class == "internal_error":
        stacktrace = "".join(traceback.format_exception(cause))
        attributes["exception.stacktrace"] = clean_text(stacktrace, secrets)
        span.record_exception(cause, attributes=attributes)
    else:
        span.add_event("exception", attributes)
    span.set_attributes(fault_attributes(fault))


def stage_attributes(record: StageRecord, secrets: Sequence[str] = ()) -> dict[str, Any]:
    """What the stage reported, as span attributes (strings cleaned: they carry input)."""
    attributes: dict[str, Any] = {}
    if record.report is not None:
        attributes[semconv.STAGE_SKIPPED] = bool(record.report.skipped)
        if record.report.skipped:
            attributes[semconv.STAGE_SKIP_REASON] = record.report.skipped
    for key, value in clean_attributes(record.attributes, secrets).items():
        attributes[semconv.decision_attribute(key)] = value
    request_ids = [call.request_id for call in record.cinder_calls if call.request_id]
    if request_ids:
        attributes[semconv.CINDER_REQUEST_ID] = request_ids[-1]
    return attributes


def _stage_tracer(telemetry: Any) -> Any:
    """The tracer of the pipeline and stage spans (a no-op one when the bench knob says so)."""
    return telemetry.tracer if "stages" in components_of(telemetry) else trace.NoOpTracer()


class StageEmitter:
    """Opens a stage span and, when the stage is over, writes its attributes, log and metrics.

    Shared by the pipeline observer (``voltrace serve``) and the real-nova instrumentor,
    so a stage looks the same in a trace whichever produced it. Every ``start`` must be
    followed by one ``finish`` of the same stage: between the two the create counts in
    ``voltrace.stage.in_flight``.
    """

    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = _stage_tracer(telemetry)
        self.logger = telemetry.logger
        self.metrics = telemetry.metrics

    def start(
        self, name: str, nova_code: str, timing: str = "run", start_time: int | None = None
    ) -> Span:
        self.metrics.in_flight.enter(name)
        return self.tracer.start_span(
            name,
            kind=SpanKind.INTERNAL,
            record_exception=False,
            start_time=start_time,
            attributes={
                semconv.STAGE: name,
                semconv.NOVA_CODE_ATTR: nova_code,
                semconv.STAGE_TIMING: timing,
            },
        )

    def finish(
        self,
        span: Span,
        record: StageRecord,
        identity: NovaRequestContext | None,
        volume_id: str | None,
        end_time: int | None = None,
    ) -> None:
        """Attributes and status on ``span`` (then ended), one metric, one log line."""
        try:
            self._finish(span, record, identity, volume_id, end_time)
        finally:
            self.metrics.in_flight.leave(record.name)

    def _finish(
        self,
        span: Span,
        record: StageRecord,
        identity: NovaRequestContext | None,
        volume_id: str | None,
        end_time: int | None,
    ) -> None:
        trace_id, span_id = ids(span)
        secrets = secrets_of(identity)
        span.set_attributes(stage_attributes(record, secrets))
        if record.fault is not None:
            record_fault(span, record.fault, secrets)
        span.end(end_time=end_time)
        # The stage span's context, so an exemplar leads to this very stage.
        self.metrics.stage(
            record.name, record.status, record.duration_s, context=trace.set_span_in_context(span)
        )
        for call in record.cinder_calls:
            self.metrics.cinder_call(call.method, call.url, call.status, call.elapsed_s)
        self.log(record, identity, volume_id, trace_id, span_id)

    def log(
        self,
        record: StageRecord,
        identity: NovaRequestContext | None,
        volume_id: str | None,
        trace_id: str,
        span_id: str,
    ) -> None:
        fields: dict[str, Any] = {
            "stage": record.name,
            "outcome": record.status,
            "duration_ms": round(record.duration_s * 1000, 3),
            "trace_id": trace_id,
            "span_id": span_id,
            **identity_fields(identity),
            "volume_id": volume_id,
        }
        if record.report is not None and record.report.skipped:
            fields["skip_reason"] = record.report.skipped
        retries = record.attributes.get("cinder.connect_retries")
        if retries is not None:
            # So `explain --logs` can count connect attempts without the trace.
            fields["cinder_connect_retries"] = retries
        if record.fault is None:
            self.logger.info(semconv.stage_event(record.name), **fields)
            return
        fields.update(
            http_status=record.fault.status,
            failure_class=record.fault.failure_class,
            error_type=record.fault.cause_type,
            error_message=clean_text(
                str(record.fault.cause or record.fault.message), secrets_of(identity)
            ),
        )
        log = self.logger.error if record.fault.status >= 500 else self.logger.warning
        log(semconv.stage_event(record.name), **fields)


class TelemetryObserver:
    """Spans, logs and metrics for one service's pipeline runs."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = _stage_tracer(telemetry)
        self.emitter = StageEmitter(telemetry)

    @contextmanager
    def request(self, state: CreateState) -> Iterator[None]:
        with self.tracer.start_as_current_span(
            semconv.PIPELINE_SPAN,
            kind=SpanKind.INTERNAL,
            record_exception=False,
            attributes={
                semconv.NOVA_CODE_ATTR: semconv.PIPELINE_NOVA_CODE,
                semconv.REQUEST_ID: state.request.identity.request_id,
            },
        ) as span:
            yield
            if state.failed_stage:
                span.set_attribute(semconv.FAILED_STAGE, state.failed_stage)
            if state.fault is not None and state.fault.status >= 500:
                span.set_status(
                    Status(
                        StatusCode.ERROR,
                        clean_text(state.fault.message, secrets_of(state.request.identity)),
                    )
                )

    @contextmanager
    def stage(self, stage: Stage, state: CreateState, record: StageRecord) -> Iterator[None]:
        span = self.emitter.start(stage.name, stage.nova_code)
        with trace.use_span(span, end_on_exit=False):
            yield
        self.emitter.finish(span, record, state.request.identity, state.volume_id)
