"""Reading traces back: OTLP JSON and Jaeger JSON into one small span model.

``voltrace explain`` and ``voltrace demo`` both work on this model, whoever
wrote the spans::

    loaded = read_trace_file("traces.jsonl")   # OTLP JSON lines or Jaeger JSON
    for problem in loaded.problems:           # a truncated line, an unknown shape
        print(problem)
    for trace in loaded.traces:
        ...

Accepted inputs:

* OTLP JSON, one ``ExportTraceServiceRequest`` per line (voltrace's
  ``--traces-file``, the OpenTelemetry Collector's file exporter), or one such
  document. Ids in hex (the OTLP JSON rule) or base64 (protobuf's default JSON
  mapping); enums as numbers or names; 64-bit integers as strings or numbers.
* Jaeger JSON: ``{"data": [trace, ...]}`` (voltrace's ``--jaeger-file``, a
  download from the Jaeger UI or API), a bare list of traces, one trace, or one
  trace per line.

A line that cannot be read is reported in ``problems`` and skipped; the rest
of the file still counts.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# OTLP enum values (numbers in OTLP JSON, names from some producers).
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer",
          5: "consumer"}
_STATUSES = {0: "unset", 1: "ok", 2: "error"}


@dataclass
class Event:
    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Span:
    """One finished span, whichever format it was read from."""

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    parent_id: str | None
    name: str
    kind: str  # server, client, internal, producer, consumer, unspecified
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "unset"  # unset, ok, error
    status_message: str = ""
    events: list[Event] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e6

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attributes.get(key, default)

    def event(self, name: str) -> Event | None:
        return next((e for e in self.events if e.name == name), None)


@dataclass
class Trace:
    """The spans of one trace id, with parent/child lookups."""

    trace_id: str
    spans: list[Span]

    def __post_init__(self) -> None:
        self.spans.sort(key=lambda s: (s.start_ns, -s.end_ns))
        self._children: dict[str | None, list[Span]] = {}
        ids = {s.span_id for s in self.spans}
        for span in self.spans:
            own = span.parent_id in ids and span.parent_id != span.span_id
            parent = span.parent_id if own else None
            self._children.setdefault(parent, []).append(span)

    @property
    def roots(self) -> list[Span]:
        """Spans whose parent is not in the trace (the caller's, or none)."""
        return self._children.get(None, [])

    def children(self, span: Span) -> list[Span]:
        return self._children.get(span.span_id, [])

    def descendants(self, span: Span) -> Iterator[Span]:
        walked = self.walk(span)
        next(walked)
        return (child for child, _ in walked)

    def walk(self, span: Span) -> Iterator[tuple[Span, int]]:
        """``span`` and everything under it, depth first in start order, with depths.

        Each span is visited once, so a malformed file (a span its own ancestor)
        cannot loop.
        """
        seen: set[str] = set()
        stack = [(span, 0)]
        while stack:
            node, depth = stack.pop()
            if node.span_id in seen:
                continue
            seen.add(node.span_id)
            yield node, depth
            stack.extend((child, depth + 1) for child in reversed(self.children(node)))


@dataclass
class Loaded:
    traces: list[Trace]
    problems: list[str]


class TraceFileError(Exception):
    """The file cannot be read as traces at all (missing, empty, another format)."""


# ---------------------------------------------------------------------------
# OTLP JSON
# ---------------------------------------------------------------------------


def _hex_id(value: Any, size: int) -> str | None:
    """OTLP JSON ids are hex; protobuf's default JSON mapping writes base64."""
    if not value:
        return None
    text = str(value)
    if len(text) == size * 2:
        try:
            bytes.fromhex(text)
            return text.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise ValueError(f"{text!r} is not a {size}-byte id in hex or base64")
    return raw.hex()


def _any_value(value: dict[str, Any]) -> Any:
    if not isinstance(value, dict) or not value:
        return None
    (kind, inner), = value.items()
    if kind == "intValue":
        return int(inner)
    if kind == "doubleValue":
        return float(inner)
    if kind == "arrayValue":
        return [_any_value(v) for v in (inner or {}).get("values", [])]
    if kind == "kvlistValue":
        return _attributes((inner or {}).get("values", []))
    return inner  # stringValue, boolValue, bytesValue (base64 text)


def _attributes(key_values: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    return {kv["key"]: _any_value(kv.get("value", {})) for kv in key_values or []}


def _enum(value: Any, names: dict[int, str], prefix: str) -> str:
    if isinstance(value, str) and not value.isdigit():
        return value.removeprefix(prefix).lower()
    return names.get(int(value or 0), "unspecified")


def spans_from_otlp(document: dict[str, Any]) -> list[Span]:
    """Every span of one OTLP JSON ``ExportTraceServiceRequest`` (or ``TracesData``)."""
    spans = []
    for resource_spans in document.get("resourceSpans", []):
        resource = _attributes((resource_spans.get("resource") or {}).get("attributes"))
        service = str(resource.get("service.name", "unknown_service"))
        scope_lists = resource_spans.get("scopeSpans") or resource_spans.get(
            "instrumentationLibrarySpans", [])  # the pre-1.0 name
        for scope_spans in scope_lists:
            for raw in scope_spans.get("spans", []):
                status = raw.get("status") or {}
                spans.append(Span(
                    trace_id=_hex_id(raw["traceId"], 16) or "",
                    span_id=_hex_id(raw["spanId"], 8) or "",
                    parent_id=_hex_id(raw.get("parentSpanId"), 8),
                    name=raw.get("name", ""),
                    kind=_enum(raw.get("kind", 0), _KINDS, "SPAN_KIND_"),
                    service=service,
                    start_ns=int(raw.get("startTimeUnixNano", 0)),
                    end_ns=int(raw.get("endTimeUnixNano", 0)),
                    attributes=_attributes(raw.get("attributes")),
                    status=_enum(status.get("code", 0), _STATUSES, "STATUS_CODE_"),
                    status_message=status.get("message", ""),
                    events=[Event(e.get("name", ""), int(e.get("timeUnixNano", 0)),
                                  _attributes(e.get("attributes")))
                            for e in raw.get("events", [])],
                ))
    return spans


# ---------------------------------------------------------------------------
# Jaeger JSON
# ---------------------------------------------------------------------------

# Tags Jaeger adds to carry OTel's kind and status; they become Span fields.
_JAEGER_SYNTHETIC = frozenset({"span.kind", "otel.status_code", "otel.status_description",
                               "error", "internal.span.format"})


def _jaeger_tags(tags: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for tag in tags or []:
        value = tag.get("value")
        if tag.get("type") == "int64" and value is not None:
            value = int(value)
        elif tag.get("type") == "float64" and value is not None:
            value = float(value)
        values[tag["key"]] = value
    return values


def spans_from_jaeger_trace(trace: dict[str, Any]) -> list[Span]:
    processes = trace.get("processes") or {}
    spans = []
    for raw in trace.get("spans", []):
        tags = _jaeger_tags(raw.get("tags"))
        process = raw.get("process") or processes.get(raw.get("processID"), {})
        references = raw.get("references") or []
        parent = next((r for r in references if r.get("refType") == "CHILD_OF"),
                      references[0] if references else None)
        status = str(tags.get("otel.status_code", "")).lower()
        if not status:
            status = "error" if tags.get("error") in (True, "true") else "unset"
        start_us = int(raw.get("startTime", 0))
        spans.append(Span(
            trace_id=_hex_id(str(raw["traceID"]).rjust(32, "0"), 16) or "",
            span_id=_hex_id(str(raw["spanID"]).rjust(16, "0"), 8) or "",
            parent_id=_hex_id(str(parent["spanID"]).rjust(16, "0"), 8) if parent else None,
            name=raw.get("operationName", ""),
            kind=str(tags.get("span.kind", "internal")).lower(),
            service=str(process.get("serviceName", "unknown_service")),
            start_ns=start_us * 1000,
            end_ns=(start_us + int(raw.get("duration", 0))) * 1000,
            attributes={k: v for k, v in tags.items() if k not in _JAEGER_SYNTHETIC},
            status=status,
            status_message=str(tags.get("otel.status_description", "")),
            events=[_jaeger_event(log) for log in raw.get("logs") or []],
        ))
    return spans


def _jaeger_event(log: dict[str, Any]) -> Event:
    fields = _jaeger_tags(log.get("fields"))
    name = str(fields.pop("event", "log"))
    return Event(name, int(log.get("timestamp", 0)) * 1000, fields)


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def _spans_from_document(document: Any) -> list[Span]:
    """Any accepted whole document or line; ValueError names what it looked like instead."""
    if isinstance(document, dict) and "resourceSpans" in document:
        return spans_from_otlp(document)
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        return [s for trace in document["data"] for s in spans_from_jaeger_trace(trace)]
    if isinstance(document, dict) and "spans" in document:
        return spans_from_jaeger_trace(document)
    if isinstance(document, list) and all(isinstance(t, dict) and "spans" in t for t in document):
        return [s for trace in document for s in spans_from_jaeger_trace(trace)]
    if isinstance(document, dict) and "event" in document and (
            "request_id" in document or "trace_id" in document):
        raise ValueError("this is a log line, not spans (read logs with --logs)")
    if isinstance(document, dict) and ("resourceMetrics" in document
                                       or "resourceLogs" in document):
        raise ValueError("OTLP metrics or logs, not traces")
    shape = sorted(document)[:4] if isinstance(document, dict) else type(document).__name__
    raise ValueError(f"neither OTLP JSON nor Jaeger JSON (found {shape})")


def group_traces(spans: Iterable[Span]) -> list[Trace]:
    """Spans by trace id, in the order each trace first appears."""
    by_trace: dict[str, list[Span]] = {}
    seen: set[tuple[str, str]] = set()
    for span in spans:
        key = (span.trace_id, span.span_id)
        if key in seen:  # the same span exported twice (retries, two exporters into one file)
            continue
        seen.add(key)
        by_trace.setdefault(span.trace_id, []).append(span)
    return [Trace(trace_id, spans) for trace_id, spans in by_trace.items()]


def read_trace_file(path: str | Path) -> Loaded:
    """Traces from an OTLP JSON or Jaeger JSON file (whole document or one per line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TraceFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if not text.strip():
        raise TraceFileError(f"{path} is empty: no spans were written to it")
    problems: list[str] = []
    try:
        spans = _spans_from_document(json.loads(text))
    except ValueError:  # JSONDecodeError is a ValueError; so is an unknown shape
        spans = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                spans.extend(_spans_from_document(json.loads(line)))
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{number}: not valid JSON, skipped "
                                f"(a truncated write?): {exc.msg} (column {exc.colno})")
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{path}:{number}: skipped: {_reason(exc)}")
    except (KeyError, TypeError) as exc:
        raise TraceFileError(f"{path}: not a trace file: {_reason(exc)}") from exc
    if not spans and problems and len(problems) == sum(1 for ln in text.splitlines() if ln.strip()):
        raise TraceFileError(f"{path}: no line could be read as spans; first: {problems[0]}")
    return Loaded(group_traces(spans), problems)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"a span without {exc.args[0]!r}"
    return str(exc)
