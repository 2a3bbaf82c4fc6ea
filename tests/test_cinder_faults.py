"""A misbehaving Cinder: timeouts, resets, dropped connections, broken JSON, slowness, 5xx.

Each fault is injected into the real simulator over real sockets. For each, the client
must get Nova's answer (status and fault body), the failing stage's span must be in
ERROR, a log line must name the failure, and a metric must count it. Metrics are read
from a dedicated ``Telemetry`` with an ``InMemoryMetricReader``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import member_headers
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator, Fault
from voltrace.client import NovaClient
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry, TelemetryConfig

UNEXPECTED = "Unexpected API Error. Please contact the administrator\n<class '{}'>"
CONNECTION_FAILED = "nova.exception.CinderConnectionFailed"
CLIENT_EXCEPTION = "cinderclient.exceptions.ClientException"


@pytest.fixture(scope="module")
def metered() -> Iterator[tuple[Telemetry, InMemoryMetricReader]]:
    """nova-api telemetry whose metrics can be read back in the test."""
    reader = InMemoryMetricReader()
    telemetry = Telemetry.create(
        TelemetryConfig(
            service_name="nova-api",
            use_env_service_name=False,
            metric_readers=[reader],
            log_stream=io.StringIO(),
            log_format="json",
        )
    )
    yield telemetry, reader
    telemetry.shutdown()


@pytest.fixture
def serve(sim: CinderSimulator, metered: Any) -> Iterator[Any]:
    """Start an in-process nova-api with these Cinder settings, against ``sim``."""
    servers: list[EmbeddedServer] = []
    telemetry, _ = metered

    def start(timeout: float | None = None, retries: int = 0) -> NovaClient:
        settings = CinderSettings(
            endpoint_template=sim.endpoint_template,
            http_retries=retries,
            timeout=timeout,
            connect_retry_delay=0.01,
        )
        server = EmbeddedServer(build_service(ServeConfig(cinder=settings), telemetry)).start()
        servers.append(server)
        return NovaClient(server.url)

    yield start
    for server in servers:
        server.stop()


def counter(reader: InMemoryMetricReader, name: str, **attributes: str) -> float:
    """The current value of a counter's data point with (at least) these attributes."""
    data = reader.get_metrics_data()
    total = 0.0
    for resource_metrics in data.resource_metrics if data else []:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    if all(point.attributes.get(k) == v for k, v in attributes.items()):
                        total += getattr(point, "value", None) or getattr(point, "count", 0)
    return total


def stage_span(captured: Any, request_id: str, name: str) -> Any:
    trace = captured.complete_trace(request_id)
    return next(
        s for s in trace if s.name == name and (s.attributes or {}).get("voltrace.stage") == name
    )


def check_failure(
    captured: Any,
    reader: InMemoryMetricReader,
    response: Any,
    before: float,
    *,
    status: int,
    body: dict,
    stage: str,
    failure_class: str,
) -> Any:
    """Status + fault body, the stage span in ERROR, an error log line and a counted metric."""
    assert response.status == status, response.body
    assert response.json() == body
    request_id = response.header("x-openstack-request-id")
    span = stage_span(captured, request_id, stage)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["voltrace.failure_class"] == failure_class
    server = captured.server_span(request_id)
    assert server.attributes["voltrace.failed_stage"] == stage
    assert server.attributes["voltrace.failure_class"] == failure_class
    lines = [e for e in captured.logs_for(request_id) if e["event"] == f"stage.{stage}"]
    assert len(lines) == 1
    assert lines[0]["failure_class"] == failure_class
    assert lines[0]["level"] == ("error" if status >= 500 else "warning")
    after = counter(
        reader,
        "voltrace.creates",
        failure_class=failure_class,
        failed_stage=stage,
        http_status=str(status),
    )
    assert after == before + 1
    return span


def creates_so_far(
    reader: InMemoryMetricReader, failure_class: str, stage: str, status: int
) -> float:
    return counter(
        reader,
        "voltrace.creates",
        failure_class=failure_class,
        failed_stage=stage,
        http_status=str(status),
    )


FAULTS = [
    # (id, faults, status, body, failing stage, failure class)
    (
        "reset on POST",
        [Fault("volumes.create", action="reset")],
        500,
        UNEXPECTED.format(CONNECTION_FAILED),
        "call_cinder",
        "cinder_unreachable",
    ),
    (
        "dropped POST",
        [Fault("volumes.create", action="drop")],
        500,
        UNEXPECTED.format(CONNECTION_FAILED),
        "call_cinder",
        "cinder_unreachable",
    ),
    (
        "reset on the lazy GET",
        [Fault("volumes.get", action="reset")],
        500,
        UNEXPECTED.format(CONNECTION_FAILED),
        "call_cinder",
        "cinder_unreachable",
    ),
    (
        "garbage JSON",
        [Fault("volumes.create", action="garbage")],
        500,
        UNEXPECTED.format("TypeError"),
        "call_cinder",
        "cinder_bad_response",
    ),
    (
        "truncated JSON",
        [Fault("volumes.create", action="truncated")],
        500,
        UNEXPECTED.format("TypeError"),
        "call_cinder",
        "cinder_bad_response",
    ),
    (
        "500 on POST",
        [Fault("volumes.create", status=500)],
        500,
        UNEXPECTED.format(CLIENT_EXCEPTION),
        "call_cinder",
        "cinder_server_error",
    ),
    (
        "503 on POST",
        [Fault("volumes.create", status=503)],
        500,
        UNEXPECTED.format(CLIENT_EXCEPTION),
        "call_cinder",
        "cinder_server_error",
    ),
    (
        "502 garbage on the lazy GET",
        [Fault("volumes.get", status=502, action="garbage")],
        500,
        UNEXPECTED.format(CLIENT_EXCEPTION),
        "call_cinder",
        "cinder_server_error",
    ),
]


