"""The dashboard and the alert rules, proven against a real Prometheus.

One Prometheus (Debian's 2.42, 1 s scrape and evaluation intervals, exemplar storage
on) scrapes two voltrace targets under the job of ``dashboards/prometheus.yml``:

* an in-process voltrace (two servers sharing one telemetry: one in front of the
  Cinder simulator, one whose Cinder endpoint is a closed port) exposing
  ``ExemplarPrometheusMetricReader`` on a loopback port;
* a real ``voltrace serve --metrics-port`` process (gunicorn) in front of the same
  simulator;
* a real ``voltrace serve --follow-volumes`` process in front of a second simulator, whose
  asynchronous create is made to fail after the 202 (no valid backend: a volume type no
  backend matches; a driver failure rescheduled 3 times) or to never finish (a backend
  that takes 10 minutes, then cinder-volume stopped), so the follower records every
  outcome past Nova's 200.

Two rounds of traffic drive successes and every failure class, each round waited
for until Prometheus has scraped it (so every rate has two samples); the follower's
outcomes of each round are scraped before the next round too. Then cinder-volume stops
and ``STUCK_CREATES`` more creates stay in ``creating`` until ``--follow-timeout``: the
volumes-creating panel must see them, and the stuck alert fire. Then a third
in-process server, whose Cinder accepts connections and never answers (nova's default
is no timeout), holds ``HUNG_CREATES`` creates in ``call_cinder`` for the rest of the
module: the saturation panel and alert must see them. Then every
dashboard query and every alert expression runs through ``/api/v1/query``, and the
rules themselves are loaded from a copy of ``dashboards/alerts.yml`` in which each
``for:`` is ``0s`` (their real durations are covered by ``promtool test rules``).
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from tests.conftest import member_headers, require, set_volume_quota
from tests.support.cli import voltrace_command
from tests.support.net import SilentServer, free_port
from tests.support.polling import eventually, poll
from tests.support.prometheus import (
    ALERTS,
    DASHBOARD,
    DASHBOARDS,
    JOB,
    REPO,
    Prometheus,
    dashboard_targets,
    running_prometheus,
    substitute,
)
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator, Fault
from voltrace.client import NovaClient
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.stages import STAGES
from voltrace.telemetry import Telemetry, TelemetryConfig
from voltrace.telemetry.metrics import ExemplarPrometheusMetricReader

PIPELINE_STAGES = {stage.name for stage in STAGES}
# (failed_stage, failure_class, http_status) of every failure the rounds drive.
DRIVEN_FAILURES = {
    ("parse", "schema_invalid", "400"),
    ("authorize", "policy_denied", "403"),
    ("resolve_snapshot", "snapshot_not_found", "404"),
    ("call_cinder", "over_quota", "403"),
    ("call_cinder", "cinder_server_error", "500"),
    ("call_cinder", "cinder_not_found", "500"),
    ("call_cinder", "cinder_unreachable", "500"),
    ("sizelimit", "request_too_large", "413"),
    ("keystonecontext", "unauthenticated", "401"),
}
CINDER_CALLS = {
    ("POST", "/v3/{project_id}/volumes"),
    ("GET", "/v3/{project_id}/volumes/{volume_id}"),
    ("GET", "/v3/{project_id}/snapshots/{snapshot_id}"),
}
# Grafana's variables, as a user with a 1 s scrape interval would get them.
FIRING = {  # alert -> label sets it must fire with under the driven traffic
    "VoltraceCreateFailureRatioHigh": [{"job": JOB}],
    "VoltraceStageLatencyHigh": [{"job": JOB, "stage": "call_cinder"}],
    "VoltraceCinderUnreachable": [{"job": JOB}],
    "VoltraceCinderServerErrors": [{"job": JOB}],
    "VoltraceOverQuotaSpike": [{"job": JOB}],
    "VoltraceMetricsDown": [],
    "VoltraceSpansDropped": [],
    "VoltraceCreatesPilingUpInStage": [{"job": JOB, "stage": "call_cinder"}],
    "VoltraceVolumesStuckCreating": [{"job": JOB}],
    "VoltraceVolumesFailingAfterAnswer": [
        {"job": JOB, "failure_class": "no_valid_backend"},
        {"job": JOB, "failure_class": "driver_error"},
    ],
}
SLOW_S = 0.6  # injected Cinder latency: above the 0.5 s p95 threshold of the stage alert
HUNG_CREATES = 8  # the piling-up alert's threshold: half of a worker's 16 threads
# The following serve gives up on a volume still creating after this long (stuck_creating).
# Long enough for the simulator's slowest settle (3 driver attempts, ~1.2 s) on a loaded
# machine, short enough to wait for twice.
FOLLOW_TIMEOUT_S = 5.0
STUCK_CREATES = 2  # below the follower's 4 workers, so the other follows are not held up
NO_BACKEND_TYPE = "no-backend"  # extra specs no backend of the simulator matches
# How each follow scenario ends: (outcome, failure_class) of voltrace_volume_async_outcomes.
FOLLOW_OUTCOMES = {
    "follow_available": ("available", "none"),
    "follow_no_valid_backend": ("error", "no_valid_backend"),
    "follow_driver_error": ("error", "driver_error"),
    "follow_slow_backend": ("stuck_creating", "stuck_creating"),
    "follow_volume_service_down": ("stuck_creating", "stuck_creating"),
}


def alert_rules() -> list[dict]:
    return [
        rule
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


@dataclass
class Stack:
    prometheus: Prometheus
    instances: dict[str, str]  # "inproc" / "serve" / "follow" -> Prometheus instance label
    expected_creates: dict[str, int]
    # (outcome, failure_class) -> followed creates that must have ended so, once settled
    expected_outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    scenario_of_trace: dict[int, str] = field(default_factory=dict)
    slow_traces: set[int] = field(default_factory=set)
    started: float = 0.0


class Driver:
    """Sends creates with a known traceparent, so exemplars can be traced back."""

    def __init__(self, stack: Stack, urls: dict[str, str]) -> None:
        self.stack = stack
        self.urls = urls

    def create(
        self,
        scenario: str,
        target: str = "inproc",
        volume: dict | None = None,
        headers: dict[str, str] | None = None,
        status: int = 200,
        **kwargs: Any,
    ) -> int:
        trace_id = uuid.uuid4().int >> 1
        self.stack.scenario_of_trace[trace_id] = scenario
        headers = dict(member_headers() if headers is None else headers)
        headers["traceparent"] = f"00-{trace_id:032x}-{uuid.uuid4().int >> 65:016x}-01"
        client = NovaClient(self.urls[target])
        try:
            response = client.create_volume(volume, headers=headers, **kwargs)
        finally:
            client.close()
        assert response.status == status, (scenario, response.status, response.body[:300])
        counted = "inproc" if target == "unreachable" else target
        self.stack.expected_creates[counted] += 1
        if scenario in FOLLOW_OUTCOMES:
            outcome = FOLLOW_OUTCOMES[scenario]
            expected = self.stack.expected_outcomes
            expected[outcome] = expected.get(outcome, 0) + 1
        return trace_id


def drive_round(driver: Driver, sim: CinderSimulator, snapshot_id: str, slow: bool) -> None:
    """Successes and every failure class; with ``slow``, three creates Cinder holds 0.6 s."""
    if slow:
        sim.inject(Fault("volumes.create", latency_ms=SLOW_S * 1000, times=3))
        with ThreadPoolExecutor(3) as pool:
            traces = list(pool.map(lambda _: driver.create("slow", volume={"size": 1}), range(3)))
        driver.stack.slow_traces.update(traces)
    for _ in range(2):
        driver.create("success", volume={"size": 1})
    driver.create("success", volume={"size": 1, "snapshot_id": snapshot_id})
    driver.create("schema_invalid", volume={"size": 0}, status=400)
    driver.create(
        "policy_denied", volume={"size": 1}, headers=member_headers(roles="reader"), status=403
    )
    driver.create(
        "snapshot_not_found", volume={"size": 1, "snapshot_id": str(uuid.uuid4())}, status=404
    )
    for _ in range(8):
        driver.create(
            "over_quota",
            volume={"size": 1},
            headers=member_headers(project_id="a1ce0000000000000000000000000002"),
            status=403,
        )
    sim.inject(Fault("volumes.create", status=500, times=3))
    for _ in range(3):
        driver.create("cinder_server_error", volume={"size": 1}, status=500)
    driver.create("cinder_not_found", volume={"size": 1, "volume_type": "no-such-type"}, status=500)
    driver.create("cinder_unreachable", "unreachable", volume={"size": 1}, status=500)
    driver.create(
        "request_too_large",
        raw_body=b'{"volume": {"size": 1, "name": "' + b"x" * 120_000 + b'"}}',
        status=413,
    )
    driver.create("unauthenticated", volume={"size": 1}, headers={}, status=401)
    # The gunicorn process: a few creates through the real `voltrace serve`.
    for _ in range(2):
        driver.create("success", "serve", volume={"size": 1})
    driver.create(
        "policy_denied",
        "serve",
        volume={"size": 1},
        headers=member_headers(roles="reader"),
        status=403,
    )
    # The following `voltrace serve`: each answered 200, then Cinder decides.
    driver.create("follow_available", "follow", volume={"size": 1})
    driver.create(
        "follow_no_valid_backend", "follow", volume={"size": 1, "volume_type": NO_BACKEND_TYPE}
    )
    # The fault-injecting driver's knob (as in the real recipe): fail, reschedule, 3 times.
    driver.create("follow_driver_error", "follow", volume={"size": 1, "metadata": {"fault": "x"}})
    if not slow:  # once: a backend that needs 10 minutes, so the follower gives up first
        driver.create(
            "follow_slow_backend", "follow", volume={"size": 1, "metadata": {"sleep_s": "600"}}
        )


def scraped_counts(stack: Stack) -> dict[str, int]:
    result = stack.prometheus.query(f'sum by (instance) (voltrace_creates_total{{job="{JOB}"}})')
    by_instance = {r["metric"].get("instance"): round(float(r["value"][1])) for r in result}
    return {name: by_instance.get(instance, 0) for name, instance in stack.instances.items()}


def scraped_outcomes(stack: Stack) -> dict[tuple[str, str], int]:
    result = stack.prometheus.query(
        f'sum by (outcome, failure_class) (voltrace_volume_async_outcomes_total{{job="{JOB}"}})'
    )
    return {
        (r["metric"]["outcome"], r["metric"]["failure_class"]): round(float(r["value"][1]))
        for r in result
    }


def wait_scraped(stack: Stack, settled: set[tuple[str, str]] | None = None) -> None:
    """Until Prometheus has every create, and the follower's outcomes of the ``settled``
    classes (default: all but stuck_creating, which takes --follow-timeout)."""
    poll(
        lambda: scraped_counts(stack) == stack.expected_creates,
        what=f"Prometheus to scrape {stack.expected_creates} creates",
        detail=lambda: scraped_counts(stack),
    )
    wanted = {
        outcome: count
        for outcome, count in stack.expected_outcomes.items()
        if (outcome in settled if settled is not None else outcome[0] != "stuck_creating")
    }
    poll(
        lambda: {k: v for k, v in scraped_outcomes(stack).items() if k in wanted} == wanted,
        FOLLOW_TIMEOUT_S * 4,
        what=f"Prometheus to scrape the followed outcomes {wanted}",
        detail=lambda: scraped_outcomes(stack),
    )


def listening(port: int, process: subprocess.Popen | None = None) -> bool:
    if process is not None:
        assert process.poll() is None, "voltrace serve exited"
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Prometheus scraping voltrace, after two scraped rounds of successes and failures."""
    require(
        bool(shutil.which("prometheus")),
        "Debian's prometheus package (apt-get install "
        "prometheus) is needed to test the dashboard and alerts against Prometheus",
    )
    tmp = tmp_path_factory.mktemp("prometheus")
    started = time.time()
    sim = CinderSimulator(
        deterministic=True, default_quotas={"volumes": -1, "gigabytes": -1}
    ).start()
    closers: list[Callable[[], Any]] = [sim.stop]
    async_sim = CinderSimulator(
        deterministic=True,
        default_quotas={"volumes": -1, "gigabytes": -1},
        volume_types=("__DEFAULT__", "lvmdriver-1", NO_BACKEND_TYPE),
        volume_type_extra_specs={NO_BACKEND_TYPE: {"volume_backend_name": "nope"}},
    ).start()
    closers.append(async_sim.stop)
    try:
        # Prometheus first: it scrapes nothing for its first ~5 s (service discovery
        # updates are throttled), which the rest of the setup overlaps.
        metrics_port, serve_port, serve_metrics = free_port(), free_port(), free_port()
        follow_port, follow_metrics = free_port(), free_port()
        instances = {
            "inproc": f"127.0.0.1:{metrics_port}",
            "serve": f"127.0.0.1:{serve_metrics}",
            "follow": f"127.0.0.1:{follow_metrics}",
        }
        running = running_prometheus(tmp, list(instances.values()))
        prometheus = running.__enter__()
        closers.append(lambda: running.__exit__(None, None, None))
        stack = Stack(prometheus, instances, dict.fromkeys(instances, 0), started=started)

        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        # The driver's traceparents must be continued, so exemplars lead back to them.
        env["VOLTRACE_TRUST_INCOMING_TRACE_CONTEXT"] = "true"
        serve = start_serve(tmp, "serve", env, serve_port, serve_metrics, sim.endpoint_template)
        closers.append(functools.partial(stop_process, serve))
        follow = start_serve(
            tmp,
            "follow",
            env,
            follow_port,
            follow_metrics,
            async_sim.endpoint_template,
            "--follow-volumes",
            "--follow-timeout",
            str(FOLLOW_TIMEOUT_S),
        )
        closers.append(functools.partial(stop_process, follow))

        registry = CollectorRegistry()
        telemetry = Telemetry.create(
            TelemetryConfig(
                service_name="nova-api",
                use_env_service_name=False,
                metric_readers=[ExemplarPrometheusMetricReader(registry=registry)],
                log_stream=io.StringIO(),
                log_format="json",
                span_processor="simple",
                trust_incoming_trace_context=True,
            )
        )
        closers.append(telemetry.shutdown)
        metrics_server, _ = start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
        # Closers run newest first: shutdown, then server_close.
        closers.append(metrics_server.server_close)
        closers.append(metrics_server.shutdown)
        servers = {
            "inproc": EmbeddedServer(
                build_service(
                    ServeConfig(
                        cinder=CinderSettings(
                            endpoint_template=sim.endpoint_template, http_retries=0
                        )
                    ),
                    telemetry,
                )
            ),
            "unreachable": EmbeddedServer(
                build_service(
                    ServeConfig(
                        cinder=CinderSettings(
                            endpoint_template=f"http://127.0.0.1:{free_port()}/v3/%(project_id)s",
                            http_retries=0,
                        )
                    ),
                    telemetry,
                )
            ),
        }
        for server in servers.values():
            server.start()
            closers.append(server.stop)
        urls = {name: server.url for name, server in servers.items()}
        urls["serve"] = f"http://127.0.0.1:{serve_port}"
        urls["follow"] = f"http://127.0.0.1:{follow_port}"

        set_volume_quota(sim, "a1ce0000000000000000000000000002", 0)
        snapshot_id = sim.add_snapshot("a1ce0000000000000000000000000001", size=1)["id"]
        poll(
            lambda: all(
                listening(port, process)
                for port, process in (
                    (serve_metrics, serve),
                    (serve_port, serve),
                    (follow_metrics, follow),
                    (follow_port, follow),
                )
            ),
            what="voltrace serve to listen",
        )
        # Each round is scraped before the next, so every series has a sample before
        # round 2 and every rate over the window is positive.
        driver = Driver(stack, urls)
        drive_round(driver, sim, snapshot_id, slow=False)
        wait_scraped(stack)
        drive_round(driver, sim, snapshot_id, slow=True)
        wait_scraped(stack)
        stop_cinder_volume(stack, driver, async_sim)
        hold_creates_in_call_cinder(stack, telemetry, closers)
        yield stack
    finally:
        for close in reversed(closers):
            close()


