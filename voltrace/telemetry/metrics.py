"""RED metrics for volume creates: rate, errors and duration, per stage.

The instruments (OpenTelemetry names; Prometheus names through
``opentelemetry-exporter-prometheus``)::

    voltrace.stage.duration           histogram  s  stage, outcome (ok|skipped|error)
        -> voltrace_stage_duration_seconds_bucket|_sum|_count
    voltrace.create.duration          histogram  s  outcome (success|client_error|server_error)
        -> voltrace_create_duration_seconds_bucket|_sum|_count
    voltrace.creates                  counter       outcome, http_status, failed_stage,
                                                    failure_class
        -> voltrace_creates_total
    voltrace.cinder.request.duration  histogram  s  http.request.method, http.route,
                                                    http.response.status_code
        -> voltrace_cinder_request_duration_seconds_bucket|_sum|_count
    voltrace.telemetry.spans.dropped  counter       exporter, reason
        -> voltrace_telemetry_spans_dropped_total
    voltrace.stage.in_flight          up-down       stage
                                      counter
        -> voltrace_stage_in_flight

``voltrace.stage.in_flight`` is how many creates are inside each stage right now, per
process: a hung Cinder shows as creates piling up in ``call_cinder`` (or
``resolve_snapshot``) long before the worker's threads run out. It is observed when a
reader collects, from a counter the stages move, so it adds no measurement to a create.

Every label value comes from a closed set, so cardinality stays bounded whatever
the traffic: the 6 pipeline stages (``failed_stage`` adds sizelimit,
keystonecontext, router and wsgi for answers given before the pipeline), 3
outcomes, a dozen HTTP statuses, ~25 failure classes (``voltrace.errors.FAILURES``),
and Cinder routes as templates (``/v3/{project_id}/volumes/{volume_id}``), never
ids. Which project or request failed is in the exemplars, traces and logs.

Histograms use :data:`DURATION_BUCKETS_S`, 1 ms to 60 s.

**Exemplars.** The SDK keeps, per histogram bucket and per counter series, the
last measurement taken inside a sampled span (``OTEL_METRICS_EXEMPLAR_FILTER``,
default ``trace_based``). OTLP metric export carries them as is. For Prometheus,
:class:`ExemplarPrometheusMetricReader` is ``PrometheusMetricReader`` plus those
exemplars, written as ``# {trace_id="…",span_id="…"} value timestamp`` when a
scraper asks for OpenMetrics (Prometheus does; it stores them with
``--enable-feature=exemplar-storage``). Grafana then draws them on the latency
panels, and a click opens the trace in Jaeger.

**Cost.** A create makes 10 measurements (6 stages, the counter, the create
histogram, 2 Cinder calls); the OpenTelemetry SDK spends some 20-30 µs on each
(a third of it on exemplars), recorded inline. docs/metrics.md has the figures.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics.export import Histogram, HistogramDataPoint, Metric, Sum

from voltrace import semconv

# Seconds, from 1 ms to 60 s: loopback creates sit in the first buckets,
# connect retries (0.5 + 1 + 2 s) and slow Cinders in the last ones.
DURATION_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

STAGE_DURATION = "voltrace.stage.duration"
CREATE_DURATION = "voltrace.create.duration"
CREATES = "voltrace.creates"
CINDER_DURATION = "voltrace.cinder.request.duration"
SPANS_DROPPED = "voltrace.telemetry.spans.dropped"
STAGE_IN_FLIGHT = "voltrace.stage.in_flight"

# The attribute keys of each instrument: no other key is ever recorded.
LABELS: dict[str, frozenset[str]] = {
    STAGE_DURATION: frozenset({"stage", "outcome"}),
    CREATE_DURATION: frozenset({"outcome"}),
    CREATES: frozenset({"outcome", "http_status", "failed_stage", "failure_class"}),
    CINDER_DURATION: frozenset({"http.request.method", "http.route", "http.response.status_code"}),
    SPANS_DROPPED: frozenset({"exporter", "reason"}),
    STAGE_IN_FLIGHT: frozenset({"stage"}),
}
STAGE_OUTCOMES = ("ok", "skipped", "error")
CREATE_OUTCOMES = ("success", "client_error", "server_error")

_CINDER_ROUTE = re.compile(
    r"/v3/[^/]+/(?P<collection>volumes|snapshots|os-quota-sets)(?P<item>/[^/?]+)?"
)
_ITEM_NAMES = {
    "volumes": "{volume_id}",
    "snapshots": "{snapshot_id}",
    "os-quota-sets": "{project_id}",
}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def cinder_route(url: str) -> str:
    """Cinder's route template for a URL: no ids, so a bounded label."""
    match = _CINDER_ROUTE.search(url)
    if match is None:
        return "other"
    route = f"/v3/{{project_id}}/{match.group('collection')}"
    if match.group("item"):
        route += "/" + _ITEM_NAMES[match.group("collection")]
    return route


