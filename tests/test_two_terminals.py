"""`voltrace cinder-sim` and `voltrace serve` as real processes, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_TOKEN, member_headers
from tests.support.net import free_port, wait_for_port
from voltrace.client import NovaClient

# The README's walkthrough project: hex, as Cinder routes only keystone-style ids.
DEMO_PROJECT = "0123456789abcdef0123456789abcdef"


def start(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "voltrace", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


@pytest.fixture
def two_terminals(tmp_path: Path) -> Iterator[dict]:
    cinder_port, nova_port = free_port(), free_port()
    sim = start(
        [
            "cinder-sim",
            "--port",
            str(cinder_port),
            "--traces-file",
            str(tmp_path / "cinder.jsonl"),
            "--log-level",
            "off",
        ],
        tmp_path / "cinder.log",
    )
    wait_for_port(cinder_port, timeout=30)
    nova = start(
        [
            "serve",
            "--port",
            str(nova_port),
            "--cinder-endpoint",
            f"http://127.0.0.1:{cinder_port}/v3/%(project_id)s",
            "--traces-file",
            str(tmp_path / "nova.jsonl"),
            "--log-file",
            str(tmp_path / "nova-logs.jsonl"),
        ],
        tmp_path / "nova.log",
    )
    wait_for_port(nova_port, timeout=30)
    processes = {"sim": sim, "nova": nova}
    try:
        yield {
            "dir": tmp_path,
            "cinder_port": cinder_port,
            "nova_port": nova_port,
            "processes": processes,
        }
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def spans_in(path: Path) -> list[dict]:
    spans = []
    for line in path.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            attributes = resource_spans["resource"]["attributes"]
            service = next(
                a["value"]["stringValue"] for a in attributes if a["key"] == "service.name"
            )
            for scope in resource_spans["scopeSpans"]:
                spans += [{**span, "service": service} for span in scope["spans"]]
    return spans


def test_create_across_two_processes_is_one_trace(two_terminals):
    """A create through serve lands in the simulator, and both processes' spans form one
    trace: Cinder's SERVER span is parented on nova-api's CLIENT span."""
    client = NovaClient(f"http://127.0.0.1:{two_terminals['nova_port']}")
    response = client.create_volume(
        {"size": 1, "display_name": "hello"}, headers=member_headers(project_id=DEMO_PROJECT)
    )
    client.close()
    assert response.status == 200
    volume_id = response.json()["volume"]["id"]

    cinder = NovaClient(f"http://127.0.0.1:{two_terminals['cinder_port']}")
    shown = cinder.request(
        "GET", f"/v3/{DEMO_PROJECT}/volumes/{volume_id}", None, {"X-Auth-Token": TEST_TOKEN}
    )
    cinder.close()
    assert shown.status == 200 and shown.json()["volume"]["name"] == "hello"

    # SIGTERM must flush what both processes hold.
    assert stop(two_terminals["processes"]["nova"]) == 0
    assert stop(two_terminals["processes"]["sim"]) == 0
    nova_spans = spans_in(two_terminals["dir"] / "nova.jsonl")
    cinder_spans = spans_in(two_terminals["dir"] / "cinder.jsonl")
    assert {s["service"] for s in nova_spans} == {"nova-api"}
    # cinder-sim traces its asynchronous create too, as far as it got before SIGTERM.
    services = {s["service"] for s in cinder_spans}
    assert "cinder-api" in services
    assert services <= {"cinder-api", "cinder-scheduler", "cinder-volume"}
    trace_ids = {s["traceId"] for s in nova_spans if s["name"] == "POST /v2.1/os-volumes"}
    (trace_id,) = trace_ids
    nova_by_id = {s["spanId"]: s for s in nova_spans}
    cinder_post = next(s for s in cinder_spans if s["name"] == "POST /v3/{project_id}/volumes")
    assert cinder_post["traceId"] == trace_id
    assert nova_by_id[cinder_post["parentSpanId"]]["name"] == "POST"
    assert nova_by_id[nova_by_id[cinder_post["parentSpanId"]]["parentSpanId"]]["name"] == (
        "call_cinder"
    )

    logs = [
        json.loads(line)
        for line in (two_terminals["dir"] / "nova-logs.jsonl").read_text().splitlines()
    ]
    summary = next(e for e in logs if e["event"] == "request.finished")
    assert summary["trace_id"] == trace_id
    assert summary["request_id"] == response.header("x-openstack-request-id")
