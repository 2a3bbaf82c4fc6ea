"""voltrace's OTel metrics: names, units, labels, buckets, cardinality and exemplars.

Real HTTP into an in-process voltrace in front of the Cinder simulator, metrics read
back through the SDK's InMemoryMetricReader (and ExemplarPrometheusMetricReader for
the Prometheus exposition). The last test measures what metrics cost a create, with
two real ``voltrace serve`` processes side by side.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest as text_exposition
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.conftest import member_headers, require, set_volume_quota
from tests.support.cli import voltrace_command
from tests.support.net import free_port
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator, Fault
from voltrace.client import NovaClient, identity_headers
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.stages import STAGES
from voltrace.telemetry import Telemetry, TelemetryConfig
from voltrace.telemetry.metrics import (
    CINDER_DURATION,
    CREATE_DURATION,
    CREATE_OUTCOMES,
    CREATES,
    DURATION_BUCKETS_S,
    LABELS,
    SPANS_DROPPED,
    STAGE_DURATION,
    STAGE_IN_FLIGHT,
    STAGE_OUTCOMES,
    ExemplarPrometheusMetricReader,
    VolumeMetrics,
    cinder_route,
)

REPO = Path(__file__).resolve().parents[1]
PIPELINE_STAGES = [stage.name for stage in STAGES]
HISTOGRAMS = (STAGE_DURATION, CREATE_DURATION, CINDER_DURATION)


def closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}/v3/%(project_id)s"


@dataclass
class Metered:
    """voltrace in front of the simulator, its metrics readable in memory."""

    reader: InMemoryMetricReader
    telemetry: Telemetry
    nova: EmbeddedServer
    sim: CinderSimulator
    _unreachable: EmbeddedServer | None = None

    @property
    def unreachable(self) -> EmbeddedServer:
        """A second server, same telemetry, whose Cinder endpoint is a closed port."""
        if self._unreachable is None:
            self._unreachable = EmbeddedServer(
                build_service(
                    ServeConfig(
                        cinder=CinderSettings(endpoint_template=closed_endpoint(), http_retries=0)
                    ),
                    self.telemetry,
                )
            ).start()
        return self._unreachable

    def stop(self) -> None:
        self.nova.stop()
        if self._unreachable is not None:
            self._unreachable.stop()
        self.telemetry.shutdown()

    def create(
        self,
        volume: dict | None = None,
        *,
        headers: dict[str, str] | None = None,
        server: EmbeddedServer | None = None,
        **kwargs: Any,
    ) -> Any:
        client = NovaClient((server or self.nova).url)
        try:
            return client.create_volume(
                volume, headers=member_headers() if headers is None else headers, **kwargs
            )
        finally:
            client.close()

    def metrics(self) -> dict[str, Metric]:
        """voltrace's own metrics by name (the instrumentations' are left out)."""
        data = self.reader.get_metrics_data()
        return {
            metric.name: metric
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            if scope.scope.name == "voltrace"
            for metric in scope.metrics
        }

    def points(self, name: str) -> dict[tuple, Any]:
        """Data points of one metric keyed by their sorted attributes."""
        metric = self.metrics().get(name)
        if metric is None:
            return {}
        return {tuple(sorted(p.attributes.items())): p for p in metric.data.data_points}


def start_metered(sim: CinderSimulator, readers: list) -> Metered:
    telemetry = Telemetry.create(
        TelemetryConfig(
            service_name="nova-api",
            use_env_service_name=False,
            metric_readers=readers,
            log_stream=io.StringIO(),
            log_format="json",
            span_processor="simple",
            trust_incoming_trace_context=True,
        )
    )  # exemplars are matched to our traceparents
    nova = EmbeddedServer(
        build_service(
            ServeConfig(
                cinder=CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
            ),
            telemetry,
        )
    ).start()
    return Metered(readers[0], telemetry, nova, sim)


@pytest.fixture
def metered(sim: CinderSimulator) -> Iterator[Metered]:
    """A fresh telemetry (so counts start at zero) with an InMemoryMetricReader."""
    metered = start_metered(sim, [InMemoryMetricReader()])
    yield metered
    metered.stop()


def count(point: Any) -> float:
    return point.count if hasattr(point, "count") else point.value


def by_label(points: dict[tuple, Any], *keys: str) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for attrs, point in points.items():
        labels = dict(attrs)
        key = tuple(labels[k] for k in keys)
        out[key] = out.get(key, 0) + count(point)
    return out


# -- names, units, buckets ---------------------------------------------------


def test_instruments_have_otel_names_units_and_descriptions(metered: Metered) -> None:
    """One create yields the five voltrace instruments, in seconds or {create}, described."""
    assert metered.create({"size": 1}).status == 200
    metrics = metered.metrics()
    assert {name: metric.unit for name, metric in metrics.items()} == {
        STAGE_DURATION: "s",
        CREATE_DURATION: "s",
        CREATES: "{create}",
        CINDER_DURATION: "s",
        STAGE_IN_FLIGHT: "{create}",
    }
    assert all(metric.description for metric in metrics.values())


def test_histograms_use_second_buckets_from_1ms_to_60s(metered: Metered) -> None:
    """Every duration histogram has the 1 ms .. 60 s boundaries, not the SDK's 0..10000 default."""
    assert metered.create({"size": 1}).status == 200
    assert DURATION_BUCKETS_S[0] == 0.001 and DURATION_BUCKETS_S[-1] == 60.0
    assert list(DURATION_BUCKETS_S) == sorted(set(DURATION_BUCKETS_S))
    for name in HISTOGRAMS:
        for point in metered.points(name).values():
            assert tuple(point.explicit_bounds) == DURATION_BUCKETS_S, name


