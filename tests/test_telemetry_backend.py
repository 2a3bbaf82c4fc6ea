"""The telemetry backend down or hung must not hurt nova-api, and nothing is lost silently.

Three ``voltrace serve`` processes run side by side against one Cinder simulator, all
exporting spans over OTLP with a short ``OTEL_EXPORTER_OTLP_TIMEOUT``:

* **normal**: to a live rotel collector;
* **down**: to a port nobody listens on (a rotel collector that is not started yet);
* **hung**: to a socket that accepts connections and never answers.

Every server also writes every span to ``--traces-file`` (its file exporter always works),
which is what the OTLP side is held to. OTLP delivery is at least once (a timed-out export
may still arrive), so the checks are bounds: every created span was delivered or counted
as dropped, and no more were dropped than created. How much latency a dead collector
costs is measured by ``bench/collector_outage.py``, not asserted here.

SIGTERM with the collector dead must finish within the flush bound and count every span it
could not deliver, with gunicorn workers, whatever ``OTEL_EXPORTER_OTLP_TIMEOUT`` says.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import member_headers
from tests.support.cli import voltrace_command
from tests.support.net import SilentServer, free_port, wait_for_port
from tests.support.polling import poll
from tests.support.rotel import RotelCollector
from voltrace.cinder_sim import CinderSimulator
from voltrace.client import NovaClient
from voltrace.server import GRACEFUL_TIMEOUT_S, TELEMETRY_FLUSH_TIMEOUT_S

PROTOCOLS = {"grpc": "grpc_endpoint", "http/protobuf": "http_endpoint"}
OTLP_TIMEOUT_S = "1"


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    port: int
    metrics_port: int
    traces: Path
    logs: Path
    client: NovaClient | None = None

    def create(self) -> str:
        """One create, which must succeed whatever the collector does; its request id."""
        if self.client is None:
            self.client = NovaClient(f"http://127.0.0.1:{self.port}")
        response = self.client.create_volume({"size": 1}, headers=member_headers())
        assert response.status == 200, response.body
        return response.header("x-openstack-request-id") or ""

    def rss(self) -> int:
        """Resident memory of gunicorn's workers (Linux /proc), in bytes."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        page = os.sysconf("SC_PAGE_SIZE")
        return sum(
            int(Path(f"/proc/{child}/statm").read_text().split()[1]) * page for child in children
        )

    def dropped_metric(self) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("voltrace_telemetry_spans_dropped_total{")
            and 'exporter="otlp"' in line
        )

    def stop(self) -> int:
        if self.client is not None:
            self.client.close()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def workers(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []


@pytest.fixture
def quiet_sim() -> Iterator[CinderSimulator]:
    """An untraced simulator with room for every create of the test."""
    with CinderSimulator(default_quotas={"volumes": -1, "gigabytes": -1}) as simulator:
        yield simulator


@pytest.fixture
def start_server(tmp_path: Path, quiet_sim: CinderSimulator) -> Iterator[Any]:
    servers: list[Server] = []

    def start(
        name: str, protocol: str, endpoint: str, *args: str, metrics: bool = True, **extra_env: str
    ) -> Server:
        port, metrics_port = free_port(), free_port()
        traces, logs = tmp_path / f"{name}-traces.jsonl", tmp_path / f"{name}-logs.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_TIMEOUT=OTLP_TIMEOUT_S,
            OTEL_BSP_SCHEDULE_DELAY="200",
        )
        env.update(extra_env)
        command = voltrace_command(
            "serve",
            "--port",
            str(port),
            "--cinder-endpoint",
            quiet_sim.endpoint_template,
            "--otlp",
            "--traces-file",
            str(traces),
            "--log-file",
            str(logs),
            "--log-format",
            "json",
            *(["--metrics-port", str(metrics_port)] if metrics else []),
            *args,
        )
        with open(tmp_path / f"{name}.out", "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        server = Server(name, process, port, metrics_port, traces, logs)
        servers.append(server)
        wait_for_port(port, timeout=30)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def file_spans(path: Path) -> list[dict]:
    spans = []
    for line in path.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope in resource_spans["scopeSpans"]:
                spans += scope["spans"]
    return spans


def log_events(path: Path, event: str) -> list[dict]:
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["event"] == event]


def dropped_over_otlp(path: Path) -> int:
    return sum(
        e["dropped"] for e in log_events(path, "telemetry.spans_dropped") if e["exporter"] == "otlp"
    )


