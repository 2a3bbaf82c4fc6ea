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
import contextlib
import io
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from voltrace.telemetry.hygiene import cleaned_copy, exportable, value_length_limit

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
    # Imported here: importing voltrace.telemetry (e.g. inside nova-api) loads no protobuf.
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

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
    out: dict[str, Any] = {
        "traceId": f"{context.trace_id:032x}",
        "spanId": f"{context.span_id:016x}",
    }
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
        # As the SDK's encoder: no link tracestate; flags say whether the context is remote.
        links = []
        for link in span.links:
            encoded: dict[str, Any] = {
                "traceId": f"{link.context.trace_id:032x}",
                "spanId": f"{link.context.span_id:016x}",
            }
            if link.attributes:
                encoded["attributes"] = _attributes(link.attributes)
            if link.dropped_attributes:
                encoded["droppedAttributesCount"] = link.dropped_attributes
            encoded["flags"] = 768 if link.context.is_remote else 256
            links.append(encoded)
        out["links"] = links
    if span.dropped_links:
        out["droppedLinksCount"] = span.dropped_links
    status: dict[str, Any] = {}
    if span.status.description:
        # The SDK bounds attributes, not status messages (another instrumentation's may be
        # a whole echoed request).
        status["message"] = span.status.description[: value_length_limit()]
    if span.status.status_code.value:
        status["code"] = span.status.status_code.value
    out["status"] = status
    return out


def _otlp_json_direct(spans: Sequence[ReadableSpan]) -> dict[str, Any] | None:
    """``otlp_json`` built straight from the SDK spans, without protobuf (2-3x faster).

    None for what it does not handle (NaN/inf, bytes or mapping values).
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
            rs: dict[str, Any] = {
                "resource": {"attributes": attributes} if attributes else {},
                "scopeSpans": scope_spans,
            }
            if resource.schema_url:
                rs["schemaUrl"] = resource.schema_url
            resource_spans.append(rs)
        return {"resourceSpans": resource_spans}
    except _Unsupported:
        return None


def _orjson_dumps() -> Callable[[Any], bytes]:
    import orjson

    return orjson.dumps


class OtlpJsonFileExporter(SpanExporter):
    """Appends one OTLP JSON export request per line; safe to share between providers.

    The file is unbuffered, so each line reaches it in one ``write()``: gunicorn workers
    appending to the same file (``O_APPEND``) never interleave inside a line.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in shutdown
        # orjson: the same compact JSON as json.dumps, several times faster, and this
        # runs on the exporter thread that competes with requests for the GIL. Imported
        # by the exporters that use it, not by importing voltrace.telemetry.
        self._dumps = _orjson_dumps()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            line = self._dumps(otlp_json(spans)) + b"\n"
        except TypeError:  # a string that is not UTF-8: write the cleaned copies instead
            line = self._dumps(otlp_json(exportable(spans))) + b"\n"
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            view = memoryview(line)
            while view:
                view = view[self._file.write(view) or 0 :]
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
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.INTERNAL: "internal",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
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
        references.append(
            {
                "refType": "CHILD_OF",
                "traceID": f"{span.parent.trace_id:032x}",
                "spanID": f"{span.parent.span_id:016x}",
            }
        )
    tags = [_jaeger_tag(k, v) for k, v in (span.attributes or {}).items()]
    tags.append(_jaeger_tag("span.kind", _SPAN_KIND_NAMES.get(span.kind, "internal")))
    tags.append(
        _jaeger_tag(
            "otel.scope.name", span.instrumentation_scope.name if span.instrumentation_scope else ""
        )
    )
    if span.status.status_code is StatusCode.ERROR:
        tags.append(_jaeger_tag("error", True))
        tags.append(_jaeger_tag("otel.status_code", "ERROR"))
        if span.status.description:
            tags.append(
                _jaeger_tag(
                    "otel.status_description", span.status.description[: value_length_limit()]
                )
            )
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


