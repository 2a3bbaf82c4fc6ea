"""Telemetry setup: one ``Telemetry`` per service in the process.

Traces, logs and metrics for a service come from one object, configured from
the standard ``OTEL_*`` variables plus voltrace's file options::

    telemetry = Telemetry.create(TelemetryConfig(traces_file="traces.jsonl"))
    app = telemetry.instrument_wsgi(build_app(Pipeline(env, observer=telemetry.observer)))
    ...
    telemetry.shutdown()          # flushes every span and log line

Honoured variables: ``OTEL_SDK_DISABLED``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_EXPORTER`` (otlp, console, none;
default none unless ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` is set),
``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (grpc, http/protobuf; default
http/protobuf), ``OTEL_EXPORTER_OTLP_*`` endpoint/headers/timeout,
``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*``, ``OTEL_METRICS_EXPORTER``
(prometheus, otlp, none) and ``OTEL_SEMCONV_STABILITY_OPT_IN`` (default
``http``: the stable HTTP conventions).

Exports never block a request: spans leave through a BatchSpanProcessor's
queue, and what an exporter fails to send is counted (``dropped_spans``), logged
and measured (``voltrace.telemetry.spans.dropped``).

Hostile input stays contained (``voltrace.telemetry.hygiene``): strings are cut to
``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` (default 4096 here), lone surrogates never reach an
encoder, the request's token is redacted from every message, and the token headers are
redacted from header capture whatever ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*`` say.

Shutdown is bounded: ``shutdown(timeout_s)`` flushes every exporter at once, gives up on
an exporter as soon as one of its exports fails (the collector is down: the rest would
fail the same way) or when ``timeout_s`` is over, and counts every span it could not
deliver as dropped (reason ``shutdown``) before it returns.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

# Must be set before any instrumentation reads it (once per process).
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from voltrace import __version__
from voltrace.telemetry import capture, hygiene
from voltrace.telemetry.components import COMPONENTS
from voltrace.telemetry.exporters import (
    JAEGER_FILE_INTERVAL_S,
    JAEGER_FILE_MAX_BYTES,
    CountingBatchSpanProcessor,
    CountingExporter,
    JaegerFileExporter,
    OtlpJsonFileExporter,
)
from voltrace.telemetry.logs import LOG_FORMATS, make_logger
from voltrace.telemetry.metrics import VolumeMetrics

# Before any instrumentation reads the header-capture variables (and again when voltrace
# instruments requests or a WSGI app, in case they changed since).
hygiene.enforce_sensitive_headers()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def sdk_disabled() -> bool:
    return _env_flag("OTEL_SDK_DISABLED")


def worker_file_name(path: str, slot: int) -> str:
    """``jaeger.json`` -> ``jaeger.w0.json``: one gunicorn worker's own copy of a file."""
    root, ext = os.path.splitext(path)
    return f"{root}.w{slot}{ext}"


