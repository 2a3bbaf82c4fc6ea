"""Exports: OTLP JSON lines, Jaeger upload JSON, and OTLP gRPC/HTTP to a real collector.

Hostile input included: a request whose text no encoder accepts (a lone surrogate), or
that is huge, never costs any other span its export, and never grows memory unbounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tests.conftest import member_headers, require
from tests.support.polling import poll
from tests.support.rotel import RotelCollector
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator
from voltrace.client import NovaClient
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry, TelemetryConfig, trace_exporter_names
from voltrace.telemetry.exporters import CountingExporter
from voltrace.telemetry.hygiene import DEFAULT_VALUE_LENGTH_LIMIT
from voltrace.testing import capture

# Bodies whose text reaches spans and logs through Nova's messages or Cinder's: lone
# surrogates (JSON allows them, no encoder does), terminal escapes, and a 114 KB value.
POISON_BODIES = [
    b'{"volume": {"size": "\\ud800"}}',
    b'{"volume": {"size": 1, "volume_type": "\\udfff-type"}}',
    b'{"volume": {"size": 1, "snapshot_id": "\\ud83d\\u001b]52;c;aGk=\\u0007"}}',
    b'{"volume": {"size": 1, "name": "\\u001b[2J\\u001b]0;pwned\\u0007\\ud800"}}',
    b'{"volume": {"size": "' + b"9" * 114_000 + b'x"}}',
]


@dataclass
class Stack:
    client: NovaClient
    telemetry: Telemetry  # nova-api's; cinder-api's is its sibling, sharing its exporters


@contextmanager
def traced_stack(**config: Any) -> Iterator[Stack]:
    """nova-api and cinder-api with their own Telemetry, shut down (flushed) on exit."""
    nova_telemetry = Telemetry.create(
        TelemetryConfig(
            service_name="nova-api", use_env_service_name=False, logs_enabled=False, **config
        )
    )
    cinder_telemetry = nova_telemetry.sibling("cinder-api")
    sim = CinderSimulator(
        deterministic=True,
        default_quotas={"volumes": -1, "gigabytes": -1},
        tracer_provider=cinder_telemetry.tracer_provider,
    ).start()
    service = build_service(
        ServeConfig(cinder=CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)),
        nova_telemetry,
    )
    server = EmbeddedServer(service).start()
    client = NovaClient(server.url)
    try:
        yield Stack(client, nova_telemetry)
    finally:
        client.close()
        server.stop()
        sim.stop()
        cinder_telemetry.shutdown()
        nova_telemetry.shutdown()


def otlp_spans(path: Path) -> list[dict]:
    """Flatten an OTLP JSON-lines file into spans tagged with their service."""
    spans = []
    for line in path.read_text().splitlines():
        request = json.loads(line)
        for resource_spans in request["resourceSpans"]:
            attrs = {a["key"]: a["value"] for a in resource_spans["resource"]["attributes"]}
            service = attrs["service.name"]["stringValue"]
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    spans.append({**span, "service": service})
    return spans


def test_traces_file_is_otlp_json_one_request_per_line(tmp_path):
    """The Collector file-exporter shape: hex ids, numeric kinds, string nanos; one trace."""
    path = tmp_path / "traces.jsonl"
    with traced_stack(traces_file=str(path)) as stack:
        assert stack.client.create_volume({"size": 1}, headers=member_headers()).status == 200
    spans = otlp_spans(path)
    assert {s["service"] for s in spans} == {"nova-api", "cinder-api"}
    assert len({s["traceId"] for s in spans}) == 1
    by_id = {s["spanId"]: s for s in spans}
    for span in spans:
        assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
        assert len(span["spanId"]) == 16
        assert isinstance(span["kind"], int)
        assert int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])
        if span.get("parentSpanId"):
            assert span["parentSpanId"] in by_id, span["name"]
    roots = [s for s in spans if not s.get("parentSpanId")]
    assert [r["name"] for r in roots] == ["POST /v2.1/os-volumes"]
    names = {s["name"] for s in spans}
    assert {
        "create_volume",
        "parse",
        "authorize",
        "resolve_snapshot",
        "derive_size",
        "call_cinder",
        "translate",
        "POST /v3/{project_id}/volumes",
    } <= names


def test_failed_create_in_the_traces_file(tmp_path):
    """A failure shows the failing stage with status ERROR (code 2) and its exception event."""
    path = tmp_path / "traces.jsonl"
    with traced_stack(traces_file=str(path)) as stack:
        stack.client.create_volume({"size": 1, "snapshot_id": "nope"}, headers=member_headers())
    spans = {s["name"]: s for s in otlp_spans(path)}
    failing = spans["resolve_snapshot"]
    assert failing["status"]["code"] == 2
    assert [e["name"] for e in failing["events"]] == ["exception"]
    server_attrs = {a["key"]: a["value"] for a in spans["POST /v2.1/os-volumes"]["attributes"]}
    assert server_attrs["voltrace.failed_stage"] == {"stringValue": "resolve_snapshot"}
    assert server_attrs["voltrace.outcome"] == {"stringValue": "client_error"}


def test_jaeger_file_is_jaegers_upload_model(tmp_path):
    """{"data": [trace]} with references, µs times, tags and one process per service."""
    path = tmp_path / "jaeger.json"
    with traced_stack(jaeger_file=str(path)) as stack:
        stack.client.create_volume({"size": 1}, headers=member_headers())
        stack.client.create_volume({"size": 0}, headers=member_headers())
    document = json.loads(path.read_text())
    assert len(document["data"]) == 2
    trace = next(t for t in document["data"] if len(t["spans"]) > 5)
    services = {p["serviceName"] for p in trace["processes"].values()}
    assert services == {"nova-api", "cinder-api"}
    span_ids = {s["spanID"] for s in trace["spans"]}
    for span in trace["spans"]:
        assert set(span) >= {
            "traceID",
            "spanID",
            "operationName",
            "references",
            "startTime",
            "duration",
            "tags",
            "logs",
            "processID",
        }
        assert span["processID"] in trace["processes"]
        for ref in span["references"]:
            assert ref["refType"] == "CHILD_OF" and ref["spanID"] in span_ids
    failed = next(t for t in document["data"] if t is not trace)
    parse = next(s for s in failed["spans"] if s["operationName"] == "parse")
    assert {"key": "error", "type": "bool", "value": True} in parse["tags"]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_export_to_a_real_collector(tmp_path, monkeypatch, protocol):
    """Both services' spans reach rotel with their service names and parent links intact."""
    require(
        Path(__import__("rotel").__file__).parent.joinpath("rotel-agent").exists(),
        "rotel-agent binary (pip install rotel==0.0.1a15)",
    )
    with RotelCollector(tmp_path) as collector:
        endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        with traced_stack() as stack:
            assert stack.client.create_volume({"size": 1}, headers=member_headers()).status == 200
        spans = collector.wait_for_spans(lambda got: len(got) >= 15)
    services = {s["resource"]["service.name"] for s in spans}
    assert services == {"nova-api", "cinder-api"}
    by_id = {s["span_id"]: s for s in spans}
    cinder_server = next(s for s in spans if s["name"] == "POST /v3/{project_id}/volumes")
    client_span = by_id[cinder_server["parent_span_id"]]
    assert client_span["resource"]["service.name"] == "nova-api"
    assert client_span["name"] == "POST"
    assert by_id[client_span["parent_span_id"]]["name"] == "call_cinder"
    assert len({s["trace_id"] for s in spans}) == 1


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def jaeger_span_ids(path: Path) -> set[str]:
    return {
        span["spanID"] for trace in json.loads(path.read_text())["data"] for span in trace["spans"]
    }


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_poison_request_never_costs_other_spans_their_export(tmp_path, monkeypatch, protocol):
    """40 good creates and 5 hostile ones share export batches: every span of every request
    reaches the traces file, the Jaeger file and a real collector; none is dropped."""
    require(
        Path(__import__("rotel").__file__).parent.joinpath("rotel-agent").exists(),
        "rotel-agent binary (pip install rotel==0.0.1a15)",
    )
    traces, jaeger = tmp_path / "traces.jsonl", tmp_path / "jaeger.json"
    with RotelCollector(tmp_path) as collector:
        endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        with (
            capture() as captured,
            traced_stack(traces_file=str(traces), jaeger_file=str(jaeger), otlp=True) as stack,
        ):
            good = [
                stack.client.create_volume({"size": 1}, headers=member_headers()) for _ in range(20)
            ]
            for body in POISON_BODIES:
                stack.client.create_volume(headers=member_headers(), raw_body=body)
            good += [
                stack.client.create_volume({"size": 1}, headers=member_headers()) for _ in range(20)
            ]
        created = {f"{span.context.span_id:016x}" for span in captured.spans}
        at_collector = collector.wait_for_spans(lambda got: created <= {s["span_id"] for s in got})
    assert [r.status for r in good] == [200] * 40
    assert len(created) > 45 * 10
    assert stack.telemetry.dropped_spans == 0
    in_file = otlp_spans(traces)
    assert created <= {s["spanId"] for s in in_file}
    assert created <= jaeger_span_ids(jaeger)
    # The hostile text is there, made valid and bounded, not dropped.
    assert any("\ufffd" in (s.get("status", {}).get("message") or "") for s in in_file)
    assert any("\ufffd" in s["status_message"] for s in at_collector)
    longest = max(len(text) for text in _strings(in_file))
    assert longest <= DEFAULT_VALUE_LENGTH_LIMIT


