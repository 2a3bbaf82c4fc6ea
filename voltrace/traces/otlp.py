"""OTLP JSON (``ExportTraceServiceRequest`` / ``TracesData``) into the span model.

The one OTLP JSON reader of the project: ``voltrace explain``, the benchmarks and the
tests all read OTLP JSON through :func:`spans_from_otlp`.

Ids in hex (the OTLP JSON rule) or base64 (protobuf's default JSON mapping); enums as
numbers or names; 64-bit integers as strings or numbers. A span that cannot be read
(a field of the wrong type, an id that is not one) is skipped and named in the
reasons returned; the spans around it still count.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from voltrace.traces.model import Event, Span, as_int

_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUSES = {0: "unset", 1: "ok", 2: "error"}
KIND_NUMBERS = {name: number for number, name in _KINDS.items()}

# Deeper attribute values (arrays of kvlists of arrays...) are cut: no real producer
# nests this far, and a hostile file must not exhaust the stack.
MAX_VALUE_DEPTH = 8


class SpanError(ValueError):
    """One span (or event) cannot be read; the message says which field and why."""


def hex_id(value: Any, size: int) -> str | None:
    """A ``size``-byte id in hex or base64 as lowercase hex; None when empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpanError(f"id {value!r} is not text")
    if len(value) == size * 2:
        try:
            bytes.fromhex(value)
            return value.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise SpanError(f"{value[:40]!r} is not a {size}-byte id in hex or base64")
    return raw.hex()


def any_value(value: Any, depth: int = 0) -> Any:
    """An OTLP ``AnyValue`` as a Python value (None for what is not one)."""
    if not isinstance(value, dict) or len(value) != 1 or depth > MAX_VALUE_DEPTH:
        return None
    ((kind, inner),) = value.items()
    if kind == "intValue":
        return as_int(inner)
    if kind == "doubleValue":
        try:
            return float(inner)
        except (TypeError, ValueError):
            return None
    if kind == "arrayValue":
        values = inner.get("values") if isinstance(inner, dict) else None
        return [any_value(v, depth + 1) for v in values] if isinstance(values, list) else []
    if kind == "kvlistValue":
        values = inner.get("values") if isinstance(inner, dict) else None
        return attributes(values, depth + 1)
    if kind in ("stringValue", "boolValue", "bytesValue") and isinstance(inner, str | bool):
        return inner
    return None


def attributes(key_values: Any, depth: int = 0) -> dict[str, Any]:
    """OTLP ``KeyValue`` list as a dict; entries that are not key/value pairs are left out."""
    if not isinstance(key_values, list):
        return {}
    result: dict[str, Any] = {}
    for kv in key_values:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            result[kv["key"]] = any_value(kv.get("value"), depth)
    return result


def _enum(value: Any, names: dict[int, str], prefix: str) -> str:
    if isinstance(value, str) and not value.isdigit():
        name = value.removeprefix(prefix).lower()
        if name in names.values():
            return name
        raise SpanError(f"unknown {prefix.rstrip('_').lower()} {value[:40]!r}")
    number = as_int(value) if value is not None else 0
    if number is None or number not in names:
        raise SpanError(f"unknown {prefix.rstrip('_').lower()} {value!r}")
    return names[number]


def _time(value: Any, what: str) -> int:
    number = as_int(value) if value is not None else 0
    if number is None or number < 0:
        raise SpanError(f"{what} {value!r} is not a time in nanoseconds")
    return number


def _dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpanError(f"{what} is {type(value).__name__}, not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpanError(f"{what} is {type(value).__name__}, not a list")
    return value


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SpanError(f"{what} is {type(value).__name__}, not text")
    return value


def span_from_otlp(raw: Any, service: str) -> Span:
    """One OTLP JSON span; SpanError names what made it unreadable."""
    raw = _dict(raw, "a span")
    trace_id = hex_id(raw.get("traceId"), 16)
    span_id = hex_id(raw.get("spanId"), 8)
    if trace_id is None or span_id is None:
        raise SpanError("a span without traceId or spanId")
    status = _dict(raw.get("status"), "status")
    events = []
    for event in _list(raw.get("events"), "events"):
        event = _dict(event, "an event")
        events.append(
            Event(
                _text(event.get("name"), "an event name"),
                _time(event.get("timeUnixNano"), "timeUnixNano"),
                attributes(event.get("attributes")),
            )
        )
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=hex_id(raw.get("parentSpanId"), 8),
        name=_text(raw.get("name"), "name"),
        kind=_enum(raw.get("kind", 0), _KINDS, "SPAN_KIND_"),
        service=service,
        start_ns=_time(raw.get("startTimeUnixNano"), "startTimeUnixNano"),
        end_ns=_time(raw.get("endTimeUnixNano"), "endTimeUnixNano"),
        attributes=attributes(raw.get("attributes")),
        status=_enum(status.get("code", 0), _STATUSES, "STATUS_CODE_"),
        status_message=_text(status.get("message"), "status.message"),
        events=events,
    )


def spans_from_otlp(document: Any, skipped: list[str] | None = None) -> list[Span]:
    """Every readable span of one OTLP JSON ``ExportTraceServiceRequest`` (or ``TracesData``).

    Why each unreadable span was skipped goes to ``skipped`` (when given).
    """
    spans: list[Span] = []
    try:
        resources = _list(_dict(document, "the document").get("resourceSpans"), "resourceSpans")
    except SpanError as exc:
        if skipped is not None:
            skipped.append(str(exc))
        return spans
    for resource_spans in resources:
        spans.extend(spans_from_resource_spans(resource_spans, skipped))
    return spans


def spans_from_resource_spans(resource_spans: Any, skipped: list[str] | None = None) -> list[Span]:
    """The spans of one ``ResourceSpans`` entry."""
    spans: list[Span] = []
    try:
        resource_spans = _dict(resource_spans, "a resourceSpans entry")
        resource = attributes(_dict(resource_spans.get("resource"), "resource").get("attributes"))
        service = resource.get("service.name")
        service = service if isinstance(service, str) and service else "unknown_service"
        scope_lists = resource_spans.get("scopeSpans")
        if scope_lists is None:
            scope_lists = resource_spans.get("instrumentationLibrarySpans")  # pre-1.0 name
        scope_lists = _list(scope_lists, "scopeSpans")
    except SpanError as exc:
        if skipped is not None:
            skipped.append(str(exc))
        return spans
    for scope_spans in scope_lists:
        try:
            raw_spans = _list(_dict(scope_spans, "a scopeSpans entry").get("spans"), "spans")
        except SpanError as exc:
            if skipped is not None:
                skipped.append(str(exc))
            continue
        for raw in raw_spans:
            try:
                spans.append(span_from_otlp(raw, service))
            except SpanError as exc:
                if skipped is not None:
                    skipped.append(str(exc))
    return spans
