"""The suite's token and HMAC key never reach a span, a log line or an exported file.

Two nets:

* from the moment this module is imported (pytest imports every test module before the
  first test runs), every span that ends and every log event written by any voltrace
  Telemetry in this process is scanned as it happens;
* the test below drives creates that really carry the secrets (the token reaches Cinder,
  the HMAC key signs OSProfiler headers), then scans every telemetry file written so far:
  the session telemetry's traces and log files, and every ``*.json``/``*.jsonl`` file the
  run left under pytest's temporary directory (subprocess servers, collectors, demos).

Before that last test, the ways a secret could still slip in are driven on purpose: an
operator capturing every header, Cinder echoing the token in an error, and callers
sending trace context and baggage (which may carry anything) that must not reach Cinder.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tests.conftest import SECRETS, TEST_HMAC_KEY, TEST_TOKEN, member_headers, require
from tests.support.rotel import RotelCollector
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator, Fault
from voltrace.client import NovaClient
from voltrace.osprofiler import X_TRACE_HMAC, request_hook
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry, TelemetryConfig
from voltrace.telemetry.capture import LOG_LISTENERS, SPAN_LISTENERS
from voltrace.testing import capture

LEAKS: list[str] = []
SEEN = {"spans": 0, "logs": 0}


def _leaks_in(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def _span_text(span: ReadableSpan) -> str:
    parts: list[Any] = [
        span.name,
        dict(span.attributes or {}),
        span.status.description,
        dict(span.resource.attributes),
    ]
    for event in span.events:
        parts += [event.name, dict(event.attributes or {})]
    for link in span.links:
        parts.append(dict(link.attributes or {}))
    return json.dumps(parts, default=str)


def _watch_span(span: ReadableSpan) -> None:
    SEEN["spans"] += 1
    for secret in _leaks_in(_span_text(span)):
        LEAKS.append(f"span {span.name!r} carries {secret!r}")


def _watch_log(event: dict[str, Any]) -> None:
    SEEN["logs"] += 1
    for secret in _leaks_in(json.dumps(event, default=str)):
        LEAKS.append(f"log event {event.get('event')!r} carries {secret!r}")


SPAN_LISTENERS.add(_watch_span)
LOG_LISTENERS.add(_watch_log)


def scan_file(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [f"{path} carries {secret!r}" for secret in _leaks_in(text)]


def telemetry_files(root: Path) -> list[Path]:
    return sorted(
        p for pattern in ("*.jsonl", "*.json") for p in root.rglob(pattern) if p.is_file()
    )


REDACTED_HEADER = ("[REDACTED]",)
CAPTURE_VARIABLES = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
)


@contextmanager
def own_nova(sim: CinderSimulator, **config: Any) -> Iterator[NovaClient]:
    """A nova-api with its own Telemetry (``config``), in front of ``sim``."""
    telemetry = Telemetry.create(
        TelemetryConfig(
            service_name="nova-api", use_env_service_name=False, logs_enabled=False, **config
        )
    )
    try:
        serve = ServeConfig(
            cinder=CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
        )
        with EmbeddedServer(build_service(serve, telemetry)) as server:
            client = NovaClient(server.url)
            try:
                yield client
            finally:
                client.close()
    finally:
        telemetry.shutdown()


def headers_sent_to_cinder(sim: CinderSimulator) -> list[dict[str, str]]:
    return [{k.lower(): v for k, v in r.headers.items()} for r in list(sim.recorded)]


def test_header_capture_redacts_the_secrets_whatever_the_variables_say(sim, tmp_path, monkeypatch):
    """Capturing every header (client and server side), with the operator's own sanitize
    list: X-Auth-Token, X-Service-Catalog and X-Trace-HMAC are redacted on every span, in
    memory and at a real collector, and the operator's own field still is."""
    require(
        Path(__import__("rotel").__file__).parent.joinpath("rotel-agent").exists(),
        "rotel-agent binary (pip install rotel==0.0.1a15)",
    )
    catalog = [
        {"type": "volumev3", "endpoints": [{"interface": "public", "url": sim.endpoint_template}]}
    ]
    headers = {**member_headers(catalog=catalog), "X-Operator-Secret": "op-SECRET-1234"}
    with RotelCollector(tmp_path) as collector:
        for name, value in zip(CAPTURE_VARIABLES, (".*", ".*", "x-operator-secret"), strict=True):
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.http_endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        try:
            with (
                capture() as captured,
                own_nova(sim, otlp=True, request_hooks=[request_hook(TEST_HMAC_KEY)]) as client,
            ):
                response = client.create_volume({"size": 1}, headers=headers)
                spans = captured.complete_trace(response.header("x-openstack-request-id"))
        finally:
            # Hand `requests` back to the session's telemetry with the variables gone.
            for name in CAPTURE_VARIABLES:
                monkeypatch.delenv(name)
        nova_spans = [s for s in spans if s.resource.attributes["service.name"] == "nova-api"]
        at_collector = collector.wait_for_spans(lambda got: len(got) >= len(nova_spans))
    assert response.status == 200, response.body
    assert any(X_TRACE_HMAC in h for h in map(dict, (r.headers for r in sim.recorded)))
    server = next(s for s in nova_spans if s.kind is SpanKind.SERVER)
    for header in ("x_auth_token", "x_service_catalog", "x_operator_secret"):
        assert server.attributes[f"http.request.header.{header}"] == REDACTED_HEADER, header
    clients = [s for s in nova_spans if s.kind is SpanKind.CLIENT]
    assert len(clients) == 2
    for span in clients:
        assert span.attributes["http.request.header.x_auth_token"] == REDACTED_HEADER
        captured_headers = [k for k in span.attributes if k.startswith("http.request.header.")]
        assert len(captured_headers) >= 3  # capture really is on
    # The collector's output shows arrays as arrays, so a scan of it sees header values.
    collected = next(s for s in at_collector if s["kind"] == 2)
    assert collected["attributes"]["http.request.header.x_auth_token"] == ["[REDACTED]"]
    assert not scan_file(collector.spans_file)
    assert "op-SECRET-1234" not in collector.spans_file.read_text()


