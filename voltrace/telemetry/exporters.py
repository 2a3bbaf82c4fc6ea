"""Span exporters voltrace adds to the OpenTelemetry SDK's.

* ``OtlpJsonFileExporter``: OTLP JSON, one ExportTraceServiceRequest per line,
  the shape the OpenTelemetry Collector's file exporter writes (ids in hex,
  enums as numbers, 64-bit integers as strings).
* ``JaegerFileExporter``: Jaeger's own JSON model (``{"data": [trace, ...]}``),
  which the Jaeger UI opens with "upload JSON" and no backend at all.
* ``CountingExporter``: wraps any exporter and counts what it failed to send,
  so dropped spans are reported, never silently lost.
"""

from __future__ import annotations

import base64
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: Any) -> None:
    """protobuf's JSON mapping writes bytes as base64; OTLP JSON wants hex ids."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """One ExportTraceServiceRequest as OTLP JSON."""
    direct = _otlp_json_direct(spans)
    return direct if direct is not None else otlp_json_via_protobuf(spans)


def otlp_json_via_protobuf(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The reference encoding: the SDK's protobuf, then protobuf's JSON mapping."""
    message = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    _hex_ids(message)
    return message


class _Unsupported(Exception):
    pass


def _any_value(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise _Unsupported
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_any_value(v) for v in value]} if value else {}}
    raise _Unsupported


def _attributes(attributes: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in attributes.items()] if attributes else []


