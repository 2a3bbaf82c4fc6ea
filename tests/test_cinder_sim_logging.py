"""The simulator logs each request as cinder-api does, and its CLI writes traces and logs of
all three services; the HTTP layer needs nothing from the simulator but three callables."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.polling import poll
from voltrace.cinder_sim import CinderSimulator, Fault, add_cli_arguments
from voltrace.cinder_sim import async_create as names
from voltrace.cinder_sim.backends import BackendSettings
from voltrace.cinder_sim.cli import simulator_from_args
from voltrace.cinder_sim.messages import RecordedRequest, Request, Response
from voltrace.cinder_sim.server import HTTPServer
from voltrace.telemetry import Telemetry
from voltrace.testing import Captured, capture

PROJECT = "ef" * 16
NOVA_REQUEST_ID = "req-0b7d3c52-6f0e-4c8a-9b7e-2a1d4e5f6a7b"
TOKEN = "tok-never-logged-5c1e"
FAST = BackendSettings(scheduling_s=0.005, volume_create_s=0.005)


@pytest.fixture(scope="module")
def sim(cinder_telemetry: Telemetry) -> Iterator[CinderSimulator]:
    with CinderSimulator(telemetry=cinder_telemetry, backend=FAST) as simulator:
        yield simulator


@pytest.fixture
def captured() -> Iterator[Captured]:
    with capture() as spans_and_logs:
        yield spans_and_logs


def request_lines(captured: Captured) -> list[dict[str, Any]]:
    return [e for e in captured.logs if e["event"] == "api.request"]


def test_each_request_is_one_log_line(sim: CinderSimulator, captured: Captured) -> None:
    """method, path, status, route and both request ids, as cinder-api's wsgi logs them."""
    answer = requests.post(
        f"{sim.url}/v3/{PROJECT}/volumes",
        json={"volume": {"size": 1}},
        headers={"X-Auth-Token": TOKEN, "X-OpenStack-Request-ID": NOVA_REQUEST_ID},
        timeout=5,
    )
    requests.get(f"{sim.url}/v3/{PROJECT}/volumes/x", timeout=5)  # no token: 401
    (created, unauthenticated) = request_lines(captured)
    assert created["service"] == "cinder-api" and created["level"] == "info"
    assert (created["method"], created["path"], created["status"], created["route"]) == (
        "POST",
        f"/v3/{PROJECT}/volumes",
        202,
        "volumes.create",
    )
    assert created["request_id"] == answer.headers["x-openstack-request-id"]
    assert created["global_request_id"] == NOVA_REQUEST_ID
    assert created["project_id"] == PROJECT
    assert created["duration_ms"] >= 0
    assert (unauthenticated["status"], unauthenticated["route"]) == (401, "volumes.get")
    assert TOKEN not in json.dumps(captured.logs)


def test_a_dropped_connection_is_logged_without_status(
    sim: CinderSimulator, captured: Captured
) -> None:
    """A drop fault still leaves a line: status null, disconnect "drop"."""
    sim.inject(Fault("versions", action="drop", times=1))
    with pytest.raises(requests.ConnectionError):
        requests.get(sim.url + "/", timeout=5)
    (line,) = request_lines(captured)
    assert (line["status"], line["disconnect"], line["route"]) == (None, "drop", "versions")