def test_a_token_cinder_echoes_is_never_recorded(nova, sim, captured):
    """Cinder's error repeats the caller's token: Nova passes the message on, as real Nova
    does, but no span, event or log line of the request carries the token."""
    sim.inject(
        Fault(
            "volumes.create",
            status=400,
            times=1,
            body={
                "badRequest": {
                    "code": 400,
                    "message": f"Invalid token {TEST_TOKEN} for this project",
                }
            },
        )
    )
    response = nova.create({"size": 1})
    assert response.status == 400
    assert TEST_TOKEN in response.body.decode()
    request_id = response.header("x-openstack-request-id")
    spans = captured.complete_trace(request_id)
    captured.wait_for(
        lambda c: any(e["event"] == "request.finished" for e in c.logs_for(request_id))
    )
    nova_spans = [s for s in spans if s.resource.attributes["service.name"] == "nova-api"]
    recorded = json.dumps(
        [_span_text(s) for s in nova_spans] + captured.logs_for(request_id), default=str
    )
    assert "Invalid token *** for this project" in recorded
    assert TEST_TOKEN not in recorded


def test_untrusted_trace_context_is_linked_and_baggage_never_reaches_cinder(sim, captured):
    """By default (a public API) a caller's traceparent starts no trace of ours: the SERVER
    span links to it; its tracestate and its baggage (a token, here) never reach Cinder."""
    caller_trace, caller_span = f"{0xABC:032x}", f"{0xDEF:016x}"
    headers = {
        **member_headers(),
        "traceparent": f"00-{caller_trace}-{caller_span}-01",
        "tracestate": "vendor=" + "x" * 200,
        "baggage": f"auth={TEST_TOKEN},user=u-1",
    }
    with own_nova(sim) as client:
        response = client.create_volume({"size": 1}, headers=headers)
    server = captured.server_span(response.header("x-openstack-request-id"))
    assert f"{server.context.trace_id:032x}" != caller_trace
    assert server.parent is None
    [link] = server.links
    assert (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") == (
        caller_trace,
        caller_span,
    )
    sent = headers_sent_to_cinder(sim)
    assert sent and all("baggage" not in h and "tracestate" not in h for h in sent)
    assert all(h["traceparent"].split("-")[1] == f"{server.context.trace_id:032x}" for h in sent)


def test_trusted_trace_context_is_continued_with_tracestate_capped(sim, captured):
    """trust_incoming_trace_context: the caller's trace goes on; tracestate reaches Cinder cut
    to its first 512 characters of whole members; baggage still stays here."""
    caller_trace = f"{0x123:032x}"
    members = [f"v{i}=" + "y" * 200 for i in range(32)]  # 6.5 KB
    headers = {
        **member_headers(),
        "traceparent": f"00-{caller_trace}-{0x456:016x}-01",
        "tracestate": ",".join(members),
        "baggage": f"auth={TEST_TOKEN}",
    }
    with own_nova(sim, trust_incoming_trace_context=True) as client:
        response = client.create_volume({"size": 1}, headers=headers)
    server = captured.server_span(response.header("x-openstack-request-id"))
    assert f"{server.context.trace_id:032x}" == caller_trace
    sent = headers_sent_to_cinder(sim)
    assert sent and all("baggage" not in h for h in sent)
    for h in sent:
        assert h["traceparent"].split("-")[1] == caller_trace
        assert 0 < len(h["tracestate"]) <= 512
        assert h["tracestate"] == ",".join(members[: len(h["tracestate"].split(","))])


