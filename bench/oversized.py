"""Worker memory under oversized requests: 1,200 creates with a 114 KB ``size`` string.

Issue 14 (memory amplification): a rejected 114 KB string used to be copied into every
span, event and log line, and ``--jaeger-file`` kept every trace in memory (up to 10,000
of them), so worker RSS grew by about 0.5 MB per such request. Now every string is cut to
``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` (default 4096) and the Jaeger file's memory is
bounded in bytes (32 MiB by default).

    python bench/oversized.py                      # this tree
    python bench/oversized.py --tree ../old-clone  # the same run against another checkout

It starts an untraced ``voltrace cinder-sim`` and one ``voltrace serve`` (1 worker,
``--jaeger-file`` and JSON logs to files), sends 50 ordinary creates to warm up, then the
oversized ones over one keep-alive connection, and prints the worker's RSS before and
after. Every process is stopped by pid on the way out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    BENCH_PROJECT,
    BENCH_TOKEN,
    Proc,
    fmt_bytes,
    free_port,
    start_sim,
    stopping,
    wait_for_port,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from voltrace.client import NovaClient, identity_headers  # noqa: E402

OVERSIZED = b'{"volume": {"size": "' + b"x" * 114_000 + b'"}}'  # under the 114688-byte limit


def start_serve(tree: Path, workdir: Path, sim: Proc, jaeger_file: bool) -> Proc:
    port = free_port()
    log = workdir / "serve.out"
    args = [
        sys.executable,
        "-m",
        "voltrace",
        "serve",
        "--port",
        str(port),
        "--workers",
        "1",
        "--cinder-endpoint",
        f"http://127.0.0.1:{sim.port}/v3/%(project_id)s",
        "--log-file",
        str(workdir / "logs.jsonl"),
        "--log-format",
        "json",
    ]
    if jaeger_file:
        args += ["--jaeger-file", str(workdir / "jaeger.json")]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree)}
    with open(log, "ab") as out:
        popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tree)
    proc = Proc("serve", popen, port, log)
    try:
        wait_for_port(port, popen)
    except BaseException:
        proc.stop()
        raise
    return proc


def worker_rss(serve: Proc) -> int:
    workers = serve.family()[1:]
    return sum(w.memory_info().rss for w in workers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="the voltrace checkout to serve")
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--without-jaeger-file",
        action="store_true",
        help="the same run without --jaeger-file (what the rest costs)",
    )
    args = parser.parse_args()
    headers = identity_headers(project_id=BENCH_PROJECT, token=BENCH_TOKEN, user_id="bench")
    with tempfile.TemporaryDirectory(prefix="voltrace-oversized-") as tmp, stopping([]) as procs:
        workdir = Path(tmp)
        sim = start_sim(workdir)
        procs.append(sim)
        serve = start_serve(args.tree.resolve(), workdir, sim, not args.without_jaeger_file)
        procs.append(serve)
        client = NovaClient(f"http://127.0.0.1:{serve.port}")
        for _ in range(50):
            assert client.create_volume({"size": 1}, headers=headers).status == 200
        time.sleep(1)  # let the first batches export (this is a measurement, not a test)
        before = worker_rss(serve)
        statuses: dict[int, int] = {}
        started = time.perf_counter()
        for _ in range(args.requests):
            status = client.create_volume(headers=headers, raw_body=OVERSIZED).status
            statuses[status] = statuses.get(status, 0) + 1
        elapsed = time.perf_counter() - started
        time.sleep(6)  # one export cycle and one Jaeger file rewrite
        after = worker_rss(serve)
        client.close()
        jaeger = workdir / "jaeger.json"
        jaeger_size = jaeger.stat().st_size if jaeger.exists() else 0
        figures = {
            "tree": str(args.tree.resolve()),
            "requests": args.requests,
            "statuses": statuses,
            "rss_before": before,
            "rss_after": after,
            "growth": after - before,
            "growth_per_request": (after - before) / args.requests,
            "jaeger_file_bytes": jaeger_size,
            "seconds": round(elapsed, 1),
        }
    print(
        f"tree {figures['tree']}: {args.requests} oversized creates {statuses} in {elapsed:.1f} s"
    )
    print(
        f"worker RSS {fmt_bytes(before)} -> {fmt_bytes(after)} "
        f"(+{fmt_bytes(after - before)}, {figures['growth_per_request'] / 1024:.1f} KiB per "
        f"request); Jaeger file {fmt_bytes(jaeger_size)}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