def interleaved(servers: list[Server], rounds: int, per_round: int) -> None:
    """Creates in rounds that alternate the servers' order, so noise hits them alike."""
    for round_number in range(rounds):
        order = servers if round_number % 2 == 0 else list(reversed(servers))
        for server in order:
            for _ in range(per_round):
                server.create()


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
def test_backend_down_or_hung(tmp_path, start_server, protocol):
    """Collector down or hung: every create answers, memory stays bounded, every lost span
    is counted (log + metric), and spans flow again once the collector is back."""
    healthy = RotelCollector(tmp_path / "healthy")
    (tmp_path / "healthy").mkdir()
    healthy.start()
    (tmp_path / "later").mkdir()
    later = RotelCollector(tmp_path / "later")  # its ports stay closed until started
    # Bound but not listening: connections are refused, and no other process on this busy
    # machine can take the ports before the collector comes back on them.
    held = [socket.socket() for _ in range(2)]
    for sock, port in zip(held, (later.grpc_port, later.http_port), strict=True):
        sock.bind(("127.0.0.1", port))
    hung = SilentServer()
    try:
        normal = start_server("normal", protocol, getattr(healthy, PROTOCOLS[protocol]))
        down = start_server("down", protocol, getattr(later, PROTOCOLS[protocol]))
        stuck = start_server("hung", protocol, hung.endpoint)
        servers = [normal, down, stuck]

        interleaved(servers, rounds=2, per_round=10)  # warm up: imports, pools, first exports
        rss_before = {s.name: s.rss() for s in servers}
        interleaved(servers, rounds=4, per_round=25)
        rss_growth = {s.name: s.rss() - rss_before[s.name] for s in servers}
        # Memory: bounded by the span queue, not growing with every create.
        for name in ("down", "hung"):
            assert rss_growth[name] <= rss_growth["normal"] + 16 * 2**20, rss_growth

        # Dropped spans are counted, as a metric and in a log line, while it happens.
        for server in (down, stuck):
            poll(lambda s=server: s.dropped_metric() > 0, 30, f"{server.name}: dropped metric")
            assert dropped_over_otlp(server.logs) > 0

        # Recovery: the collector comes up on the port "down" was pointed at.
        for sock in held:
            sock.close()
        later.start()
        sent: set[str] = set()

        def arrived() -> bool:
            # Until the exporter reconnects (gRPC backs off up to 5 s), its exports fail and
            # those spans are dropped, and counted: keep creating until a create made after
            # the restart arrives.
            sent.add(down.create())
            seen = {s["attributes"].get("openstack.request_id") for s in later.spans()}
            return bool(sent & seen)

        poll(arrived, 45, "spans at the restarted collector", interval=0.5)

        for server in servers:
            assert server.stop() == 0
        # Nothing lost silently: every span the file got was delivered over OTLP or counted
        # as dropped. Delivery is at least once, so these are bounds, not an equality.
        created = {s.name: {span["spanId"] for span in file_spans(s.traces)} for s in servers}
        assert created["normal"] <= {span["span_id"] for span in healthy.spans()}
        assert dropped_over_otlp(normal.logs) == 0
        for server in (down, stuck):
            dropped = dropped_over_otlp(server.logs)
            delivered = {span["span_id"] for span in later.spans()} if server is down else set()
            undelivered = len(created[server.name] - delivered)
            assert undelivered <= dropped <= len(created[server.name]), (
                server.name,
                dropped,
                undelivered,
                len(created[server.name]),
            )
    finally:
        for sock in held:
            sock.close()
        healthy.stop()
        later.stop()
        hung.close()


def test_queue_overflow_is_counted_too(start_server):
    """A hung collector and a burst bigger than the span queue: the spans the queue turns
    away are counted and logged like any other dropped span."""
    hung = SilentServer()
    try:
        server = start_server(
            "burst",
            "grpc",
            hung.endpoint,
            OTEL_BSP_MAX_QUEUE_SIZE="64",
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE="32",
        )
        for _ in range(60):  # about 600 spans against a queue of 64 that drains 32 a second
            server.create()
        assert server.stop() == 0
        created = len(file_spans(server.traces))
        reasons = {e["reason"] for e in log_events(server.logs, "telemetry.spans_dropped")}
        assert "queue_full" in reasons
        assert dropped_over_otlp(server.logs) >= created  # nothing reached the hung collector
    finally:
        hung.close()


@pytest.mark.parametrize("collector", ["down", "hung"])
def test_sigterm_with_a_dead_collector_is_bounded_and_counts_every_span(start_server, collector):
    """--workers 2, the collector down (refusing) or hung (accepting, never answering), and an
    OTLP timeout longer than the flush bound: SIGTERM still ends within the bound, before
    gunicorn would kill a worker, and every span not delivered is counted as dropped."""
    hung = SilentServer() if collector == "hung" else None
    refused = socket.socket()  # bound, never listening: connections are refused
    refused.bind(("127.0.0.1", 0))
    endpoint = hung.endpoint if hung else f"http://127.0.0.1:{refused.getsockname()[1]}"
    try:
        server = start_server(
            f"sigterm-{collector}",
            "http/protobuf",
            endpoint,
            "--workers",
            "2",
            "--threads",
            "4",
            metrics=False,
            OTEL_EXPORTER_OTLP_TIMEOUT=str(3 * TELEMETRY_FLUSH_TIMEOUT_S),
        )
        poll(lambda: len(server.workers()) == 2, 30, "two gunicorn workers")
        for _ in range(40):
            server.create()
        started = time.monotonic()
        assert server.stop() == 0
        took = time.monotonic() - started
        shutdowns = log_events(server.logs, "telemetry.shutdown")
        # Each worker ran its whole shutdown (a worker gunicorn SIGKILLs writes no line).
        assert len(shutdowns) == 2, (took, shutdowns)
        assert took < GRACEFUL_TIMEOUT_S, took
        created = len(file_spans(server.traces))
        dropped = dropped_over_otlp(server.logs)
        assert created >= 40 * 10
        assert dropped >= created, (created, dropped, took)  # nothing was delivered
        assert {e["reason"] for e in log_events(server.logs, "telemetry.spans_dropped")} >= {
            "shutdown"
        }
    finally:
        refused.close()
        if hung is not None:
            hung.close()