def test_baggage_is_forwarded_only_when_asked_and_capped(sim):
    """forward_baggage: W3C's limits (64 members, 8192 bytes) on what goes to Cinder."""
    baggage = ",".join(f"k{i}=v{i}" for i in range(100))
    with own_nova(sim, forward_baggage=True) as client:
        response = client.create_volume(
            {"size": 1}, headers={**member_headers(), "baggage": baggage}
        )
    assert response.status == 200
    sent = headers_sent_to_cinder(sim)
    assert sent
    for h in sent:
        forwarded = sorted(h["baggage"].split(","), key=lambda m: int(m.split("=")[0][1:]))
        assert forwarded == [f"k{i}=v{i}" for i in range(64)]


def test_secrets_never_leave_the_process(nova, sim, telemetry, tmp_path, tmp_path_factory):
    """Creates carrying the token and the HMAC key leave no trace of either anywhere."""
    # 1. A successful create, a Cinder 500 and a Cinder reset, all with the test token.
    statuses = [nova.create({"size": 1}).status]
    sim.inject(Fault("volumes.create", status=500, times=1))
    statuses.append(nova.create({"size": 1}).status)
    sim.inject(Fault("volumes.create", action="reset", times=1))
    statuses.append(nova.create({"size": 1}).status)
    statuses.append(nova.create(raw_body=b"{not json").status)
    statuses.append(nova.create({"size": 1}, headers={"X-Auth-Token": TEST_TOKEN}).status)
    assert statuses == [200, 500, 500, 400, 401]
    # The scan means something: the token really travelled to Cinder.
    assert all(r.headers.get("X-Auth-Token") == TEST_TOKEN for r in sim.recorded)
    assert len(sim.recorded) >= 3

    # 2. OSProfiler signing with the HMAC key, through its own Telemetry writing files.
    hooked = Telemetry.create(
        TelemetryConfig(
            service_name="nova-api",
            use_env_service_name=False,
            traces_file=str(tmp_path / "hooked-traces.jsonl"),
            jaeger_file=str(tmp_path / "hooked-jaeger.json"),
            log_file=str(tmp_path / "hooked-logs.jsonl"),
            log_format="json",
            request_hooks=[request_hook(TEST_HMAC_KEY)],
        )
    )
    try:
        config = ServeConfig(
            cinder=CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
        )
        with EmbeddedServer(build_service(config, hooked)) as server:
            client = NovaClient(server.url)
            assert client.create_volume({"size": 1}, headers=member_headers()).status == 200
            client.close()
    finally:
        hooked.shutdown()
    signed = [r for r in sim.recorded if X_TRACE_HMAC in r.headers]
    assert signed, "the HMAC key was never used, so the scan would prove nothing"

    # 3. Every file written so far, and everything streamed since import.
    telemetry.force_flush()
    session_files = [
        Path(p)
        for p in (
            telemetry.config.traces_file,
            telemetry.config.log_file,
            telemetry.config.jaeger_file,
        )
        if p
    ]
    files = {*session_files, *telemetry_files(tmp_path_factory.getbasetemp())}
    assert {
        tmp_path / "hooked-traces.jsonl",
        tmp_path / "hooked-jaeger.json",
        tmp_path / "hooked-logs.jsonl",
    } <= files
    assert all(path.stat().st_size > 0 for path in session_files)
    leaks = [leak for path in sorted(files) for leak in scan_file(path)]
    assert SEEN["spans"] > 0 and SEEN["logs"] > 0
    assert not LEAKS + leaks, LEAKS + leaks


def test_log_stream_never_shows_the_token(sim):
    """A Telemetry logging to a stream (the console case) never prints the token either."""
    stream = io.StringIO()
    console = Telemetry.create(
        TelemetryConfig(
            service_name="nova-api",
            use_env_service_name=False,
            log_stream=stream,
            log_format="console",
        )
    )
    try:
        config = ServeConfig(
            cinder=CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
        )
        sim.inject(Fault("volumes.create", status=503, times=1))
        with EmbeddedServer(build_service(config, console)) as server:
            client = NovaClient(server.url)
            assert client.create_volume({"size": 1}, headers=member_headers()).status == 500
            client.close()
    finally:
        console.shutdown()
    assert stream.getvalue()
    assert not _leaks_in(stream.getvalue())
