"""Command-line options, shared by ``python -m voltrace.cinder_sim`` and
``voltrace cinder-sim`` (which adds its own telemetry options).

:func:`add_cli_arguments` adds the simulator's options, :func:`run_cli` serves until
SIGTERM/SIGINT, and :func:`main` is ``python -m voltrace.cinder_sim``: the same options
plus ``voltrace serve``'s telemetry options (``--traces-file``, ``--jaeger-file``,
``--log-file``, ...), so the simulator traces and logs as cinder-api, cinder-scheduler and
cinder-volume.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from voltrace.cinder_sim.app import AUTH_STRATEGIES, DEFAULT_PROJECT_ID_REGEX
from voltrace.cinder_sim.backends import (
    BACKEND_FAULT_KINDS,
    BINARIES,
    BackendFault,
    BackendSettings,
    Timing,
)
from voltrace.cinder_sim.faults import Fault
from voltrace.cinder_sim.routes import ROUTES
from voltrace.cinder_sim.simulator import CinderSimulator

if TYPE_CHECKING:
    from voltrace.telemetry import Telemetry


def _fault_argument(text: str) -> Fault:
    try:
        return Fault.parse(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _backend_fault_argument(text: str) -> BackendFault:
    try:
        return BackendFault.parse(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _timing_argument(text: str) -> Timing:
    try:
        return Timing.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected SECONDS or LOW-HIGH: {exc}") from None


def _volume_type_argument(text: str) -> tuple[str, dict[str, str]]:
    """``NAME`` or ``NAME:key=value,key=value`` (the type's extra specs)."""
    name, _, spec = text.partition(":")
    specs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise argparse.ArgumentTypeError(f"extra spec {item!r} must be key=value")
        specs[key.strip()] = value.strip()
    if not name.strip():
        raise argparse.ArgumentTypeError("a volume type needs a name")
    return name.strip(), specs


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to an argparse parser."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8776, help="port to bind (8776)")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="counter-based ids, a fixed created_at and fixed timings (each range's "
        "midpoint), for repeatable runs",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault_argument,
        metavar="ROUTE:SPEC",
        help="inject an API fault, e.g. volumes.create:status=500 (repeatable); "
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
        type=_volume_type_argument,
        metavar="NAME[:KEY=VALUE,...]",
        help="a volume type and its extra specs, e.g. gold:volume_backend_name=nope "
        "(repeatable; default __DEFAULT__ and lvmdriver-1, without extra specs)",
    )
    api = parser.add_argument_group("cinder-api")
    api.add_argument(
        "--auth-strategy",
        choices=AUTH_STRATEGIES,
        default="keystone",
        help="keystone (default): any X-Auth-Token is accepted for the URL's project, the "
        "caller is a member; noauth: cinder's NoAuthMiddleware, the token is USER:PROJECT "
        "and every caller is an admin",
    )
    api.add_argument(
        "--project-id-regex",
        default=DEFAULT_PROJECT_ID_REGEX,
        metavar="REGEX",
        help="cinder's [DEFAULT] project_id_regex: other project ids in URLs are 404 "
        f"(default {DEFAULT_PROJECT_ID_REGEX})",
    )
    defaults = BackendSettings()
    behind = parser.add_argument_group(
        "cinder-scheduler and cinder-volume (after the 202)",
        "Timings take SECONDS or LOW-HIGH (uniform; the midpoint with --deterministic).",
    )
    behind.add_argument(
        "--scheduling-s",
        type=_timing_argument,
        metavar="T",
        help=f"cinder-scheduler's time per create (default {_show(defaults.scheduling_s)})",
    )
    behind.add_argument(
        "--volume-create-s",
        type=_timing_argument,
        metavar="T",
        help="cinder-volume's time per create, around the driver "
        f"(default {_show(defaults.volume_create_s)})",
    )
    behind.add_argument(
        "--driver-s",
        type=_timing_argument,
        metavar="T",
        help="time inside the driver's create_volume; a slow backend "
        f"(default {_show(defaults.driver_s)})",
    )
    behind.add_argument(
        "--capacity-gb",
        type=float,
        metavar="GB",
        help="the pool's capacity; a create that does not fit is 'no valid backend' "
        "(default: infinite)",
    )
    behind.add_argument(
        "--scheduler-max-attempts",
        type=int,
        metavar="N",
        help=f"cinder's scheduler_max_attempts (default {defaults.scheduler_max_attempts})",
    )
    behind.add_argument(
        "--service-down-time",
        type=float,
        dest="service_down_time_s",
        metavar="S",
        help=f"cinder's service_down_time (default {defaults.service_down_time_s:g})",
    )
    behind.add_argument(
        "--report-interval",
        type=float,
        dest="report_interval_s",
        metavar="S",
        help=f"cinder's report_interval (default {defaults.report_interval_s:g})",
    )
    behind.add_argument(
        "--rpc-response-timeout",
        type=float,
        dest="rpc_response_timeout_s",
        metavar="S",
        help="bounds os-services at >= 3.49 with the scheduler down "
        f"(default {defaults.rpc_response_timeout_s:g})",
    )
    behind.add_argument(
        "--cinder-host",
        metavar="NAME",
        help=f"cinder's [DEFAULT] host; volumes land on NAME@{defaults.backend}#"
        f"{defaults.pool} (default {defaults.host})",
    )
    behind.add_argument(
        "--backend-fault",
        action="append",
        default=[],
        type=_backend_fault_argument,
        metavar="KIND[:times=N,delay_s=S]",
        help=f"make the volume driver misbehave (repeatable); kinds: "
        f"{', '.join(BACKEND_FAULT_KINDS)}",
    )
    behind.add_argument(
        "--service-down",
        action="append",
        default=[],
        choices=BINARIES,
        metavar="BINARY",
        help="start with this service stopped, long enough that it shows down "
        f"(repeatable; {', '.join(BINARIES)}); PUT /__sim__/services/BINARY starts it",
    )


def _show(timing: Timing) -> str:
    return f"{timing.low:g}" if timing.low == timing.high else f"{timing.low:g}-{timing.high:g}"


_SETTING_OPTIONS = (
    "scheduling_s",
    "volume_create_s",
    "driver_s",
    "capacity_gb",
    "scheduler_max_attempts",
    "service_down_time_s",
    "report_interval_s",
    "rpc_response_timeout_s",
)


def simulator_from_args(
    args: argparse.Namespace,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    telemetry: Telemetry | None = None,
) -> CinderSimulator:
    """A simulator configured by :func:`add_cli_arguments`' options (not started)."""
    options: dict[str, Any] = {}
    if getattr(args, "availability_zones", None):
        options["availability_zones"] = tuple(args.availability_zones)
    if getattr(args, "volume_types", None):
        options["volume_types"] = tuple(name for name, _ in args.volume_types)
        options["volume_type_extra_specs"] = {
            name: specs for name, specs in args.volume_types if specs
        }
    changes = {
        name: getattr(args, name)
        for name in _SETTING_OPTIONS
        if getattr(args, name, None) is not None
    }
    if getattr(args, "cinder_host", None):
        changes["host"] = args.cinder_host
    return CinderSimulator(
        args.host,
        args.port,
        deterministic=args.deterministic,
        tracer_provider=tracer_provider,
        telemetry=telemetry,
        faults=args.fault or (),
        backend=dataclasses.replace(BackendSettings(), **changes),
        backend_faults=getattr(args, "backend_fault", None) or (),
        services_down=getattr(args, "service_down", None) or (),
        auth_strategy=getattr(args, "auth_strategy", "keystone"),
        project_id_regex=getattr(args, "project_id_regex", None),
        **options,
    )


def run_cli(
    args: argparse.Namespace,
    tracer_provider: trace.TracerProvider | None = None,
    *,
    telemetry: Telemetry | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, then stop cleanly. Returns the exit code (0).

    Pass ``telemetry`` (cinder-api's) to trace and log all three services;
    ``tracer_provider`` alone traces the API only.
    """
    try:
        sim = simulator_from_args(args, tracer_provider=tracer_provider, telemetry=telemetry)
    except ValueError as exc:
        print(f"cinder-sim: {exc}", file=sys.stderr)
        return 2
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
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0


def run_command(args: argparse.Namespace) -> int:
    """``voltrace cinder-sim``: the simulator with voltrace's telemetry, flushed on the way out."""
    from voltrace.cli_options import telemetry_config
    from voltrace.telemetry import Telemetry

    # The simulator makes no outgoing HTTP calls: nothing for the requests instrumentation.
    config = dataclasses.replace(telemetry_config(args, "cinder-api"), instrument_requests=False)
    telemetry = Telemetry.create(config)
    try:
        return run_cli(args, telemetry=telemetry)
    finally:
        telemetry.shutdown()


def add_command_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulator's options plus the telemetry options shared with serve."""
    from voltrace.cli_options import add_telemetry_arguments

    add_cli_arguments(parser)
    add_telemetry_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m voltrace.cinder_sim``: the same as ``voltrace cinder-sim``."""
    parser = argparse.ArgumentParser(
        prog="cinder-sim", description="A Cinder v3 API simulator over real HTTP."
    )
    add_command_arguments(parser)
    return run_command(parser.parse_args(argv))
