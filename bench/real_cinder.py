"""Real Cinder benchmarks: voltrace's added latency, and what tracing costs inside Cinder.

    python bench/real_cinder.py latency --runs 30 [--osprofiler]   # ~1 min
    python bench/real_cinder.py tracing --creates 20               # ~2 min

``latency`` alternates the same create: python-cinderclient straight to a real
cinder-api 29 (simple mode: noauth, sqlite), then through ``voltrace serve`` (gunicorn,
traced to an OTLP JSON file, JSON logs). It prints medians and the paired difference,
and voltrace's own in-process time per create read back from its trace file with
``voltrace.traces`` (server span minus its Cinder CLIENT spans). With ``--osprofiler``
cinder profiles and voltrace signs (the OSProfiler bridge on).

``tracing`` starts the complete Cinder (api + scheduler + volume, own RabbitMQ and
PostgreSQL) once per tracing mode (``off``, ``osprofiler``, ``otel``), sends creates one
at a time (signed for OSProfiler, a W3C ``traceparent`` for OTel), and prints per mode:
bring-up time, POST latency, POST → ``available``, the services' CPU per create, the
spans that reach a real collector (rotel) per create, and PSS/RSS. Half the creates succeed,
half fail in the driver (rescheduled three times), so both shapes of trace are counted.

Every process is started here and stopped by PID in ``finally`` blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RotelCollector, free_port, percentile, wait_for_port

from voltrace.devtools import cinder_stack, processes
from voltrace.devtools.real_cinder import Profiler, RealCinder, ensure_venv
from voltrace.osprofiler import signed_headers
from voltrace.traces.model import group_traces
from voltrace.traces.otlp import spans_from_otlp


def _summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values) * 1e3, 3),
        "p10": round(percentile(list(values), 10) * 1e3, 3),
        "p90": round(percentile(list(values), 90) * 1e3, 3),
    }


# ---------------------------------------------------------------------------
# latency: cinder-api alone vs the same create through voltrace
# ---------------------------------------------------------------------------


def own_cost_from_traces(path: Path) -> dict[str, float] | None:
    """Per create: nova-api's SERVER span minus its Cinder CLIENT spans = voltrace's own time.

    ``path`` is voltrace's ``--traces-file`` (OTLP JSON, one export request per line).
    """
    if not path.exists():
        return None
    spans = [
        span
        for line in path.read_text().splitlines()
        if line.strip()
        for span in spans_from_otlp(json.loads(line))
    ]
    own: list[float] = []
    for trace in group_traces(spans):
        servers = [s for s in trace.spans if s.kind == "server" and s.service == "nova-api"]
        if len(servers) != 1:
            continue
        clients_ns = sum(s.end_ns - s.start_ns for s in trace.spans if s.kind == "client")
        own.append((servers[0].end_ns - servers[0].start_ns - clients_ns) / 1e9)
    return _summary_ms(own) if own else None


def latency(runs: int = 30, warmup: int = 3, osprofiler: bool = False) -> dict[str, Any]:
    from cinderclient import client as cinder_client
    from keystoneauth1 import session as ks_session
    from keystoneauth1.token_endpoint import Token

    from voltrace.client import NovaClient, identity_headers

    ensure_venv(progress=sys.stderr)
    key = uuid.uuid4().hex if osprofiler else None
    project, user = uuid.uuid4().hex, "bench-user"
    token = f"{user}:{project}"
    timings: dict[str, list[float]] = {"cinder": [], "voltrace": []}
    with tempfile.TemporaryDirectory(prefix="voltrace-bench-") as tmp:
        workdir = Path(tmp)
        collector = RotelCollector(workdir).start() if key else None
        profiler = Profiler(key, collector.http_endpoint) if key and collector else None
        try:
            with RealCinder(workdir / "cinder", profiler=profiler) as cinder:
                cinder.set_quota(project, volumes=-1, gigabytes=-1)
                nova_port = free_port()
                env = {k: v for k, v in os.environ.items() if not k.startswith("VOLTRACE_")}
                env["OTEL_TRACES_EXPORTER"] = "none"
                if key:
                    env["VOLTRACE_OSPROFILER_HMAC_KEY"] = key
                command = [
                    sys.executable,
                    "-m",
                    "voltrace",
                    "serve",
                    "--port",
                    str(nova_port),
                    "--cinder-endpoint",
                    cinder.endpoint_template,
                    "--workers",
                    "1",
                    "--traces-file",
                    str(workdir / "traces.jsonl"),
                    "--log-file",
                    str(workdir / "voltrace.log"),
                    "--log-format",
                    "json",
                ]
                with open(workdir / "serve.out", "wb") as serve_out:
                    nova = subprocess.Popen(
                        command,
                        env=env,
                        stdout=serve_out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                try:
                    wait_for_port(nova_port, nova)
                    direct = cinder_client.Client(
                        "3.0",
                        session=ks_session.Session(),
                        auth=Token(endpoint=cinder.url, token=token),
                        endpoint_override=cinder.endpoint_template % {"project_id": project},
                    )
                    client = NovaClient(f"http://127.0.0.1:{nova_port}")
                    headers = identity_headers(
                        user_id=user, project_id=project, roles="member", token=token
                    )

                    def via_cinder() -> None:
                        volume = direct.volumes.create(1, name="bench")
                        # Nova's _untranslate_volume_summary_view: this triggers the lazy GET.
                        hasattr(volume, "volume_image_metadata")

                    def via_voltrace() -> None:
                        response = client.create_volume(
                            {"size": 1, "display_name": "bench"}, headers=headers
                        )
                        if response.status != 200:
                            raise RuntimeError(
                                f"voltrace answered {response.status}: {response.body!r}"
                            )

                    for index in range(warmup + runs):
                        order = [("cinder", via_cinder), ("voltrace", via_voltrace)]
                        if index % 2:
                            order.reverse()  # alternate who goes first
                        for name, call in order:
                            started = time.perf_counter()
                            call()
                            if index >= warmup:
                                timings[name].append(time.perf_counter() - started)
                    client.close()
                finally:
                    nova.send_signal(signal.SIGTERM)
                    try:
                        nova.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        nova.kill()
                        nova.wait()
        finally:
            if collector is not None:
                collector.stop()
        own = own_cost_from_traces(workdir / "traces.jsonl")
    return {
        "runs": runs,
        "osprofiler_bridge": osprofiler,
        "cinder_ms": _summary_ms(timings["cinder"]),
        "voltrace_ms": _summary_ms(timings["voltrace"]),
        "added_ms_median": round(
            (statistics.median(timings["voltrace"]) - statistics.median(timings["cinder"])) * 1e3, 3
        ),
        # Each run's pair, voltrace minus cinder: robust to drifting machine load.
        "added_ms_paired_median": round(
            statistics.median(
                v - c for v, c in zip(timings["voltrace"], timings["cinder"], strict=True)
            )
            * 1e3,
            3,
        ),
        "voltrace_in_process_ms_from_trace": own,
    }


# ---------------------------------------------------------------------------
# tracing: OSProfiler vs the OpenTelemetry instrumentations inside Cinder's services
# ---------------------------------------------------------------------------


def _cpu_seconds(pids: Sequence[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _headers(mode: str, key: str, trace_id: int, span_id: int) -> dict[str, str]:
    if mode == "osprofiler":
        return signed_headers(trace_id, span_id, key)
    if mode == "otel":
        return {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-01"}
    return {}


def _wait_for_quiet(collector: RotelCollector, trace_ids: set[str], timeout: float = 60) -> list:
    """Spans leave each service one at a time: wait until the count stops growing."""
    count, deadline = -1, time.monotonic() + timeout
    while time.monotonic() < deadline:
        spans = [s for s in collector.spans() if s["trace_id"] in trace_ids]
        if len(spans) == count:
            return spans
        count = len(spans)
        time.sleep(2.0)  # settle interval for the exporters, not a synchronisation
    return spans


def tracing(
    creates: int = 20, modes: Sequence[str] = cinder_stack.TRACING_MODES, idle_s: float = 10.0
) -> dict[str, Any]:
    """All modes at once, one stack each on one broker, creates interleaved round by round.

    Running side by side means machine load hits every mode alike. Each stack's background
    CPU (heartbeats every second, periodic tasks) is measured while idle and subtracted.
    """
    from voltrace.devtools import postgres, rabbitmq

    venv = cinder_stack.ensure_full(progress=sys.stderr)
    key = uuid.uuid4().hex
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="voltrace-bench-tracing-") as tmp:
        workdir = Path(tmp)
        stacks: dict[str, cinder_stack.CinderStack] = {}
        everything: list[int] = []
        with (
            RotelCollector(workdir) as collector,
            rabbitmq.RabbitMQ(workdir / "rabbitmq", vhosts=modes) as broker,
            postgres.Postgres(cinder_stack.template_dir(venv) / "data") as pg,
        ):
            try:
                for mode in modes:
                    tracing_ = cinder_stack.Tracing(
                        mode,
                        collector.http_endpoint if mode != "off" else None,
                        key if mode == "osprofiler" else None,
                    )
                    started = time.monotonic()
                    stacks[mode] = cinder_stack.CinderStack(
                        workdir / mode,
                        broker.transport_url(mode),
                        pg.create_database(mode),
                        venv=venv,
                        tracing=tracing_,
                    ).start()
                    results[mode] = {
                        "mode": mode,
                        "creates": creates,
                        "bring_up_s": round(time.monotonic() - started, 1),
                    }
                everything = [
                    *broker.pids,
                    *pg.pids,
                    *(p for s in stacks.values() for p in s.pids()),
                ]
                pids = {mode: stack.pids() for mode, stack in stacks.items()}
                idle_before = {mode: _cpu_seconds(p) for mode, p in pids.items()}
                time.sleep(idle_s)  # the measurement window for background CPU
                background = {
                    mode: (_cpu_seconds(p) - idle_before[mode]) / idle_s for mode, p in pids.items()
                }
                project = uuid.uuid4().hex
                for stack in stacks.values():
                    stack.set_quota(project, volumes=-1, gigabytes=-1)
                posts: dict[str, list[float]] = {m: [] for m in modes}
                settled: dict[str, dict[str, list[float]]] = {
                    m: {"available": [], "error": []} for m in modes
                }
                trace_ids: dict[str, set[str]] = {m: set() for m in modes}
                cpu_before = {mode: _cpu_seconds(p) for mode, p in pids.items()}
                window_started = time.monotonic()
                for index in range(creates):
                    metadata = {"fault": "backend"} if index % 2 else {}
                    order = list(modes) if index % 2 else list(reversed(modes))
                    for mode in order:
                        stack = stacks[mode]
                        trace_id, span_id = uuid.uuid4().int, uuid.uuid4().int >> 64
                        trace_ids[mode].add(f"{trace_id:032x}")
                        t0 = time.perf_counter()
                        answer = stack.request(
                            "POST",
                            f"/v3/{project}/volumes",
                            {"volume": {"size": 1, "metadata": metadata}},
                            project=project,
                            headers=_headers(mode, key, trace_id, span_id),
                        )
                        posts[mode].append(time.perf_counter() - t0)
                        volume_id = answer.body["volume"]["id"]
                        while (status := stack.get_volume(project, volume_id)["status"]) == (
                            "creating"
                        ):
                            time.sleep(0.02)  # polling interval
                        settled[mode].setdefault(status, []).append(time.perf_counter() - t0)
                window = time.monotonic() - window_started
                cpu = {mode: _cpu_seconds(p) - cpu_before[mode] for mode, p in pids.items()}
                memory = {
                    mode: cinder_stack.memory_mb({s: stack.pids(s) for s in cinder_stack.SERVICES})
                    for mode, stack in stacks.items()
                }
                for mode in modes:
                    spans = _wait_for_quiet(collector, trace_ids[mode]) if mode != "off" else []
                    by_service: dict[str, int] = {}
                    for span in spans:
                        name = span["resource"].get("service.name", "?")
                        by_service[name] = by_service.get(name, 0) + 1
                    own_cpu = cpu[mode] - background[mode] * window
                    results[mode].update(
                        {
                            "post_ms": _summary_ms(posts[mode]),
                            "to_available_ms": _summary_ms(settled[mode]["available"]),
                            "to_error_ms": _summary_ms(settled[mode]["error"]),
                            "background_cpu_ms_per_s": round(background[mode] * 1e3, 1),
                            "service_cpu_ms_per_create": round(own_cpu / creates * 1e3, 1),
                            "spans_per_create": round(len(spans) / creates, 1),
                            "spans_by_service": by_service,
                            "services_memory_mb_pss_rss": memory[mode],
                        }
                    )
            finally:
                for stack in stacks.values():
                    stack.stop()
    left = [pid for pid in everything if processes.alive(pid)]
    if left:
        raise RuntimeError(f"processes left running after stop: {left}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    lat = commands.add_parser("latency", help="voltrace's added latency over a real cinder-api")
    lat.add_argument("--runs", type=int, default=30)
    lat.add_argument(
        "--osprofiler",
        action="store_true",
        help="cinder profiles and voltrace signs (key generated)",
    )
    tr = commands.add_parser("tracing", help="OSProfiler vs OTel instrumentation in Cinder")
    tr.add_argument("--creates", type=int, default=20)
    tr.add_argument(
        "--modes",
        nargs="+",
        choices=cinder_stack.TRACING_MODES,
        default=list(cinder_stack.TRACING_MODES),
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.command == "latency":
        result: Any = latency(args.runs, osprofiler=args.osprofiler)
    else:
        result = tracing(args.creates, args.modes)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
