"""voltrace under load: throughput, p50/p99 and memory at concurrency 1, 4 and 16, no trace lost.

    python bench/load.py                       # ~1 minute; prints one table
    python bench/load.py --requests 2000 --workers 2 --levels 1,4,16,32 --json out.json

One ``voltrace serve`` (gunicorn, ``--workers`` processes, 16 threads each) with all
telemetry on: spans to an OTLP JSON file *and* over OTLP/gRPC to a real rotel collector,
JSON logs to a file, metrics recorded. In front of it a traced ``voltrace cinder-sim``
process (its spans go to its own file). At each concurrency level, that many client
threads (one keep-alive connection each) send ``--requests`` creates between them.

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
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH_PROJECT,
    BENCH_TOKEN,
    RotelCollector,
    check_traces,
    fmt_bytes,
    read_otlp_spans,
    rotel_spans,
    start_serve,
    start_sim,
    stopping,
    summarise,
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
    return {"latencies": latencies, "statuses": statuses, "request_ids": request_ids,
            "errors": errors, "wall_s": wall}


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="voltrace-bench-load-"))
    levels = [int(x) for x in args.levels.split(",")]
    procs: list[Any] = []
    results: dict[str, Any] = {"workers": args.workers, "requests": args.requests, "levels": []}
    with stopping(procs):
        sim_traces = workdir / "cinder-sim-traces.jsonl"
        sim = start_sim(workdir, traces_file=sim_traces)
        procs.append(sim)
        collector = RotelCollector(workdir).start()
        procs.append(collector)
        server, files = start_serve(workdir, "load", sim, telemetry=True, collector=collector,
                                    workers=args.workers, threads=args.threads)
        procs.append(server)
        url = f"http://127.0.0.1:{server.port}"

        warm = run_level(url, 4, 100)  # imports, pools, the first exports
        all_ids = list(warm["request_ids"])
        for concurrency in levels:
            rss_before = server.rss_bytes()
            cpu_before = server.cpu_seconds()
            level = run_level(url, concurrency, args.requests)
            cpu = server.cpu_seconds() - cpu_before
            all_ids += level["request_ids"]
            stats = summarise(level["latencies"])
            five = sum(n for status, n in level["statuses"].items() if status >= 500)
            results["levels"].append({
                "concurrency": concurrency, **stats,
                "throughput_rps": len(level["latencies"]) / level["wall_s"],
                "cpu_ms_per_create": cpu / max(1, len(level["latencies"])) * 1000,
                "statuses": dict(level["statuses"]), "unexpected_5xx": five,
                "client_errors": len(level["errors"]),
                "rss_before": rss_before, "rss_after": server.rss_bytes(),
            })

        # SIGTERM: the workers' exit hook must flush every span and log line.
        stop_started = time.monotonic()
        server.stop()
        results["stop_s"] = time.monotonic() - stop_started
        sim.stop()
        spans = read_otlp_spans([files["traces"], sim_traces])
        file_check = check_traces(spans, all_ids, with_cinder=True)
        nova_in_file = sum(1 for s in spans if s["service"] == "nova-api")
        with contextlib.suppress(TimeoutError):  # a shortfall is counted below
            collector.wait_for_spans(lambda got: len(got) >= nova_in_file, timeout=30)
        collector_check = check_traces(rotel_spans(collector), all_ids, with_cinder=False)
        logs = [json.loads(line) for line in files["logs"].read_text().splitlines()]
        finished = {e.get("request_id") for e in logs if e.get("event") == "request.finished"}

    results["traces"] = {
        "creates": len(all_ids),
        "complete_in_files": file_check.complete, "lost_in_files": file_check.lost,
        "complete_at_collector": collector_check.complete,
        "lost_at_collector": collector_check.lost,
        "summary_log_lines_missing": len(set(all_ids) - finished),
        "spans_in_files": file_check.spans, "spans_at_collector": collector_check.spans,
        "examples_incomplete": (file_check.incomplete + file_check.missing)[:5],
    }
    results["workdir"] = str(workdir)
    return results


def print_table(results: dict[str, Any]) -> None:
    print(f"\nvoltrace load: {results['workers']} gunicorn worker(s), telemetry fully on, "
          f"{results['requests']} creates per level")
    print(f"{'conc':>4}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms':>8}{'5xx':>5}"
          f"{'errors':>7}{'RSS before':>13}{'RSS after':>12}")
    for level in results["levels"]:
        print(f"{level['concurrency']:>4}{level['throughput_rps']:>9.1f}{level['p50_ms']:>9.2f}"
              f"{level['p99_ms']:>9.2f}{level['cpu_ms_per_create']:>8.2f}"
              f"{level['unexpected_5xx']:>5}{level['client_errors']:>7}"
              f"{fmt_bytes(level['rss_before']):>13}{fmt_bytes(level['rss_after']):>12}")
    t = results["traces"]
    print(f"\ntraces: {t['complete_in_files']}/{t['creates']} complete in the files "
          f"(lost {t['lost_in_files']}), {t['complete_at_collector']}/{t['creates']} at the "
          f"rotel collector (lost {t['lost_at_collector']}); summary log lines missing: "
          f"{t['summary_log_lines_missing']}; SIGTERM to exit {results['stop_s']:.1f} s")
    if t["examples_incomplete"]:
        print(f"incomplete or missing, e.g.: {t['examples_incomplete']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels (default 1,4,16)")
    parser.add_argument("--requests", type=int, default=600, help="creates per level")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=16, help="threads per worker")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    results = run(args)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    bad = (results["traces"]["lost_in_files"] or results["traces"]["lost_at_collector"]
           or any(level["unexpected_5xx"] or level["client_errors"]
                  for level in results["levels"]))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
