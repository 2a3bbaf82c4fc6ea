"""The suite's token and HMAC key never reach a span, a log line or an exported file.

Two nets:

* from the moment this module is imported (pytest imports every test module before the
  first test runs), every span that ends and every log event written by any voltrace
  Telemetry in this process is scanned as it happens;
* the test below drives creates that really carry the secrets (the token reaches Cinder,
  the HMAC key signs OSProfiler headers), then scans every telemetry file written so far:
  the session telemetry's traces and log files, and every ``*.json``/``*.jsonl`` file the
  run left under pytest's temporary directory (subprocess servers, collectors, demos).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from tests.conftest import SECRETS, TEST_HMAC_KEY, TEST_TOKEN, member_headers
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import Fault
from voltrace.client import NovaClient
from voltrace.osprofiler import X_TRACE_HMAC, request_hook
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry, TelemetryConfig
from voltrace.telemetry.capture import LOG_LISTENERS, SPAN_LISTENERS

LEAKS: list[str] = []
SEEN = {"spans": 0, "logs": 0}


def _leaks_in(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def _span_text(span: ReadableSpan) -> str:
    parts: list[Any] = [span.name, dict(span.attributes or {}), span.status.description,
                        dict(span.resource.attributes)]
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
    return sorted(p for pattern in ("*.jsonl", "*.json") for p in root.rglob(pattern)
                  if p.is_file())


def test_secrets_never_leave_the_process(nova, sim, telemetry, tmp_path,
                                         tmp_path_factory):
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
    hooked = Telemetry.create(TelemetryConfig(
        service_name="nova-api", use_env_service_name=False,
        traces_file=str(tmp_path / "hooked-traces.jsonl"),
        jaeger_file=str(tmp_path / "hooked-jaeger.json"),
        log_file=str(tmp_path / "hooked-logs.jsonl"), log_format="json",
        request_hooks=[request_hook(TEST_HMAC_KEY)],
    ))
    try:
        config = ServeConfig(cinder=CinderSettings(endpoint_template=sim.endpoint_template,
                                                   http_retries=0))
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
    session_files = [Path(p) for p in (telemetry.config.traces_file, telemetry.config.log_file,
                                       telemetry.config.jaeger_file) if p]
    files = {*session_files, *telemetry_files(tmp_path_factory.getbasetemp())}
    assert {tmp_path / "hooked-traces.jsonl", tmp_path / "hooked-jaeger.json",
            tmp_path / "hooked-logs.jsonl"} <= files
    assert all(path.stat().st_size > 0 for path in session_files)
    leaks = [leak for path in sorted(files) for leak in scan_file(path)]
    assert SEEN["spans"] > 0 and SEEN["logs"] > 0
    assert not LEAKS + leaks, LEAKS + leaks


def test_log_stream_never_shows_the_token(sim):
    """A Telemetry logging to a stream (the console case) never prints the token either."""
    stream = io.StringIO()
    console = Telemetry.create(TelemetryConfig(service_name="nova-api",
                                               use_env_service_name=False,
                                               log_stream=stream, log_format="console"))
    try:
        config = ServeConfig(cinder=CinderSettings(endpoint_template=sim.endpoint_template,
                                                   http_retries=0))
        sim.inject(Fault("volumes.create", status=503, times=1))
        with EmbeddedServer(build_service(config, console)) as server:
            client = NovaClient(server.url)
            assert client.create_volume({"size": 1}, headers=member_headers()).status == 500
            client.close()
    finally:
        console.shutdown()
    assert stream.getvalue()
    assert not _leaks_in(stream.getvalue())
