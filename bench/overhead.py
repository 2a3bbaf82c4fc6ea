"""What does tracing cost a volume create? ``on`` vs ``off`` vs the ``floor``, side by side.

    python bench/overhead.py                  # ~1 minute; prints one table
    python bench/overhead.py --rounds 12 --per-round 200 --json out.json

Three ways to create a volume against the *same* ``voltrace cinder-sim`` process
(untraced, unlimited quota), measured in interleaved rounds (the order is
shuffled every round), so drift on a noisy machine hits all three alike:

* **on**: ``voltrace serve`` (gunicorn, 1 worker) with everything on. ``--config
  production`` (the default; issue 16's production configuration): spans over OTLP/HTTP
  to a real rotel collector, JSON log lines to a file, metrics (Prometheus reader).
  ``--config full`` (issue 7's): spans to an OTLP JSON file *and* over OTLP/gRPC.
* **off**: the same server with ``OTEL_SDK_DISABLED=true`` and ``--log-level off``.
* **floor**: no server at all: python-cinderclient's ``volumes.create`` plus the
  lazy ``GET`` Nova triggers, called directly from this process (a keystoneauth
  session with a token and ``endpoint_override``; ``trust_env`` off, as voltrace's
  own session).

Latency is client-observed wall time per create, one request at a time.
CPU per create is the server process tree's user+system CPU (for the floor: this
process's CPU while it ran the cinderclient calls). Targets (issue 16, production
configuration): on/off <= 1.15 at p50, on/off CPU <= 1.4, on/floor <= 1.8.
"""

from __future__ import annotations

import argparse
import contextlib
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
    RotelCollector,
    check_traces,
    read_otlp_spans,
    rotel_spans,
    start_serve,
    start_sim,
    stopping,
    summarise,
)

from voltrace.client import NovaClient, identity_headers

MODES = ("on", "off", "floor")
# Issue 16's targets, for the production configuration.
TARGETS = {"on/off p50": 1.15, "on/off cpu": 1.4, "on/floor p50": 1.8}
# SERVER, pipeline, six stages, two CLIENT spans.
SPANS_PER_CREATE = 10
BODY = {"size": 1, "display_name": "bench"}


def floor_client(sim_port: int) -> Any:
    """python-cinderclient at 3.0 on a keystoneauth session, as Nova builds it, no server."""
    import requests
    from cinderclient import client as cinder_client
    from keystoneauth1 import session as ks_session
    from keystoneauth1 import token_endpoint

    url = f"http://127.0.0.1:{sim_port}/v3/{BENCH_PROJECT}"
    http = requests.Session()
    http.trust_env = False
    session = ks_session.Session(auth=token_endpoint.Token(url, BENCH_TOKEN), session=http)
    return cinder_client.Client("3.0", session=session, endpoint_override=url, connect_retries=3)


def floor_create(client: Any) -> None:
    volume = client.volumes.create(1, name="bench")
    hasattr(volume, "volume_image_metadata")  # the lazy GET Nova's translation triggers


