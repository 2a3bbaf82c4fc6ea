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

The output directory holds the traces as OTLP JSON lines (``traces.jsonl``)
and as a Jaeger upload file (``jaeger.json``), the JSON logs (``logs.jsonl``),
an HTML report (``report.html``) and ``summary.json``. Earlier demo output
there is replaced. The services are always named ``nova-api`` and
``cinder-api``, whatever ``OTEL_SERVICE_NAME`` says.

Every scenario states what it expects (HTTP status, failed stage, failure
class); the demo exits 1 if any create answered otherwise or left no trace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator, Fault
from voltrace.client import NovaClient, identity_headers
from voltrace.diagnosis import (
    Diagnosis,
    Style,
    diagnose_logs,
    diagnose_traces,
    format_ms,
    stops_quietly_when_stdout_closes,
    use_color,
)
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry, TelemetryConfig, sdk_disabled
from voltrace.telemetry.exporters import otlp_json
from voltrace.testing import Captured, capture
from voltrace.traces import group_traces, spans_from_otlp
from voltrace.waterfall import render_text, write_html

DEFAULT_OUT = "voltrace-demo"
PROJECT = "demo-project"
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
TRACE_WAIT_S = 5.0


@dataclass(frozen=True)
class Scenario:
    """One create, and what Nova answers to it."""

    name: str
    title: str
    status: int  # the HTTP status expected
    failed_stage: str | None = None
    failure_class: str | None = None
    volume: dict[str, Any] = field(default_factory=lambda: {"size": 1})
    roles: str = "member,reader"
    headers: dict[str, str] = field(default_factory=dict)
    server: str = "default"  # default, size_from_snapshot, unreachable
    faults: tuple[Fault, ...] = ()

    def body(self, snapshot_id: str) -> dict[str, Any]:
        return {k: snapshot_id if v == SNAPSHOT else v for k, v in self.volume.items()}


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("plain-create", "a 1 GB volume, nothing special", 200),
    Scenario("from-snapshot", "a volume from an existing snapshot", 200,
             volume={"size": 2, "snapshot_id": SNAPSHOT}),
    Scenario("snapshot-not-found", "a snapshot id Cinder does not know (404)", 404,
             "resolve_snapshot", "snapshot_not_found",
             volume={"size": 1, "snapshot_id": MISSING_SNAPSHOT}),
    Scenario("over-quota", "1500 GB in a project with 1000 GB of quota (Cinder 413 -> 403)",
             403, "call_cinder", "over_quota", volume={"size": 1500}),
    Scenario("invalid-size", "size 0 (400 from Nova's schema)", 400, "parse", "schema_invalid",
             volume={"size": 0}),
    Scenario("policy-denied", "a reader-only user tries to create (403)", 403, "authorize",
             "policy_denied", roles="reader"),
    Scenario("microversion-2.36", "microversion 2.36, after os-volumes was removed (404)", 404,
             "parse", "microversion_not_found",
             headers={"OpenStack-API-Version": "compute 2.36"}),
    Scenario("cinder-500", "Cinder fails with a 500", 500, "call_cinder", "cinder_server_error",
             faults=(Fault("volumes.create", status=500, times=1),)),
    Scenario("cinder-slow", f"Cinder takes {SLOW_CINDER_MS} ms to answer (the create succeeds)",
             200, faults=(Fault("volumes.create", latency_ms=SLOW_CINDER_MS, times=1),)),
    Scenario("cinder-unreachable",
             f"nothing listens at Cinder's endpoint (500 after {UNREACHABLE_RETRIES} retries)",
             500, "call_cinder", "cinder_unreachable", server="unreachable"),
    Scenario("unknown-volume-type", "a volume type Cinder does not have (Cinder 404 -> 500)",
             500, "call_cinder", "cinder_not_found", volume={"size": 1, "volume_type": "gold"}),
    Scenario("size-from-snapshot", "no size: --size-from-snapshot takes the snapshot's", 200,
             volume={"snapshot_id": SNAPSHOT}, server="size_from_snapshot"),
)
BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass
class Result:
    scenario: Scenario
    status: int
    request_id: str | None
    diagnosis: Diagnosis | None
    traced: bool  # False: the trace never arrived, the diagnosis came from the logs

    @property
    def as_expected(self) -> bool:
        d, s = self.diagnosis, self.scenario
        return (d is not None and self.traced and self.status == s.status
                and d.failed_stage == s.failed_stage and d.failure_class == s.failure_class)