def start_serve(
    tmp: Path,
    name: str,
    env: dict[str, str],
    port: int,
    metrics_port: int,
    endpoint: str,
    *extra: str,
) -> subprocess.Popen:
    """A real `voltrace serve` (gunicorn) as a user starts it, its log and stderr in tmp."""
    return subprocess.Popen(
        voltrace_command(
            "serve",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
            "--cinder-endpoint",
            endpoint,
            "--cinder-retries",
            "0",
            "--log-file",
            str(tmp / f"{name}.log"),
            *extra,
        ),
        cwd=REPO,
        env=env,
        stderr=(tmp / f"{name}.err").open("w"),
    )


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=20)


def stop_cinder_volume(stack: Stack, driver: Driver, async_sim: CinderSimulator) -> None:
    """cinder-volume stops: STUCK_CREATES creates answered 200 stay in creating.

    The scheduler still sees the service up (its last heartbeat is recent), so it casts to
    it and the casts wait in its queue: the follower counts each in voltrace_volumes_creating
    until --follow-timeout, then as stuck_creating.
    """
    # The slow backend's volume of round 1 has been given up on first, so what is creating
    # from here on is only these.
    wait_scraped(stack, settled=set(FOLLOW_OUTCOMES.values()))
    async_sim.stop_service("cinder-volume")
    for _ in range(STUCK_CREATES):
        driver.create("follow_volume_service_down", "follow", volume={"size": 1})
    query = (
        f'voltrace_volumes_creating{{job="{JOB}",instance="{stack.instances["follow"]}"}}'
        f" >= {STUCK_CREATES}"
    )
    poll(lambda: stack.prometheus.query(query), what="Prometheus to see the volumes creating")
    wait_scraped(stack, settled=set(FOLLOW_OUTCOMES.values()))