def _span(span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    out: dict[str, Any] = {"traceId": f"{context.trace_id:032x}",
                           "spanId": f"{context.span_id:016x}"}
    if context.trace_state:
        out["traceState"] = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
    parent = span.parent
    if parent is not None:
        out["parentSpanId"] = f"{parent.span_id:016x}"
    out["flags"] = 768 if parent is not None and parent.is_remote else 256
    out["name"] = span.name
    out["kind"] = span.kind.value + 1
    out["startTimeUnixNano"] = str(span.start_time)
    out["endTimeUnixNano"] = str(span.end_time)
    if span.attributes:
        out["attributes"] = _attributes(span.attributes)
    if span.dropped_attributes:
        out["droppedAttributesCount"] = span.dropped_attributes
    if span.events:
        events = []
        for event in span.events:
            e: dict[str, Any] = {"timeUnixNano": str(event.timestamp), "name": event.name}
            if event.attributes:
                e["attributes"] = _attributes(event.attributes)
            if event.dropped_attributes:
                e["droppedAttributesCount"] = event.dropped_attributes
            events.append(e)
        out["events"] = events
    if span.dropped_events:
        out["droppedEventsCount"] = span.dropped_events
    if span.links:
        raise _Unsupported
    status: dict[str, Any] = {}
    if span.status.description:
        status["message"] = span.status.description
    if span.status.status_code.value:
        status["code"] = span.status.status_code.value
    out["status"] = status
    return out


def _otlp_json_direct(spans: Sequence[ReadableSpan]) -> dict[str, Any] | None:
    """``otlp_json`` built straight from the SDK spans, without protobuf (2-3x faster).

    None for what it does not handle (links, NaN/inf, bytes or mapping values).
    """
    try:
        # Grouped by identity: a provider hands every span the same Resource object, and
        # Resource.__hash__ serialises all its attributes on every call.
        resources: dict[int, Any] = {}
        grouped: dict[int, dict[Any, list]] = {}
        for span in spans:
            resources[id(span.resource)] = span.resource
            scopes = grouped.setdefault(id(span.resource), {})
            scopes.setdefault(span.instrumentation_scope, []).append(_span(span))
        resource_spans = []
        for resource_id, scopes in grouped.items():
            resource = resources[resource_id]
            scope_spans = []
            for scope, encoded in scopes.items():
                entry: dict[str, Any] = {}
                if scope is not None:
                    s: dict[str, Any] = {}
                    if scope.name:
                        s["name"] = scope.name
                    if scope.version:
                        s["version"] = scope.version
                    if scope.attributes:
                        s["attributes"] = _attributes(scope.attributes)
                    entry["scope"] = s
                entry["spans"] = encoded
                if scope is not None and scope.schema_url:
                    entry["schemaUrl"] = scope.schema_url
                scope_spans.append(entry)
            attributes = _attributes(resource.attributes)
            rs: dict[str, Any] = {"resource": {"attributes": attributes} if attributes else {},
                                  "scopeSpans": scope_spans}
            if resource.schema_url:
                rs["schemaUrl"] = resource.schema_url
            resource_spans.append(rs)
        return {"resourceSpans": resource_spans}
    except _Unsupported:
        return None


class OtlpJsonFileExporter(SpanExporter):
    """Appends one OTLP JSON export request per line; safe to share between providers."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - closed in shutdown

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # orjson: the same compact JSON as json.dumps, several times faster, and this
        # runs on the exporter thread that competes with requests for the GIL.
        line = orjson.dumps(otlp_json(spans)) + b"\n"
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(line)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# ---------------------------------------------------------------------------
# Jaeger's JSON model
# ---------------------------------------------------------------------------

_SPAN_KIND_NAMES = {
    SpanKind.SERVER: "server", SpanKind.CLIENT: "client", SpanKind.INTERNAL: "internal",
    SpanKind.PRODUCER: "producer", SpanKind.CONSUMER: "consumer",
}


def _jaeger_tag(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, (list, tuple)):
        return {"key": key, "type": "string", "value": json.dumps(list(value))}
    return {"key": key, "type": "string", "value": str(value)}


def jaeger_span(span: ReadableSpan, process_id: str) -> dict[str, Any]:
    """One span in Jaeger's model, OTel's status and kind mapped as Jaeger does."""
    context = span.context
    trace_id = f"{context.trace_id:032x}"
    references = []
    if span.parent is not None:
        references.append({
            "refType": "CHILD_OF", "traceID": f"{span.parent.trace_id:032x}",
            "spanID": f"{span.parent.span_id:016x}",
        })
    tags = [_jaeger_tag(k, v) for k, v in (span.attributes or {}).items()]
    tags.append(_jaeger_tag("span.kind", _SPAN_KIND_NAMES.get(span.kind, "internal")))
    tags.append(_jaeger_tag("otel.scope.name", span.instrumentation_scope.name
                            if span.instrumentation_scope else ""))
    if span.status.status_code is StatusCode.ERROR:
        tags.append(_jaeger_tag("error", True))
        tags.append(_jaeger_tag("otel.status_code", "ERROR"))
        if span.status.description:
            tags.append(_jaeger_tag("otel.status_description", span.status.description))
    elif span.status.status_code is StatusCode.OK:
        tags.append(_jaeger_tag("otel.status_code", "OK"))
    logs = [
        {
            "timestamp": event.timestamp // 1000,
            "fields": [_jaeger_tag("event", event.name)]
            + [_jaeger_tag(k, v) for k, v in (event.attributes or {}).items()],
        }
        for event in span.events
    ]
    start = span.start_time or 0
    end = span.end_time or start
    return {
        "traceID": trace_id,
        "spanID": f"{context.span_id:016x}",
        "operationName": span.name,
        "references": references,
        "flags": 1,
        "startTime": start // 1000,
        "duration": max(0, (end - start) // 1000),
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": None,
    }


class JaegerFileExporter(SpanExporter):
    """Keeps the last ``max_traces`` traces and writes them as one Jaeger JSON file.

    Jaeger's upload format is one document, not a stream, so the file is
    rewritten (atomically) on force_flush and shutdown, not on every export.
    """

    def __init__(self, path: str, max_traces: int = 10_000) -> None:
        self.path = path
        self.max_traces = max_traces
        self._lock = threading.Lock()
        # trace id -> {"spans": [...], "processes": {service: process}}
        self._traces: OrderedDict[str, list[tuple[dict, dict]]] = OrderedDict()
        self._dirty = False
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                attrs = dict(span.resource.attributes)
                service = str(attrs.get("service.name", "unknown_service"))
                process = {
                    "serviceName": service,
                    "tags": [_jaeger_tag(k, v) for k, v in attrs.items() if k != "service.name"],
                }
                trace_id = f"{span.context.trace_id:032x}"
                self._traces.setdefault(trace_id, []).append((jaeger_span(span, service), process))
                self._traces.move_to_end(trace_id)
            while len(self._traces) > self.max_traces:
                self._traces.popitem(last=False)
            self._dirty = True
        return SpanExportResult.SUCCESS

    def document(self) -> dict[str, Any]:
        data = []
        with self._lock:
            for trace_id, entries in self._traces.items():
                process_ids: dict[str, str] = {}
                processes: dict[str, dict] = {}
                spans = []
                for span, process in entries:
                    service = process["serviceName"]
                    if service not in process_ids:
                        process_ids[service] = f"p{len(process_ids) + 1}"
                        processes[process_ids[service]] = process
                    spans.append({**span, "processID": process_ids[service]})
                data.append({"traceID": trace_id, "spans": spans, "processes": processes,
                             "warnings": None})
        return {"data": data, "total": 0, "limit": 0, "offset": 0, "errors": None}

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if not self._dirty:
            return True
        document = self.document()
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        os.replace(tmp, self.path)
        self._dirty = False
        return True

    def shutdown(self) -> None:
        self.force_flush()


class CountingExporter(SpanExporter):
    """Counts spans exported and spans lost; ``on_drop`` hears about each loss.

    Losses are export failures and, behind a ``CountingBatchSpanProcessor``, the spans
    its full queue turned away (``queue_full``), reported here, from the exporting
    thread, one call per batch rather than one per span.
    """

    def __init__(
        self, inner: SpanExporter, name: str,
        on_drop: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.inner = inner
        self.name = name
        self.on_drop = on_drop
        self.exported = 0
        self.dropped = 0
        self._queue_full = 0
        self._queue_lock = threading.Lock()

    def queue_full(self, count: int) -> None:
        """The processor in front turned ``count`` spans away (called on request threads)."""
        with self._queue_lock:
            self._queue_full += count

    def report_queue_full(self) -> None:
        with self._queue_lock:
            count, self._queue_full = self._queue_full, 0
        if count:
            self.dropped += count
            if self.on_drop is not None:
                self.on_drop(self.name, count, "queue_full")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.report_queue_full()
        try:
            result = self.inner.export(spans)
            reason = "export_failed"
        except Exception as exc:  # an exporter bug must not kill the worker thread
            result, reason = SpanExportResult.FAILURE, type(exc).__name__
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.dropped += len(spans)
            if self.on_drop is not None:
                self.on_drop(self.name, len(spans), reason)
        return result

    def shutdown(self) -> None:
        self.report_queue_full()
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.report_queue_full()
        return self.inner.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor whose queue-full drops are counted, not only logged by the SDK.

    The SDK drops a span when the queue is full (``OTEL_BSP_MAX_QUEUE_SIZE``) and tells
    only the stdlib logger; this hands the count to the CountingExporter behind it.
    """

    def __init__(self, exporter: CountingExporter, **kwargs: Any) -> None:
        super().__init__(exporter, **kwargs)
        self._counting = exporter

    def on_end(self, span: ReadableSpan) -> None:
        batch = self._batch_processor
        # The same test the SDK's BatchProcessor.emit makes before it drops.
        if span.context.trace_flags.sampled and len(batch._queue) >= batch._max_queue_size:
            self._counting.queue_full(1)
        super().on_end(span)