def _status_code(status: int | str) -> int | str:
    """An HTTP status as semconv wants it (an int), anything else as one bounded word."""
    try:
        code = int(status)
    except (TypeError, ValueError):
        return "other"
    return code if 100 <= code <= 599 else "other"


class InFlight:
    """Creates inside each stage right now; read when a metric reader collects."""

    def __init__(self, stages: Iterable[str] = semconv.STAGE_NAMES) -> None:
        self._lock = threading.Lock()
        # Every stage from the start, so the series exist (at 0) before the first create.
        self._counts: dict[str, int] = dict.fromkeys(stages, 0)

    def enter(self, stage: str) -> None:
        with self._lock:
            self._counts[stage] = self._counts.get(stage, 0) + 1

    def leave(self, stage: str) -> None:
        with self._lock:
            self._counts[stage] = self._counts.get(stage, 0) - 1

    def count(self, stage: str) -> int:
        return self._counts.get(stage, 0)

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        return [Observation(count, {"stage": stage}) for stage, count in counts]


class VolumeMetrics:
    """The instruments, and one method per thing worth counting.

    Each method takes an optional ``context``: the span an exemplar should point
    at (default: the current span).
    """

    def __init__(self, meter: Any) -> None:
        self.stage_duration = meter.create_histogram(
            STAGE_DURATION,
            unit="s",
            description="Duration of one pipeline stage of a volume create",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self.create_duration = meter.create_histogram(
            CREATE_DURATION,
            unit="s",
            description="Duration of a whole POST /v2.1/os-volumes as nova-api served it",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self.creates = meter.create_counter(
            CREATES,
            unit="{create}",
            description="Volume creates answered, by outcome, HTTP status and failed stage",
        )
        self.cinder_duration = meter.create_histogram(
            CINDER_DURATION,
            unit="s",
            description="Duration of nova-api's HTTP calls to cinder-api",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self.dropped = meter.create_counter(
            SPANS_DROPPED,
            unit="{span}",
            description="Spans an exporter failed to deliver",
        )
        self.in_flight = InFlight()
        meter.create_observable_up_down_counter(
            STAGE_IN_FLIGHT,
            callbacks=[self.in_flight.observe],
            unit="{create}",
            description="Volume creates inside each pipeline stage right now",
        )

    @staticmethod
    def _record(
        record: Callable[..., None],
        amount: float,
        attributes: dict[str, Any],
        context: Context | None,
    ) -> None:
        record(amount, attributes, context=context)

    def stage(
        self, stage: str, status: str, duration_s: float, context: Context | None = None
    ) -> None:
        self._record(
            self.stage_duration.record, duration_s, {"stage": stage, "outcome": status}, context
        )

    def create(
        self,
        outcome: str,
        http_status: int,
        failed_stage: str | None,
        failure_class: str | None,
        duration_s: float,
        context: Context | None = None,
    ) -> None:
        self._record(
            self.creates.add,
            1,
            {
                "outcome": outcome,
                "http_status": str(http_status),
                "failed_stage": failed_stage or "none",
                "failure_class": failure_class or "none",
            },
            context,
        )
        self._record(self.create_duration.record, duration_s, {"outcome": outcome}, context)

    def cinder_call(
        self,
        method: str,
        url: str,
        status: int | str,
        duration_s: float,
        context: Context | None = None,
    ) -> None:
        method = method.upper()
        self._record(
            self.cinder_duration.record,
            duration_s,
            {
                "http.request.method": method if method in _METHODS else "_OTHER",
                "http.route": cinder_route(url),
                "http.response.status_code": _status_code(status),
            },
            context,
        )

    def spans_dropped(self, count: int, exporter: str, reason: str) -> None:
        self.dropped.add(count, {"exporter": exporter, "reason": reason})


# ---------------------------------------------------------------------------
# Prometheus, with exemplars
# ---------------------------------------------------------------------------


# The exporter and prometheus_client are imported when a reader is built, not with this module:
# VolumeMetrics inside nova-api needs neither.


def _prom_exemplar(exemplar: Any) -> Any:
    """prometheus_client's Exemplar for one OpenTelemetry exemplar, or None (no span)."""
    from prometheus_client.samples import Exemplar as PromExemplar

    if not exemplar.trace_id or not exemplar.span_id:
        return None
    return PromExemplar(
        {"trace_id": f"{exemplar.trace_id:032x}", "span_id": f"{exemplar.span_id:016x}"},
        exemplar.value,
        exemplar.time_unix_nano / 1e9,
    )


def _bucket_exemplars(bounds: Sequence[float], exemplars: Sequence[Any]) -> list[Any]:
    """One exemplar (or None) per bucket, +Inf included: the one whose value falls in it."""
    slots: list[Any] = [None] * (len(bounds) + 1)
    for exemplar in exemplars:
        converted = _prom_exemplar(exemplar)
        if converted is None:
            continue
        index = next((i for i, bound in enumerate(bounds) if exemplar.value <= bound), len(bounds))
        slots[index] = converted
    return slots


_log = logging.getLogger(__name__)
# The exporter's private hooks this module builds on, and the parameters it passes them by
# name. opentelemetry-exporter-prometheus 0.65 (nova 34's constraints) and 0.66 both have
# them; 0.66 added ``resource_attrs`` to the first two and ``resource_attribute_filter`` to
# the collector, which are passed only where the signature has them. pyproject caps the
# exporter below 0.67, the next minor, which may rename them.
_HOOKS = {
    "_translate_metric": ("metric", "scope_attrs", "metric_family_id_metric_family"),
    "_collect_data_points": ("scope_attrs",),
    "_resolve_metric_name": (),
}


def _parameters(function: Any) -> tuple[str, ...] | None:
    """``function``'s parameter names, or None when it has no readable signature."""
    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return None


def _hooks_compatible(collector_class: type) -> bool:
    """Whether ``collector_class`` has every hook, each taking the parameters used."""
    for hook, needed in _HOOKS.items():
        function = getattr(collector_class, hook, None)
        parameters = _parameters(function) if callable(function) else None
        if parameters is None or not set(needed) <= set(parameters):
            return False
    return True


@functools.cache
def _exemplar_classes() -> tuple[type, type]:
    """``(ExemplarPrometheusMetricReader, _ExemplarCollector)``, built on first use."""
    from opentelemetry.exporter.prometheus import (
        PrometheusMetricReader,
        _CustomCollector,
        map_unit,
    )
    from prometheus_client import REGISTRY
    from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily

    compatible = _hooks_compatible(_CustomCollector)
    translate = inspect.signature(_CustomCollector._translate_metric) if compatible else None
    with_resource = "resource_attrs" in (_parameters(_CustomCollector._collect_data_points) or ())
    collector_options = set(_parameters(_CustomCollector.__init__) or ())

    class _ExemplarCollector(_CustomCollector):
        """``_CustomCollector`` that also hands each point's exemplars to prometheus_client."""

        def _translate_metric(self, *args: Any, **kwargs: Any) -> None:
            # Called positionally by 0.65, by keyword by 0.66: read them by name.
            assert translate is not None
            named = translate.bind(self, *args, **kwargs).arguments
            metric: Metric = named["metric"]
            data = metric.data
            has_exemplars = isinstance(data, Histogram) or (
                isinstance(data, Sum) and data.is_monotonic
            )
            if has_exemplars and any(p.exemplars for p in data.data_points):
                point_args = [named["scope_attrs"]]
                if with_resource:
                    point_args.append(named.get("resource_attrs") or {})
                try:
                    self._translate_with_exemplars(
                        metric, point_args, named["metric_family_id_metric_family"]
                    )
                    return
                except Exception:  # a scrape must never fail because of an exemplar
                    _log.exception("exemplars of %s left out", metric.name)
            super()._translate_metric(*args, **kwargs)

        def _translate_with_exemplars(
            self,
            metric: Metric,
            point_args: list[dict[str, Any]],
            metric_family_id_metric_family: dict[str, Any],
        ) -> None:
            data = metric.data
            name = self._resolve_metric_name(metric.name)
            description = metric.description or ""
            unit = map_unit(metric.unit or "")
            label_keys, label_rows, values = self._collect_data_points(data, *point_args)
            factory = HistogramMetricFamily if isinstance(data, Histogram) else CounterMetricFamily
            family_id = "|".join((name, description, unit, factory.__name__))
            family = metric_family_id_metric_family.get(family_id)
            if family is None:
                family = factory(name=name, documentation=description, labels=label_keys, unit=unit)
            rows = len(family.samples)
            try:
                self._add_points(family, data, label_rows, values)
            except Exception:
                del family.samples[rows:]  # leave the family as it was for the fallback
                raise
            metric_family_id_metric_family[family_id] = family

        @staticmethod
        def _add_points(family: Any, data: Any, label_rows: list, values: list) -> None:
            for point, row, value in zip(data.data_points, label_rows, values, strict=True):
                if isinstance(point, HistogramDataPoint):
                    bounds = list(point.explicit_bounds)
                    slots = _bucket_exemplars(bounds, point.exemplars)
                    buckets: list[Any] = []
                    cumulative = 0
                    for bound, count, exemplar in zip(
                        [*bounds, "+Inf"], point.bucket_counts, slots, strict=True
                    ):
                        cumulative += count
                        buckets.append((str(bound), cumulative, exemplar))
                    family.add_metric(row, buckets=buckets, sum_value=point.sum)
                else:
                    converted = [e for e in map(_prom_exemplar, point.exemplars) if e is not None]
                    family.add_metric(row, value, exemplar=converted[-1] if converted else None)

    class ExemplarPrometheusMetricReader(PrometheusMetricReader):
        """``PrometheusMetricReader`` whose OpenMetrics output carries trace exemplars.

        A drop-in replacement: same names, labels and ``target_info``. The classic
        text format (``text/plain; version=0.0.4``) has no exemplars, so plain
        ``curl`` output is unchanged; OpenMetrics scrapers get them.
        """

        def __init__(self, *, registry: Any = None, **kwargs: Any) -> None:
            registry = REGISTRY if registry is None else registry
            super().__init__(registry=registry, **kwargs)
            if not compatible:
                _log.warning("opentelemetry-exporter-prometheus changed: serving without exemplars")
                return
            registry.unregister(self._collector)
            options = {
                "disable_target_info": kwargs.get("disable_target_info", False),
                "prefix": kwargs.get("prefix", ""),
                "scope_info_enabled": kwargs.get("scope_info_enabled", True),
                "resource_attribute_filter": kwargs.get("resource_attribute_filter"),
            }
            collector = _ExemplarCollector(
                **{k: v for k, v in options.items() if k in collector_options}
            )
            registry.register(collector)
            # After register(), which may call collect(); the SDK's own collector does the same.
            collector._callback = self.collect  # type: ignore[assignment]
            self._collector = collector

    return ExemplarPrometheusMetricReader, _ExemplarCollector


def __getattr__(name: str) -> Any:
    """``ExemplarPrometheusMetricReader`` (and its collector), imported as if defined here."""
    if name == "ExemplarPrometheusMetricReader":
        return _exemplar_classes()[0]
    if name == "_ExemplarCollector":
        return _exemplar_classes()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