def run(args: argparse.Namespace) -> dict[str, Any]:
    package_root = Path(args.package_root).resolve() if args.package_root else None
    workdir = Path(tempfile.mkdtemp(prefix="voltrace-bench-overhead-"))
    procs: list[Any] = []
    with stopping(procs):
        sim = start_sim(workdir)
        procs.append(sim)
        collector = RotelCollector(workdir).start()
        procs.append(collector)
        production = args.config == "production"
        on, on_files = start_serve(
            workdir,
            "on",
            sim,
            telemetry=True,
            collector=collector,
            traces_file=not production,
            otlp_protocol="http/protobuf" if production else "grpc",
            package_root=package_root,
        )
        procs.append(on)
        off, _ = start_serve(workdir, "off", sim, telemetry=False, package_root=package_root)
        procs.append(off)

        headers = identity_headers(
            user_id="bench-user", project_id=BENCH_PROJECT, token=BENCH_TOKEN
        )
        clients = {
            "on": NovaClient(f"http://127.0.0.1:{on.port}"),
            "off": NovaClient(f"http://127.0.0.1:{off.port}"),
        }
        cinder = floor_client(sim.port)
        request_ids: list[str] = []

        def one(mode: str) -> None:
            if mode == "floor":
                floor_create(cinder)
                return
            response = clients[mode].create_volume(BODY, headers=headers)
            if response.status != 200:
                raise RuntimeError(f"{mode}: {response.status} {response.body[:300]!r}")
            if mode == "on":
                request_ids.append(response.header("x-openstack-request-id") or "")

        for mode in MODES:  # warm every path: imports, pools, JIT-less caches
            for _ in range(args.warmup):
                one(mode)
        warm_ids = len(request_ids)

        latencies: dict[str, list[float]] = {m: [] for m in MODES}
        cpu: dict[str, float] = dict.fromkeys(MODES, 0.0)
        sim_cpu: dict[str, float] = dict.fromkeys(MODES, 0.0)
        servers = {"on": on, "off": off}
        rng = random.Random(args.seed)
        started = time.monotonic()
        for _ in range(args.rounds):
            order = list(MODES)
            rng.shuffle(order)
            for mode in order:
                cpu_before = servers[mode].cpu_seconds() if mode in servers else time.process_time()
                sim_before = sim.cpu_seconds()
                samples = latencies[mode]
                for _ in range(args.per_round):
                    t0 = time.perf_counter()
                    one(mode)
                    samples.append(time.perf_counter() - t0)
                sim_cpu[mode] += sim.cpu_seconds() - sim_before
                cpu[mode] += (
                    servers[mode].cpu_seconds() if mode in servers else time.process_time()
                ) - cpu_before
        elapsed = time.monotonic() - started
        for client in clients.values():
            client.close()

        # Stop the traced server gracefully: every span must reach the file and rotel.
        on.stop()
        measured_ids = request_ids[warm_ids:]
        if production:  # no file: the collector's copy is the one checked
            with contextlib.suppress(TimeoutError):  # a shortfall shows up as lost traces
                collector.wait_for_spans(
                    lambda got: len(got) >= SPANS_PER_CREATE * len(request_ids), timeout=20
                )
            collector_spans = rotel_spans(collector)
            file_check = check_traces(collector_spans, request_ids, with_cinder=False)
        else:
            spans = read_otlp_spans([on_files["traces"]])
            file_check = check_traces(spans, request_ids, with_cinder=False)
            collector_spans = (
                collector.wait_for_spans(lambda got: len(got) >= file_check.spans, timeout=20)
                if file_check.spans
                else []
            )

    results: dict[str, Any] = {
        "config": args.config,
        "elapsed_s": round(elapsed, 1),
        "rounds": args.rounds,
        "per_round": args.per_round,
        "modes": {},
    }
    for mode in MODES:
        stats = summarise(latencies[mode])
        n = len(latencies[mode])
        stats["cpu_ms"] = cpu[mode] / n * 1000
        stats["sim_cpu_ms"] = sim_cpu[mode] / n * 1000
        results["modes"][mode] = stats
    m = results["modes"]
    results["ratios"] = {
        "on/off p50": m["on"]["p50_ms"] / m["off"]["p50_ms"],
        "on/off p99": m["on"]["p99_ms"] / m["off"]["p99_ms"],
        "on/off cpu": m["on"]["cpu_ms"] / m["off"]["cpu_ms"],
        "on/floor p50": m["on"]["p50_ms"] / m["floor"]["p50_ms"],
        "on/floor p99": m["on"]["p99_ms"] / m["floor"]["p99_ms"],
        "off/floor p50": m["off"]["p50_ms"] / m["floor"]["p50_ms"],
    }
    results["traces"] = {
        "creates_traced": len(request_ids),
        "measured": len(measured_ids),
        "complete_in_file": file_check.complete,
        "lost": file_check.lost,
        "spans_in_file": file_check.spans,
        "spans_at_collector": len(collector_spans),
    }
    results["workdir"] = str(workdir)
    return results


def print_table(results: dict[str, Any]) -> None:
    m = results["modes"]
    print(
        f"\nvoltrace overhead: {results['rounds']} interleaved rounds x "
        f"{results['per_round']} creates per mode ({results['elapsed_s']} s)"
    )
    print(
        f"{'mode':<7}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}"
        f"{'CPU ms/create':>15}{'sim CPU ms':>12}"
    )
    for mode in MODES:
        s = m[mode]
        print(
            f"{mode:<7}{s['n']:>6}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['mean_ms']:>9.2f}"
            f"{s['cpu_ms']:>15.2f}{s['sim_cpu_ms']:>12.2f}"
        )
    r = results["ratios"]
    targets = TARGETS if results["config"] == "production" else {}
    print()
    for name, value in r.items():
        target = targets.get(name)
        verdict = (
            ""
            if target is None
            else (f"  (target <= {target:.2f}: {'met' if value <= target else 'MISSED'})")
        )
        print(f"{name:<14}{value:>6.2f}{verdict}")
    t = results["traces"]
    where = "collector" if results["config"] == "production" else "file"
    spans = f"{t['spans_at_collector']} spans at the rotel collector"
    if where == "file":
        spans = f"{t['spans_in_file']} spans in the file, " + spans
    print(
        f"\ntraces: {t['complete_in_file']}/{t['creates_traced']} complete in the {where} "
        f"(lost {t['lost']}); {spans}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--package-root",
        metavar="DIR",
        help="run both servers from this copy of voltrace (default: the checkout)",
    )
    parser.add_argument(
        "--config",
        choices=("production", "full"),
        default="production",
        help="on = OTLP/HTTP + logs + metrics (production), or OTLP JSON file + OTLP/gRPC (full)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = run(args)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
