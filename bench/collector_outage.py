"""What a dead or hung trace collector costs a create, as latency ratios.

tests/test_telemetry_backend.py checks the behaviour (every create answers, memory stays
bounded, every lost span is counted); how much slower a create gets is a measurement,
made here, side by side on this noisy machine:

* **normal**: ``voltrace serve`` exporting over OTLP to a live rotel collector;
* **down**: the same, to a port that refuses connections;
* **hung**: the same, to a socket that accepts and never answers.

Creates are interleaved across the three servers in rounds whose order alternates, so
the machine's noise hits them alike. It prints p50 / p99 per mode and the ratios
down/normal and hung/normal (the target: within 1.10 at p50).

    python bench/collector_outage.py [--protocol grpc|http/protobuf] [--rounds 10]

Every process is stopped by pid on the way out.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path

from common import (
    BENCH_PROJECT,
    BENCH_TOKEN,
    RotelCollector,
    percentile,
    start_serve,
    start_sim,
    stopping,
)

from voltrace.client import NovaClient, identity_headers
from voltrace.devtools.ports import SilentServer


class Refusing:
    """A port bound and never listened on: every connection is refused."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]

    def stop(self) -> None:
        self.socket.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=25)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    headers = identity_headers(project_id=BENCH_PROJECT, token=BENCH_TOKEN, user_id="bench")
    latencies: dict[str, list[float]] = {"normal": [], "down": [], "hung": []}
    with tempfile.TemporaryDirectory(prefix="voltrace-outage-") as tmp, stopping([]) as procs:
        workdir = Path(tmp)
        sim = start_sim(workdir)
        procs.append(sim)
        (workdir / "rotel").mkdir()
        collector = RotelCollector(workdir / "rotel").start()
        procs.append(collector)
        hung = SilentServer()  # a hung collector
        procs.append(hung)
        refused = Refusing()
        procs.append(refused)
        grpc = args.protocol == "grpc"
        endpoints = {
            "normal": collector.grpc_endpoint if grpc else collector.http_endpoint,
            "down": f"http://127.0.0.1:{refused.port}",
            "hung": f"http://127.0.0.1:{hung.port}",
        }
        clients: dict[str, NovaClient] = {}
        for name, endpoint in endpoints.items():
            serve, _ = start_serve(
                workdir,
                name,
                sim,
                telemetry=True,
                extra_args=["--otlp"],
                extra_env={
                    "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                    "OTEL_EXPORTER_OTLP_PROTOCOL": args.protocol,
                    "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                },
            )
            procs.append(serve)
            clients[name] = NovaClient(f"http://127.0.0.1:{serve.port}")
        order = list(clients)
        for round_number in range(2 + args.rounds):  # the first two warm up
            for name in order if round_number % 2 == 0 else reversed(order):
                for _ in range(args.per_round):
                    started = time.perf_counter()
                    status = clients[name].create_volume({"size": 1}, headers=headers).status
                    elapsed = time.perf_counter() - started
                    if status != 200:
                        raise SystemExit(f"{name}: a create answered {status}")
                    if round_number >= 2:
                        latencies[name].append(elapsed)
        for client in clients.values():
            client.close()
    figures = {
        name: {
            "p50_ms": percentile(values, 50) * 1000,
            "p99_ms": percentile(values, 99) * 1000,
            "n": len(values),
        }
        for name, values in latencies.items()
    }
    base = figures["normal"]["p50_ms"]
    for name, row in figures.items():
        print(
            f"{name:>6}: p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
            f"p50 ratio {row['p50_ms'] / base:.2f}  ({row['n']} creates, {args.protocol})"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
