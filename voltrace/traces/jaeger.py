"""Jaeger JSON (the UI's download, the query API, voltrace's ``--jaeger-file``) into spans.

A trace is ``{"traceID", "spans": [...], "processes": {...}}``; a file holds
``{"data": [trace, ...]}``, a bare list of traces, one trace, or one trace per line.
Unreadable spans are skipped and named, as for OTLP.
"""

from __future__ import annotations

from typing import Any

from voltrace.traces.model import Event, Span, as_int
from voltrace.traces.otlp import SpanError, hex_id

# Tags Jaeger adds to carry OTel's kind and status; they become Span fields.
_SYNTHETIC = frozenset(
    {"span.kind", "otel.status_code", "otel.status_description", "error", "internal.span.format"}
)
_KINDS = frozenset({"server", "client", "internal", "producer", "consumer"})


def _tags(tags: Any) -> dict[str, Any]:
    if not isinstance(tags, list):
        return {}
    values: dict[str, Any] = {}
    for tag in tags:
        if not isinstance(tag, dict) or not isinstance(tag.get("key"), str):
            continue
        value = tag.get("value")
        if tag.get("type") == "int64":
            value = as_int(value)
        elif tag.get("type") == "float64":
            try:
                value = float(value) if isinstance(value, int | float | str) else None
            except ValueError:
                value = None
        elif not isinstance(value, str | bool | int | float):
            value = None
        values[tag["key"]] = value
    return values


def _micros(value: Any, what: str) -> int:
    number = as_int(value) if value is not None else 0
    if number is None or number < 0:
        raise SpanError(f"{what} {value!r} is not a time in microseconds")
    return number


def _padded_id(value: Any, size: int) -> str | None:
    if not isinstance(value, str):
        raise SpanError(f"id {value!r} is not text")
    return hex_id(value.rjust(size * 2, "0"), size)


def span_from_jaeger(raw: Any, processes: dict[str, Any]) -> Span:
    if not isinstance(raw, dict):
        raise SpanError(f"a span is {type(raw).__name__}, not an object")
    tags = _tags(raw.get("tags"))
    process = raw.get("process")
    process_id = raw.get("processID")
    if not isinstance(process, dict) and isinstance(process_id, str):
        process = processes.get(process_id)
    service = process.get("serviceName") if isinstance(process, dict) else None
    references = (
        [r for r in raw.get("references") or [] if isinstance(r, dict)]
        if isinstance(raw.get("references"), list)
        else []
    )
    parent = next(
        (r for r in references if r.get("refType") == "CHILD_OF"),
        references[0] if references else None,
    )
    status = str(tags.get("otel.status_code") or "").lower()
    if status not in ("ok", "error", "unset"):
        status = "error" if tags.get("error") in (True, "true") else "unset"
    kind = str(tags.get("span.kind") or "internal").lower()
    start_us = _micros(raw.get("startTime"), "startTime")
    trace_id = _padded_id(raw.get("traceID"), 16)
    span_id = _padded_id(raw.get("spanID"), 8)
    if trace_id is None or span_id is None:
        raise SpanError("a span without traceID or spanID")
    name = raw.get("operationName")
    logs = raw.get("logs")
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=_padded_id(parent.get("spanID"), 8) if parent else None,
        name=name if isinstance(name, str) else "",
        kind=kind if kind in _KINDS else "unspecified",
        service=service if isinstance(service, str) and service else "unknown_service",
        start_ns=start_us * 1000,
        end_ns=(start_us + _micros(raw.get("duration"), "duration")) * 1000,
        attributes={k: v for k, v in tags.items() if k not in _SYNTHETIC},
        status=status,
        status_message=str(tags.get("otel.status_description") or ""),
        events=[_event(log) for log in logs if isinstance(log, dict)]
        if isinstance(logs, list)
        else [],
    )


def _event(log: dict[str, Any]) -> Event:
    fields = _tags(log.get("fields"))
    name = fields.pop("event", None)
    return Event(
        name if isinstance(name, str) else "log", (as_int(log.get("timestamp")) or 0) * 1000, fields
    )


def spans_from_jaeger_trace(trace: Any, skipped: list[str] | None = None) -> list[Span]:
    """The readable spans of one Jaeger trace; the reasons for the others go to ``skipped``."""
    if not isinstance(trace, dict):
        if skipped is not None:
            skipped.append(f"a Jaeger trace is {type(trace).__name__}, not an object")
        return []
    processes = trace.get("processes")
    processes = processes if isinstance(processes, dict) else {}
    raw_spans = trace.get("spans")
    if not isinstance(raw_spans, list):
        if skipped is not None:
            skipped.append("a Jaeger trace whose spans are not a list")
        return []
    spans = []
    for raw in raw_spans:
        try:
            spans.append(span_from_jaeger(raw, processes))
        except SpanError as exc:
            if skipped is not None:
                skipped.append(str(exc))
    return spans