def test_prometheus_names_are_the_documented_ones(metered: Metered) -> None:
    """Through opentelemetry-exporter-prometheus the names get _seconds and _total suffixes."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    metered = start_metered(metered.sim, [reader])
    try:
        assert metered.create({"size": 1}).status == 200
        exposed = text_exposition(registry).decode()
    finally:
        metered.stop()
    families = set(re.findall(r"^# TYPE (voltrace_\S+) (\w+)$", exposed, re.M))
    assert families == {
        ("voltrace_stage_duration_seconds", "histogram"),
        ("voltrace_create_duration_seconds", "histogram"),
        ("voltrace_creates_total", "counter"),
        ("voltrace_cinder_request_duration_seconds", "histogram"),
        ("voltrace_stage_in_flight", "gauge"),
    }
    assert 'le="0.001"' in exposed and 'le="60.0"' in exposed


# -- one observation per stage and per request --------------------------------


def test_success_records_each_stage_once_and_the_cinder_calls(metered: Metered) -> None:
    """A plain create: six stage observations (resolve_snapshot skipped), one create, two calls."""
    assert metered.create({"size": 1}).status == 200
    assert by_label(metered.points(STAGE_DURATION), "stage", "outcome") == {
        (name, "skipped" if name == "resolve_snapshot" else "ok"): 1 for name in PIPELINE_STAGES
    }
    assert by_label(
        metered.points(CREATES), "outcome", "http_status", "failed_stage", "failure_class"
    ) == {("success", "200", "none", "none"): 1}
    assert by_label(metered.points(CREATE_DURATION), "outcome") == {("success",): 1}
    assert by_label(
        metered.points(CINDER_DURATION),
        "http.request.method",
        "http.route",
        "http.response.status_code",
    ) == {
        ("POST", "/v3/{project_id}/volumes", 202): 1,
        ("GET", "/v3/{project_id}/volumes/{volume_id}", 200): 1,
    }


def test_create_from_a_snapshot_records_resolve_snapshot_as_ok(metered: Metered) -> None:
    """With a snapshot, resolve_snapshot runs (outcome ok) and its Cinder GET is templated."""
    snapshot = metered.sim.add_snapshot("a1ce0000000000000000000000000001", size=1)
    assert metered.create({"size": 1, "snapshot_id": snapshot["id"]}).status == 200
    stages = by_label(metered.points(STAGE_DURATION), "stage", "outcome")
    assert stages[("resolve_snapshot", "ok")] == 1
    routes = by_label(metered.points(CINDER_DURATION), "http.route")
    assert routes[("/v3/{project_id}/snapshots/{snapshot_id}",)] == 1


FAILURES = [
    # (scenario, request, server, expected outcome, status, failed stage, failure class)
    (
        "schema_invalid",
        {"volume": {"size": 0}},
        "nova",
        "client_error",
        400,
        "parse",
        "schema_invalid",
    ),
    (
        "policy_denied",
        {"volume": {"size": 1}, "headers": member_headers(roles="reader")},
        "nova",
        "client_error",
        403,
        "authorize",
        "policy_denied",
    ),
    (
        "snapshot_not_found",
        {"volume": {"size": 1, "snapshot_id": str(uuid.uuid4())}},
        "nova",
        "client_error",
        404,
        "resolve_snapshot",
        "snapshot_not_found",
    ),
    (
        "over_quota",
        {"volume": {"size": 1}, "quota": True},
        "nova",
        "client_error",
        403,
        "call_cinder",
        "over_quota",
    ),
    (
        "cinder_server_error",
        {"volume": {"size": 1}, "fault": 500},
        "nova",
        "server_error",
        500,
        "call_cinder",
        "cinder_server_error",
    ),
    (
        "cinder_not_found",
        {"volume": {"size": 1, "volume_type": "no-such-type"}},
        "nova",
        "server_error",
        500,
        "call_cinder",
        "cinder_not_found",
    ),
    (
        "cinder_unreachable",
        {"volume": {"size": 1}},
        "unreachable",
        "server_error",
        500,
        "call_cinder",
        "cinder_unreachable",
    ),
    (
        "request_too_large",
        {"raw_body": b'{"volume": {"size": 1, "name": "' + b"x" * 120_000 + b'"}}'},
        "nova",
        "client_error",
        413,
        "sizelimit",
        "request_too_large",
    ),
    (
        "unauthenticated",
        {"volume": {"size": 1}, "headers": {}},
        "nova",
        "client_error",
        401,
        "keystonecontext",
        "unauthenticated",
    ),
]


@pytest.mark.parametrize(
    ("request_", "server", "outcome", "status", "failed_stage", "failure_class"),
    [f[1:] for f in FAILURES],
    ids=[f[0] for f in FAILURES],
)
def test_a_failure_is_counted_with_its_stage_and_class(
    metered: Metered,
    captured: Any,
    request_: dict,
    server: str,
    outcome: str,
    status: int,
    failed_stage: str,
    failure_class: str,
) -> None:
    """Counter labels agree with the SERVER span; stages after the failing one record nothing."""
    request_ = dict(request_)
    if request_.pop("quota", False):
        set_volume_quota(metered.sim, "a1ce0000000000000000000000000001", 0)
    if fault := request_.pop("fault", None):
        metered.sim.inject(Fault("volumes.create", status=fault, times=1))
    response = metered.create(
        request_.pop("volume", None),
        **request_,
        server=metered.unreachable if server == "unreachable" else None,
    )
    assert response.status == status
    assert by_label(
        metered.points(CREATES), "outcome", "http_status", "failed_stage", "failure_class"
    ) == {(outcome, str(status), failed_stage, failure_class): 1}
    span = captured.wait_for(lambda c: c.server_spans() and c.server_spans()[-1])
    assert (
        span.attributes["voltrace.outcome"],
        span.attributes["voltrace.failed_stage"],
        span.attributes["voltrace.failure_class"],
    ) == (outcome, failed_stage, failure_class)
    stages = by_label(metered.points(STAGE_DURATION), "stage", "outcome")
    if failed_stage in PIPELINE_STAGES:
        index = PIPELINE_STAGES.index(failed_stage)
        assert stages[(failed_stage, "error")] == 1
        assert {stage for stage, _ in stages} == set(PIPELINE_STAGES[: index + 1])
    else:
        assert stages == {}  # answered by middleware before the pipeline ran


# -- cardinality ---------------------------------------------------------------

ID_LIKE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-|req-|proj-|user-|[0-9a-f]{32}")


def test_labels_stay_bounded_whatever_the_ids(metered: Metered) -> None:
    """40 creates with fresh project, user, snapshot and request ids add no series and no id."""

    def burst(n: int) -> None:
        for _ in range(n):
            project = uuid.uuid4().hex
            snapshot = metered.sim.add_snapshot(project, size=2)
            headers = member_headers(project_id=project, user_id=f"user-{uuid.uuid4().hex}")
            headers["X-OpenStack-Request-ID"] = f"req-{uuid.uuid4()}"
            assert (
                metered.create(
                    {"size": 2, "snapshot_id": snapshot["id"], "display_name": uuid.uuid4().hex},
                    headers=headers,
                ).status
                == 200
            )
            assert (
                metered.create(
                    {"size": 1, "snapshot_id": str(uuid.uuid4())}, headers=headers
                ).status
                == 404
            )

    burst(2)
    series_before = {name: set(metered.points(name)) for name in LABELS}
    burst(20)
    series_after = {name: set(metered.points(name)) for name in LABELS}
    assert series_after == series_before
    for name, series in series_after.items():
        for attrs in series:
            assert {key for key, _ in attrs} <= LABELS[name], name
            for _, value in attrs:
                assert not ID_LIKE.search(str(value)), (name, value)
    assert {dict(a)["outcome"] for a in series_after[STAGE_DURATION]} <= set(STAGE_OUTCOMES)
    assert {dict(a)["outcome"] for a in series_after[CREATES]} <= set(CREATE_OUTCOMES)


@pytest.mark.parametrize(
    ("url", "route"),
    [
        ("http://c:8776/v3/0d5e/volumes", "/v3/{project_id}/volumes"),
        ("http://c:8776/v3/0d5e/volumes/3f1c-aa", "/v3/{project_id}/volumes/{volume_id}"),
        ("http://c:8776/v3/0d5e/volumes/3f1c-aa?x=1", "/v3/{project_id}/volumes/{volume_id}"),
        ("http://c:8776/volume/v3/0d5e/snapshots/9a", "/v3/{project_id}/snapshots/{snapshot_id}"),
        ("http://c:8776/v3/0d5e/os-quota-sets/0d5e", "/v3/{project_id}/os-quota-sets/{project_id}"),
        ("http://c:8776/v3/", "other"),
        ("http://c:8776/v2/0d5e/volumes/x/action", "other"),
    ],
)
def test_cinder_route_is_a_template(url: str, route: str) -> None:
    """Cinder URLs become route templates without ids; anything unknown is 'other'."""
    assert cinder_route(url) == route


def test_cinder_call_labels_are_bounded_semconv_values() -> None:
    """Odd methods become _OTHER and non-HTTP statuses 'other'; codes stay ints (semconv)."""
    reader = InMemoryMetricReader()
    metrics = VolumeMetrics(MeterProvider(metric_readers=[reader]).get_meter("voltrace"))
    metrics.cinder_call("post", "http://c/v3/p/volumes", 202, 0.01)
    metrics.cinder_call("BREW", "http://c/v3/p/volumes", "error", 0.01)
    metrics.cinder_call("GET", "http://c/v3/p/volumes/v", 999, 0.01)
    points = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics[0]
    assert sorted(
        (p.attributes["http.request.method"], str(p.attributes["http.response.status_code"]))
        for p in points.data.data_points
    ) == [("GET", "other"), ("POST", "202"), ("_OTHER", "other")]


def test_dropped_spans_counter_is_labelled_by_exporter_and_reason() -> None:
    """voltrace.telemetry.spans.dropped counts spans with only exporter and reason labels."""
    reader = InMemoryMetricReader()
    metrics = VolumeMetrics(MeterProvider(metric_readers=[reader]).get_meter("voltrace"))
    metrics.spans_dropped(3, "otlp", "export failed")
    metric = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics[0]
    assert (metric.name, metric.unit) == (SPANS_DROPPED, "{span}")
    [point] = metric.data.data_points
    assert (dict(point.attributes), point.value) == (
        {"exporter": "otlp", "reason": "export failed"},
        3,
    )


# -- exemplars -----------------------------------------------------------------


def traceparent(trace_id: int) -> str:
    return f"00-{trace_id:032x}-{uuid.uuid4().int & (2**64 - 1):016x}-01"


def test_exemplars_link_buckets_and_counters_to_the_trace(sim: CinderSimulator) -> None:
    """OpenMetrics output carries trace_id exemplars of the very creates that were measured."""
    exemplar_registry, stock_registry = CollectorRegistry(), CollectorRegistry()
    metered = start_metered(
        sim,
        [
            ExemplarPrometheusMetricReader(registry=exemplar_registry),
            PrometheusMetricReader(registry=stock_registry),
        ],
    )
    ok_trace, failed_trace = uuid.uuid4().int >> 1, uuid.uuid4().int >> 1
    try:
        assert (
            metered.create(
                {"size": 1}, headers={**member_headers(), "traceparent": traceparent(ok_trace)}
            ).status
            == 200
        )
        assert (
            metered.create(
                {"size": 0}, headers={**member_headers(), "traceparent": traceparent(failed_trace)}
            ).status
            == 400
        )
        openmetrics = openmetrics_exposition(exemplar_registry).decode()
        # Drop-in: the classic text format is exactly the stock reader's.
        assert text_exposition(exemplar_registry) == text_exposition(stock_registry)
    finally:
        metered.stop()

    exemplars: dict[tuple[str, str], list[int]] = {}
    for family in text_string_to_metric_families(openmetrics):  # also validates the syntax
        for sample in family.samples:
            if sample.exemplar is not None:
                label = sample.labels.get("stage") or sample.labels.get("outcome", "")
                key = (sample.name, label)
                exemplars.setdefault(key, []).append(int(sample.exemplar.labels["trace_id"], 16))
                assert re.fullmatch(r"[0-9a-f]{16}", sample.exemplar.labels["span_id"])
    assert exemplars[("voltrace_create_duration_seconds_bucket", "success")] == [ok_trace]
    assert exemplars[("voltrace_create_duration_seconds_bucket", "client_error")] == [failed_trace]
    assert exemplars[("voltrace_creates_total", "client_error")] == [failed_trace]
    assert set(exemplars[("voltrace_stage_duration_seconds_bucket", "call_cinder")]) == {ok_trace}
    assert set(exemplars[("voltrace_cinder_request_duration_seconds_bucket", "")]) == {ok_trace}


def test_a_broken_exemplar_never_breaks_a_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    """If turning exemplars into OpenMetrics fails, /metrics still answers, without them."""
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[ExemplarPrometheusMetricReader(registry=registry)])
    metrics = VolumeMetrics(provider.get_meter("voltrace"))
    with TracerProvider().get_tracer("t").start_as_current_span("create"):
        metrics.stage("parse", "ok", 0.002)
        metrics.create("success", 200, None, None, 0.01)

    def broken(*args: Any) -> None:
        raise ValueError("not today")

    monkeypatch.setattr("voltrace.telemetry.metrics._bucket_exemplars", broken)
    monkeypatch.setattr("voltrace.telemetry.metrics._prom_exemplar", broken)
    exposed = openmetrics_exposition(registry).decode()
    assert "voltrace_stage_duration_seconds_count{" in exposed
    assert "voltrace_creates_total{" in exposed
    assert "trace_id" not in exposed


def test_a_stage_exemplar_can_point_at_the_stage_span() -> None:
    """Given the stage span's context, the exemplar carries that span's id, not the caller's."""
    reader = InMemoryMetricReader()
    metrics = VolumeMetrics(MeterProvider(metric_readers=[reader]).get_meter("voltrace"))
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("create_volume") as parent:
        with tracer.start_as_current_span("call_cinder") as stage_span:
            stage_context = trace.set_span_in_context(stage_span)
        metrics.stage("call_cinder", "ok", 0.3, context=stage_context)
    [point] = (
        reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    )
    [exemplar] = point.exemplars
    assert exemplar.span_id == stage_span.get_span_context().span_id
    assert exemplar.span_id != parent.get_span_context().span_id
    assert exemplar.trace_id == parent.get_span_context().trace_id


