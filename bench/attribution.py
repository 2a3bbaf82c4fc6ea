"""Where a traced create's cost goes: each telemetry part added one at a time, side by side.

    python bench/attribution.py                 # ~3 minutes; prints the budget table
    python bench/attribution.py --rounds 10 --per-round 150 --json out.json
    python bench/attribution.py --package-root /tmp/patched   # measure a patched copy

One ``voltrace cinder-sim`` (untraced, unlimited quota) behind one ``voltrace serve``
(gunicorn, 1 worker) per mode, all running at once; the client in a process of its own;
two rotel collectors (one per OTLP protocol). Creates go one at a time, in interleaved
rounds: each round runs every mode for ``--per-round`` creates, in an order shuffled anew
each round, so drift on a noisy machine hits every mode alike. The modes, each adding one
part to the one before:

    floor        no nova: python-cinderclient POST + the lazy GET, straight to the simulator
    off          voltrace serve, OTEL_SDK_DISABLED=true, --log-level off (no telemetry at all)
    sdk          the SDK on (providers built, observer hooked in), no part emitting anything
    server       + the SERVER span (opentelemetry-instrumentation-wsgi + the annotator)
    client       + the CLIENT spans (opentelemetry-instrumentation-requests)
    stages       + the pipeline span and the six stage spans
    logs         + JSON log lines to a file (7 per create)
    metrics      + metrics (Prometheus reader): every part, still no exporter
    otlp-http    + OTLP/HTTP to rotel       <- the production configuration
    otlp-grpc    + OTLP/gRPC to rotel       (instead of OTLP/HTTP)
    traces-file  + the OTLP JSON file       (instead)
    jaeger-file  + the Jaeger JSON file     (instead)
    nova         real nova-api 34, untraced, same simulator (``--real-nova``; its venv is
                 built by ``python -m voltrace.devtools.real_nova build``)
    baseline     the production configuration run from ``--baseline-root DIR`` (another copy
                 of the package: the code before a change), same rounds, its own collector

Parts are switched with ``VOLTRACE_TELEMETRY_COMPONENTS`` (a bench-only knob), exporters
with the usual options. Latency is client-observed wall time; CPU per create is the server
process tree's user+system CPU over the whole measured run, export threads included, less
its idle rate (for the floor: the client process's CPU). Marginal costs are differences
of pooled p50s (the +/- is half the interquartile range of the same difference taken round
by round). Afterwards the servers are stopped with SIGTERM and every exporter's output is
checked for a complete trace per create.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import (
    ALL_COMPONENTS,
    ClientProcess,
    package_honours_components,
    start_voltrace,
)
from common import (
    CLIENT,
    REPO,
    SERVER,
    Proc,
    RotelCollector,
    check_traces,
    percentile,
    read_otlp_spans,
    rotel_spans,
    start_sim,
    stopping,
    wait_for_port,
)

# Issue 16's targets for the production configuration (voltrace serve).
TARGETS = {"on/off p50": 1.15, "on/off CPU": 1.4, "on/floor p50": 1.8}
PRODUCTION = "otlp-http"
# Longer than the BatchSpanProcessor's 5 s schedule delay: every queued span gets exported.
DRAIN_S = 6.0
IDLE_WINDOW_S = 3.0


@dataclass(frozen=True)
class Mode:
    name: str
    what: str
    baseline: str | None  # the mode this one adds a part to
    telemetry: bool = True
    components: tuple[str, ...] = ALL_COMPONENTS
    exporter: str | None = None
    baseline_root: bool = False  # run from --baseline-root instead of --package-root


def _chain() -> list[Mode]:
    modes = [
        Mode("floor", "bare cinderclient POST + lazy GET", None, telemetry=False),
        Mode("off", "voltrace serve, telemetry off", "floor", telemetry=False),
        Mode("sdk", "SDK on, nothing emitted", "off", components=()),
    ]
    what = {
        "server": "SERVER span",
        "client": "CLIENT spans (requests)",
        "stages": "pipeline + stage spans",
        "logs": "JSON logs to a file",
        "metrics": "metrics (Prometheus reader)",
    }
    previous = "sdk"
    for i, part in enumerate(ALL_COMPONENTS):
        modes.append(Mode(part, what[part], previous, components=ALL_COMPONENTS[: i + 1]))
        previous = part
    for exporter, text in (
        ("otlp-http", "OTLP/HTTP to rotel (production)"),
        ("otlp-grpc", "OTLP/gRPC to rotel"),
        ("traces-file", "OTLP JSON traces file"),
        ("jaeger-file", "Jaeger JSON file"),
    ):
        modes.append(Mode(exporter, text, previous, exporter=exporter))
    return modes


MODES = _chain()
REAL_NOVA = Mode("nova", "real nova-api 34, untraced", "floor", telemetry=False)
# --baseline-root: the production configuration of another copy (the code before a change),
# in the same interleaved rounds, so before and after are compared on the same machine state.
BASELINE = Mode(
    "baseline", "production, --baseline-root copy", "off", exporter="otlp-http", baseline_root=True
)
BY_NAME = {m.name: m for m in [*MODES, REAL_NOVA, BASELINE]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    package_root = Path(args.package_root).resolve()
    if not package_honours_components(package_root):
        raise SystemExit(
            f"{package_root}/voltrace does not read VOLTRACE_TELEMETRY_COMPONENTS: "
            "every mode would run everything. Point --package-root at a copy "
            "with the knob (see bench/README.md)."
        )
    modes = [m for m in MODES if not args.only or m.name in (*args.only, "floor", "off")]
    if args.real_nova:
        modes.append(REAL_NOVA)
    baseline_root = Path(args.baseline_root).resolve() if args.baseline_root else None
    if baseline_root is not None:
        modes.append(BASELINE)
    workdir = Path(tempfile.mkdtemp(prefix="voltrace-bench-attribution-"))
    procs: list[Any] = []
    with stopping(procs):
        sim = start_sim(workdir)
        procs.append(sim)
        collectors = {
            "otlp-http": RotelCollector(workdir / "rotel-http"),
            "otlp-grpc": RotelCollector(workdir / "rotel-grpc"),
        }
        if baseline_root is not None:  # its own collector: each copy's delivery is checked
            collectors[BASELINE.name] = RotelCollector(workdir / "rotel-baseline")
        for collector in collectors.values():
            collector.workdir.mkdir()
            procs.append(collector.start())
        servers: dict[str, Proc] = {}
        files: dict[str, dict[str, Path]] = {}
        for mode in modes:  # started together: the imports overlap
            if mode.name in ("floor", "nova"):
                continue
            servers[mode.name], files[mode.name] = start_voltrace(
                workdir,
                mode.name,
                sim.port,
                telemetry=mode.telemetry,
                components=mode.components,
                exporters=[mode.exporter] if mode.exporter else [],
                collector=collectors.get(mode.name, collectors.get(mode.exporter or "")),
                package_root=(baseline_root if mode.baseline_root else None) or package_root,
                wait=False,
            )
            procs.append(servers[mode.name])
        if args.real_nova:
            servers["nova"] = start_real_nova(workdir, sim, procs)
        for server in servers.values():
            wait_for_port(server.port, server.popen, timeout=90)

        client = ClientProcess(workdir)
        procs.append(client)
        for mode in modes:
            if mode.name == "floor":
                client.floor(mode.name, sim.port)
            else:
                client.nova(mode.name, f"http://127.0.0.1:{servers[mode.name].port}")

        request_ids: dict[str, list[str]] = {m.name: [] for m in modes}
        for mode in modes:  # imports, pools, caches, the first exports
            request_ids[mode.name] += client.run(mode.name, args.warmup)["request_ids"]

        def cpu_of(name: str) -> float:
            return servers[name].cpu_seconds() if name in servers else 0.0

        time.sleep(DRAIN_S)  # the warm-up's spans leave before CPU is counted
        idle_start = {name: cpu_of(name) for name in servers}
        time.sleep(IDLE_WINDOW_S)
        cpu_start = {name: cpu_of(name) for name in servers}
        idle_rate = {name: (cpu_start[name] - idle_start[name]) / IDLE_WINDOW_S for name in servers}
        sim_cpu: dict[str, float] = dict.fromkeys(BY_NAME, 0.0)
        client_cpu: dict[str, float] = dict.fromkeys(BY_NAME, 0.0)
        latencies: dict[str, list[float]] = {m.name: [] for m in modes}
        round_p50: dict[str, list[float]] = {m.name: [] for m in modes}
        rng = random.Random(args.seed)
        started = time.monotonic()
        for _ in range(args.rounds):
            order = list(modes)
            rng.shuffle(order)
            for mode in order:
                sim_before = sim.cpu_seconds()
                answer = client.run(mode.name, args.per_round)
                sim_cpu[mode.name] += sim.cpu_seconds() - sim_before
                client_cpu[mode.name] += answer["cpu_s"]
                latencies[mode.name] += answer["latencies"]
                round_p50[mode.name].append(percentile(answer["latencies"], 50))
                request_ids[mode.name] += answer["request_ids"]
        measured_s = time.monotonic() - started
        time.sleep(DRAIN_S)  # the last spans are exported (and their CPU counted)
        elapsed_cpu = time.monotonic() - started
        server_cpu = {
            name: cpu_of(name) - cpu_start[name] - idle_rate[name] * elapsed_cpu for name in servers
        }
        rss = {name: server.rss_bytes() for name, server in servers.items()}

        for server in servers.values():  # SIGTERM flushes every exporter
            server.stop()
        traces = check_exports(modes, files, collectors, request_ids)

    n = {m.name: len(latencies[m.name]) for m in modes}
    results: dict[str, Any] = {
        "rounds": args.rounds,
        "per_round": args.per_round,
        "measured_s": round(measured_s, 1),
        "package_root": str(package_root),
        "workdir": str(workdir),
        "modes": {},
        "load_average": _load_average(),
    }
    for mode in modes:
        name = mode.name
        cpu_s = client_cpu[name] if name == "floor" else server_cpu[name]
        results["modes"][name] = {
            "what": mode.what,
            "baseline": mode.baseline,
            "n": n[name],
            "p50_ms": percentile(latencies[name], 50) * 1000,
            "p90_ms": percentile(latencies[name], 90) * 1000,
            "p99_ms": percentile(latencies[name], 99) * 1000,
            "cpu_ms": cpu_s / n[name] * 1000,
            "sim_cpu_ms": sim_cpu[name] / n[name] * 1000,
            "rss_mib": rss.get(name, 0) / 2**20,
            "round_p50_ms": [v * 1000 for v in round_p50[name]],
            "traces": traces.get(name),
        }
    _marginals(results["modes"])
    results["ratios"] = _ratios(results["modes"])
    return results


def start_real_nova(workdir: Path, sim: Proc, procs: list[Any]) -> Proc:
    """Real nova-api 34 (its own venv, its own paste pipeline) in front of the simulator."""
    from voltrace.devtools.real_nova import RealNova, default_venv, venv_ready

    if not venv_ready(default_venv()):
        raise SystemExit(
            "--real-nova: build nova's venv first: python -m voltrace.devtools.real_nova build"
        )
    nova = RealNova(
        workdir / "nova", cinder_endpoint=f"http://127.0.0.1:{sim.port}/v3/%(project_id)s"
    )
    procs.append(nova)  # stopped by its pid on the way out
    nova.start()
    assert nova.process is not None
    return Proc("nova", nova.process, nova.port, nova.log_path)


def _load_average() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


def _marginals(stats: dict[str, dict[str, Any]]) -> None:
    """+p50, +p90, +CPU against each mode's baseline, and the round-by-round spread."""
    for s in stats.values():
        base = stats.get(s["baseline"] or "")
        if base is None:
            continue
        s["plus_p50_ms"] = s["p50_ms"] - base["p50_ms"]
        s["plus_p90_ms"] = s["p90_ms"] - base["p90_ms"]
        s["plus_cpu_ms"] = s["cpu_ms"] - base["cpu_ms"]
        paired = [a - b for a, b in zip(s["round_p50_ms"], base["round_p50_ms"], strict=True)]
        if len(paired) >= 4:
            q1, _, q3 = statistics.quantiles(paired, n=4)
            s["plus_p50_spread_ms"] = (q3 - q1) / 2
        else:
            s["plus_p50_spread_ms"] = float("nan")


