"""voltrace inside a real nova-api: ``voltrace serve``'s spans, logs and metrics, from nova's code.

Nothing in nova's files changes: wrapt wraps nine of nova's functions at runtime
(``voltrace.instrumentation.nova_hooks`` has the map), and a ``POST /v2.1/os-volumes`` then
gives the span tree ``voltrace serve`` gives: the SERVER span, ``create_volume``, the six
stages with their attributes, the requests CLIENT spans under ``resolve_snapshot`` and
``call_cinder``; the same ``stage.<name>`` and ``request.finished`` log lines; the same
``voltrace.*`` metrics. Three ways to load it (``docs/nova-api.md`` is the recipe):

1. **The paste filter**, first in ``keystone =`` of nova's api-paste.ini::

       [filter:voltrace]
       paste.filter_factory = voltrace.instrumentation.nova:filter_factory
       traces_file = /var/log/nova/voltrace-traces.jsonl     # optional; OTEL_* as usual

   It builds voltrace's ``Telemetry`` once per process, on that process's first request
   (after any fork), honouring ``OTEL_*``.

2. **opentelemetry-instrument** (with ``opentelemetry-distro``): the ``opentelemetry_instrumentor``
   entry point ``voltrace_nova`` names :class:`NovaVolumesInstrumentor`; it waits for nova's
   modules to be imported (wrapt post-import hooks) and wraps nova's URL map for the SERVER
   span, so no ini edit is needed. Spans and metrics go to the global providers.

3. **In code**: ``NovaVolumesInstrumentor().instrument(tracer_provider=..., meter_provider=...)``
   before nova's app serves.

Importing this module needs only OpenTelemetry's API and instrumentation package and wrapt;
voltrace's telemetry (structlog, the SDK) is imported when instrumenting.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import wrapt
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from voltrace import __version__, semconv
from voltrace.instrumentation import nova_runtime
from voltrace.instrumentation.nova_runtime import RUNTIME, guarded

# The hook points were read, and are tested, on nova 34.0.0 (OpenStack 2026.2).
SUPPORTED_NOVA = ("nova >= 34.0.0, < 35",)

# (module, attribute, wrapper in nova_hooks): every function wrapped, in request order.
HOOKS: tuple[tuple[str, str, str], ...] = (
    ("nova.api.openstack.wsgi", "Resource.__call__", "resource_call"),
    ("nova.api.openstack.wsgi", "Request.set_api_version_request", "parse_step"),
    ("nova.api.openstack.wsgi", "Request.get_content_type", "parse_step"),
    ("nova.api.openstack.wsgi", "Resource._get_request_content", "parse_step"),
    ("nova.api.openstack.compute.volumes", "VolumeController.create", "volume_create"),
    ("nova.context", "RequestContext.can", "context_can"),
    ("nova.volume.cinder", "API.get_snapshot", "get_snapshot"),
    ("nova.volume.cinder", "API.create", "cinder_create"),
    ("keystoneauth1.adapter", "LegacyJsonAdapter.request", "adapter_request"),
    ("nova.api.openstack", "FaultWrapper._error", "fault_wrapper_error"),
)
# Without the paste filter, the SERVER span wraps what api-paste.ini's `call:` builds.
URLMAP_HOOK = ("nova.api.openstack.urlmap", "urlmap_factory")

OSPROFILER_KEY_ENV = "VOLTRACE_OSPROFILER_HMAC_KEY"
# For opentelemetry-instrument and instrument() without a logger: where the log lines go.
LOG_FILE_ENV, LOG_FORMAT_ENV, LOG_LEVEL_ENV = (
    "VOLTRACE_LOG_FILE",
    "VOLTRACE_LOG_FORMAT",
    "VOLTRACE_LOG_LEVEL",
)

# Stable HTTP semantic conventions (what voltrace serve emits), unless the operator chose.
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")


class ProvidedTelemetry:
    """voltrace's telemetry interface over providers someone else built.

    What ``StageEmitter`` and ``instrument_app`` use: a tracer (scope ``voltrace``, as
    voltrace serve's), a logger, ``VolumeMetrics`` and the SERVER-span options.
    """

    def __init__(self, tracer_provider: Any, meter_provider: Any, logger: Any = None) -> None:
        from voltrace.telemetry import TelemetryConfig
        from voltrace.telemetry.metrics import VolumeMetrics

        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = tracer_provider.get_tracer(semconv.INSTRUMENTATION_SCOPE, __version__)
        self.metrics = VolumeMetrics(
            meter_provider.get_meter(semconv.INSTRUMENTATION_SCOPE, __version__)
        )
        self.config = TelemetryConfig()  # trust_incoming_trace_context, forward_baggage
        self.logger = logger if logger is not None else _logger_from_env()


def _logger_from_env() -> Any:
    from voltrace.telemetry.logs import make_logger

    path = os.environ.get(LOG_FILE_ENV)
    stream = open(path, "a", encoding="utf-8") if path else sys.stderr  # noqa: SIM115
    return make_logger(
        stream,
        fmt=os.environ.get(LOG_FORMAT_ENV, "json"),
        level=os.environ.get(LOG_LEVEL_ENV, "info"),
        service=os.environ.get("OTEL_SERVICE_NAME", semconv.NOVA_API_SERVICE),
    )


class NovaVolumesInstrumentor(BaseInstrumentor):
    """Stage spans, logs and metrics for nova-api's ``POST /v2.1/os-volumes``.

    ``instrument(tracer_provider=..., meter_provider=..., logger=...)``; unset providers are
    the global ones. ``osprofiler_hmac_key=`` (or ``$VOLTRACE_OSPROFILER_HMAC_KEY``) signs
    nova's Cinder calls for OSProfiler when this instrumentor instruments ``requests``
    (it does unless ``requests`` is already instrumented). ``server_span=False`` leaves the
    SERVER span to someone else (the paste filter passes its own ``telemetry_source``).
    """

    _lock = threading.Lock()

    def instrumentation_dependencies(self) -> Collection[str]:
        return SUPPORTED_NOVA

    def _instrument(self, **kwargs: Any) -> None:
        telemetry_source = kwargs.get("telemetry_source")
        self._instrumented_requests = False
        if telemetry_source is None:
            telemetry = ProvidedTelemetry(
                kwargs.get("tracer_provider") or trace.get_tracer_provider(),
                kwargs.get("meter_provider") or otel_metrics.get_meter_provider(),
                kwargs.get("logger"),
            )
            telemetry_source = _constant(telemetry)
            key = kwargs.get("osprofiler_hmac_key") or os.environ.get(OSPROFILER_KEY_ENV)
            self._instrumented_requests = _instrument_requests(telemetry.tracer_provider, key)
        RUNTIME.telemetry_source = telemetry_source
        self._patches: dict[tuple[str, str], tuple[Any, str]] = {}
        self._active = True
        for module, attribute, wrapper in HOOKS:
            self._when_imported(module, attribute, wrapper)
        self._when_imported("nova.api.openstack.compute.volumes", "", None)
        if kwargs.get("server_span", True) and "telemetry_source" not in kwargs:
            module, attribute = URLMAP_HOOK
            self._when_imported(module, attribute, _urlmap_wrapper(_current_telemetry))

    def _when_imported(self, module: str, attribute: str, wrapper: Any) -> None:
        """Wrap ``module.attribute`` once the module is imported (now, if it already is)."""

        def patch(imported: Any) -> None:
            guarded(
                f"wrapping {module}.{attribute}", self._patch, imported, module, attribute, wrapper
            )

        wrapt.register_post_import_hook(patch, module)

    def _patch(self, imported: Any, module: str, attribute: str, wrapper: Any) -> None:
        with self._lock:
            if not getattr(self, "_active", False):
                return
            if wrapper is None:  # the controller class the Resource hook recognises
                RUNTIME.volume_controller = imported.VolumeController
                return
            if (module, attribute) in self._patches:
                return
            if isinstance(wrapper, str):  # a wrapper of nova_hooks, loaded with nova itself
                from voltrace.instrumentation import nova_hooks

                wrapper = getattr(nova_hooks, wrapper)
            owner_path, _, name = attribute.rpartition(".")
            owner = imported
            for part in filter(None, owner_path.split(".")):
                owner = getattr(owner, part)
            wrapt.wrap_function_wrapper(owner, name, wrapper)
            self._patches[(module, attribute)] = (owner, name)

    def _uninstrument(self, **kwargs: Any) -> None:
        with self._lock:
            self._active = False
            for owner, name in self._patches.values():
                current = (
                    owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name)
                )
                if isinstance(current, wrapt.ObjectProxy):
                    setattr(owner, name, current.__wrapped__)
            self._patches = {}
            RUNTIME.telemetry_source = None
            RUNTIME.volume_controller = None
        if self._instrumented_requests:
            from opentelemetry.instrumentation.requests import RequestsInstrumentor

            RequestsInstrumentor().uninstrument()


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _current_telemetry() -> Any:
    """The instrumentor's telemetry while it is instrumented, else None (pass through)."""
    source = RUNTIME.telemetry_source
    return source() if source is not None else None


def _instrument_requests(tracer_provider: Any, osprofiler_key: str | None) -> bool:
    """CLIENT spans (and ``traceparent``) on nova's HTTP calls, unless someone did it already."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    instrumentor = RequestsInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        return False
    hook = None
    if osprofiler_key:
        from voltrace.osprofiler import request_hook

        hook = request_hook(osprofiler_key)
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        meter_provider=otel_metrics.NoOpMeterProvider(),
        request_hook=hook,
    )
    return True


def _urlmap_wrapper(telemetry_source: Callable[[], Any]) -> Any:
    def urlmap_factory(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        urlmap = wrapped(*args, **kwargs)
        served = guarded("url map", _serve, urlmap, telemetry_source)
        return urlmap if served is None else served

    return urlmap_factory


def _serve(app: Any, telemetry_source: Callable[[], Any], full_path: bool = True) -> Any:
    from voltrace.instrumentation.nova_server import NovaApiMiddleware

    return NovaApiMiddleware(app, telemetry_source, full_path=full_path)


# ---------------------------------------------------------------------------
# The paste filter
# ---------------------------------------------------------------------------


def _flag(value: str | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class FilterSettings:
    """``[filter:voltrace]``'s options in api-paste.ini (all optional; ``OTEL_*`` as usual)."""

    traces_file: str | None = None  # OTLP JSON lines, what `voltrace explain` reads
    jaeger_file: str | None = None
    log_file: str | None = None  # default: nova-api's stderr
    log_format: str = "json"  # json (what explain --logs reads), oslo, console
    log_level: str = "info"
    metrics_port: int | None = None  # Prometheus /metrics on 127.0.0.1 (one process only)
    span_processor: str = "batch"  # "simple" exports synchronously (tests)
    otlp: bool = False  # also OTLP, whatever OTEL_TRACES_EXPORTER says

    @classmethod
    def from_paste(cls, local_conf: dict[str, str]) -> FilterSettings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(local_conf) - known)
        if unknown:
            raise ValueError(
                f"[filter:voltrace]: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {k: v.strip() or None for k, v in local_conf.items()}
        if values.get("metrics_port") is not None:
            values["metrics_port"] = int(values["metrics_port"])
        if "otlp" in values:
            values["otlp"] = _flag(values["otlp"])
        for key in ("log_format", "log_level", "span_processor"):
            if values.get(key) is None:
                values.pop(key, None)
        return cls(**values)


class ProcessTelemetry:
    """voltrace's ``Telemetry`` for the process serving the request, built on its first one.

    Built after fork, never before: exporter threads and files belong to the worker. Flushed
    at exit (gunicorn's and uwsgi's SIGTERM end in a normal interpreter exit).
    """

    def __init__(self, settings: FilterSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._telemetry: Any = None

    def __call__(self) -> Any:
        pid = os.getpid()
        if self._pid == pid:
            return self._telemetry
        with self._lock:
            if self._pid != pid:
                self._telemetry = guarded("telemetry", self._build)
                self._pid = pid
        return self._telemetry

    def _build(self) -> Any:
        from voltrace.telemetry import Telemetry, TelemetryConfig

        s = self.settings
        key = os.environ.get(OSPROFILER_KEY_ENV)
        hooks: list[Any] = []
        if key:
            from voltrace.osprofiler import request_hook

            hooks.append(request_hook(key))
        readers: list[Any] = []
        if s.metrics_port is not None and _prometheus_wanted():
            readers.append(_prometheus_reader(s.metrics_port))
        config = TelemetryConfig(
            service_name=semconv.NOVA_API_SERVICE,
            traces_file=s.traces_file,
            jaeger_file=s.jaeger_file,
            log_file=s.log_file,
            log_format=s.log_format,
            log_level=s.log_level,
            metric_readers=readers,
            span_processor=s.span_processor,
            otlp=s.otlp,
            request_hooks=hooks,
        )
        telemetry = Telemetry.create(config)
        atexit.register(telemetry.shutdown)
        return telemetry


def _prometheus_wanted() -> bool:
    names = os.environ.get("OTEL_METRICS_EXPORTER", "prometheus").split(",")
    return "prometheus" in (n.strip().lower() for n in names)


def _prometheus_reader(port: int) -> Any:
    """voltrace's exemplar reader on /metrics at 127.0.0.1:``port``.

    It works on opentelemetry-exporter-prometheus 0.65 (nova 34's constraints) and 0.66.
    Only one process can serve the port: under several workers the others go without
    (OTLP metrics suit them better).
    """
    from prometheus_client import start_http_server

    from voltrace.telemetry.metrics import ExemplarPrometheusMetricReader

    reader = ExemplarPrometheusMetricReader()
    try:
        start_http_server(port, addr="127.0.0.1")
    except OSError as exc:
        nova_runtime.count_failure("metrics port", exc)
    return reader


_PROCESS: ProcessTelemetry | None = None


def filter_factory(global_conf: dict[str, Any], **local_conf: str) -> Callable[[Any], Any]:
    """paste.deploy's ``paste.filter_factory``: the SERVER span plus nova's stage hooks."""
    global _PROCESS
    if _PROCESS is None:  # both keystone pipelines share one per-process telemetry
        _PROCESS = ProcessTelemetry(FilterSettings.from_paste(local_conf))
        NovaVolumesInstrumentor().instrument(telemetry_source=_PROCESS, server_span=False)
    process = _PROCESS

    def voltrace_filter(app: Any) -> Any:
        return _serve(app, process, full_path=False)

    return voltrace_filter
