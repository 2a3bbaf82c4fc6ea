"""What does voltrace's instrumentation cost a real nova-api 34? Four novas, side by side.

    python bench/nova_overhead.py                     # ~2 minutes; prints one table
    python bench/nova_overhead.py --rounds 12 --per-round 50 --json out.json

Four real nova-api 34 processes (nova's own paste pipeline on its wsgiref host, from the
instrumented venv: ``python -m voltrace.instrumentation.nova_venv build``), all in front of
the *same* ``voltrace cinder-sim`` process (untraced, unlimited quota), measured in
interleaved rounds whose order is shuffled every round, so drift on a noisy machine hits
all four alike:

* **off**: nova's api-paste.ini as shipped: no instrumentation at all;
* **unsampled**: the paste filter, every span sampled out (``OTEL_TRACES_SAMPLER=always_off``),
  log lines off: the hooks' own bookkeeping, the metrics, the requests and WSGI
  instrumentations with non-recording spans;
* **spans**: the same, spans recorded (SERVER, create_volume, six stages, CLIENT) but
  exported nowhere;
* **on**: everything: spans through a BatchSpanProcessor to an OTLP JSON file, the
  ``stage.*`` and ``request.finished`` JSON lines to a file, metrics recorded.

Latency is client-observed wall time per create, one request at a time. CPU per create is
the nova process's user+system CPU. The cost is split by difference: unsampled - off (the
hooks and metrics), spans - unsampled (building spans), on - spans (exporting and logging).
After the run, the ``on`` nova is stopped and every measured create's trace is checked whole.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH_PROJECT,
    BENCH_TOKEN,
    Proc,
    percentile,
    read_otlp_spans,
    start_sim,
    stopping,
    summarise,
)

from voltrace.devtools.real_nova import RealNova, RealNovaError
from voltrace.instrumentation import nova_venv

MODES = ("off", "unsampled", "spans", "on")
BODY = json.dumps({"volume": {"size": 1}}).encode()
HEADERS = {
    "X-User-Id": "bench-user",
    "X-Project-Id": BENCH_PROJECT,
    "X-Roles": "member",
    "X-Auth-Token": BENCH_TOKEN,
    "Content-Type": "application/json",
}
SPANS_PER_CREATE = 10  # SERVER, create_volume, 6 stages, POST and the lazy GET


def start_nova(workdir: Path, mode: str, sim: Proc, venv: Path) -> tuple[RealNova, Path]:
    """One nova-api in ``mode``; its traces file (only ``on`` writes one)."""
    home = workdir / mode
    home.mkdir()
    traces = home / "traces.jsonl"
    env: dict[str, str] = {}
    paste = None
    if mode != "off":
        options = {"log_level": "off"}
        if mode == "on":
            options = {"traces_file": str(traces), "log_file": str(home / "voltrace.log")}
        if mode == "unsampled":
            env["OTEL_TRACES_SAMPLER"] = "always_off"
        paste = nova_venv.instrumented_paste_ini(venv, home, **options)
    nova = RealNova(
        home,
        venv=venv,
        cinder_endpoint=f"http://127.0.0.1:{sim.port}/v3/%(project_id)s",
        cinder_retries=0,
        paste_ini=paste,
        extra_installs=nova_venv.extra_installs(),
        env=env,
    )
    return nova.start(), traces


def create(nova: RealNova) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", nova.port, timeout=60)
    try:
        conn.request("POST", "/v2.1/os-volumes", BODY, HEADERS)
        answer = conn.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{answer.status} {body[:300]!r}")
        return str(answer.getheader("x-openstack-request-id"))
    finally:
        conn.close()


def cpu_seconds(nova: RealNova) -> float:
    import psutil

    assert nova.process is not None
    times = psutil.Process(nova.process.pid).cpu_times()
    return float(times.user + times.system)


def run(args: argparse.Namespace) -> dict[str, Any]:
    venv = nova_venv.venv_path()
    if not nova_venv.is_built():
        raise RealNovaError(
            f"no instrumented nova venv at {venv}; build it with `{nova_venv.BUILD_COMMAND}`"
        )
    workdir = Path(tempfile.mkdtemp(prefix="voltrace-bench-nova-"))
    procs: list[Any] = []
    with stopping(procs):
        sim = start_sim(workdir)
        procs.append(sim)
        novas: dict[str, RealNova] = {}
        traces_file = workdir / "on" / "traces.jsonl"
        for mode in MODES:
            novas[mode], _ = start_nova(workdir, mode, sim, venv)
            procs.append(novas[mode])
        for mode in MODES:  # warm every path: imports, pools, policy and schema caches
            for _ in range(args.warmup):
                create(novas[mode])
        latencies: dict[str, list[float]] = {m: [] for m in MODES}
        cpu = dict.fromkeys(MODES, 0.0)
        measured: list[str] = []
        rng = random.Random(args.seed)
        started = time.monotonic()
        for _ in range(args.rounds):
            order = list(MODES)
            rng.shuffle(order)
            for mode in order:
                before = cpu_seconds(novas[mode])
                for _ in range(args.per_round):
                    t0 = time.perf_counter()
                    request_id = create(novas[mode])
                    latencies[mode].append(time.perf_counter() - t0)
                    if mode == "on":
                        measured.append(request_id)
                cpu[mode] += cpu_seconds(novas[mode]) - before
        elapsed = time.monotonic() - started
        novas["on"].stop()  # SIGTERM: the batch processor flushes at exit
        whole = _whole_traces(traces_file)
    results: dict[str, Any] = {
        "elapsed_s": round(elapsed, 1),
        "rounds": args.rounds,
        "per_round": args.per_round,
        "modes": {},
    }
    for mode in MODES:
        stats = summarise(latencies[mode])
        stats["p10_ms"] = percentile(latencies[mode], 10) * 1000
        stats["p90_ms"] = percentile(latencies[mode], 90) * 1000
        stats["cpu_ms"] = cpu[mode] / len(latencies[mode]) * 1000
        results["modes"][mode] = stats
    m = results["modes"]
    results["ratios"] = {
        "on/off p50": m["on"]["p50_ms"] / m["off"]["p50_ms"],
        "on/off p90": m["on"]["p90_ms"] / m["off"]["p90_ms"],
        "on/off cpu": m["on"]["cpu_ms"] / m["off"]["cpu_ms"],
    }
    results["cost_p50_ms"] = {
        "hooks, metrics, unsampled spans": m["unsampled"]["p50_ms"] - m["off"]["p50_ms"],
        "building the spans": m["spans"]["p50_ms"] - m["unsampled"]["p50_ms"],
        "exporting spans, writing logs": m["on"]["p50_ms"] - m["spans"]["p50_ms"],
    }
    results["cost_cpu_ms"] = {
        "hooks, metrics, unsampled spans": m["unsampled"]["cpu_ms"] - m["off"]["cpu_ms"],
        "building the spans": m["spans"]["cpu_ms"] - m["unsampled"]["cpu_ms"],
        "exporting spans, writing logs": m["on"]["cpu_ms"] - m["spans"]["cpu_ms"],
    }
    results["traces"] = {
        "measured": len(measured),
        "whole": sum(whole.get(rid) == SPANS_PER_CREATE for rid in measured),
    }
    results["workdir"] = str(workdir)
    return results


def _whole_traces(path: Path) -> dict[str, int]:
    """Request id -> spans of its trace, from the ``on`` nova's traces file."""
    spans = read_otlp_spans([path])
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(span["traceId"], []).append(span)
    found = {}
    for trace in by_trace.values():
        for span in trace:
            request_id = span["attrs"].get("openstack.request_id")
            if span["kind"] == 2 and request_id:
                found[str(request_id)] = len(trace)
    return found