def _ratios(stats: dict[str, dict[str, Any]]) -> dict[str, float]:
    ratios: dict[str, float] = {}
    if PRODUCTION in stats:
        on, off, floor = stats[PRODUCTION], stats["off"], stats["floor"]
        ratios["on/off p50"] = on["p50_ms"] / off["p50_ms"]
        ratios["on/off p90"] = on["p90_ms"] / off["p90_ms"]
        ratios["on/off CPU"] = on["cpu_ms"] / off["cpu_ms"]
        ratios["on/floor p50"] = on["p50_ms"] / floor["p50_ms"]
    ratios["off/floor p50"] = stats["off"]["p50_ms"] / stats["floor"]["p50_ms"]
    if "nova" in stats:
        ratios["off/nova p50"] = stats["off"]["p50_ms"] / stats["nova"]["p50_ms"]
        if PRODUCTION in stats:
            ratios["on/nova p50"] = stats[PRODUCTION]["p50_ms"] / stats["nova"]["p50_ms"]
    if BASELINE.name in stats:
        base, off = stats[BASELINE.name], stats["off"]
        ratios["baseline on/off p50"] = base["p50_ms"] / off["p50_ms"]
        ratios["baseline on/off CPU"] = base["cpu_ms"] / off["cpu_ms"]
        ratios["baseline on/floor p50"] = base["p50_ms"] / stats["floor"]["p50_ms"]
        if PRODUCTION in stats:
            ratios["on/baseline p50"] = stats[PRODUCTION]["p50_ms"] / base["p50_ms"]
            ratios["on/baseline CPU"] = stats[PRODUCTION]["cpu_ms"] / base["cpu_ms"]
    if "metrics" in stats:
        ratios["no-exporter/off p50"] = stats["metrics"]["p50_ms"] / stats["off"]["p50_ms"]
    return ratios