class _TruncationNotices(logging.Filter):
    """The SDK logs a warning each time it cuts an attribute; a hostile client decides how
    often. voltrace sets the limit on purpose (hygiene), so those notices are noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("String attribute value exceeds max length")


logging.getLogger("opentelemetry.attributes").addFilter(_TruncationNotices())


def trace_exporter_names(extra_otlp: bool = False) -> list[str]:
    """OTEL_TRACES_EXPORTER as a list; unset means none unless an endpoint is set."""
    raw = os.environ.get("OTEL_TRACES_EXPORTER")
    if raw is None:
        endpoint_set = bool(
            os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        )
        names = ["otlp"] if endpoint_set else []
    else:
        names = [n.strip().lower() for n in raw.split(",") if n.strip()]
        names = [n for n in names if n != "none"]
    if extra_otlp and "otlp" not in names:
        names.append("otlp")
    unknown = set(names) - {"otlp", "console"}
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER: unsupported exporter(s) {sorted(unknown)}; "
            "use otlp, console or none"
        )
    return names


# gRPC backs off up to 120 s between reconnects; after a collector outage that would
# keep spans dropping for minutes once it is back. Retry at least every 5 s instead.
# (grpc takes int option values; the exporters' annotations say str only.)
GRPC_CHANNEL_OPTIONS: Any = (("grpc.max_reconnect_backoff_ms", 5000),)


def otlp_span_exporter() -> SpanExporter:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(channel_options=GRPC_CHANNEL_OPTIONS)
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

        return Http()
    raise ValueError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {protocol!r}; use grpc or http/protobuf"
    )


@dataclass
class TelemetryConfig:
    """What to emit and where; everything else comes from ``OTEL_*``."""

    service_name: str = "nova-api"
    # False for a second service in the same process (the demo's cinder-api),
    # which must keep its own name whatever OTEL_SERVICE_NAME says.
    use_env_service_name: bool = True
    traces_file: str | None = None
    jaeger_file: str | None = None
    otlp: bool = False  # also export over OTLP, whatever OTEL_TRACES_EXPORTER says
    log_stream: TextIO | None = None  # default: stderr
    log_file: str | None = None
    log_format: str = "auto"  # one of LOG_FORMATS: auto (console on a TTY, else json), ...
    log_level: str = "info"
    logs_enabled: bool = True
    metrics_port: int | None = None  # Prometheus /metrics
    metric_readers: list[MetricReader] = field(default_factory=list)
    # Batch in production; "simple" exports synchronously (tests, tiny demos).
    span_processor: str = "batch"
    instrument_requests: bool = True
    # Called with (client span, requests.PreparedRequest) before each Cinder call:
    # the OSProfiler bridge adds its signed headers here.
    request_hooks: list[Callable[[Any, Any], None]] = field(default_factory=list)
    # A caller's traceparent/tracestate: continued only when trusted (a gateway you run
    # sets them); otherwise a new trace that links to the caller's. Baggage is forwarded
    # to Cinder only when asked. See voltrace.telemetry.wsgi.
    trust_incoming_trace_context: bool = field(
        default_factory=lambda: _env_flag("VOLTRACE_TRUST_INCOMING_TRACE_CONTEXT")
    )
    forward_baggage: bool = field(default_factory=lambda: _env_flag("VOLTRACE_FORWARD_BAGGAGE"))
    jaeger_file_max_bytes: int = JAEGER_FILE_MAX_BYTES
    jaeger_file_interval_s: float = JAEGER_FILE_INTERVAL_S

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ValueError(
                f"log format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}"
            )

    def for_worker(self, slot: int, workers: int) -> TelemetryConfig:
        """This configuration in gunicorn worker ``slot`` of ``workers``.

        Worker ``i`` serves /metrics on ``metrics_port + i``; with several workers each
        writes its own Jaeger file (``jaeger.json`` -> ``jaeger.w<i>.json``), a whole
        document that one process keeps valid. The OTLP JSON traces file stays shared:
        workers append whole lines to it.
        """
        changes: dict[str, Any] = {}
        if self.metrics_port is not None:
            changes["metrics_port"] = self.metrics_port + slot
        if self.jaeger_file and workers > 1:
            changes["jaeger_file"] = worker_file_name(self.jaeger_file, slot)
        return dataclasses.replace(self, **changes) if changes else self


# Of shutdown's budget, what closing (providers, metrics server, files) keeps for itself.
_CLOSE_RESERVE_S = 1.0


class Telemetry:
    """Tracer, logger and metrics of one service, and their orderly shutdown."""

    def __init__(
        self,
        config: TelemetryConfig,
        *,
        shared_exporters: list[SpanExporter] | None = None,
        logger: Any = None,
    ) -> None:
        self.config = config
        self.enabled = not sdk_disabled()
        self.components = COMPONENTS
        self._shared_exporters: list[SpanExporter] = list(shared_exporters or [])
        hygiene.reload_limits()
        self.dropped_spans = 0
        self._drop_lock = threading.Lock()
        self._span_exporters: list[CountingExporter] = []
        self._processors: list[SpanProcessor] = []
        self._log_file: TextIO | None = None
        self._metrics_server: Any = None
        self._closed = False
        self.service_name = self._service_name()
        self.resource = Resource.create(
            {
                "service.name": self.service_name,
                "service.namespace": "openstack",
                "service.version": __version__,
            }
        )
        self.logger = logger if logger is not None else self._make_logger()
        self.tracer_provider = self._make_tracer_provider(shared_exporters)
        self.tracer = self.tracer_provider.get_tracer("voltrace", __version__)
        self.meter_provider = self._make_meter_provider()
        self.metrics = VolumeMetrics(self.meter_provider.get_meter("voltrace", __version__))
        self._requests_instrumented = False

    @classmethod
    def create(cls, config: TelemetryConfig | None = None) -> Telemetry:
        telemetry = cls(config or TelemetryConfig())
        if (
            telemetry.enabled
            and telemetry.config.instrument_requests
            and "client" in telemetry.components
        ):
            telemetry._instrument_requests()
        return telemetry

    def sibling(self, service_name: str) -> Telemetry:
        """A second service in this process, sharing this one's exporters and log output.

        The demo runs cinder-api's simulator beside nova-api: one create is still
        one trace in one file, with each span under its own service's resource.
        """
        config = dataclasses.replace(
            self.config,
            service_name=service_name,
            use_env_service_name=False,
            log_file=None,
            metrics_port=None,
            metric_readers=[],
            instrument_requests=False,
        )
        # A sibling of a sibling shares the first service's exporters too.
        exporters = self._span_exporters or self._shared_exporters
        return Telemetry(
            config,
            shared_exporters=[_NoShutdown(e) for e in exporters],
            logger=self.logger.bind(service=service_name),
        )

    # -- construction -------------------------------------------------------

    def _service_name(self) -> str:
        if self.config.use_env_service_name and os.environ.get("OTEL_SERVICE_NAME"):
            return os.environ["OTEL_SERVICE_NAME"]
        return self.config.service_name

    def _make_logger(self) -> Any:
        stream = self.config.log_stream
        if self.config.log_file:
            directory = os.path.dirname(os.path.abspath(self.config.log_file))
            os.makedirs(directory, exist_ok=True)
            self._log_file = open(self.config.log_file, "a", encoding="utf-8")  # noqa: SIM115
            stream = self._log_file
        return make_logger(
            stream or sys.stderr,
            fmt=self.config.log_format,
            level=self.config.log_level
            if self.config.logs_enabled and "logs" in self.components
            else "off",
            service=self.service_name,
        )

    def _processor_for(self, exporter: SpanExporter) -> SpanProcessor:
        if self.config.span_processor == "simple":
            return SimpleSpanProcessor(exporter)
        counting = exporter.inner if isinstance(exporter, _NoShutdown) else exporter
        if isinstance(counting, CountingExporter):
            return CountingBatchSpanProcessor(exporter, counting)
        return BatchSpanProcessor(exporter)

    def _make_tracer_provider(self, shared: list[SpanExporter] | None) -> TracerProvider:
        if not self.enabled:
            return trace.NoOpTracerProvider()  # type: ignore[return-value]
        # Strings are cut as OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT says, with voltrace's default
        # when it is unset (OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT still wins for spans).
        global_limit = os.environ.get("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "").strip()
        limits = SpanLimits(
            max_attribute_length=int(global_limit)
            if global_limit.isdigit()
            else hygiene.DEFAULT_VALUE_LENGTH_LIMIT
        )
        provider = TracerProvider(resource=self.resource, span_limits=limits)
        provider.add_span_processor(capture.HUB)
        if shared is not None:
            for exporter in shared:
                processor = self._processor_for(exporter)
                self._processors.append(processor)
                provider.add_span_processor(processor)
            return provider
        exporters: list[tuple[str, SpanExporter]] = []
        if self.config.traces_file:
            exporters.append(("traces_file", OtlpJsonFileExporter(self.config.traces_file)))
        if self.config.jaeger_file:
            exporters.append(
                (
                    "jaeger_file",
                    JaegerFileExporter(
                        self.config.jaeger_file,
                        max_bytes=self.config.jaeger_file_max_bytes,
                        interval_s=self.config.jaeger_file_interval_s,
                    ),
                )
            )
        for name in trace_exporter_names(extra_otlp=self.config.otlp):
            exporter = otlp_span_exporter() if name == "otlp" else ConsoleSpanExporter()
            exporters.append((name, exporter))
        for name, exporter in exporters:
            counting = CountingExporter(exporter, name, on_drop=self._on_dropped_spans)
            self._span_exporters.append(counting)
            processor = self._processor_for(counting)
            self._processors.append(processor)
            provider.add_span_processor(processor)
        return provider

    def _make_meter_provider(self) -> Any:
        if not self.enabled or "metrics" not in self.components:
            return otel_metrics.NoOpMeterProvider()
        readers: list[MetricReader] = list(self.config.metric_readers)
        names = [
            n.strip().lower()
            for n in os.environ.get("OTEL_METRICS_EXPORTER", "prometheus").split(",")
        ]
        if self.config.metrics_port is not None and "prometheus" in names:
            from prometheus_client import start_http_server

            from voltrace.telemetry.metrics import ExemplarPrometheusMetricReader

            readers.append(ExemplarPrometheusMetricReader())
            self._metrics_server = start_http_server(self.config.metrics_port, addr="127.0.0.1")
        if "otlp" in names:
            readers.append(_otlp_metric_reader())
        if not readers:
            return otel_metrics.NoOpMeterProvider()
        return MeterProvider(resource=self.resource, metric_readers=readers)

    def _instrument_requests(self) -> None:
        # `requests` is instrumented once per process, for one provider at a time:
        # the newest Telemetry owns it, and hands it back when it shuts down.
        with _REQUESTS_LOCK:
            _REQUESTS_OWNERS.append(self)
            _instrument_requests_for(self)
        self._requests_instrumented = True

    def _release_requests(self) -> None:
        with _REQUESTS_LOCK:
            was_owner = bool(_REQUESTS_OWNERS) and _REQUESTS_OWNERS[-1] is self
            if self in _REQUESTS_OWNERS:
                _REQUESTS_OWNERS.remove(self)
            if was_owner:
                _instrument_requests_for(_REQUESTS_OWNERS[-1] if _REQUESTS_OWNERS else None)

    # -- use ----------------------------------------------------------------

    @property
    def observer(self) -> Any:
        """The PipelineObserver that emits this service's spans, logs and metrics."""
        from voltrace.telemetry.observer import TelemetryObserver

        if not hasattr(self, "_observer"):
            self._observer = TelemetryObserver(self)
        return self._observer

    def instrument_wsgi(self, app: Any) -> Any:
        from voltrace.telemetry.wsgi import instrument_app

        return instrument_app(app, self)

    def _on_dropped_spans(self, exporter: str, count: int, reason: str) -> None:
        with self._drop_lock:
            self.dropped_spans += count
        self.metrics.spans_dropped(count, exporter, reason)
        self.logger.warning(
            "telemetry.spans_dropped",
            exporter=exporter,
            dropped=count,
            reason=reason,
            dropped_total=self.dropped_spans,
        )

    def _flush(self, deadline: float, closing: bool = False) -> list[SpanProcessor]:
        """Flush every processor at once; the ones not done by ``deadline``.

        BatchSpanProcessor.force_flush ignores its timeout (it exports until its queue
        is empty, each export with the exporter's own retries), so each runs in a helper
        thread and only the waiting here is bounded. While ``closing``, an exporter whose
        export fails is given up at once: its collector is down or hung.
        """
        pending: list[tuple[SpanProcessor, threading.Event]] = []
        for processor in self._processors:
            if closing and isinstance(processor, CountingBatchSpanProcessor):
                processor.counting.closing()
            done = threading.Event()

            def flush(processor: SpanProcessor = processor, done: threading.Event = done) -> None:
                try:
                    processor.force_flush()
                except Exception:
                    pass  # counted by the CountingExporter, or reported at shutdown
                finally:
                    done.set()

            threading.Thread(target=flush, name="voltrace-flush", daemon=True).start()
            pending.append((processor, done))

        def waiting(processor: SpanProcessor, done: threading.Event) -> bool:
            failed = (
                closing
                and isinstance(processor, CountingBatchSpanProcessor)
                and processor.counting.failed_while_closing
            )
            return not done.is_set() and not failed

        while True:
            pending = [(p, done) for p, done in pending if waiting(p, done)]
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                break
            pending[0][1].wait(min(remaining, 0.02))
        unfinished = [
            p
            for p in self._processors
            if any(p is q for q, _ in pending)
            or (
                closing
                and isinstance(p, CountingBatchSpanProcessor)
                and p.counting.failed_while_closing
            )
        ]
        for counting in self._span_exporters:
            if not any(
                isinstance(p, CountingBatchSpanProcessor) and p.counting is counting
                for p in unfinished
            ):
                counting.force_flush()  # the Jaeger file rewrites itself here
        return unfinished

    def force_flush(self, timeout_s: float = 5.0) -> bool:
        """Export everything queued, waiting at most ``timeout_s``; True if all of it went."""
        return not self._flush(time.monotonic() + timeout_s)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Flush and close everything within ``timeout_s``; safe to call twice.

        Spans that could not be delivered by then (collector down or hung) are counted
        as dropped (reason ``shutdown``), logged and measured, never lost silently.
        """
        if self._closed:
            return
        self._closed = True
        started = time.monotonic()
        deadline = started + timeout_s
        gave_up = self._flush(max(started, deadline - _CLOSE_RESERVE_S), closing=True)
        for processor in gave_up:
            if isinstance(processor, CountingBatchSpanProcessor):
                processor.abandon()
        if self._requests_instrumented:
            self._release_requests()
        for processor in self._processors:
            # A processor given up on may have its export thread stuck in a hung call:
            # never wait for that thread (it is a daemon; the process may exit under it).
            wait_s = 0.0 if processor in gave_up else max(0.0, deadline - time.monotonic())
            try:
                if isinstance(processor, CountingBatchSpanProcessor):
                    processor.shutdown(timeout_millis=wait_s * 1000)
                else:
                    processor.shutdown()
            except Exception as exc:
                self.logger.warning(
                    "telemetry.shutdown_failed",
                    part="span processor",
                    error_type=type(exc).__name__,
                )
        if isinstance(self.tracer_provider, TracerProvider):
            self.tracer_provider.shutdown()  # every processor is already shut: returns at once
        if isinstance(self.meter_provider, MeterProvider):
            remaining_ms = max(100.0, (deadline - time.monotonic()) * 1000)
            self.meter_provider.shutdown(timeout_millis=remaining_ms)
        if self._metrics_server is not None:
            server, _thread = self._metrics_server
            server.shutdown()
            server.server_close()
        if self._span_exporters:  # what this service's exporters did, for the record
            self.logger.info(
                "telemetry.shutdown",
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                exported={c.name: c.exported for c in self._span_exporters},
                dropped={c.name: c.dropped for c in self._span_exporters},
                dropped_total=self.dropped_spans,
            )
        if self._log_file is not None:
            self._log_file.flush()
            self._log_file.close()


_REQUESTS_LOCK = threading.Lock()
_REQUESTS_OWNERS: list[Telemetry] = []


def _instrument_requests_for(owner: Telemetry | None) -> None:
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    instrumentor = RequestsInstrumentor()
    # It reads the header-capture variables now, once: make sure the secrets are in them.
    hygiene.enforce_sensitive_headers()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    if owner is not None:
        hooks = tuple(owner.config.request_hooks)

        def request_hook(span: Any, request: Any) -> None:
            for hook in hooks:
                hook(span, request)

        instrumentor.instrument(
            tracer_provider=owner.tracer_provider,
            # voltrace.cinder.request.duration measures these calls, with the route.
            meter_provider=otel_metrics.NoOpMeterProvider(),
            request_hook=request_hook if hooks else None,
            # The simulator's admin routes are tooling, not part of any create.
            excluded_urls="/__sim__/",
        )


class _NoShutdown(SpanExporter):
    """Shares an exporter without letting the borrower close it."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Any) -> Any:
        return self.inner.export(spans)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _otlp_metric_reader() -> MetricReader:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return PeriodicExportingMetricReader(
            GrpcMetricExporter(channel_options=GRPC_CHANNEL_OPTIONS)
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return PeriodicExportingMetricReader(HttpMetricExporter())