def hold_creates_in_call_cinder(
    stack: Stack, telemetry: Telemetry, closers: list[Callable[[], Any]]
) -> None:
    """HUNG_CREATES creates held in call_cinder by a hung Cinder until the module ends."""
    hung = SilentServer()  # a hung cinder-api
    server = EmbeddedServer(
        build_service(
            ServeConfig(
                cinder=CinderSettings(
                    endpoint_template=f"http://127.0.0.1:{hung.port}/v3/%(project_id)s",
                    http_retries=0,
                )
            ),
            telemetry,
        )
    ).start()
    closers.append(server.stop)
    pool = ThreadPoolExecutor(HUNG_CREATES)

    def create() -> int:
        client = NovaClient(server.url)
        try:
            return client.create_volume({"size": 1}, headers=member_headers()).status
        finally:
            client.close()

    futures = [pool.submit(create) for _ in range(HUNG_CREATES)]

    def release() -> None:
        hung.close()
        for future in futures:
            future.result(timeout=60)  # each fails now; its thread must be done
        pool.shutdown()

    closers.append(release)  # closers run newest first: before the servers stop
    query = (
        f'voltrace_stage_in_flight{{job="{JOB}",instance="{stack.instances["inproc"]}",'
        f'stage="call_cinder"}} >= {HUNG_CREATES}'
    )
    poll(lambda: stack.prometheus.query(query), what="Prometheus to see the creates held by Cinder")