# ---------------------------------------------------------------------------
# Did every exporter deliver every create's trace?
# ---------------------------------------------------------------------------


def check_exports(
    modes: list[Mode],
    files: dict[str, dict[str, Path]],
    collectors: dict[str, RotelCollector],
    request_ids: dict[str, list[str]],
) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    readers: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "traces-file": lambda: read_otlp_spans([files["traces-file"]["traces"]]),
        "jaeger-file": lambda: jaeger_spans(files["jaeger-file"]["jaeger"]),
    }
    for name, collector in collectors.items():
        readers[name] = _collector_reader(collector, 10 * len(request_ids.get(name, [])))
    for mode in modes:
        if mode.exporter is None:
            continue
        check = check_traces(readers[mode.name](), request_ids[mode.name], with_cinder=False)
        found[mode.name] = {"sent": check.sent, "complete": check.complete, "lost": check.lost}
    return found


def _collector_reader(
    collector: RotelCollector, expected: int
) -> Callable[[], list[dict[str, Any]]]:
    def read() -> list[dict[str, Any]]:
        with contextlib.suppress(TimeoutError):  # a shortfall shows up as lost traces
            collector.wait_for_spans(lambda got: len(got) >= expected, timeout=20)
        return rotel_spans(collector)

    return read


_KINDS = {"server": SERVER, "client": CLIENT, "internal": 1}