# Jaeger file defaults: the newest traces up to 32 MiB of JSON, rewritten every 5 s.
JAEGER_FILE_MAX_BYTES = 32 * 2**20
JAEGER_FILE_INTERVAL_S = 5.0


@dataclass
class _JaegerTrace:
    """One trace's spans, already encoded, and the process id of each of its services."""

    spans: list[bytes] = field(default_factory=list)
    processes: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # service -> id, JSON
    size: int = 0

    def process_id(self, service: str, encoded_process: bytes) -> str:
        known = self.processes.get(service)
        if known is None:
            known = self.processes[service] = (f"p{len(self.processes) + 1}", encoded_process)
            self.size += len(encoded_process) + 8
        return known[0]

    def snapshot(self) -> tuple[list[bytes], list[tuple[str, bytes]]]:
        """The spans and processes so far (the lists are copied, the bytes shared)."""
        return list(self.spans), list(self.processes.values())


def _write_trace(
    handle: Any, trace_id: str, spans: list[bytes], processes: list[tuple[str, bytes]]
) -> None:
    handle.write(b'{"traceID":"%s","spans":[' % trace_id.encode())
    for index, span in enumerate(spans):
        handle.write(b"," + span if index else span)
    handle.write(b'],"processes":{')
    handle.write(b",".join(b'"%s":%s' % (pid.encode(), encoded) for pid, encoded in processes))
    handle.write(b'},"warnings":null}')