def labels_of(result: list[dict], *keys: str) -> set[tuple[str, ...]]:
    return {tuple(r["metric"].get(k, "") for k in keys) for r in result}


def values_of(result: list[dict]) -> list[float]:
    return [float(r["value"][1]) for r in result]


def finite_and_positive(result: list[dict]) -> bool:
    return all(0 < v < float("inf") for v in values_of(result))


# What each dashboard query must return under the driven traffic: (panel, refId) -> check.
def _creates_by_outcome(r: list[dict]) -> None:
    assert labels_of(r, "outcome") == {("success",), ("client_error",), ("server_error",)}
    assert finite_and_positive(r)


def _ratio(r: list[dict]) -> None:
    [value] = values_of(r)
    assert 0 < value < 1


def _per_stage(r: list[dict]) -> None:
    assert {s for (s,) in labels_of(r, "stage")} == PIPELINE_STAGES
    assert finite_and_positive(r)


def _slow_call_cinder(r: list[dict]) -> None:
    _per_stage(r)
    by_stage = {x["metric"]["stage"]: float(x["value"][1]) for x in r}
    assert by_stage["call_cinder"] > 0.5  # the three creates Cinder held 0.6 s


def _failures(r: list[dict]) -> None:
    assert labels_of(r, "failed_stage", "failure_class", "http_status") == DRIVEN_FAILURES
    assert finite_and_positive(r)


