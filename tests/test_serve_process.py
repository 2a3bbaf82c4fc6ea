"""``voltrace serve`` as a real gunicorn process: workers, signals, flushing, Cinder options.

The server runs as a subprocess in front of an in-process Cinder simulator; every check
is made on what a user would see: HTTP answers, exit codes, the files the server wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import member_headers
from tests.support.cli import voltrace_command
from tests.support.net import free_port, free_port_block, wait_for_port
from tests.support.polling import poll
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator, Fault
from voltrace.cli import build_parser
from voltrace.client import NovaClient

STAGES = {"parse", "authorize", "resolve_snapshot", "derive_size", "call_cinder", "translate"}


@pytest.fixture
def roomy_sim() -> Iterator[CinderSimulator]:
    """A simulator whose quota never gets in the way of many creates."""
    with CinderSimulator(
        deterministic=True, default_quotas={"volumes": -1, "gigabytes": -1}
    ) as simulator:
        yield simulator


@dataclass
class Served:
    """A running ``voltrace serve`` and the files it writes."""

    process: subprocess.Popen
    port: int
    metrics_port: int
    traces: Path
    logs: Path
    output: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create(self, **volume: Any) -> Any:
        client = NovaClient(self.url)
        try:
            return client.create_volume(volume or {"size": 1}, headers=member_headers())
        finally:
            client.close()

    def workers(self) -> list[int]:
        """gunicorn's worker pids, the children of the master (Linux /proc)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def tail(self) -> str:
        """The end of the server's own output, for a failure message."""
        return self.output.read_text(errors="replace")[-2000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


@pytest.fixture
def serve(tmp_path: Path, roomy_sim: CinderSimulator) -> Iterator[Any]:
    """Start ``python -m voltrace serve ARGS...`` against the simulator; killed at teardown."""
    started: list[Served] = []

    def start(*args: str, cinder: str | None = None) -> Served:
        n = len(started)
        # Worker i serves /metrics on metrics_port + i: reserve room for a few workers.
        port, metrics_port = free_port(), free_port_block(4)
        served = Served(
            None,
            port,
            metrics_port,
            tmp_path / f"traces-{n}.jsonl",  # type: ignore[arg-type]
            tmp_path / f"logs-{n}.jsonl",
            tmp_path / f"serve-{n}.out",
        )
        command = voltrace_command(
            "serve",
            "--port",
            str(port),
            "--cinder-endpoint",
            cinder or roomy_sim.endpoint_template,
            "--traces-file",
            str(served.traces),
            "--log-file",
            str(served.logs),
            "--log-format",
            "json",
            "--metrics-port",
            str(metrics_port),
            *args,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        with open(served.output, "ab") as out:
            served.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        started.append(served)
        wait_for_port(port, timeout=30)
        return served

    yield start
    for served in started:
        if served.process.poll() is None:
            served.process.kill()
            served.process.wait()


def spans_by_request(path: Path) -> tuple[dict[str, list[dict]], int]:
    """nova-api's spans in an OTLP JSON lines file, grouped by the create's request id."""
    spans = []
    lines = path.read_text().splitlines() if path.exists() else []
    for line in lines:
        for resource_spans in json.loads(line)["resourceSpans"]:  # every line is whole JSON
            for scope in resource_spans["scopeSpans"]:
                spans += scope["spans"]
    by_trace: dict[str, list[dict]] = {}
    for span in spans:
        by_trace.setdefault(span["traceId"], []).append(span)
    by_request: dict[str, list[dict]] = {}
    for trace in by_trace.values():
        for span in trace:
            for attribute in span.get("attributes", []):
                if attribute["key"] == "openstack.request_id" and span["kind"] == 2:
                    by_request[attribute["value"]["stringValue"]] = trace
    return by_request, len(lines)


def complete(trace: list[dict]) -> bool:
    """SERVER, pipeline, six stages and both Cinder CLIENT calls are all there."""
    names = Counter(span["name"] for span in trace)
    return (
        names["create_volume"] == 1
        and all(names[s] == 1 for s in STAGES)
        and names["POST"] == 1
        and names["GET"] == 1
        and names["POST /v2.1/os-volumes"] == 1
    )


def log_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def creates_counted(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("voltrace_creates_total{")
    )


def test_cli_defaults_match_nova():
    """Without the flags (or a nova.conf), nova's [cinder] defaults: no timeout, 3 retries."""
    args = build_parser().parse_args(["serve"])
    assert (args.cinder_timeout, args.cinder_retries) == (None, None)  # nova.conf may decide
    assert (CinderSettings().timeout, CinderSettings().http_retries) == (None, 3)
    assert args.workers == 1


def test_two_workers_answer_and_flush_on_sigterm(serve):
    """--workers 2: both workers build telemetry after fork, answer creates, and SIGTERM right
    after the last answer still leaves every trace and log line complete on disk."""
    served = serve("--workers", "2", "--threads", "4")
    poll(lambda: len(served.workers()) == 2, 60, "two gunicorn workers", detail=served.tail)
    # Each worker serves its own /metrics (port + slot): telemetry was built in the worker.
    # A worker booting on a loaded machine imports for many seconds: wait generously.
    poll(
        lambda: all(_answers(served.metrics_port + slot) for slot in (0, 1)),
        90,
        "both workers' /metrics",
        detail=served.tail,
    )

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: served.create(), range(40)))
    assert [r.status for r in responses] == [200] * 40
    request_ids = [r.header("x-openstack-request-id") for r in responses]
    counted = sum(creates_counted(scrape(served.metrics_port + slot)) for slot in (0, 1))
    assert counted == 40

    # Spans sit in the BatchSpanProcessor's queue (5 s schedule) until SIGTERM flushes them.
    assert served.stop(signal.SIGTERM) == 0
    by_request, lines = spans_by_request(served.traces)
    assert lines > 0
    assert sorted(by_request) == sorted(request_ids)
    assert all(complete(by_request[rid]) for rid in request_ids)
    events = log_events(served.logs)
    finished = [e["request_id"] for e in events if e["event"] == "request.finished"]
    assert sorted(finished) == sorted(request_ids)
    # Per-stage lines, when logged at this level, are all there too.
    stage_lines = Counter(e["event"] for e in events if e["event"].startswith("stage."))
    assert not stage_lines or stage_lines == {f"stage.{s}": 40 for s in STAGES}


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def jaeger_request_ids(path: Path) -> set[str]:
    """The request ids of the creates in a Jaeger upload file (it must be whole JSON)."""
    document = json.loads(path.read_text())
    return {
        tag["value"]
        for trace in document["data"]
        for span in trace["spans"]
        for tag in span["tags"]
        if tag["key"] == "openstack.request_id"
    }


