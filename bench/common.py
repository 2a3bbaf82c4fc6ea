"""What both benchmarks share: real processes on loopback, and reading traces back.

Every process here is started by the benchmark and stopped by it (by pid, in
``finally`` blocks): a ``voltrace cinder-sim``, one or more ``voltrace serve``,
and a rotel OTLP collector. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.rotel import RotelCollector, free_port  # noqa: E402

# Hex, as keystone makes them: cinder (and the simulator) route only ids matching
# [DEFAULT] project_id_regex = [0-9a-f\-]+.
BENCH_PROJECT = "be4c0000be4c0000be4c0000be4c0000"
BENCH_TOKEN = "bench-token"
STAGES = ("parse", "authorize", "resolve_snapshot", "derive_size", "call_cinder", "translate")
SERVER, CLIENT = 2, 3  # OTLP span kinds

__all__ = [
    "BENCH_PROJECT",
    "BENCH_TOKEN",
    "Proc",
    "RotelCollector",
    "TraceCheck",
    "check_traces",
    "free_port",
    "percentile",
    "start_serve",
    "start_sim",
    "summarise",
    "wait_for_port",
]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    """Poll until something accepts on 127.0.0.1:port (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Proc:
    """A child process we started; stopped by its pid only."""

    name: str
    popen: subprocess.Popen
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def family(self) -> list[psutil.Process]:
        """The process and its children (gunicorn's workers)."""
        try:
            parent = psutil.Process(self.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and its live children."""
        total = 0.0
        for proc in self.family():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for proc in self.family():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def _python_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for name in [k for k in env if k.startswith("OTEL_")]:
        del env[name]
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def start_sim(workdir: Path, *, traces_file: Path | None = None) -> Proc:
    """``voltrace cinder-sim`` in its own process; untraced unless traces_file is given."""
    port = free_port()
    log = workdir / f"cinder-sim-{port}.log"
    args = [sys.executable, "-m", "voltrace", "cinder-sim", "--port", str(port)]
    env: dict[str, str] = {}
    if traces_file is not None:
        args += ["--traces-file", str(traces_file)]
    else:
        env["OTEL_SDK_DISABLED"] = "true"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=_python_env(env), cwd=REPO
        )
    proc = Proc("cinder-sim", popen, port, log)
    try:
        wait_for_port(port, popen)
        _unlimited_quota(port)
    except BaseException:
        proc.stop()  # the caller never got it, so nobody else would
        raise
    return proc


def _unlimited_quota(port: int) -> None:
    """One project with unlimited quotas, so thousands of creates all succeed."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"quota_set": {"volumes": -1, "gigabytes": -1}})
    conn.request(
        "PUT",
        f"/v3/{BENCH_PROJECT}/os-quota-sets/{BENCH_PROJECT}",
        body=body,
        headers={"X-Auth-Token": BENCH_TOKEN, "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"quota update answered {response.status}")


def start_serve(
    workdir: Path,
    name: str,
    sim: Proc,
    *,
    telemetry: bool,
    workers: int = 1,
    threads: int = 16,
    collector: RotelCollector | None = None,
    extra_env: dict | None = None,
    traces_file: bool = True,
    logs: bool = True,
    metrics: bool = True,
    extra_args: list[str] | None = None,
    otlp_protocol: str = "grpc",
    package_root: Path | None = None,
) -> tuple[Proc, dict[str, Path]]:
    """``voltrace serve`` as a real gunicorn process; telemetry fully on or fully off.

    With ``telemetry``, spans go to a traces file and (given ``collector``) over OTLP
    (``otlp_protocol``: grpc or http/protobuf), logs to a JSON file, metrics to a Prometheus
    reader; the flags switch single parts off. ``package_root`` runs voltrace from another
    copy of the package (a patched one), never from the checkout.
    """
    port = free_port()
    log = workdir / f"{name}.log"
    files: dict[str, Path] = {}
    args = [
        sys.executable,
        "-m",
        "voltrace",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--cinder-endpoint",
        f"http://127.0.0.1:{sim.port}/v3/%(project_id)s",
    ]
    env: dict[str, str] = dict(extra_env or {})
    if telemetry:
        if traces_file:
            files["traces"] = workdir / f"{name}-traces.jsonl"
            args += ["--traces-file", str(files["traces"])]
        if logs:
            files["logs"] = workdir / f"{name}-logs.jsonl"
            args += ["--log-file", str(files["logs"]), "--log-format", "json"]
        else:
            # Not "--log-level off": below error, structlog's filtering logger makes every
            # info/warning call a no-op, which is what "off" costs anyway.
            args += ["--log-level", "error", "--log-file", os.devnull]
        if metrics:
            args += ["--metrics-port", str(free_port())]
        if collector is not None:
            args.append("--otlp")
            grpc = otlp_protocol == "grpc"
            env.update(
                OTEL_EXPORTER_OTLP_ENDPOINT=(
                    collector.grpc_endpoint if grpc else collector.http_endpoint
                ),
                OTEL_EXPORTER_OTLP_PROTOCOL=otlp_protocol,
            )
    else:
        args += ["--log-level", "off"]
        env["OTEL_SDK_DISABLED"] = "true"
    args += extra_args or []
    python_env = _python_env(env)
    cwd = REPO
    if package_root is not None:
        python_env["PYTHONPATH"] = str(package_root) + os.pathsep + python_env["PYTHONPATH"]
        cwd = workdir  # `python -m` puts the working directory first on sys.path
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=python_env, cwd=cwd
        )
    proc = Proc(name, popen, port, log)
    try:
        wait_for_port(port, popen)
    except BaseException:
        proc.stop()
        raise
    return proc, files


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarise(latencies_s: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies_s),
        "p50_ms": percentile(latencies_s, 50) * 1000,
        "p99_ms": percentile(latencies_s, 99) * 1000,
        "mean_ms": statistics.fmean(latencies_s) * 1000 if latencies_s else float("nan"),
    }


# ---------------------------------------------------------------------------
# Reading OTLP JSON lines back: is every create's trace complete?
# ---------------------------------------------------------------------------


def read_otlp_spans(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every span of OTLP JSON line files, normalised (the shape ``rotel_spans`` gives).

    Read by voltrace's own reader (``voltrace.traces``), the project's one OTLP JSON parser.
    """
    from voltrace.traces import TraceReader
    from voltrace.traces.otlp import KIND_NUMBERS

    existing = [path for path in paths if path.exists()]
    spans: list[dict[str, Any]] = []
    if not existing:
        return spans
    for trace in TraceReader(existing).traces():
        spans.extend(
            {
                "traceId": span.trace_id,
                "spanId": span.span_id,
                "parentSpanId": span.parent_id or "",
                "name": span.name,
                "kind": KIND_NUMBERS.get(span.kind),
                "service": span.service,
                "attrs": span.attributes,
            }
            for span in trace.spans
        )
    return spans


def rotel_spans(collector: RotelCollector) -> list[dict[str, Any]]:
    """What the rotel collector received, in the same normalised shape."""
    return [
        {
            "traceId": span["trace_id"],
            "spanId": span["span_id"],
            "parentSpanId": span["parent_span_id"] or "",
            "name": span["name"],
            "kind": span["kind"],
            "service": span["resource"].get("service.name"),
            "attrs": span["attributes"],
        }
        for span in collector.spans()
    ]


@dataclass
class TraceCheck:
    """How many of the requests sent have a complete trace in the output."""

    sent: int
    complete: int = 0
    incomplete: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    spans: int = 0

    @property
    def lost(self) -> int:
        return self.sent - self.complete


def _children(by_parent: dict[str, list[dict]], span: dict) -> list[dict]:
    return by_parent.get(span["spanId"], [])


def check_traces(
    spans: list[dict[str, Any]], request_ids: list[str], *, with_cinder: bool
) -> TraceCheck:
    """A create's trace is complete when nova-api's SERVER span, the pipeline span, all six
    stage spans, both Cinder CLIENT spans (POST, lazy GET) and, with ``with_cinder``, the
    simulator's SERVER span under each of them, are all in the output."""
    result = TraceCheck(sent=len(request_ids), spans=len(spans))
    traces: dict[str, list[dict]] = defaultdict(list)
    servers: dict[str, dict] = {}
    for span in spans:
        traces[span["traceId"]].append(span)
        if span.get("service") == "nova-api" and span.get("kind") == SERVER:
            rid = span["attrs"].get("openstack.request_id")
            if rid:
                servers[rid] = span
    for rid in request_ids:
        server = servers.get(rid)
        if server is None:
            result.missing.append(rid)
            continue
        by_parent: dict[str, list[dict]] = defaultdict(list)
        for span in traces[server["traceId"]]:
            by_parent[span.get("parentSpanId", "")].append(span)
        ok = _complete(by_parent, server, with_cinder)
        if ok:
            result.complete += 1
        else:
            result.incomplete.append(rid)
    return result


def _complete(by_parent: dict[str, list[dict]], server: dict, with_cinder: bool) -> bool:
    pipeline = [s for s in _children(by_parent, server) if s["name"] == "create_volume"]
    if len(pipeline) != 1:
        return False
    stages = {s["name"]: s for s in _children(by_parent, pipeline[0])}
    if set(stages) != set(STAGES):
        return False
    clients = [s for s in _children(by_parent, stages["call_cinder"]) if s.get("kind") == CLIENT]
    if sorted(s["name"] for s in clients) != ["GET", "POST"]:
        return False
    if with_cinder:
        for client in clients:
            callee = [
                s
                for s in _children(by_parent, client)
                if s.get("kind") == SERVER and s.get("service") == "cinder-api"
            ]
            if len(callee) != 1:
                return False
    return True


@contextlib.contextmanager
def stopping(procs: list[Any]) -> Iterator[list[Any]]:
    """Stop everything in ``procs`` (Proc or RotelCollector) on the way out, newest first."""
    try:
        yield procs
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                proc.stop()


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"