def _failures_rate(r: list[dict]) -> None:
    assert labels_of(r, "failed_stage", "failure_class") == {f[:2] for f in DRIVEN_FAILURES}
    assert finite_and_positive(r)


def _create_latency(r: list[dict]) -> None:
    assert labels_of(r, "outcome") == {("success",), ("client_error",), ("server_error",)}
    assert finite_and_positive(r)


def _cinder_latency(r: list[dict]) -> None:
    assert labels_of(r, "http_request_method", "http_route") == CINDER_CALLS
    assert finite_and_positive(r)


def _cinder_status(r: list[dict]) -> None:
    assert {s for (s,) in labels_of(r, "http_response_status_code")} == {
        "200",
        "202",
        "404",
        "413",
        "500",
    }
    assert labels_of(r, "http_request_method", "http_route") == CINDER_CALLS
    assert finite_and_positive(r)


def _no_dropped_spans(r: list[dict]) -> None:
    assert values_of(r) == [0.0]


def _creates_in_flight(r: list[dict]) -> None:
    by_stage = {x["metric"]["stage"]: float(x["value"][1]) for x in r}
    assert set(by_stage) == PIPELINE_STAGES
    assert by_stage.pop("call_cinder") == HUNG_CREATES
    assert set(by_stage.values()) == {0.0}


