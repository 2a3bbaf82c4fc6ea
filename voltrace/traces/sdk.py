"""OpenTelemetry SDK spans (``ReadableSpan``) straight into the span model.

``voltrace demo`` captures its spans in memory and diagnoses them as they are, with
no OTLP JSON round trip. Read by attribute, so this module imports nothing from the
SDK.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from voltrace.traces.model import Event, Span

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan


def _value(value: Any) -> Any:
    # The SDK keeps sequences as tuples; the file readers give lists.
    return list(value) if isinstance(value, tuple) else value


def _attributes(values: Any) -> dict[str, Any]:
    return {key: _value(value) for key, value in (values or {}).items()}


def span_from_sdk(span: ReadableSpan) -> Span:
    context = span.context
    assert context is not None  # a finished SDK span always has one
    parent = span.parent
    service = span.resource.attributes.get("service.name") if span.resource else None
    return Span(
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name,
        kind=span.kind.name.lower(),
        service=str(service or "unknown_service"),
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        attributes=_attributes(span.attributes),
        status=span.status.status_code.name.lower(),
        status_message=span.status.description or "",
        events=[Event(e.name, e.timestamp, _attributes(e.attributes)) for e in span.events],
    )


def spans_from_sdk(spans: Iterable[ReadableSpan]) -> list[Span]:
    return [span_from_sdk(span) for span in spans]
