"""``voltrace demo``: watch creates travel from nova-api to Cinder, and see how they fail.

Nothing to start or configure: the demo runs the Cinder simulator and voltrace
in this process, on free loopback ports, and sends every request over real
HTTP; nova-api reaches Cinder through the real python-cinderclient. Each
scenario is a create operators actually see (``voltrace demo --list``); for
each, the terminal shows the trace as a waterfall and a one-line diagnosis,
and the end shows a summary table::

    voltrace demo                          # every scenario, output in ./voltrace-demo/
    voltrace demo --scenario over-quota --scenario cinder-slow
    voltrace demo --otlp                   # also export to OTEL_EXPORTER_OTLP_ENDPOINT
    voltrace demo --no-color > demo.txt    # plain ASCII, for logs and CI
    voltrace demo --list                   # the scenarios, one line each
    voltrace demo --nova real              # through real nova-api 34, instrumented

The output directory holds the traces as OTLP JSON lines (``traces.jsonl``)
and as a Jaeger upload file (``jaeger.json``), the JSON logs (``logs.jsonl``),
an HTML report (``report.html``) and ``summary.json``. Earlier demo output
there is replaced. The services are always named ``nova-api``,
``cinder-api``, ``cinder-scheduler`` and ``cinder-volume``, whatever
``OTEL_SERVICE_NAME`` says.

Past Nova's answer: the simulator also plays cinder-scheduler and cinder-volume (with
short timings, so the demo stays quick), in the same trace. Every create Nova answers
200 is followed until its volume settles (``available`` or ``error``), or, for the
scenarios where a service is down, for a short bounded wait after which it counts as
stuck in ``creating``; the diagnosis then says what became of the volume.

Every scenario states what it expects (HTTP status, failed stage, failure
class, and for some what the next step must say, how many volumes Cinder must
hold afterwards, or what became of the volume after the answer); the demo exits 1
if any create answered otherwise or left no trace. Diagnoses are made from the
SDK's spans in memory, by ``voltrace.explain``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voltrace import semconv
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator, Fault
from voltrace.cinder_sim.backends import BackendFault, BackendSettings, Timing
from voltrace.client import NovaClient, identity_headers
from voltrace.explain.cli import JAEGER_URL_ENV, jaeger_link
from voltrace.explain.from_logs import diagnose_logs
from voltrace.explain.from_trace import TraceDiagnoser
from voltrace.explain.html import write_html
from voltrace.explain.model import Diagnosis
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry, TelemetryConfig, sdk_disabled
from voltrace.terminal import (
    Terminal,
    add_color_argument,
    draw_waterfall,
    escape,
    format_ms,
    quiet_when_stdout_closes,
    wrap,
)
from voltrace.testing import Captured, capture
from voltrace.traces import group_traces, spans_from_sdk

DEFAULT_OUT = "voltrace-demo"
# Hex, as keystone makes project ids: Cinder routes only ids matching its
# [DEFAULT] project_id_regex ([0-9a-f\-]+).
PROJECT = "de30de30de30de30de30de30de30de30"
USER = "demo-user"
SNAPSHOT = "{snapshot}"  # stands for the demo's snapshot id in a scenario's body
MISSING_SNAPSHOT = "3c0f7e2a-9d41-4b6e-8f0a-6c2b1d9e4a70"

# What the demo writes (and replaces) in its output directory.
TRACES_FILE, JAEGER_FILE, LOGS_FILE = "traces.jsonl", "jaeger.json", "logs.jsonl"
REPORT_FILE, SUMMARY_FILE = "report.html", "summary.json"
OUTPUT_FILES = (TRACES_FILE, JAEGER_FILE, LOGS_FILE, REPORT_FILE, SUMMARY_FILE)

# The unreachable scenario's retry budget: Nova's default is 3 retries with
# 0.5 s, 1 s, 2 s back-off; the demo keeps the shape and drops the wait.
UNREACHABLE_RETRIES = 2
UNREACHABLE_RETRY_DELAY_S = 0.05
SLOW_CINDER_MS = 300
# The hung scenario: a [cinder] timeout shorter than Cinder's answer, Nova's 3 retries.
HUNG_TIMEOUT_S = 0.25
HUNG_CINDER_MS = 600
HUNG_RETRIES = 3
TRACE_WAIT_S = 5.0

# Past the answer. Real cinder 29 takes 0.1-0.2 s to schedule and 0.2-0.3 s to create
# (shared/full-cinder.md); the demo keeps the steps and shrinks the waits.
DEMO_BACKEND = BackendSettings(
    scheduling_s=Timing(0.02, 0.02),
    volume_create_s=Timing(0.03, 0.03),
    capacity_gb=100,
    scheduler_max_attempts=3,
)
TOO_BIG_GB = 200  # over the pool's 100 GB, well under the project's 1000 GB quota
SLOW_BACKEND_S = 0.3  # the slow driver's extra time
# How long a create that cannot settle (a service down) is followed before it counts as
# stuck; creates that can settle are followed up to SETTLE_WAIT_S.
STUCK_AFTER_S = 0.3
SETTLE_WAIT_S = 5.0
SCHEDULER = semconv.SCHEDULER_SERVICE
VOLUME = semconv.VOLUME_SERVICE


@dataclass(frozen=True)
class Scenario:
    """One create, what Nova answers to it, and what the diagnosis must say."""

    name: str
    title: str
    status: int  # the HTTP status expected
    failed_stage: str | None = None
    failure_class: str | None = None
    volume: dict[str, Any] = field(default_factory=lambda: {"size": 1})
    roles: str = "member,reader"
    headers: dict[str, str] = field(default_factory=dict)
    server: str = "default"  # default, size_from_snapshot, unreachable, hung
    faults: tuple[Fault, ...] = ()
    verdict: str | None = None  # text the diagnosis's next step must contain
    # How many POSTs of this one create Cinder must receive (from its recorded requests).
    creates_received: int | None = None
    # Past the answer: the volume driver's faults, the services stopped for this create,
    # and what the verdict on the volume's fate must say.
    backend_faults: tuple[BackendFault, ...] = ()
    services_down: tuple[str, ...] = ()
    after: str | None = None

    def body(self, snapshot_id: str) -> dict[str, Any]:
        return {k: snapshot_id if v == SNAPSHOT else v for k, v in self.volume.items()}


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("plain-create", "a 1 GB volume, nothing special", 200, after="became available"),
    Scenario(
        "from-snapshot",
        "a volume from an existing snapshot",
        200,
        volume={"size": 2, "snapshot_id": SNAPSHOT},
    ),
    Scenario(
        "snapshot-not-found",
        "a snapshot id Cinder does not know (404)",
        404,
        "resolve_snapshot",
        "snapshot_not_found",
        volume={"size": 1, "snapshot_id": MISSING_SNAPSHOT},
    ),
    Scenario(
        "over-quota",
        "1500 GB in a project with 1000 GB of quota (Cinder 413 -> 403)",
        403,
        "call_cinder",
        "over_quota",
        volume={"size": 1500},
    ),
    Scenario(
        "invalid-size",
        "size 0 (400 from Nova's schema)",
        400,
        "parse",
        "schema_invalid",
        volume={"size": 0},
        verdict="Fix field 'size'",
    ),
    Scenario(
        "policy-denied",
        "a reader-only user tries to create (403)",
        403,
        "authorize",
        "policy_denied",
        roles="reader",
    ),
    Scenario(
        "microversion-2.36",
        "microversion 2.36, after os-volumes was removed (404)",
        404,
        "parse",
        "microversion_not_found",
        headers={"OpenStack-API-Version": "compute 2.36"},
    ),
    Scenario(
        "cinder-500",
        "Cinder fails with a 500",
        500,
        "call_cinder",
        "cinder_server_error",
        faults=(Fault("volumes.create", status=500, times=1),),
    ),
    Scenario(
        "cinder-slow",
        f"Cinder takes {SLOW_CINDER_MS} ms to answer (the create succeeds)",
        200,
        faults=(Fault("volumes.create", latency_ms=SLOW_CINDER_MS, times=1),),
    ),
    Scenario(
        "cinder-unreachable",
        f"nothing listens at Cinder's endpoint (500 after {UNREACHABLE_RETRIES} retries)",
        500,
        "call_cinder",
        "cinder_unreachable",
        server="unreachable",
    ),
    Scenario(
        "cinder-hung",
        f"Cinder answers after {HUNG_CINDER_MS} ms, past a {HUNG_TIMEOUT_S:g} s [cinder] "
        f"timeout: the POST is sent {HUNG_RETRIES + 1} times (500)",
        500,
        "call_cinder",
        "cinder_unreachable",
        server="hung",
        faults=(Fault("volumes.create", latency_ms=HUNG_CINDER_MS),),
        verdict=f"The create was sent {HUNG_RETRIES + 1} times; Cinder may hold up to "
        f"{HUNG_RETRIES + 1} volumes",
        creates_received=HUNG_RETRIES + 1,
    ),
    Scenario(
        "unknown-volume-type",
        "a volume type Cinder does not have (Cinder 404 -> 500)",
        500,
        "call_cinder",
        "cinder_not_found",
        volume={"size": 1, "volume_type": "gold"},
    ),
    Scenario(
        "size-from-snapshot",
        "no size: --size-from-snapshot takes the snapshot's",
        200,
        volume={"snapshot_id": SNAPSHOT},
        server="size_from_snapshot",
    ),
    Scenario(
        "no-valid-backend",
        f"{TOO_BIG_GB} GB on a {DEMO_BACKEND.capacity_gb:g} GB pool: Nova answers 200, then "
        "cinder-scheduler finds no valid backend",
        200,
        volume={"size": TOO_BIG_GB},
        after="failed in cinder-scheduler: no valid backend (capacity)",
    ),
    Scenario(
        "driver-failure-rescheduled",
        f"the volume driver fails: rescheduled to the same host, "
        f"{DEMO_BACKEND.scheduler_max_attempts} attempts, then error",
        200,
        backend_faults=(BackendFault("driver_error"),),
        after=f"failed in cinder-volume: driver error, {DEMO_BACKEND.scheduler_max_attempts} "
        "attempts (max_attempts_exceeded)",
    ),
    Scenario(
        "scheduler-down",
        "cinder-scheduler is down: the cast waits in its queue, the volume stays creating",
        200,
        services_down=(SCHEDULER,),
        after="stuck creating (waiting on cinder-scheduler)",
    ),
    Scenario(
        "volume-service-down",
        "cinder-volume stopped moments ago, still counted up: placed, then stuck creating",
        200,
        services_down=(VOLUME,),
        after=f"stuck creating (waiting on cinder-volume on {DEMO_BACKEND.volume_service_host})",
    ),
    Scenario(
        "slow-backend",
        f"the volume driver takes {SLOW_BACKEND_S:g} s longer: creating, then available",
        200,
        backend_faults=(BackendFault("slow_driver", delay_s=SLOW_BACKEND_S, times=1),),
        after="became available",
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass
class Result:
    scenario: Scenario
    status: int
    request_id: str | None
    diagnosis: Diagnosis | None
    traced: bool  # False: the trace never arrived, the diagnosis came from the logs
    creates_received: int | None = None  # POSTs Cinder received, when the scenario counts them

    @property
    def problems(self) -> list[str]:
        """How this create differs from what its scenario expects (nothing: as expected)."""
        d, s = self.diagnosis, self.scenario
        if d is None or not self.traced:
            return ["no trace"]
        found = []
        if (self.status, d.failed_stage, d.failure_class) != (
            s.status,
            s.failed_stage,
            s.failure_class,
        ):
            found.append(
                f"expected HTTP {s.status} {s.failure_class or ''} at {s.failed_stage or '-'}"
            )
        if s.verdict and s.verdict not in (d.next_step or ""):
            found.append(f"expected the next step to say: {s.verdict}")
        if s.after:
            fate = d.after_answer.sentence(self.status) if d.after_answer else "nothing"
            if s.after not in fate:
                found.append(f"expected the volume's fate to say: {s.after} (it says: {fate})")
        if s.creates_received is not None and self.creates_received != s.creates_received:
            found.append(
                f"expected Cinder to receive the create {s.creates_received} times, "
                f"it did {self.creates_received} times"
            )
        return found

    @property
    def as_expected(self) -> bool:
        return not self.problems


class Demo:
    """The simulator, one voltrace server per configuration, and shared telemetry."""

    def __init__(self, out: Path, *, otlp: bool = False, nova: str = "voltrace") -> None:
        self.out = out
        self.telemetry = Telemetry.create(
            TelemetryConfig(
                service_name=semconv.NOVA_API_SERVICE,
                use_env_service_name=False,
                traces_file=str(out / TRACES_FILE),
                jaeger_file=str(out / JAEGER_FILE),
                log_file=str(out / LOGS_FILE),
                log_format="json",
                otlp=otlp,
            )
        )
        self.cinder_telemetry = self.telemetry.sibling(semconv.CINDER_API_SERVICE)
        # With telemetry, cinder-scheduler's and cinder-volume's spans and log lines join
        # nova-api's and cinder-api's: one create, one trace, one log file.
        self.sim = CinderSimulator(
            telemetry=self.cinder_telemetry,
            backend=DEMO_BACKEND,
            # cinder's default of 10 volumes would end the library early: volumes in
            # error count too.
            default_quotas={"volumes": 100},
        ).start()
        self.snapshot_id = self.sim.add_snapshot(PROJECT, size=2, name="demo-snapshot")["id"]
        # Bound but never listening: connections to it are refused, and no one else gets it.
        self._dead = socket.socket()
        self._dead.bind(("127.0.0.1", 0))
        self._servers: dict[str, EmbeddedServer] = {}
        # --nova real: real nova-api 34 processes, instrumented, in place of voltrace serve.
        self.real_nova: Any = None
        if nova == "real":
            from voltrace.instrumentation.nova_demo import RealNovaDemo

            self.real_nova = RealNovaDemo(
                out,
                cinder_endpoint=self.sim.endpoint_template,
                traces_file=out / TRACES_FILE,
                log_file=out / LOGS_FILE,
            )

    def skip_reason(self, scenario: Scenario) -> str | None:
        """Why this scenario cannot run here (only with --nova real), or None."""
        return self.real_nova.skip_reason(scenario.server) if self.real_nova else None

    def nova_url(self, kind: str) -> str:
        return self.real_nova.url(kind) if self.real_nova else self.server(kind).url

    def server(self, kind: str) -> EmbeddedServer:
        if kind not in self._servers:
            cinder = CinderSettings(endpoint_template=self.sim.endpoint_template)
            if kind == "unreachable":
                port = self._dead.getsockname()[1]
                cinder = CinderSettings(
                    endpoint_template=f"http://127.0.0.1:{port}/v3/%(project_id)s",
                    http_retries=UNREACHABLE_RETRIES,
                    connect_retry_delay=UNREACHABLE_RETRY_DELAY_S,
                )
            elif kind == "hung":
                cinder = CinderSettings(
                    endpoint_template=self.sim.endpoint_template,
                    http_retries=HUNG_RETRIES,
                    timeout=HUNG_TIMEOUT_S,
                    connect_retry_delay=UNREACHABLE_RETRY_DELAY_S,
                )
            config = ServeConfig(cinder=cinder, size_from_snapshot=kind == "size_from_snapshot")
            self._servers[kind] = EmbeddedServer(build_service(config, self.telemetry)).start()
        return self._servers[kind]

    def run(self, scenario: Scenario, captured: Captured) -> Result:
        seen = len(self.sim.recorded_requests())
        for fault in scenario.faults:
            self.sim.inject(fault)
        for backend_fault in scenario.backend_faults:
            self.sim.inject_backend_fault(backend_fault)
        for binary in scenario.services_down:
            self.sim.stop_service(binary)
        client = NovaClient(self.nova_url(scenario.server))
        try:
            headers = identity_headers(
                user_id=USER, project_id=PROJECT, roles=scenario.roles, token="demo-token"
            )
            response = client.create_volume(
                scenario.body(self.snapshot_id), headers={**headers, **scenario.headers}
            )
            self.sim.clear_faults()
            if response.status == 200:
                stuck_after = STUCK_AFTER_S if scenario.services_down else SETTLE_WAIT_S
                self._follow(captured, response.json()["volume"]["id"], stuck_after)
        finally:
            client.close()
            self.sim.clear_faults()
            self.sim.clear_backend_faults()
            for binary in scenario.services_down:
                # A stuck create stays stuck (its trace is finished); the next finds it up.
                self.sim.start_service(binary, purge=True)
        request_id = response.header("x-openstack-request-id")
        received = None
        if scenario.creates_received is not None:
            # What Cinder itself saw, independently of any span.
            received = sum(
                1
                for r in self.sim.recorded_requests()[seen:]
                if r.method == "POST" and r.path.endswith(f"/{PROJECT}/volumes")
            )
        found, traced = (
            self.real_nova.diagnose(request_id, captured)
            if self.real_nova
            else _diagnose(captured, request_id)
        )
        # Volumes Cinder made for a create Nova gave up on (cinder-hung) settle too: let
        # them, so their spans are in this scenario's trace and not in the next one's time.
        self.sim.wait_idle(TRACE_WAIT_S)
        return Result(
            scenario, response.status, request_id, found, traced, creates_received=received
        )

    def _follow(self, captured: Captured, volume_id: str, stuck_after_s: float) -> None:
        """Until the volume settles and its settling span has ended, or stuck_after_s."""
        deadline = time.monotonic() + stuck_after_s
        while self.sim.volume_story(volume_id)["status"] == "creating":
            if time.monotonic() >= deadline:
                self.sim.wait_idle(TRACE_WAIT_S)  # what could still run has ended
                return
            time.sleep(0.01)  # the simulator's steps take 20-50 ms

        def settled(c: Captured) -> bool:
            return any(
                (s.attributes or {}).get(semconv.CINDER_VOLUME_ID) == volume_id
                and (s.attributes or {}).get(semconv.CREATE_OUTCOME)
                for s in c.spans
            )

        with contextlib.suppress(TimeoutError):  # the diagnosis then says what is missing
            captured.wait_for(settled, timeout=TRACE_WAIT_S)

    def close(self) -> None:
        if self.real_nova is not None:
            self.real_nova.close()
        for server in self._servers.values():
            server.stop()
        self.sim.stop()
        self._dead.close()
        self.cinder_telemetry.shutdown()
        self.telemetry.shutdown()


def _complete_trace(captured: Captured, request_id: str) -> list[Any]:
    """The whole trace; the Cinder spans that outlive a timed-out call are waited for too."""
    spans = captured.complete_trace(request_id, timeout=TRACE_WAIT_S)
    trace_id = spans[0].context.trace_id

    def settled(c: Captured) -> list[Any] | None:
        trace = c.trace(trace_id)
        clients = [s for s in trace if s.kind.name == "CLIENT"]
        servers = {s.parent.span_id for s in trace if s.kind.name == "SERVER" and s.parent}
        waiting = [
            s
            for s in clients
            if "ReadTimeout" in str((s.attributes or {}).get(semconv.ERROR_TYPE, ""))
            and s.context.span_id not in servers
        ]
        return None if waiting else trace

    try:
        return list(captured.wait_for(settled, timeout=TRACE_WAIT_S))
    except TimeoutError:
        return spans


def _diagnose(captured: Captured, request_id: str | None) -> tuple[Diagnosis | None, bool]:
    """From the SDK's own spans once the trace has ended; from the logs if it never does."""
    if request_id is None:
        return None, False
    try:
        spans = _complete_trace(captured, request_id)
    except TimeoutError:  # sampled out (OTEL_TRACES_SAMPLER), or lost
        return diagnose_logs(_logs_for(captured, request_id), waterfall=True), False
    diagnoser = TraceDiagnoser(waterfall=True)
    diagnoses = [
        d for trace in group_traces(spans_from_sdk(spans)) for d in diagnoser.diagnose(trace)
    ]
    found = next((d for d in diagnoses if d.request_id == request_id), None)
    return found, found is not None