class Demo:
    """The simulator, one voltrace server per configuration, and shared telemetry."""

    def __init__(self, out: Path, *, otlp: bool = False) -> None:
        self.out = out
        self.telemetry = Telemetry.create(TelemetryConfig(
            service_name="nova-api", use_env_service_name=False,
            traces_file=str(out / TRACES_FILE), jaeger_file=str(out / JAEGER_FILE),
            log_file=str(out / LOGS_FILE), log_format="json", otlp=otlp,
        ))
        self.cinder_telemetry = self.telemetry.sibling("cinder-api")
        self.sim = CinderSimulator(tracer_provider=self.cinder_telemetry.tracer_provider).start()
        self.snapshot_id = self.sim.add_snapshot(PROJECT, size=2, name="demo-snapshot")["id"]
        # Bound but never listening: connections to it are refused, and no one else gets it.
        self._dead = socket.socket()
        self._dead.bind(("127.0.0.1", 0))
        self._servers: dict[str, EmbeddedServer] = {}

    def server(self, kind: str) -> EmbeddedServer:
        if kind not in self._servers:
            cinder = CinderSettings(endpoint_template=self.sim.endpoint_template)
            config = ServeConfig(cinder=cinder, size_from_snapshot=kind == "size_from_snapshot")
            if kind == "unreachable":
                port = self._dead.getsockname()[1]
                config.cinder = CinderSettings(
                    endpoint_template=f"http://127.0.0.1:{port}/v3/%(project_id)s",
                    http_retries=UNREACHABLE_RETRIES,
                    connect_retry_delay=UNREACHABLE_RETRY_DELAY_S)
            self._servers[kind] = EmbeddedServer(build_service(config, self.telemetry)).start()
        return self._servers[kind]

    def run(self, scenario: Scenario, captured: Captured) -> Result:
        for fault in scenario.faults:
            self.sim.inject(fault)
        client = NovaClient(self.server(scenario.server).url)
        try:
            headers = identity_headers(user_id=USER, project_id=PROJECT, roles=scenario.roles,
                                       token="demo-token")
            response = client.create_volume(scenario.body(self.snapshot_id),
                                            headers={**headers, **scenario.headers})
        finally:
            client.close()
            self.sim.clear_faults()
        request_id = response.header("x-openstack-request-id")
        return Result(scenario, response.status, request_id,
                      *_diagnose(captured, request_id))

    def close(self) -> None:
        for server in self._servers.values():
            server.stop()
        self.sim.stop()
        self._dead.close()
        self.cinder_telemetry.shutdown()
        self.telemetry.shutdown()


def _diagnose(captured: Captured, request_id: str | None) -> tuple[Diagnosis | None, bool]:
    """From the whole trace once it has ended; from the logs if it never arrives."""
    if request_id is None:
        return None, False
    try:
        spans = captured.complete_trace(request_id, timeout=TRACE_WAIT_S)
    except TimeoutError:  # sampled out (OTEL_TRACES_SAMPLER), or lost
        return diagnose_logs(captured.logs_for(request_id)), False
    diagnoses = diagnose_traces(group_traces(spans_from_otlp(otlp_json(spans))))
    found = next((d for d in diagnoses if d.request_id == request_id), None)
    return found, found is not None


# ---------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------