@pytest.mark.parametrize(
    ("faults", "status", "message", "stage", "failure_class"),
    [f[1:] for f in FAULTS],
    ids=[f[0] for f in FAULTS],
)
def test_transport_and_server_faults(
    serve, sim, metered, captured, faults, status, message, stage, failure_class
):
    """Each Cinder fault gives Nova's status and fault, an ERROR stage span, a log and a metric."""
    _, reader = metered
    client = serve()
    for fault in faults:
        sim.inject(fault)
    before = creates_so_far(reader, failure_class, stage, status)
    response = client.create_volume({"size": 1}, headers=member_headers())
    client.close()
    check_failure(
        captured,
        reader,
        response,
        before,
        status=status,
        body={"computeFault": {"code": 500, "message": message}},
        stage=stage,
        failure_class=failure_class,
    )


@pytest.mark.parametrize("route", ["volumes.create", "volumes.get"])
def test_cinder_timeout(serve, sim, metered, captured, route):
    """A Cinder slower than [cinder] timeout is CinderConnectionFailed (500), once per try."""
    _, reader = metered
    client = serve(timeout=0.2)
    sim.inject(Fault(route, latency_ms=1500, times=1))
    before = creates_so_far(reader, "cinder_unreachable", "call_cinder", 500)
    response = client.create_volume({"size": 1}, headers=member_headers())
    client.close()
    span = check_failure(
        captured,
        reader,
        response,
        before,
        status=500,
        body={"computeFault": {"code": 500, "message": UNEXPECTED.format(CONNECTION_FAILED)}},
        stage="call_cinder",
        failure_class="cinder_unreachable",
    )
    event = next(e for e in span.events if e.name == "exception")
    assert "timed out" in str(event.attributes["exception.message"]).lower()
    # The client span of the timed-out call is in ERROR too, with no HTTP status.
    trace = captured.complete_trace(response.header("x-openstack-request-id"))
    client_spans = [s for s in trace if s.kind is SpanKind.CLIENT]
    assert client_spans[-1].status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in client_spans[-1].attributes


def test_timeout_retried_connect_retries_times(serve, sim, captured):
    """keystoneauth retries a timed-out call [cinder] http_retries times, as Nova does."""
    client = serve(timeout=0.2, retries=2)
    sim.inject(Fault("volumes.create", latency_ms=600, times=3))
    response = client.create_volume({"size": 1}, headers=member_headers())
    client.close()
    assert response.status == 500
    posts = [r for r in sim.recorded if r.method == "POST"]
    assert len(posts) == 3  # one try plus two retries, each timed out


def test_slow_cinder_succeeds_and_shows_the_slow_hop(serve, sim, metered, captured):
    """A slow (but in-time) Cinder is a 200; its delay is the simulator's injected_latency span."""
    _, reader = metered
    client = serve(timeout=5.0)
    fast = client.create_volume({"size": 1}, headers=member_headers())
    sim.inject(Fault("volumes.create", latency_ms=300, times=1))
    before = counter(reader, "voltrace.creates", outcome="success")
    slow = client.create_volume({"size": 1}, headers=member_headers())
    client.close()
    assert fast.status == slow.status == 200
    assert counter(reader, "voltrace.creates", outcome="success") == before + 1

    slow_trace = captured.complete_trace(slow.header("x-openstack-request-id"))
    fast_trace = captured.complete_trace(fast.header("x-openstack-request-id"))
    (latency,) = [s for s in slow_trace if s.name == "injected_latency"]
    assert latency.attributes["cinder_sim.latency_ms"] == 300
    assert not [s for s in fast_trace if s.name == "injected_latency"]

    def duration(trace: list, name: str) -> int:
        span = next(s for s in trace if s.name == name)
        return span.end_time - span.start_time

    # The slow hop explains the slow stage: the injected delay sits inside call_cinder
    # (timed by the same clock), and the stages around it stay below it.
    call_cinder = next(s for s in slow_trace if s.name == "call_cinder")
    assert call_cinder.start_time <= latency.start_time <= latency.end_time <= call_cinder.end_time
    injected = latency.end_time - latency.start_time
    for name in ("parse", "authorize", "translate"):
        assert duration(slow_trace, name) < injected  # slack for a loaded machine's pauses


def test_snapshot_lookup_reset_fails_resolve_snapshot(serve, sim, metered, captured):
    """A reset during GET snapshot fails resolve_snapshot (500), not call_cinder."""
    _, reader = metered
    client = serve()
    snapshot = sim.add_snapshot("a1ce0000000000000000000000000001")
    sim.inject(Fault("snapshots.get", action="reset"))
    before = creates_so_far(reader, "cinder_unreachable", "resolve_snapshot", 500)
    response = client.create_volume(
        {"size": 1, "snapshot_id": snapshot["id"]}, headers=member_headers()
    )
    client.close()
    check_failure(
        captured,
        reader,
        response,
        before,
        status=500,
        body={"computeFault": {"code": 500, "message": UNEXPECTED.format(CONNECTION_FAILED)}},
        stage="resolve_snapshot",
        failure_class="cinder_unreachable",
    )
    assert not [r for r in sim.recorded if r.method == "POST"]


def test_server_keeps_serving_after_faults(serve, sim):
    """After a burst of resets and garbage, the same server answers the next create with 200."""
    client = serve()
    sim.inject(Fault("volumes.create", action="reset", times=2))
    sim.inject(Fault("volumes.get", action="garbage", times=2))
    statuses = [
        client.create_volume({"size": 1}, headers=member_headers()).status for _ in range(5)
    ]
    client.close()
    assert statuses == [500, 500, 500, 500, 200]