def test_cli_writes_traces_and_logs_of_all_three_services(tmp_path: Path) -> None:
    """python -m voltrace.cinder_sim --traces-file/--log-file: one create, three services."""
    traces, logs = tmp_path / "traces.jsonl", tmp_path / "logs.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voltrace.cinder_sim",
            "--port",
            "0",
            "--traces-file",
            str(traces),
            "--log-file",
            str(logs),
            "--log-format",
            "json",
            "--scheduling-s",
            "0.01",
            "--volume-create-s",
            "0.01",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = line.split()[-1]
        answer = requests.post(
            f"{url}/v3/{PROJECT}/volumes",
            json={"volume": {"size": 1}},
            headers={"X-Auth-Token": "t"},
            timeout=5,
        )
        volume_id = answer.json()["volume"]["id"]
        poll(
            lambda: (
                requests.get(
                    f"{url}/v3/{PROJECT}/volumes/{volume_id}",
                    headers={"X-Auth-Token": "t"},
                    timeout=5,
                ).json()["volume"]["status"]
                == "available"
            ),
            timeout=10,
            what="the volume becomes available",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    by_service: dict[str, set[str]] = {}
    for export in map(json.loads, traces.read_text().splitlines()):
        for resource_spans in export["resourceSpans"]:
            service = next(
                a["value"]["stringValue"]
                for a in resource_spans["resource"]["attributes"]
                if a["key"] == "service.name"
            )
            for scope in resource_spans["scopeSpans"]:
                for span in scope["spans"]:
                    by_service.setdefault(service, set()).add(span["traceId"])
    assert set(by_service) == {"cinder-api", "cinder-scheduler", "cinder-volume"}
    create_trace = by_service["cinder-scheduler"]
    assert create_trace <= by_service["cinder-api"] and create_trace == by_service["cinder-volume"]
    events = [json.loads(line) for line in logs.read_text().splitlines()]
    assert {(e["service"], e["event"]) for e in events} >= {
        ("cinder-api", "api.request"),
        ("cinder-scheduler", names.LOG_BACKEND_SELECTED),
        ("cinder-volume", names.LOG_SETTLED),
    }


def test_cli_options_configure_what_is_behind_the_api() -> None:
    """Timings, capacity, retries, liveness, types with extra specs, faults, services down."""
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "0",
            "--deterministic",
            "--scheduling-s",
            "0.1-0.2",
            "--driver-s",
            "8",
            "--capacity-gb",
            "100",
            "--scheduler-max-attempts",
            "1",
            "--service-down-time",
            "5",
            "--report-interval",
            "1",
            "--cinder-host",
            "testhost",
            "--volume-type",
            "gold:volume_backend_name=nope",
            "--volume-type",
            "silver",
            "--backend-fault",
            "driver_error:times=2",
            "--service-down",
            "cinder-volume",
            "--auth-strategy",
            "noauth",
        ]
    )
    simulator = simulator_from_args(args)
    try:
        settings = simulator.backend_settings
        assert (settings.scheduling_s.low, settings.scheduling_s.high) == (0.1, 0.2)
        assert (settings.driver_s.low, settings.capacity_gb, settings.scheduler_max_attempts) == (
            8.0,
            100.0,
            1,
        )
        assert (settings.service_down_time_s, settings.report_interval_s) == (5.0, 1.0)
        assert settings.pool_host == "testhost@lvmdriver-1#lvmdriver-1"
        assert [f.to_dict() for f in simulator.backend_faults] == [
            {"kind": "driver_error", "times": 2, "delay_s": 0.0}
        ]
        state = simulator.backend_state()["services"]
        assert [(s["binary"], s["running"], s["state"]) for s in state] == [
            ("cinder-scheduler", True, "up"),
            ("cinder-volume", False, "down"),
        ]
    finally:
        simulator.stop()
    for bad in (
        ["--scheduling-s", "fast"],
        ["--backend-fault", "explode"],
        ["--volume-type", "gold:novalue"],
        ["--service-down", "cinder-api"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_http_server_needs_only_callables() -> None:
    """server.py serves any handler/recorder/admin triple and keeps its own connection set."""
    recorded: list[RecordedRequest] = []

    def handle(request: Request) -> Response:
        return Response(200, [("Content-Type", "text/plain")], request.path.encode())

    def admin(method: str, path: str, body: bytes) -> Response:
        return Response(204, [])

    server = HTTPServer(("127.0.0.1", 0), handle=handle, record=recorded.append, admin=admin)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with requests.Session() as http:
            assert http.get(url + "/v3/x", timeout=5).text == "/v3/x"
            assert http.post(url + "/__sim__/reset", timeout=5).status_code == 204
            assert [(r.method, r.path) for r in recorded] == [("GET", "/v3/x")]
            server.shutdown()
            server.close_connections()  # the session's idle keep-alive connection too
            server.server_close()
            with pytest.raises(requests.ConnectionError):
                http.get(url + "/v3/x", timeout=5)
    finally:
        server.server_close()
        thread.join(timeout=5)