def jaeger_spans(path: Path) -> list[dict[str, Any]]:
    """A Jaeger JSON document's spans, in check_traces' normalised shape."""
    if not path.exists():
        return []
    spans: list[dict[str, Any]] = []
    for trace in json.loads(path.read_text())["data"]:
        for span in trace["spans"]:
            tags = {t["key"]: t["value"] for t in span["tags"]}
            parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
            spans.append(
                {
                    "traceId": span["traceID"],
                    "spanId": span["spanID"],
                    "parentSpanId": parents[0] if parents else "",
                    "name": span["operationName"],
                    "kind": _KINDS.get(tags.get("span.kind", ""), 0),
                    "service": trace["processes"][span["processID"]]["serviceName"],
                    "attrs": tags,
                }
            )
    return spans


# ---------------------------------------------------------------------------
# The budget table
# ---------------------------------------------------------------------------


def print_table(results: dict[str, Any]) -> None:
    stats = results["modes"]
    print(
        f"\nvoltrace telemetry budget: {results['rounds']} interleaved rounds x "
        f"{results['per_round']} creates per mode ({results['measured_s']} s; "
        f"load average {results['load_average']})"
    )
    total = stats.get(PRODUCTION)
    total_p50 = total["p50_ms"] - stats["off"]["p50_ms"] if total else float("nan")
    total_cpu = total["cpu_ms"] - stats["off"]["cpu_ms"] if total else float("nan")
    print(
        f"{'mode':<12}{'adds':<34}{'p50':>7}{'p90':>7}{'+p50 ms':>13}{'+p90':>7}"
        f"{'CPU':>7}{'+CPU ms':>9}{'share p50':>10}{'share CPU':>10}"
    )
    for name, s in stats.items():
        plus = ""
        if "plus_p50_ms" in s:
            plus = f"{s['plus_p50_ms']:+.2f}±{s['plus_p50_spread_ms']:.2f}"
        share = name not in ("floor", "off", "nova", BASELINE.name) and "plus_p50_ms" in s
        print(
            f"{name:<12}{s['what'][:33]:<34}{s['p50_ms']:>7.2f}{s['p90_ms']:>7.2f}{plus:>13}"
            + (f"{s['plus_p90_ms']:>+7.2f}" if "plus_p90_ms" in s else f"{'':>7}")
            + f"{s['cpu_ms']:>7.2f}"
            + (f"{s['plus_cpu_ms']:>+9.2f}" if "plus_cpu_ms" in s else f"{'':>9}")
            + (
                f"{s['plus_p50_ms'] / total_p50:>10.0%}{s['plus_cpu_ms'] / total_cpu:>10.0%}"
                if share
                else ""
            )
        )
    print(
        "(ms; CPU = server CPU per create, export threads included; shares are of "
        f"{PRODUCTION} - off: +{total_p50:.2f} ms p50, +{total_cpu:.2f} ms CPU; the "
        "exporters after otlp-http replace it, they do not add to it)"
    )
    print()
    for name, value in results["ratios"].items():
        target = TARGETS.get(name)
        verdict = (
            ""
            if target is None
            else (f"  (target <= {target:.2f}: {'met' if value <= target else 'MISSED'})")
        )
        print(f"{name:<20}{value:>6.2f}{verdict}")
    lines = [
        f"{name} {s['traces']['complete']}/{s['traces']['sent']}"
        for name, s in stats.items()
        if s.get("traces")
    ]
    if lines:
        print("\ncomplete traces per exporter (warm-up included): " + ", ".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=100, help="creates per mode per round")
    parser.add_argument("--warmup", type=int, default=60, help="creates per mode before")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--package-root",
        default=str(REPO),
        help="run the servers from this copy of voltrace (default: the repo)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[m.name for m in MODES],
        help="measure only these modes (floor and off always run)",
    )
    parser.add_argument(
        "--real-nova",
        action="store_true",
        help="also measure real nova-api 34, untraced, against the simulator",
    )
    parser.add_argument(
        "--baseline-root",
        metavar="DIR",
        help="also run the production configuration from this copy of voltrace (mode "
        "'baseline'; e.g. the code before a change), in the same rounds",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = run(args)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    lost = sum(s["traces"]["lost"] for s in results["modes"].values() if s.get("traces"))
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