class Printer:
    def __init__(self, stream: Any, style: Style) -> None:
        self.stream = stream
        self.style = style
        self.width = shutil.get_terminal_size((120, 24)).columns

    def __call__(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def scenario(self, index: int, total: int, scenario: Scenario) -> None:
        counter = f"[{index:>{len(str(total))}}/{total}]"
        self()
        self(f"{self.style(counter, '2')} {self.style(scenario.name, '1')}: {scenario.title} ...")

    def result(self, result: Result) -> None:
        d = result.diagnosis
        if d is None:
            self(self.style(f"  no diagnosis: HTTP {result.status}, request id "
                            f"{result.request_id}, and neither a trace nor logs", "31"))
            return
        for line in render_text(d, width=self.width, style=self.style):
            self(line)
        arrow = "=>" if not self.style.color else "⇒"
        color = ("1", "31") if d.failed else ("1", "32")
        self(f"  {arrow} {self.style(d.headline(), *color)}")
        if not result.traced:
            self(self.style("  (no trace arrived: diagnosed from the logs)", "33"))
        if not result.as_expected:
            s = result.scenario
            self(self.style(f"  !! expected HTTP {s.status} {s.failure_class or ''} at "
                            f"{s.failed_stage or '-'}", "1", "31"))

    def summary(self, results: Sequence[Result], elapsed_s: float) -> None:
        name_width = max(len("scenario"), *(len(r.scenario.name) for r in results))
        header = (f"{'scenario':<{name_width}}  {'HTTP':>4}  {'failed stage':<17}"
                  f"{'failure class':<24}{'total':>10}  as expected")
        self()
        self(self.style(header, "1"))
        for r in results:
            d = r.diagnosis
            ok = r.as_expected
            mark = ("✓" if self.style.color else "yes") if ok else (
                "✗" if self.style.color else "NO")
            self(f"{r.scenario.name:<{name_width}}  {r.status:>4}  "
                 f"{(d.failed_stage if d else None) or '-':<17}"
                 f"{(d.failure_class if d else None) or '-':<24}"
                 f"{format_ms(d.duration_ms if d else None):>10}  "
                 f"{self.style(mark, '32' if ok else '31')}")
        failed = sum(1 for r in results if r.status >= 400)
        self(f"{len(results)} scenarios ({len(results) - failed} created, {failed} failed as "
             f"designed) in {elapsed_s:.1f} s")

    def files(self, out: Path, traces: int, otlp_note: str | None) -> None:
        self()
        self(f"Traces:  {out / TRACES_FILE}  (OTLP JSON lines, {traces} "
             f"trace{'s' if traces != 1 else ''})")
        self(f"         {out / JAEGER_FILE}  (Jaeger upload JSON)")
        self(f"Logs:    {out / LOGS_FILE}  (JSON lines)")
        self(f"Report:  {out / REPORT_FILE}  (HTML waterfalls, open in any browser)")
        if otlp_note:
            self(f"OTLP:    {otlp_note}")
        self()
        self("Open them in Jaeger: start any Jaeger UI, e.g.")
        self("    docker run --rm -p 16686:16686 jaegertracing/jaeger:latest")
        self("  then open http://localhost:16686/search, pick the \"JSON File\" (or \"Upload\") "
             f"tab and drop {out / JAEGER_FILE} on it.")
        self("Diagnose from the files:")
        self(f"    voltrace explain {out / TRACES_FILE} --failed")
        self(f"    voltrace explain --logs {out / LOGS_FILE} --request-id REQ")


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run the scenario library end to end, in this process: the Cinder "
                          "simulator and voltrace on loopback, real HTTP, real cinderclient.")
    parser.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                        help="where the traces, logs and report go (default ./%(default)s/)")
    parser.add_argument("--scenario", metavar="NAME", action="append", default=[],
                        help="run only this scenario (repeatable; see --list)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--otlp", action="store_true",
                        help="also send the spans over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT")
    parser.add_argument("--no-color", action="store_true",
                        help="plain ASCII output, no colours (also NO_COLOR, or not a TTY)")