def print_table(results: dict[str, Any]) -> None:
    print(
        f"real nova-api 34, {results['rounds']} rounds x {results['per_round']} creates per "
        f"mode, interleaved ({results['elapsed_s']} s)"
    )
    print(
        f"{'mode':<10} {'p10 ms':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'CPU ms/create':>14}"
    )
    for mode, s in results["modes"].items():
        print(
            f"{mode:<10} {s['p10_ms']:8.2f} {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} "
            f"{s['p99_ms']:8.2f} {s['cpu_ms']:14.2f}"
        )
    r = results["ratios"]
    print(
        f"on/off: p50 x{r['on/off p50']:.2f}, p90 x{r['on/off p90']:.2f}, "
        f"CPU x{r['on/off cpu']:.2f}"
    )
    print("where the cost goes (p50 ms / CPU ms per create):")
    for what, ms in results["cost_p50_ms"].items():
        print(f"  {what:<34} {ms:+7.2f} / {results['cost_cpu_ms'][what]:+7.2f}")
    t = results["traces"]
    print(
        f"traces: {t['whole']} of {t['measured']} measured creates whole in the file after SIGTERM"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    try:
        results = run(args)
    except RealNovaError as exc:
        print(f"nova_overhead: {exc}", file=sys.stderr)
        return 1
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["traces"]["whole"] == results["traces"]["measured"] else 1


if __name__ == "__main__":
    sys.exit(main())