# -- OTEL_METRICS_EXPORTER=otlp ------------------------------------------------------

# Loaded by rotel-agent (--otlp-with-metrics-processor): one JSON line per data point.
METRICS_PROCESSOR = """
import json, os

def process_metrics(resource_metrics):
    lines = []
    for scope_metrics in resource_metrics.scope_metrics:
        for metric in scope_metrics.metrics:
            data = metric.data[0]
            for point in data.data_points:
                lines.append(json.dumps({
                    "name": metric.name, "unit": metric.unit, "kind": type(data).__name__,
                    "attributes": {kv.key: kv.value.value for kv in point.attributes},
                    "bounds": list(getattr(point, "explicit_bounds", []) or []),
                    "exemplar_traces": [bytes(e.trace_id).hex() for e in point.exemplars],
                }, default=str))
    with open(os.environ["VOLTRACE_METRICS_OUT"], "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\\n" for line in lines))
    return resource_metrics
"""


def test_otlp_exporter_delivers_the_same_instruments_to_a_collector(
    sim: CinderSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_METRICS_EXPORTER=otlp pushes the instruments, buckets and exemplars to rotel."""
    try:
        from tests.support.net import wait_for_port
        from tests.support.rotel import AGENT as agent
    except ImportError:
        agent = None
    require(
        agent is not None and agent.exists(),
        "rotel (pip rotel==0.0.1a15) is a real OTLP collector for this test",
    )
    (tmp_path / "processor.py").write_text(METRICS_PROCESSOR)
    out = tmp_path / "metrics.jsonl"
    grpc_port, http_port = free_port(), free_port()
    with (tmp_path / "rotel.log").open("w") as log:
        collector = subprocess.Popen(
            [
                str(agent),
                "start",
                "--otlp-grpc-endpoint",
                f"127.0.0.1:{grpc_port}",
                "--otlp-http-endpoint",
                f"127.0.0.1:{http_port}",
                "--exporter",
                "blackhole",
                "--otlp-with-metrics-processor",
                str(tmp_path / "processor.py"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "VOLTRACE_METRICS_OUT": str(out)},
        )
    try:
        wait_for_port(http_port)
        monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"http://127.0.0.1:{http_port}/v1/metrics"
        )
        telemetry = Telemetry.create(
            TelemetryConfig(
                service_name="nova-api",
                use_env_service_name=False,
                log_stream=io.StringIO(),
                trust_incoming_trace_context=True,
            )
        )
        server = EmbeddedServer(
            build_service(
                ServeConfig(
                    cinder=CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
                ),
                telemetry,
            )
        ).start()
        trace_id = uuid.uuid4().int >> 1
        client = NovaClient(server.url)
        try:
            assert (
                client.create_volume(
                    {"size": 1}, headers={**member_headers(), "traceparent": traceparent(trace_id)}
                ).status
                == 200
            )
        finally:
            client.close()
            server.stop()
            telemetry.shutdown()  # the final export

        def received() -> list[dict]:
            lines = out.read_text().splitlines() if out.exists() else []
            points = [json.loads(line) for line in lines]
            return points if any(p["name"] == CREATES for p in points) else []

        deadline = time.monotonic() + 15
        while not (points := received()):
            assert time.monotonic() < deadline, (tmp_path / "rotel.log").read_text()
            time.sleep(0.05)
    finally:
        collector.terminate()
        collector.wait(timeout=10)
    ours = [p for p in points if p["name"] in LABELS]
    assert {(p["name"], p["unit"], p["kind"]) for p in ours} == {
        (STAGE_DURATION, "s", "Histogram"),
        (CREATE_DURATION, "s", "Histogram"),
        (CREATES, "{create}", "Sum"),
        (CINDER_DURATION, "s", "Histogram"),
        (STAGE_IN_FLIGHT, "{create}", "Sum"),
    }
    for point in ours:
        assert set(point["attributes"]) == LABELS[point["name"]], point
        if point["kind"] == "Histogram":
            assert tuple(point["bounds"]) == DURATION_BUCKETS_S
        if point["name"] != STAGE_IN_FLIGHT:  # observed at collection, inside no span
            assert point["exemplar_traces"] == [f"{trace_id:032x}"], point
    [creates] = [p for p in ours if p["name"] == CREATES]
    assert creates["attributes"] == {
        "outcome": "success",
        "http_status": "200",
        "failed_stage": "none",
        "failure_class": "none",
    }


# -- what metrics cost ----------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _wait_listening(port: int, process: subprocess.Popen, deadline: float) -> None:
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None, "voltrace serve exited"
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def test_metrics_cost_a_create_little(capsys: pytest.CaptureFixture[str]) -> None:
    """Side by side, voltrace serve with --metrics-port vs without: latency and worker CPU."""
    require(Path("/proc/self/stat").exists(), "CPU accounting reads /proc")
    pairs = int(os.environ.get("VOLTRACE_OVERHEAD_PAIRS", "150"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with (
        CinderSimulator(default_quotas={"volumes": -1, "gigabytes": -1}) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):
        servers: dict[str, tuple[subprocess.Popen, int]] = {}
        try:
            for name, extra in (("off", []), ("on", ["--metrics-port", str(free_port())])):
                port = free_port()
                process = subprocess.Popen(
                    voltrace_command(
                        "serve",
                        "--port",
                        str(port),
                        "--cinder-endpoint",
                        sim.endpoint_template,
                        "--cinder-retries",
                        "0",
                        "--log-file",
                        f"{tmp}/{name}.log",
                        *extra,
                    ),
                    cwd=REPO,
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
                servers[name] = (process, port)
            deadline = time.monotonic() + 30
            clients = {}
            for name, (process, port) in servers.items():
                _wait_listening(port, process, deadline)
                clients[name] = NovaClient(f"http://127.0.0.1:{port}")
            headers = identity_headers(
                project_id="a1ce0000000000000000000000000004", roles="member"
            )
            for _ in range(30):  # warm up: imports, connections, first series
                for client in clients.values():
                    assert client.create_volume({"size": 1}, headers=headers).status == 200
            workers = {name: _children(process.pid) for name, (process, _) in servers.items()}
            assert all(len(pids) == 1 for pids in workers.values()), workers
            cpu_before = {name: _cpu_seconds(pids[0]) for name, pids in workers.items()}
            latency: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(pairs):
                for name in ("on", "off") if i % 2 else ("off", "on"):
                    started = time.perf_counter()
                    status = clients[name].create_volume({"size": 1}, headers=headers).status
                    latency[name].append(time.perf_counter() - started)
                    assert status == 200
            cpu = {
                name: (_cpu_seconds(pids[0]) - cpu_before[name]) / pairs
                for name, pids in workers.items()
            }
            on_port = int(servers["on"][0].args[servers["on"][0].args.index("--metrics-port") + 1])

            def counted() -> float:
                with urllib.request.urlopen(f"http://127.0.0.1:{on_port}/metrics") as answer:
                    exposed = answer.read().decode()
                return sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in exposed.splitlines()
                    if line.startswith("voltrace_creates_total{")
                )

            # The "on" server really measured every create.
            deadline = time.monotonic() + 10
            while counted() != pairs + 30:
                assert time.monotonic() < deadline, counted()
                time.sleep(0.05)
        finally:
            for process, _ in servers.values():
                process.terminate()
            for process, _ in servers.values():
                process.wait(timeout=20)

    off, on = statistics.median(latency["off"]), statistics.median(latency["on"])
    paired = statistics.median(a - b for a, b in zip(latency["on"], latency["off"], strict=True))
    with capsys.disabled():
        print(
            f"\nmetrics overhead over {pairs} alternating creates: latency median off "
            f"{off * 1e3:.2f} ms, on {on * 1e3:.2f} ms, paired median difference "
            f"{paired * 1e6:+.0f} us ({paired / off:+.1%}); worker CPU per create off "
            f"{cpu['off'] * 1e3:.2f} ms, on {cpu['on'] * 1e3:.2f} ms "
            f"({cpu['on'] / cpu['off'] - 1:+.1%})"
        )
    # A guard against gross regressions (a metric per Cinder retry, an unbounded label),
    # far above the few percent measured; never an absolute time.
    assert cpu["on"] <= cpu["off"] * 1.25
