"""Command-line options, shared by ``python -m voltrace.cinder_sim`` and
``voltrace cinder-sim`` (which adds its own telemetry options)."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from opentelemetry import trace

from voltrace.cinder_sim.faults import Fault
from voltrace.cinder_sim.routes import ROUTES
from voltrace.cinder_sim.simulator import CinderSimulator


def _fault_argument(text: str) -> Fault:
    try:
        return Fault.parse(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to an argparse parser."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8776, help="port to bind (8776)")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="counter-based ids and a fixed created_at, for repeatable runs",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault_argument,
        metavar="ROUTE:SPEC",
        help="inject a fault, e.g. volumes.create:status=500 (repeatable); "
        f"routes: {', '.join(ROUTES)}",
    )
    parser.add_argument(
        "--availability-zone",
        action="append",
        dest="availability_zones",
        metavar="AZ",
        help="an availability zone (repeatable; default nova)",
    )
    parser.add_argument(
        "--volume-type",
        action="append",
        dest="volume_types",
        metavar="NAME",
        help="a volume type (repeatable; default __DEFAULT__ and lvmdriver-1)",
    )


def run_cli(args: argparse.Namespace, tracer_provider: trace.TracerProvider | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then stop cleanly. Returns the exit code (0)."""
    options: dict[str, Any] = {}
    if getattr(args, "availability_zones", None):
        options["availability_zones"] = tuple(args.availability_zones)
    if getattr(args, "volume_types", None):
        options["volume_types"] = tuple(args.volume_types)
    sim = CinderSimulator(
        args.host,
        args.port,
        deterministic=args.deterministic,
        tracer_provider=tracer_provider,
        faults=args.fault or (),
        **options,
    )
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        sim.start()
        print(f"cinder-sim listening on {sim.url}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