def _logs_for(captured: Captured, request_id: str) -> list[dict[str, Any]]:
    """nova-api's lines of the create, and Cinder's (nova's id is their global one)."""
    return [
        e for e in captured.logs if request_id in (e.get("request_id"), e.get("global_request_id"))
    ]


# ---------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------


class Printer:
    def __init__(self, stream: Any, term: Terminal, jaeger_url: str | None = None) -> None:
        self.stream = stream
        self.term = term
        self.jaeger_url = jaeger_url

    def __call__(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def wrapped(self, text: str, indent: str = "  ", *codes: str) -> None:
        """Escaped, wrapped to the terminal between words, each line painted."""
        for line in wrap(escape(text), self.term.width - len(indent)):
            self(indent + self.term.paint(line, *codes))

    def scenario(self, index: int, total: int, scenario: Scenario) -> None:
        counter = f"[{index:>{len(str(total))}}/{total}]"
        self()
        self(
            f"{self.term.paint(counter, '2')} {self.term.paint(scenario.name, '1')}: "
            f"{scenario.title} ..."
        )

    def result(self, result: Result) -> None:
        d = result.diagnosis
        if d is None:
            self(
                self.term.paint(
                    f"  no diagnosis: HTTP {result.status}, request id "
                    f"{escape(result.request_id)}, and neither a trace nor logs",
                    "31",
                )
            )
            return
        for line in draw_waterfall(d.waterfall, d.waterfall_ms, self.term):
            self(line)
        arrow = self.term.glyph("⇒", "=>")
        color = ("1", "31") if d.failed else ("1", "32")
        lines = wrap(escape(d.headline()), self.term.width - 5)
        self(f"  {arrow} {self.term.paint(lines[0], *color)}")
        for more in lines[1:]:
            self(f"     {self.term.paint(more, *color)}")
        if d.failed and d.advice is not None and result.scenario.verdict:
            self.wrapped(d.advice.text, "     ")
            for command in d.advice.commands:
                self("       " + self.term.paint(escape(command), "1"))
        fate = d.after_answer
        if fate is not None:
            good = fate.outcome == "available"
            lines = wrap(escape(fate.sentence(d.http_status)), self.term.width - 5)
            paint = ("1", "32") if good else ("1", "31")
            self(f"  {arrow} {self.term.paint(lines[0], *paint)}")
            for more in lines[1:]:
                self(f"     {self.term.paint(more, *paint)}")
            for said in fate.messages:
                self.wrapped(f"user message {said['event_id']}: {said['user_message']}", "     ")
            if not good and fate.advice is not None:
                self.wrapped(fate.advice.text, "     ")
                for command in fate.advice.commands:
                    self("       " + self.term.paint(escape(command), "1"))
        if result.creates_received is not None:
            self(
                f"     (checked: the simulator received this one create "
                f"{result.creates_received} times)"
            )
        if d.link:
            self(f"     trace: {escape(d.link)}")
        if not result.traced:
            self(self.term.paint("  (no trace arrived: diagnosed from the logs)", "33"))
        for problem in result.problems if result.traced else []:
            self(self.term.paint(f"  !! {problem}", "1", "31"))

    def summary(self, results: Sequence[Result], elapsed_s: float) -> None:
        name_width = max(len("scenario"), *(len(r.scenario.name) for r in results))
        header = (
            f"{'scenario':<{name_width}}  {'HTTP':>4}  {'failed stage':<17}"
            f"{'failure class':<24}{'total':>10}  {'after answer':<13}as expected"
        )
        self()
        self(self.term.paint(header, "1"))
        for r in results:
            d = r.diagnosis
            ok = r.as_expected
            mark = self.term.glyph("✓", "yes") if ok else self.term.glyph("✗", "NO")
            self(
                f"{r.scenario.name:<{name_width}}  {r.status:>4}  "
                f"{(d.failed_stage if d else None) or '-':<17}"
                f"{(d.failure_class if d else None) or '-':<24}"
                f"{format_ms(d.duration_ms if d else None):>10}  "
                f"{_fate(d):<13}"
                f"{self.term.paint(mark, '32' if ok else '31')}"
            )
        failed = sum(1 for r in results if r.status >= 400)
        later = sum(
            1 for r in results if r.status < 400 and _fate(r.diagnosis) not in ("available", "-")
        )
        after = f", {later} of them failed or stuck after the answer" if later else ""
        self(
            f"{len(results)} scenarios ({len(results) - failed} answered 200{after}; {failed} "
            f"failed as designed) in {elapsed_s:.1f} s"
        )

    def files(self, out: Path, traces: int, otlp_note: str | None) -> None:
        self()
        self(
            f"Traces:  {out / TRACES_FILE}  (OTLP JSON lines, {traces} "
            f"trace{'s' if traces != 1 else ''})"
        )
        self(f"         {out / JAEGER_FILE}  (Jaeger upload JSON)")
        self(f"Logs:    {out / LOGS_FILE}  (JSON lines)")
        self(f"Report:  {out / REPORT_FILE}  (HTML waterfalls, open in any browser)")
        self(f"Summary: {out / SUMMARY_FILE}  (a JSON row per scenario)")
        if otlp_note:
            self(f"OTLP:    {otlp_note}")
        self()
        self("Open them in Jaeger: start any Jaeger UI, e.g.")
        self("    docker run --rm -p 16686:16686 jaegertracing/jaeger:latest")
        self.wrapped(
            'then open http://localhost:16686/search, pick the "JSON File" (or '
            f'"Upload") tab and drop {out / JAEGER_FILE} on it.'
        )
        self("Diagnose from the files:")
        self(f"    voltrace explain {out / TRACES_FILE} --failed")
        self(f"    voltrace explain {out} --summary")
        self(f"    voltrace explain --logs {out / LOGS_FILE} --request-id REQ")


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the scenario library end to end, in this process: the Cinder "
        "simulator and voltrace on loopback, real HTTP, real cinderclient. "
        "Exit status: 0 when every scenario answered as expected and left "
        "its trace, 1 otherwise, 2 on wrong options or an unwritable --out."
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=DEFAULT_OUT,
        help="where the traces, logs and report go (default ./%(default)s/)",
    )
    parser.add_argument(
        "--scenario",
        metavar="NAME",
        action="append",
        default=[],
        help="run only this scenario (repeatable; see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--otlp",
        action="store_true",
        help="also send the spans over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    parser.add_argument(
        "--jaeger-url",
        metavar="URL",
        default=os.environ.get(JAEGER_URL_ENV),
        help="a Jaeger UI the spans reach (with --otlp): link each scenario's "
        f"trace (env {JAEGER_URL_ENV})",
    )
    parser.add_argument(
        "--nova",
        choices=("voltrace", "real"),
        default="voltrace",
        help="nova-api to send the creates to: voltrace serve (default), or real nova-api 34 "
        "with voltrace's instrumentation (needs `python -m voltrace.instrumentation.nova_venv "
        "build` once)",
    )
    add_color_argument(parser)