SETTLED = {("available", "none"), ("error", "no_valid_backend"), ("error", "driver_error")}
ASYNC_CLASSES = {*SETTLED, ("stuck_creating", "stuck_creating")}


def _settle_time(r: list[dict]) -> None:
    # stuck_creating is left out by the query: its time is always --follow-timeout.
    assert labels_of(r, "outcome") == {("available",), ("error",)}
    assert finite_and_positive(r)


def _async_outcomes(r: list[dict]) -> None:
    # Every driven class, with a rate; any other class (a series started at 0) stays at 0.
    by_class = {(x["metric"]["outcome"], x["metric"]["failure_class"]): x for x in r}
    assert set(by_class) >= ASYNC_CLASSES
    assert finite_and_positive([by_class[c] for c in ASYNC_CLASSES])
    assert all(values_of([x]) == [0.0] for c, x in by_class.items() if c not in ASYNC_CLASSES)


def _no_dropped_follows(r: list[dict]) -> None:
    assert values_of(r) == [0.0]


def _volumes_creating(points: list[float]) -> None:
    # Over the module's time range, as the timeseries draws it: the stopped cinder-volume's
    # volumes were all seen creating at once, and every follow has ended since.
    assert max(points) >= STUCK_CREATES
    assert points[-1] == 0.0


PANEL_CHECKS: dict[tuple[str, str], Callable[[list[dict]], None]] = {
    ("Creates per second by outcome", "A"): _creates_by_outcome,
    ("Error ratio", "A"): _ratio,
    ("Error ratio", "B"): _ratio,
    ("Stage latency p50", "A"): _per_stage,
    ("Stage latency p95", "A"): _slow_call_cinder,
    ("Stage latency p99", "A"): _slow_call_cinder,
    ("Stage latency per stage (time range)", "A"): _per_stage,
    ("Stage latency per stage (time range)", "B"): _slow_call_cinder,
    ("Stage latency per stage (time range)", "C"): _slow_call_cinder,
    ("Stage latency per stage (time range)", "D"): _per_stage,
    ("Which stage fails, by failure class", "A"): _failures,
    ("Failures per second by stage and failure class", "A"): _failures_rate,
    ("Create latency p50 / p95 / p99", "A"): _create_latency,
    ("Create latency p50 / p95 / p99", "B"): _create_latency,
    ("Create latency p50 / p95 / p99", "C"): _create_latency,
    ("Cinder call latency p50 / p95 / p99", "A"): _cinder_latency,
    ("Cinder call latency p50 / p95 / p99", "B"): _cinder_latency,
    ("Cinder call latency p50 / p95 / p99", "C"): _cinder_latency,
    ("Cinder calls per second by status", "A"): _cinder_status,
    ("Spans dropped (time range)", "A"): _no_dropped_spans,
    ("Creates in flight per stage", "A"): _creates_in_flight,
    ("Time from 200 to available / error p50 / p95 / p99", "A"): _settle_time,
    ("Time from 200 to available / error p50 / p95 / p99", "B"): _settle_time,
    ("Time from 200 to available / error p50 / p95 / p99", "C"): _settle_time,
    ("Async outcomes per second by class", "A"): _async_outcomes,
    ("Async outcomes by class (time range)", "A"): _async_outcomes,
    ("Follows dropped (time range)", "A"): _no_dropped_follows,
}
# Panels whose instant value says little (a gauge back at 0): checked over a range.
RANGE_CHECKS: dict[tuple[str, str], Callable[[list[float]], None]] = {
    ("Volumes still creating (followed now)", "A"): _volumes_creating,
}