def test_jaeger_file_memory_is_bounded_in_bytes(tmp_path):
    """Oversized creates fill the Jaeger file's memory only up to its byte bound: the oldest
    traces leave, no value is kept whole, and the file is always one valid document."""
    path = tmp_path / "jaeger.json"
    bound = 256 * 1024
    oversized = b'{"volume": {"size": "' + b"9" * 114_000 + b'"}}'
    with traced_stack(jaeger_file=str(path), jaeger_file_max_bytes=bound) as stack:
        for _ in range(60):
            assert (
                stack.client.create_volume(headers=member_headers(), raw_body=oversized).status
                == 400
            )
        stack.telemetry.force_flush()
        [exporter] = [c.inner for c in stack.telemetry._span_exporters if c.name == "jaeger_file"]
        assert 0 < exporter.buffered_bytes <= bound
        assert exporter.evicted_spans > 0
    document = json.loads(path.read_text())
    assert 0 < len(document["data"]) < 60
    assert path.stat().st_size <= bound + 64 * 1024  # the document's own framing
    assert max(len(text) for text in _strings(document)) <= DEFAULT_VALUE_LENGTH_LIMIT


def test_jaeger_file_is_valid_while_the_server_runs(tmp_path):
    """The Jaeger file is rewritten as spans arrive, not only at shutdown: a crash leaves
    a whole document with the traces so far."""
    path = tmp_path / "jaeger.json"
    with traced_stack(
        jaeger_file=str(path), jaeger_file_interval_s=0.1, span_processor="simple"
    ) as stack:
        for _ in range(3):
            assert stack.client.create_volume({"size": 1}, headers=member_headers()).status == 200
        poll(
            lambda: path.exists() and len(json.loads(path.read_text())["data"]) == 3,
            10,
            "the Jaeger file to hold three traces while the server runs",
        )
        assert not list(tmp_path.glob("*.tmp"))