def test_jaeger_file_per_worker_is_whole_while_running_and_after_sigterm(serve, tmp_path):
    """--jaeger-file with --workers 2: each worker keeps its own whole document
    (jaeger.w0.json, jaeger.w1.json) valid while it runs, rewritten as spans come, and
    SIGTERM leaves every trace in them, with no traceback."""
    jaeger = tmp_path / "jaeger.json"
    served = serve("--workers", "2", "--threads", "4", "--jaeger-file", str(jaeger))
    poll(lambda: len(served.workers()) == 2, what="two gunicorn workers")
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: served.create(), range(24)))
    assert [r.status for r in responses] == [200] * 24
    request_ids = {r.header("x-openstack-request-id") for r in responses}
    files = [tmp_path / "jaeger.w0.json", tmp_path / "jaeger.w1.json"]

    def written_so_far() -> set[str]:
        return set().union(*(jaeger_request_ids(f) for f in files if f.exists()))

    # Before any shutdown: the workers' periodic rewrites already hold every trace.
    poll(lambda: written_so_far() == request_ids, 30, "every trace in the running workers' files")
    assert served.stop(signal.SIGTERM) == 0
    assert written_so_far() == request_ids
    assert not jaeger.exists() and not list(tmp_path.glob("jaeger*.tmp"))
    assert "Traceback" not in served.output.read_text()


