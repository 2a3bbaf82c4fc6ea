"""voltrace under load, telemetry on vs off: throughput, p50/p99, memory, no trace lost.

    python bench/load.py                       # ~2 minutes; prints one table
    python bench/load.py --requests 2000 --workers 2 --levels 1,4,16,32 --json out.json

Two ``voltrace serve`` (gunicorn, ``--workers`` processes, 16 threads each) in front of
one traced ``voltrace cinder-sim`` process (its spans go to its own file):

* **on**: all telemetry: spans to an OTLP JSON file *and* over OTLP (``--otlp-protocol``,
  default http/protobuf) to a real rotel collector, JSON logs to a file, metrics recorded;
* **off**: ``OTEL_SDK_DISABLED=true`` and ``--log-level off``.

At each concurrency level, that many client threads (one keep-alive connection each) send
``--requests`` creates to each server between them, in ``--rounds`` blocks that alternate
between the two servers (the order shuffled per round), so both see the same machine.

Afterwards the server and the simulator are stopped with SIGTERM (which must flush), and
every create is looked up in the exporters' output: its trace is *complete* when nova-api's
SERVER span, the pipeline span, all six stage spans, both Cinder CLIENT spans and the
simulator's SERVER span under each of them are there (file output), and nova-api's part
of it reached the collector too. Lost traces must be 0, and so must unexpected 5xx.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import start_voltrace
from common import (
    BENCH_PROJECT,
    BENCH_TOKEN,
    REPO,
    RotelCollector,
    check_traces,
    fmt_bytes,
    read_otlp_spans,
    rotel_spans,
    start_sim,
    stopping,
    summarise,
    wait_for_port,
)

from voltrace.client import NovaClient, identity_headers

BODY = {"size": 1, "display_name": "load"}


def run_level(url: str, concurrency: int, total: int) -> dict[str, Any]:
    """``total`` creates from ``concurrency`` threads; latencies, statuses and request ids."""
    headers = identity_headers(user_id="load-user", project_id=BENCH_PROJECT, token=BENCH_TOKEN)
    lock = threading.Lock()
    remaining = [total]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    request_ids: list[str] = []
    errors: list[str] = []

    def worker() -> None:
        client = NovaClient(url)
        try:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                started = time.perf_counter()
                try:
                    response = client.create_volume(BODY, headers=headers)
                except (OSError, http.client.HTTPException) as exc:  # counted, never fatal
                    with lock:
                        errors.append(repr(exc))
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses[response.status] += 1
                    request_ids.append(response.header("x-openstack-request-id") or "")
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "latencies": latencies,
        "statuses": statuses,
        "request_ids": request_ids,
        "errors": errors,
        "wall_s": wall,
    }


MODES = ("on", "off")


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="voltrace-bench-load-"))
    levels = [int(x) for x in args.levels.split(",")]
    procs: list[Any] = []
    results: dict[str, Any] = {
        "workers": args.workers,
        "requests": args.requests,
        "otlp_protocol": args.otlp_protocol,
        "levels": [],
    }
    otlp = "otlp-grpc" if args.otlp_protocol == "grpc" else "otlp-http"
    with stopping(procs):
        sim_traces = workdir / "cinder-sim-traces.jsonl"
        sim = start_sim(workdir, traces_file=sim_traces)
        procs.append(sim)
        collector = RotelCollector(workdir).start()
        procs.append(collector)
        servers = {}
        for mode in MODES:
            servers[mode], files = start_voltrace(
                workdir,
                f"load-{mode}",
                sim.port,
                telemetry=mode == "on",
                exporters=["traces-file", otlp],
                collector=collector,
                package_root=Path(args.package_root).resolve(),
                workers=args.workers,
                threads=args.threads,
                wait=False,
            )
            procs.append(servers[mode])
            if mode == "on":
                on_files = files
        for server in servers.values():
            wait_for_port(server.port, server.popen, timeout=90)
        urls = {mode: f"http://127.0.0.1:{server.port}" for mode, server in servers.items()}

        all_ids: list[str] = []
        for mode in MODES:  # imports, pools, the first exports
            warm = run_level(urls[mode], 4, 100)
            if mode == "on":
                all_ids += warm["request_ids"]
        rng = random.Random(args.seed)
        for concurrency in levels:
            blocks: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
            rss_before = {mode: server.rss_bytes() for mode, server in servers.items()}
            cpu = dict.fromkeys(MODES, 0.0)
            for _ in range(args.rounds):
                order = list(MODES)
                rng.shuffle(order)
                for mode in order:
                    cpu_before = servers[mode].cpu_seconds()
                    blocks[mode].append(
                        run_level(urls[mode], concurrency, args.requests // args.rounds)
                    )
                    cpu[mode] += servers[mode].cpu_seconds() - cpu_before
            row: dict[str, Any] = {"concurrency": concurrency}
            for mode in MODES:
                latencies = [x for block in blocks[mode] for x in block["latencies"]]
                statuses: Counter[int] = Counter()
                for block in blocks[mode]:
                    statuses.update(block["statuses"])
                    if mode == "on":
                        all_ids += block["request_ids"]
                row[mode] = {
                    **summarise(latencies),
                    "throughput_rps": len(latencies) / sum(b["wall_s"] for b in blocks[mode]),
                    "cpu_ms_per_create": cpu[mode] / max(1, len(latencies)) * 1000,
                    "statuses": dict(statuses),
                    "unexpected_5xx": sum(n for st, n in statuses.items() if st >= 500),
                    "client_errors": sum(len(b["errors"]) for b in blocks[mode]),
                    "rss_before": rss_before[mode],
                    "rss_after": servers[mode].rss_bytes(),
                }
            row["throughput_on/off"] = row["on"]["throughput_rps"] / row["off"]["throughput_rps"]
            results["levels"].append(row)

        # SIGTERM: the workers' exit hook must flush every span and log line.
        stop_started = time.monotonic()
        servers["on"].stop()
        results["stop_s"] = time.monotonic() - stop_started
        servers["off"].stop()
        sim.stop()
        spans = read_otlp_spans([on_files["traces"], sim_traces])
        file_check = check_traces(spans, all_ids, with_cinder=True)
        nova_in_file = sum(1 for s in spans if s["service"] == "nova-api")
        with contextlib.suppress(TimeoutError):  # a shortfall is counted below
            collector.wait_for_spans(lambda got: len(got) >= nova_in_file, timeout=30)
        collector_check = check_traces(rotel_spans(collector), all_ids, with_cinder=False)
        logs = [json.loads(line) for line in on_files["logs"].read_text().splitlines()]
        finished = {e.get("request_id") for e in logs if e.get("event") == "request.finished"}

    results["traces"] = {
        "creates": len(all_ids),
        "complete_in_files": file_check.complete,
        "lost_in_files": file_check.lost,
        "complete_at_collector": collector_check.complete,
        "lost_at_collector": collector_check.lost,
        "summary_log_lines_missing": len(set(all_ids) - finished),
        "spans_in_files": file_check.spans,
        "spans_at_collector": collector_check.spans,
        "examples_incomplete": (file_check.incomplete + file_check.missing)[:5],
    }
    results["workdir"] = str(workdir)
    return results


def print_table(results: dict[str, Any]) -> None:
    print(
        f"\nvoltrace load: {results['workers']} gunicorn worker(s), telemetry on "
        f"(traces file + OTLP {results['otlp_protocol']} + logs + metrics) vs off, "
        f"{results['requests']} creates per level and mode"
    )
    print(
        f"{'conc':>4} {'mode':<4}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms':>8}"
        f"{'5xx':>5}{'errors':>7}{'RSS before':>13}{'RSS after':>12}{'on/off req/s':>14}"
    )
    for row in results["levels"]:
        for mode in MODES:
            level = row[mode]
            ratio = f"{row['throughput_on/off']:>14.2f}" if mode == "on" else ""
            print(
                f"{row['concurrency']:>4} {mode:<4}{level['throughput_rps']:>9.1f}"
                f"{level['p50_ms']:>9.2f}{level['p99_ms']:>9.2f}"
                f"{level['cpu_ms_per_create']:>8.2f}{level['unexpected_5xx']:>5}"
                f"{level['client_errors']:>7}{fmt_bytes(level['rss_before']):>13}"
                f"{fmt_bytes(level['rss_after']):>12}{ratio}"
            )
    t = results["traces"]
    print(
        f"\ntraces: {t['complete_in_files']}/{t['creates']} complete in the files "
        f"(lost {t['lost_in_files']}), {t['complete_at_collector']}/{t['creates']} at the "
        f"rotel collector (lost {t['lost_at_collector']}); summary log lines missing: "
        f"{t['summary_log_lines_missing']}; SIGTERM to exit {results['stop_s']:.1f} s"
    )
    if t["examples_incomplete"]:
        print(f"incomplete or missing, e.g.: {t['examples_incomplete']}")
    target = 0.85
    for row in results["levels"]:
        if row["concurrency"] == 16:
            value = row["throughput_on/off"]
            print(
                f"throughput on/off at concurrency 16: {value:.2f} "
                f"(target >= {target}: {'met' if value >= target else 'MISSED'})"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels (default 1,4,16)")
    parser.add_argument("--requests", type=int, default=600, help="creates per level")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=16, help="threads per worker")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="blocks per level and mode, alternating on/off (default 2)",
    )
    parser.add_argument(
        "--otlp-protocol",
        choices=("http/protobuf", "grpc"),
        default="http/protobuf",
        help="how the on server exports over OTLP",
    )
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument(
        "--package-root",
        default=str(REPO),
        help="run the servers from this copy of voltrace (default: the repo)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = run(args)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    bad = (
        results["traces"]["lost_in_files"]
        or results["traces"]["lost_at_collector"]
        or any(
            row[mode]["unexpected_5xx"] or row[mode]["client_errors"]
            for row in results["levels"]
            for mode in MODES
        )
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