def range_points(stack: Stack, expr: str) -> list[float]:
    """The one series ``expr`` draws from the module's start until now, 1 s apart."""
    data = stack.prometheus.api(
        "query_range",
        query=expr,
        start=f"{stack.started:.3f}",
        end=f"{time.time():.3f}",
        step="1",
    )
    assert data["resultType"] == "matrix", data
    [series] = data["result"]
    return [float(value) for _, value in series["values"]]


def test_prometheus_scrapes_every_voltrace_target(stack: Stack) -> None:
    """Both targets (in-process and `voltrace serve`) are up, named nova-api, and counted."""
    prometheus = stack.prometheus

    def check() -> None:
        up = {
            r["metric"]["instance"]: values_of([r])[0]
            for r in prometheus.query(f'up{{job="{JOB}"}}')
        }
        assert up == {instance: 1.0 for instance in stack.instances.values()}
        info = prometheus.query(f'target_info{{job="{JOB}"}}')
        assert labels_of(info, "instance", "service_name") == {
            (instance, "nova-api") for instance in stack.instances.values()
        }
        assert scraped_counts(stack) == stack.expected_creates
        serve = stack.instances["serve"]
        outcomes = prometheus.query(
            f'sum by (outcome) (voltrace_creates_total{{job="{JOB}",instance="{serve}"}})'
        )
        assert {r["metric"]["outcome"]: values_of([r])[0] for r in outcomes} == {
            "success": 4.0,
            "client_error": 2.0,
        }

    eventually(check)


def test_every_dashboard_query_returns_the_expected_series(stack: Stack) -> None:
    """Each panel query parses in Prometheus and returns the series the traffic implies."""
    targets = dashboard_targets()
    assert {(title, t["refId"]) for title, t in targets} == set(PANEL_CHECKS) | set(RANGE_CHECKS)
    for title, target in targets:
        expr = substitute(target["expr"])

        def check(title: str = title, ref: str = target["refId"], expr: str = expr) -> None:
            result: Any = None
            try:
                if (title, ref) in RANGE_CHECKS:
                    result = range_points(stack, expr)
                    RANGE_CHECKS[(title, ref)](result)
                else:
                    result = stack.prometheus.query(expr)
                    PANEL_CHECKS[(title, ref)](result)
            except AssertionError as error:
                raise AssertionError(f"{title} {ref}: {expr}\n-> {result}") from error

        eventually(check)


def test_dashboard_job_variable_lists_the_scrape_job(stack: Stack) -> None:
    """The $job variable's label_values(voltrace_creates_total, job) finds the scrape job."""
    [variable] = [
        v for v in json.loads(DASHBOARD.read_text())["templating"]["list"] if v["name"] == "job"
    ]
    match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["query"])
    assert match, variable["query"]
    metric, label = match.groups()
    assert stack.prometheus.api(f"label/{label}/values", **{"match[]": metric}) == [JOB]


def test_every_alert_expression_matches_the_driven_failures(stack: Stack) -> None:
    """Each alert expr parses; those the failures should trip return the right label sets."""
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == set(FIRING)
    for rule in rules:

        def check(rule: dict = rule) -> None:
            result = stack.prometheus.query(rule["expr"])
            got = [dict(r["metric"]) for r in result]
            assert sorted(got, key=str) == sorted(FIRING[rule["alert"]], key=str), (
                rule["alert"],
                result,
            )

        eventually(check)


