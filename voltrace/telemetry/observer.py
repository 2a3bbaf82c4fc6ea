"""The pipeline observer that turns stage runs into spans, log lines and metrics.

This is the single place where telemetry wraps the stages: the runner calls
``request()`` around a create and ``stage()`` around each stage; the stages
themselves never import anything from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from voltrace.context import CreateContext, StageRecord
from voltrace.stages import Stage

if TYPE_CHECKING:
    from voltrace.telemetry import Telemetry

PIPELINE_SPAN = "create_volume"
PIPELINE_NOVA_CODE = "nova/api/openstack/compute/volumes.py:VolumeController.create"

# Stages that talk to Cinder carry the retry budget, for "unreachable" diagnoses.
_CINDER_STAGES = frozenset({"resolve_snapshot", "call_cinder"})


def ids(span: Span) -> tuple[str, str]:
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def request_fields(ctx: CreateContext) -> dict[str, Any]:
    """The ids every log line of a create carries (never the token)."""
    context = ctx.request.context
    return {
        "request_id": context.request_id,
        "global_request_id": context.global_request_id or context.request_id,
        "project_id": context.project_id,
        "user_id": context.user_id,
    }


def record_fault(span: Span, fault: Any) -> None:
    """ERROR status plus an ``exception`` event naming the root cause.

    Only an unexpected error (a bug) carries a stack trace: for a refusal or a
    Cinder answer the trace is noise, and formatting it costs more than the span.
    """
    cause = fault.cause if fault.cause is not None else fault
    span.set_status(Status(StatusCode.ERROR, fault.message))
    attributes = {"exception.type": fault.cause_type, "exception.message": str(cause)}
    if fault.failure_class == "internal_error":
        span.record_exception(cause, attributes=attributes)
    else:
        span.add_event("exception", attributes)
    span.set_attribute("error.type", fault.failure_class)
    span.set_attribute("voltrace.failure_class", fault.failure_class)
    span.set_attribute("voltrace.http_status", fault.status)


class TelemetryObserver:
    """Spans, logs and metrics for one service's pipeline runs."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = telemetry.tracer
        self.logger = telemetry.logger
        self.metrics = telemetry.metrics
        self.telemetry = telemetry

    @contextmanager
    def request(self, ctx: CreateContext) -> Iterator[None]:
        with self.tracer.start_as_current_span(
            PIPELINE_SPAN, kind=SpanKind.INTERNAL, record_exception=False,
            attributes={"voltrace.nova_code": PIPELINE_NOVA_CODE,
                        "openstack.request_id": ctx.request.context.request_id},
        ) as span:
            yield
            if ctx.failed_stage:
                span.set_attribute("voltrace.failed_stage", ctx.failed_stage)
            if ctx.fault is not None and ctx.fault.status >= 500:
                span.set_status(Status(StatusCode.ERROR, ctx.fault.message))
        for call in ctx.cinder_calls:
            self.metrics.cinder_call(call.method, call.url, call.status, call.elapsed_s)

    @contextmanager
    def stage(self, stage: Stage, ctx: CreateContext, record: StageRecord) -> Iterator[None]:
        with self.tracer.start_as_current_span(
            stage.name, kind=SpanKind.INTERNAL, record_exception=False,
            attributes={"voltrace.stage": stage.name, "voltrace.nova_code": stage.nova_code},
        ) as span:
            calls_before = len(ctx.cinder_calls)
            yield
            trace_id, span_id = ids(span)
            self._annotate(span, stage, ctx, record, calls_before)
        # The stage span's context, so an exemplar leads to this very stage.
        self.metrics.stage(stage.name, record.status, record.duration_s,
                           context=trace.set_span_in_context(span))
        self._log(stage, ctx, record, trace_id, span_id)

    def _annotate(self, span: Span, stage: Stage, ctx: CreateContext, record: StageRecord,
                  calls_before: int) -> None:
        report = record.report
        if report is not None:
            span.set_attribute("voltrace.stage.skipped", bool(report.skipped))
            if report.skipped:
                span.set_attribute("voltrace.stage.skip_reason", report.skipped)
            for key, value in report.decisions.items():
                span.set_attribute(f"voltrace.{key}", value)
        if stage.name in _CINDER_STAGES:
            span.set_attribute("cinder.connect_retries", ctx.env.volume_api.settings.http_retries)
            request_ids = [c.request_id for c in ctx.cinder_calls[calls_before:] if c.request_id]
            if request_ids:
                span.set_attribute("cinder.request_id", request_ids[-1])
        if record.fault is not None:
            record_fault(span, record.fault)

    def _log(self, stage: Stage, ctx: CreateContext, record: StageRecord,
             trace_id: str, span_id: str) -> None:
        fields: dict[str, Any] = {
            "stage": stage.name,
            "outcome": record.status,
            "duration_ms": round(record.duration_s * 1000, 3),
            "trace_id": trace_id,
            "span_id": span_id,
            **request_fields(ctx),
            "volume_id": ctx.volume_id,
        }
        if record.report is not None and record.report.skipped:
            fields["skip_reason"] = record.report.skipped
        if stage.name in _CINDER_STAGES:
            # So `explain --logs` can count connect attempts without the trace.
            fields["cinder_connect_retries"] = ctx.env.volume_api.settings.http_retries
        if record.fault is None:
            self.logger.info(f"stage.{stage.name}", **fields)
            return
        fields.update(
            http_status=record.fault.status,
            failure_class=record.fault.failure_class,
            error_type=record.fault.cause_type,
            error_message=str(record.fault.cause or record.fault.message),
        )
        log = self.logger.error if record.fault.status >= 500 else self.logger.warning
        log(f"stage.{stage.name}", **fields)