def test_exporter_selection_follows_otel_variables(monkeypatch):
    """OTEL_TRACES_EXPORTER chooses; unset means none unless an OTLP endpoint is set."""
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert trace_exporter_names() == []
    assert trace_exporter_names(extra_otlp=True) == ["otlp"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert trace_exporter_names() == ["otlp"]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    assert trace_exporter_names() == ["console", "otlp"]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert trace_exporter_names() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="zipkin"):
        trace_exporter_names()


def test_service_names_are_configurable(tmp_path, monkeypatch):
    """OTEL_SERVICE_NAME renames nova-api; the in-process cinder-api keeps its own name."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "nova-api-cell1")
    path = tmp_path / "traces.jsonl"
    nova_telemetry = Telemetry.create(TelemetryConfig(traces_file=str(path), logs_enabled=False))
    cinder_telemetry = nova_telemetry.sibling("cinder-api")
    assert nova_telemetry.service_name == "nova-api-cell1"
    assert cinder_telemetry.service_name == "cinder-api"
    cinder_telemetry.shutdown()
    nova_telemetry.shutdown()


def test_sdk_disabled_exports_nothing(tmp_path, monkeypatch):
    """OTEL_SDK_DISABLED=true: the create still works and no span is written."""
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    path = tmp_path / "traces.jsonl"
    with traced_stack(traces_file=str(path)) as stack:
        assert stack.client.create_volume({"size": 1}, headers=member_headers()).status == 200
    assert not path.exists() or path.read_text() == ""


def test_direct_otlp_json_equals_the_protobuf_mapping(captured, nova, telemetry):
    """The fast encoder writes exactly what the SDK's protobuf + JSON mapping would, links
    (an untrusted caller's context on the SERVER span) included."""
    from opentelemetry.trace import (
        Link,
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
        set_span_in_context,
    )

    from voltrace.telemetry.exporters import _otlp_json_direct, otlp_json_via_protobuf

    caller = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    local = SpanContext(0x123, 0x456, is_remote=False)
    telemetry.tracer.start_span(
        "linked",
        links=[Link(caller), Link(local, {"why": "retry"})],
        context=set_span_in_context(NonRecordingSpan(caller)),
    ).end()

    nova.sim.inject(
        __import__("voltrace.cinder_sim", fromlist=["Fault"]).Fault(
            "volumes.create", status=500, times=1
        )
    )
    for volume in ({"size": 1}, {"size": 1}, {"size": 0}, {"size": 1, "snapshot_id": "x"}):
        response = nova.create(volume)
        captured.complete_trace(response.header("x-openstack-request-id"))
    spans = list(captured.spans)
    assert len(spans) > 30 and any(span.links for span in spans)
    assert _otlp_json_direct(spans) == otlp_json_via_protobuf(spans)


class _Refusing(SpanExporter):
    def export(self, spans):
        return SpanExportResult.FAILURE

    def shutdown(self):
        pass


def test_a_failed_batch_is_counted_once_even_if_shutdown_abandons_it_meanwhile():
    """Shutdown's abandon() counts the batch in flight; a batch whose export has just failed
    (and is being counted) is no longer in flight, so it is never counted twice."""
    from opentelemetry.sdk.trace import TracerProvider

    drops: list[tuple[str, int]] = []

    def on_drop(name: str, count: int, reason: str) -> None:
        drops.append((reason, count))
        if reason == "export_failed":  # shutdown gives up at this very moment
            counting.abandon(queued=0)

    counting = CountingExporter(_Refusing(), "otlp", on_drop=on_drop)
    tracer = TracerProvider().get_tracer("test")
    spans = []
    for n in range(3):
        with tracer.start_as_current_span(f"s{n}") as span:
            spans.append(span)
    assert counting.export(spans) is SpanExportResult.FAILURE
    assert drops == [("export_failed", 3)]
    assert counting.dropped == 3