def test_sigterm_finishes_requests_in_flight(serve, roomy_sim):
    """SIGTERM while Cinder is still answering: each in-flight create completes with 200 and
    its whole trace and summary log line reach the files before the worker exits."""
    served = serve("--threads", "8")
    roomy_sim.inject(Fault("volumes.create", latency_ms=800))
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(served.create) for _ in range(6)]
        poll(
            lambda: len([r for r in roomy_sim.recorded if r.method == "POST"]) == 6,
            what="six creates in flight at Cinder",
        )
        served.process.send_signal(signal.SIGTERM)
        responses = [f.result(timeout=30) for f in futures]
    assert served.process.wait(timeout=60) == 0
    assert [r.status for r in responses] == [200] * 6
    request_ids = [r.header("x-openstack-request-id") for r in responses]
    by_request, _ = spans_by_request(served.traces)
    assert all(complete(by_request[rid]) for rid in request_ids)
    finished = {
        e["request_id"] for e in log_events(served.logs) if e["event"] == "request.finished"
    }
    assert finished == set(request_ids)


def test_sigint_stops_the_server_and_still_flushes(serve):
    """SIGINT (Ctrl-C) stops gunicorn quickly; the workers' exit hook still flushes spans."""
    served = serve()
    response = served.create()
    assert response.status == 200
    workers = served.workers()
    assert workers
    assert served.stop(signal.SIGINT, timeout=30) == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    by_request, _ = spans_by_request(served.traces)
    assert complete(by_request[response.header("x-openstack-request-id")])


def test_sigint_with_a_create_stuck_at_cinder_stops_within_its_bound(serve, roomy_sim):
    """SIGINT while a create waits on a hung Cinder (Nova's default: no timeout): the worker
    gives in-flight requests a short grace, flushes what was done, and leaves the stuck
    request behind instead of waiting for it until the arbiter's SIGKILL (30 s)."""
    served = serve()
    done = served.create()
    assert done.status == 200
    roomy_sim.inject(Fault("volumes.create", latency_ms=120_000, times=1))
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(served.create)
        poll(
            lambda: len([r for r in roomy_sim.recorded if r.method == "POST"]) == 2,
            what="the second create waiting at Cinder",
        )
        assert served.stop(signal.SIGINT, timeout=30) == 0
        with pytest.raises(OSError):  # its connection went with the worker: no answer
            stuck.result(timeout=30)
    by_request, _ = spans_by_request(served.traces)
    assert complete(by_request[done.header("x-openstack-request-id")])
    assert "still running" in served.tail()


def test_default_retries_are_three(serve, roomy_sim):
    """With no --cinder-retries, three connection resets in a row are retried into a 200."""
    served = serve()
    roomy_sim.inject(Fault("volumes.create", action="reset", times=3))
    response = served.create()
    assert response.status == 200, response.body
    assert len([r for r in roomy_sim.recorded if r.method == "POST"]) == 4


def test_default_timeout_is_none(serve, roomy_sim):
    """With no --cinder-timeout, a Cinder that takes 1.5 s is waited for (nova's none)."""
    served = serve("--cinder-retries", "0")
    roomy_sim.inject(Fault("volumes.create", latency_ms=1500, times=1))
    assert served.create().status == 200


def test_cinder_timeout_and_retries_are_honoured(serve, roomy_sim):
    """--cinder-timeout 0.3 --cinder-retries 1: two timed-out POSTs, then Nova's 500."""
    served = serve("--cinder-timeout", "0.3", "--cinder-retries", "1")
    roomy_sim.inject(Fault("volumes.create", latency_ms=1200, times=2))
    response = served.create()
    assert response.status == 500
    assert response.json()["computeFault"]["message"].endswith(
        "<class 'nova.exception.CinderConnectionFailed'>"
    )
    assert len([r for r in roomy_sim.recorded if r.method == "POST"]) == 2
    assert served.stop() == 0
    summary = next(e for e in log_events(served.logs) if e["event"] == "request.finished")
    assert summary["failure_class"] == "cinder_unreachable"