def test_alerts_fire_with_summary_and_runbook(stack: Stack) -> None:
    """The loaded rules fire exactly the expected alerts, with rendered summary and runbook."""
    expected = {
        (name, tuple(sorted(labels.items())))
        for name, label_sets in FIRING.items()
        for labels in label_sets
    }
    seen: dict[str, Any] = {}

    def firing() -> set[tuple[str, tuple]]:
        seen["alerts"] = [
            a for a in stack.prometheus.api("alerts")["alerts"] if a["state"] == "firing"
        ]
        return {
            (
                a["labels"]["alertname"],
                tuple(
                    sorted(
                        (k, v) for k, v in a["labels"].items() if k not in ("alertname", "severity")
                    )
                ),
            )
            for a in seen["alerts"]
        }

    def detail() -> Any:
        targets = stack.prometheus.api("targets")["activeTargets"]
        return firing(), [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]

    poll(lambda: firing() == expected, what=f"alerts {sorted(expected)} to fire", detail=detail)
    for alert in seen["alerts"]:  # the very alerts that matched
        annotations = alert["annotations"]
        assert "{{" not in annotations["summary"] and JOB in annotations["summary"]
        assert annotations["runbook"].startswith("1. ")
        assert alert["labels"]["severity"] in ("critical", "warning")
    rendered = {a["labels"]["alertname"]: a["annotations"]["summary"] for a in seen["alerts"]}
    assert re.fullmatch(
        r"p95 of stage call_cinder is \d+(\.\d+)?ms \(voltrace\)",
        rendered["VoltraceStageLatencyHigh"],
    )
    assert re.fullmatch(
        r"\d+(\.\d+)?% of volume creates are refused over quota \(voltrace\)",
        rendered["VoltraceOverQuotaSpike"],
    )


def exemplars(stack: Stack, selector: str) -> list[tuple[dict, dict]]:
    data = stack.prometheus.api(
        "query_exemplars",
        query=selector,
        start=f"{stack.started - 60:.3f}",
        end=f"{time.time() + 60:.3f}",
    )
    return [
        (series["seriesLabels"], exemplar) for series in data for exemplar in series["exemplars"]
    ]


def test_slow_bucket_exemplars_open_the_slow_creates(stack: Stack) -> None:
    """The slow creates' traces are exemplars of call_cinder's and the create's slow buckets."""
    for selector in (
        'voltrace_stage_duration_seconds_bucket{stage="call_cinder"}',
        'voltrace_create_duration_seconds_bucket{outcome="success"}',
    ):
        found = [
            (series["le"], int(e["labels"]["trace_id"], 16), float(e["value"]))
            for series, e in exemplars(stack, selector)
        ]
        assert {trace for _, trace, _ in found} <= set(stack.scenario_of_trace), selector
        slow = [(le, value) for le, trace, value in found if trace in stack.slow_traces]
        assert slow, selector
        for le, value in slow:  # in a bucket above the injected latency, as observed
            assert SLOW_S <= value <= float(le), (selector, le, value)


def test_counter_exemplars_link_each_failure_class_to_its_traces(stack: Stack) -> None:
    """Every exemplar on voltrace_creates_total belongs to a create of that failure class."""
    found = exemplars(stack, f'voltrace_creates_total{{instance="{stack.instances["inproc"]}"}}')
    classes = set()
    for series, exemplar in found:
        scenario = stack.scenario_of_trace[int(exemplar["labels"]["trace_id"], 16)]
        expected = "none" if scenario in ("success", "slow") else scenario
        assert series["failure_class"] == expected, (series, scenario)
        classes.add(series["failure_class"])
    assert classes == {f[1] for f in DRIVEN_FAILURES} | {"none"}


def _promtool(*args: str) -> subprocess.CompletedProcess:
    require(bool(shutil.which("promtool")), "promtool (Debian package prometheus) is needed")
    return subprocess.run(
        ["promtool", *args], cwd=DASHBOARDS, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_check_rules() -> None:
    """promtool accepts dashboards/alerts.yml."""
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_cover_every_alert() -> None:
    """promtool test rules passes, with a firing case for every alert in alerts.yml."""
    tests = yaml.safe_load((DASHBOARDS / "alerts.test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if not case["exp_alerts"]
    }
    names = {rule["alert"] for rule in alert_rules()}
    assert fired == names
    assert quiet == names
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    """dashboards/prometheus.yml (with the rule file it names) is a valid Prometheus config."""
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