@stops_quietly_when_stdout_closes
def run_cli(args: argparse.Namespace) -> int:
    """``voltrace demo``: 0 when every scenario answered as expected and left its trace."""
    out = sys.stdout
    if args.list:
        width = max(len(s.name) for s in SCENARIOS)
        for s in SCENARIOS:
            print(f"{s.name:<{width}}  {s.title}", file=out)
        return 0
    unknown = [name for name in args.scenario if name not in BY_NAME]
    if unknown:
        print(f"voltrace demo: unknown scenario(s) {', '.join(unknown)}; "
              f"known: {', '.join(BY_NAME)}", file=sys.stderr)
        return 2
    if sdk_disabled():
        print("voltrace demo: OTEL_SDK_DISABLED=true turns tracing off, and the demo is "
              "about traces; unset it", file=sys.stderr)
        return 2
    chosen = [BY_NAME[name] for name in dict.fromkeys(args.scenario)] or list(SCENARIOS)
    out_dir = Path(args.out)
    _clear(out_dir)
    printer = Printer(out, Style(use_color(out, args.no_color)))
    started = time.perf_counter()
    results: list[Result] = []
    with _quiet_retry_warnings(), capture() as captured:
        demo = Demo(out_dir, otlp=args.otlp)
        try:
            printer(f"voltrace demo: {len(chosen)} scenario(s); cinder-api (simulator) at "
                    f"{demo.sim.url}, nova-api (voltrace) in front of it; output in {out_dir}/")
            for index, scenario in enumerate(chosen, start=1):
                printer.scenario(index, len(chosen), scenario)
                result = demo.run(scenario, captured)
                results.append(result)
                printer.result(result)
        finally:
            demo.close()  # flushes traces.jsonl, jaeger.json and logs.jsonl
    elapsed = time.perf_counter() - started
    shown = [r for r in results if r.diagnosis is not None]
    write_html(out_dir / REPORT_FILE, [r.diagnosis for r in shown if r.diagnosis],
               title="voltrace demo", names=[r.scenario.name for r in shown])
    _write_summary(out_dir / SUMMARY_FILE, results)
    printer.summary(results, elapsed)
    printer.files(out_dir, sum(r.traced for r in results), _otlp_note(args.otlp, demo))
    untraced = [r.scenario.name for r in results if not r.traced]
    if untraced:
        sampler = os.environ.get("OTEL_TRACES_SAMPLER")
        why = f" (OTEL_TRACES_SAMPLER={sampler})" if sampler else ""
        print(f"voltrace demo: no trace arrived for {', '.join(untraced)}{why}",
              file=sys.stderr)
    wrong = [r.scenario.name for r in results if r.traced and not r.as_expected]
    if wrong:
        print(f"voltrace demo: not the expected answer: {', '.join(wrong)} (see above)",
              file=sys.stderr)
    return 1 if untraced or wrong else 0


def _clear(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:
        with contextlib.suppress(FileNotFoundError):
            (out_dir / name).unlink()


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


def _write_summary(path: Path, results: Sequence[Result]) -> None:
    rows = [{
        "scenario": r.scenario.name,
        "title": r.scenario.title,
        "http_status": r.status,
        "request_id": r.request_id,
        "trace_id": r.diagnosis.trace_id if r.diagnosis else None,
        "failed_stage": r.diagnosis.failed_stage if r.diagnosis else None,
        "failure_class": r.diagnosis.failure_class if r.diagnosis else None,
        "duration_ms": round(r.diagnosis.duration_ms or 0, 3) if r.diagnosis else None,
        "traced": r.traced,
        "as_expected": r.as_expected,
    } for r in results]
    path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


def _otlp_note(otlp: bool, demo: Demo) -> str | None:
    if not otlp:
        return None
    endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                or "the OTLP default (http://localhost:4318)")
    dropped = demo.telemetry.dropped_spans
    lost = f"; {dropped} span(s) could not be delivered" if dropped else ""
    return f"spans also sent to {endpoint}{lost}"