def list_scenarios(term: Terminal) -> list[str]:
    """One entry per scenario, its title wrapped (never cut) beside the name."""
    width = max(len(s.name) for s in SCENARIOS)
    lines = []
    for s in SCENARIOS:
        title = wrap(s.title, term.width - width - 2)
        lines.append(f"{s.name:<{width}}  {title[0]}")
        lines.extend(" " * (width + 2) + more for more in title[1:])
    return lines


@quiet_when_stdout_closes
def run_cli(args: argparse.Namespace) -> int:
    """``voltrace demo``: 0 when every scenario answered as expected and left its trace."""
    out = sys.stdout
    term = Terminal.for_stream(out, args.color, default_width=120)
    if args.list:
        print("\n".join(list_scenarios(term)), file=out)
        return 0
    unknown = [name for name in args.scenario if name not in BY_NAME]
    if unknown:
        print(
            f"voltrace demo: unknown scenario(s) {escape(', '.join(unknown))}; "
            f"known: {', '.join(BY_NAME)}",
            file=sys.stderr,
        )
        return 2
    if args.jaeger_url and not args.jaeger_url.startswith(("http://", "https://")):
        print(
            f"voltrace demo: --jaeger-url {escape(args.jaeger_url)!r} must start with "
            "http:// or https://",
            file=sys.stderr,
        )
        return 2
    if sdk_disabled():
        print(
            "voltrace demo: OTEL_SDK_DISABLED=true turns tracing off, and the demo is "
            "about traces; unset it",
            file=sys.stderr,
        )
        return 2
    if args.nova == "real":
        from voltrace.instrumentation.nova_demo import unavailable_reason

        why = unavailable_reason()
        if why is not None:
            print(f"voltrace demo --nova real: {why}", file=sys.stderr)
            return 2
    chosen = [BY_NAME[name] for name in dict.fromkeys(args.scenario)] or list(SCENARIOS)
    out_dir = Path(args.out)
    try:
        _clear(out_dir)
    except OSError as exc:
        print(
            f"voltrace demo: cannot write to {escape(out_dir)}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    printer = Printer(out, term, args.jaeger_url)
    started = time.perf_counter()
    results: list[Result] = []
    with _quiet_retry_warnings(), capture() as captured:
        demo = Demo(out_dir, otlp=args.otlp, nova=args.nova)
        try:
            nova_kind = "real nova-api 34, instrumented" if args.nova == "real" else "voltrace"
            printer(
                f"voltrace demo: {len(chosen)} scenario(s); cinder-api (simulator) at "
                f"{demo.sim.url}, nova-api ({nova_kind}) in front of it; output in {out_dir}/"
            )
            for index, scenario in enumerate(chosen, start=1):
                printer.scenario(index, len(chosen), scenario)
                skipped = demo.skip_reason(scenario)
                if skipped is not None:
                    printer(f"  skipped with --nova real: {skipped}")
                    continue
                result = demo.run(scenario, captured)
                if result.diagnosis is not None:
                    result.diagnosis.link = jaeger_link(args.jaeger_url, result.diagnosis.trace_id)
                results.append(result)
                printer.result(result)
        finally:
            demo.close()  # flushes traces.jsonl, jaeger.json and logs.jsonl
    elapsed = time.perf_counter() - started
    shown = [r for r in results if r.diagnosis is not None]
    write_html(
        out_dir / REPORT_FILE,
        [r.diagnosis for r in shown if r.diagnosis],
        title="voltrace demo",
        names=[r.scenario.name for r in shown],
    )
    _write_summary(out_dir / SUMMARY_FILE, results)
    printer.summary(results, elapsed)
    printer.files(out_dir, sum(r.traced for r in results), _otlp_note(args.otlp, demo))
    untraced = [r.scenario.name for r in results if not r.traced]
    if untraced:
        sampler = os.environ.get("OTEL_TRACES_SAMPLER")
        why = f" (OTEL_TRACES_SAMPLER={escape(sampler)})" if sampler else ""
        print(f"voltrace demo: no trace arrived for {', '.join(untraced)}{why}", file=sys.stderr)
    wrong = [r.scenario.name for r in results if r.traced and not r.as_expected]
    if wrong:
        print(
            f"voltrace demo: not the expected answer: {', '.join(wrong)} (see above)",
            file=sys.stderr,
        )
    return 1 if untraced or wrong else 0


def _clear(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()
    probe = out_dir / f".voltrace-demo-{os.getpid()}"
    probe.write_bytes(b"")  # a read-only directory fails here, before anything starts
    probe.unlink()


@contextlib.contextmanager
def _quiet_retry_warnings() -> Iterator[None]:
    """keystoneauth warns on stderr before each connect retry; the waterfall shows them."""
    logger = logging.getLogger("keystoneauth")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _fate(d: Diagnosis | None) -> str:
    """The volume's fate after the answer, one word ("-" when nothing came after)."""
    return d.after_answer.outcome if d is not None and d.after_answer is not None else "-"


def summary_row(r: Result) -> dict[str, Any]:
    """One row of summary.json (the README documents each key)."""
    d = r.diagnosis
    return {
        "scenario": r.scenario.name,
        "title": r.scenario.title,
        "http_status": r.status,
        "request_id": r.request_id,
        "trace_id": d.trace_id if d else None,
        "failed_stage": d.failed_stage if d else None,
        "failure_class": d.failure_class if d else None,
        "duration_ms": round(d.duration_ms or 0, 3) if d else None,
        "next_step": d.next_step if d else None,
        "creates_received": r.creates_received,
        "after_answer": d.after_answer.sentence(d.http_status) if d and d.after_answer else None,
        "after_outcome": d.after_answer.outcome if d and d.after_answer else None,
        "trace_link": d.link if d else None,
        "traced": r.traced,
        "as_expected": r.as_expected,
        "problems": r.problems,
    }


def _write_summary(path: Path, results: Sequence[Result]) -> None:
    rows = [summary_row(r) for r in results]
    path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


def _otlp_note(otlp: bool, demo: Demo) -> str | None:
    if not otlp:
        return None
    endpoint = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or "the OTLP default (http://localhost:4318)"
    )
    dropped = demo.telemetry.dropped_spans
    lost = f"; {dropped} span(s) could not be delivered" if dropped else ""
    return f"spans also sent to {escape(endpoint)}{lost}"