class JaegerFileExporter(SpanExporter):
    """The newest traces, up to ``max_bytes`` of JSON, kept as one Jaeger upload file.

    Jaeger's upload format is one document, not a stream, so the whole file is rewritten,
    atomically (a private temporary file, then ``os.replace``), every ``interval_s`` while
    spans keep coming, and on force_flush and shutdown: a reader (or a crash) always finds
    a whole, valid file. Spans are encoded once, when exported, so memory is bounded in
    bytes (the oldest traces leave first) and a rewrite only joins bytes.

    One process writes one file: ``voltrace serve --workers N`` gives worker ``i`` the
    file ``NAME.w<i>.EXT`` (``TelemetryConfig.for_worker``).
    """

    def __init__(
        self,
        path: str,
        max_bytes: int = JAEGER_FILE_MAX_BYTES,
        interval_s: float = JAEGER_FILE_INTERVAL_S,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.interval_s = interval_s
        self.evicted_spans = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._traces: OrderedDict[str, _JaegerTrace] = OrderedDict()
        self._bytes = 0
        self._dumps = _orjson_dumps()
        self._processes: dict[int, tuple[str, bytes]] = {}  # id(resource) -> service, JSON
        self._dirty = False
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def _process(self, resource: Any) -> tuple[str, bytes]:
        known = self._processes.get(id(resource))
        if known is None:
            attrs = dict(resource.attributes)
            service = str(attrs.get("service.name", "unknown_service"))
            process = {
                "serviceName": service,
                "tags": [_jaeger_tag(k, v) for k, v in attrs.items() if k != "service.name"],
            }
            known = self._processes[id(resource)] = (service, self._dumps(process))
        return known

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            for span in spans:
                service, encoded_process = self._process(span.resource)
                trace_id = f"{span.context.trace_id:032x}"
                trace = self._traces.get(trace_id)
                if trace is None:
                    trace = self._traces[trace_id] = _JaegerTrace()
                else:
                    self._traces.move_to_end(trace_id)
                before = trace.size
                process_id = trace.process_id(service, encoded_process)
                try:
                    encoded = self._dumps(jaeger_span(span, process_id))
                except TypeError:  # a string that is not UTF-8
                    encoded = self._dumps(jaeger_span(cleaned_copy(span), process_id))
                # A copy of exactly its length: orjson's own result keeps its whole working
                # buffer (4 to 32 KiB), five times what the span needs.
                encoded = memoryview(encoded).tobytes()
                trace.spans.append(encoded)
                trace.size += len(encoded) + 1
                self._bytes += trace.size - before
            while self._bytes > self.max_bytes and len(self._traces) > 1:
                _, oldest = self._traces.popitem(last=False)
                self._bytes -= oldest.size
                self.evicted_spans += len(oldest.spans)
            self._dirty = True
        self._start_writer()
        return SpanExportResult.SUCCESS

    def _start_writer(self) -> None:
        if self._writer is None and self.interval_s > 0 and not self._stop.is_set():
            self._writer = threading.Thread(
                target=self._write_periodically, name="voltrace-jaeger-file", daemon=True
            )
            self._writer.start()

    def _write_periodically(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(OSError):  # the next rewrite (or shutdown's) tries again
                self.write()

    def _snapshot(self) -> list[tuple[str, list[bytes], list[tuple[str, bytes]]]]:
        with self._lock:
            self._dirty = False
            return [(trace_id, *trace.snapshot()) for trace_id, trace in self._traces.items()]

    def write_document(self, handle: Any) -> None:
        """The whole Jaeger document, streamed: no second copy of the traces in memory."""
        handle.write(b'{"data":[')
        for index, (trace_id, spans, processes) in enumerate(self._snapshot()):
            if index:
                handle.write(b",")
            _write_trace(handle, trace_id, spans, processes)
        handle.write(b'],"total":0,"limit":0,"offset":0,"errors":null}')

    def document(self) -> dict[str, Any]:
        buffer = io.BytesIO()
        self.write_document(buffer)
        return json.loads(buffer.getvalue())

    def write(self) -> None:
        """Rewrite the file now if anything changed since the last write."""
        with self._write_lock:
            if not self._dirty:
                return
            tmp = f"{self.path}.{os.getpid()}.tmp"  # never shared, even by a misconfiguration
            with open(tmp, "wb") as handle:
                self.write_document(handle)
            os.replace(tmp, self.path)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.write()
        return True

    def shutdown(self) -> None:
        self._stop.set()
        self.write()


class CountingExporter(SpanExporter):
    """Counts spans exported and spans lost; ``on_drop`` hears about each loss.

    Losses are export failures; behind a ``CountingBatchSpanProcessor``, the spans its
    full queue turned away (``queue_full``); and at shutdown, what could not be delivered
    in time (``shutdown``). Queue-full drops are reported here, from the exporting thread,
    one call per batch rather than one per span.

    One span never costs others their export: when an export fails, a span the encoder
    would refuse (``hygiene.needs_cleaning``) is replaced by a cleaned copy and the batch
    sent again; should the inner exporter raise even so, the batch is sent one span at a
    time, so only the spans that fail are dropped (and counted).
    """

    def __init__(
        self,
        inner: SpanExporter,
        name: str,
        on_drop: Callable[[str, int, str], None] | None = None,
    ) -> None:
        self.inner = inner
        self.name = name
        self.on_drop = on_drop
        self.exported = 0
        self.dropped = 0
        self._queue_full = 0
        self._queue_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._in_flight = 0
        self._closing = False
        self._abandoned = False
        self.failed_while_closing = False

    def queue_full(self, count: int) -> None:
        """The processor in front turned ``count`` spans away (called on request threads)."""
        with self._queue_lock:
            self._queue_full += count

    def report_queue_full(self) -> None:
        with self._queue_lock:
            count, self._queue_full = self._queue_full, 0
        if count:
            self._drop(count, "queue_full")

    def _drop(self, count: int, reason: str) -> None:
        with self._queue_lock:
            self.dropped += count
        if self.on_drop is not None:
            self.on_drop(self.name, count, reason)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.report_queue_full()
        with self._state_lock:
            abandoned = self._abandoned
            if not abandoned:
                self._in_flight = len(spans)
        if abandoned:  # spans that ended after shutdown counted the rest
            self._drop(len(spans), "shutdown")
            return SpanExportResult.FAILURE
        try:
            exported, failed, reason = self._export(spans)
        except BaseException:
            with self._state_lock:
                self._in_flight = 0
            raise
        self._settle(exported, failed, reason)
        return SpanExportResult.FAILURE if failed else SpanExportResult.SUCCESS

    def _export(self, spans: Sequence[ReadableSpan]) -> tuple[int, int, str]:
        """(exported, failed, reason). Clean batches go out as they are: checking strings
        costs only once an export has failed (OTLP/HTTP reports an encoding error as a
        plain failure, like a network one)."""
        error: Exception | None = None
        try:
            if self.inner.export(spans) is SpanExportResult.SUCCESS:
                return len(spans), 0, ""
        except Exception as exc:  # an encoder or exporter bug
            error = exc
        batch = exportable(spans)
        if batch is not spans:  # some span no encoder takes: send the cleaned copies
            try:
                if self.inner.export(batch) is SpanExportResult.SUCCESS:
                    return len(batch), 0, ""
            except Exception as exc:
                error = exc
        if error is None:
            return 0, len(batch), "export_failed"
        # Raised, not failed: find the spans it hits, so the others still go out.
        failed = [self._export_one(span) for span in batch].count(False)
        return len(batch) - failed, failed, type(error).__name__

    def _export_one(self, span: ReadableSpan) -> bool:
        try:
            return self.inner.export([span]) is SpanExportResult.SUCCESS
        except Exception:
            return False

    def _settle(self, exported: int, dropped: int, reason: str) -> None:
        # The batch leaves "in flight" under the same lock abandon() reads it with, so a
        # batch is counted once: by abandon() (it saw it in flight) or here, never both.
        with self._state_lock:
            self._in_flight = 0
            if self._abandoned:  # already counted as undelivered by abandon()
                return
            if dropped and self._closing:
                self.failed_while_closing = True
        self.exported += exported
        if dropped:
            self._drop(dropped, reason)

    def closing(self) -> None:
        """Shutdown began: a failure from now on means the rest would fail the same way."""
        self._closing = True

    def abandon(self, queued: int) -> int:
        """Give up at shutdown: count ``queued`` spans and the batch in flight as dropped."""
        self.report_queue_full()
        with self._state_lock:
            undelivered = queued + (0 if self._abandoned else self._in_flight)
            self._abandoned = True
        if undelivered:
            self._drop(undelivered, "shutdown")
        return undelivered

    def shutdown(self) -> None:
        self.report_queue_full()
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.report_queue_full()
        return self.inner.force_flush(timeout_millis)


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """A BatchSpanProcessor whose drops are counted, not only logged by the SDK.

    The SDK drops a span when the queue is full (``OTEL_BSP_MAX_QUEUE_SIZE``) and tells
    only the stdlib logger; this hands the count to the CountingExporter behind it. At
    shutdown, ``abandon`` empties the queue into the same count.
    """

    def __init__(
        self, exporter: SpanExporter, counting: CountingExporter | None = None, **kwargs: Any
    ) -> None:
        super().__init__(exporter, **kwargs)
        # ``exporter`` itself, or the CountingExporter it shares (Telemetry.sibling).
        found = counting if counting is not None else exporter
        if not isinstance(found, CountingExporter):
            raise TypeError("CountingBatchSpanProcessor needs a CountingExporter")
        self.counting: CountingExporter = found

    def on_end(self, span: ReadableSpan) -> None:
        batch = self._batch_processor
        # The same test the SDK's BatchProcessor.emit makes before it drops.
        if span.context.trace_flags.sampled and len(batch._queue) >= batch._max_queue_size:
            self.counting.queue_full(1)
        super().on_end(span)

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """As BatchSpanProcessor's, but waiting for its export thread at most ``timeout_millis``
        (the SDK's own shutdown always allows it 30 s)."""
        self._batch_processor.shutdown(timeout_millis=int(timeout_millis))

    def abandon(self) -> int:
        """Drop (and count) every span still queued and the batch being exported."""
        queue = self._batch_processor._queue
        queued = 0
        while True:
            try:
                queue.pop()
            except IndexError:
                break
            queued += 1
        return self.counting.abandon(queued)
