"""The ``voltrace`` command: serve, cinder-sim, demo, explain."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import sys
from collections.abc import Sequence

from voltrace import __version__
from voltrace.cinder import DEFAULT_ENDPOINT_TEMPLATE, CinderSettings
from voltrace.telemetry import TelemetryConfig


def add_telemetry_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by serve and cinder-sim; the OTEL_* variables apply as well."""
    group = parser.add_argument_group("telemetry (plus the standard OTEL_* variables)")
    group.add_argument("--traces-file", metavar="PATH",
                       help="append OTLP JSON export requests, one per line "
                            "(the OpenTelemetry Collector file exporter's format)")
    group.add_argument("--jaeger-file", metavar="PATH",
                       help="write traces in Jaeger's upload JSON (open it in any Jaeger UI)")
    group.add_argument("--otlp", action="store_true",
                       help="also export spans over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT")
    group.add_argument("--log-file", metavar="PATH", help="write JSON log lines here")
    group.add_argument("--log-format", choices=("auto", "json", "console"), default="auto",
                       help="auto: console on a TTY, JSON lines otherwise (default)")
    group.add_argument("--log-level", choices=("debug", "info", "warning", "error", "off"),
                       default="info")
    group.add_argument("--metrics-port", type=int, metavar="PORT",
                       help="serve Prometheus /metrics on 127.0.0.1:PORT "
                            "(PORT+i for worker i)")


def telemetry_config(args: argparse.Namespace, service_name: str) -> TelemetryConfig:
    return TelemetryConfig(
        service_name=service_name,
        traces_file=args.traces_file,
        jaeger_file=args.jaeger_file,
        otlp=args.otlp,
        log_file=args.log_file,
        log_format=args.log_format,
        log_level="info" if args.log_level == "off" else args.log_level,
        logs_enabled=args.log_level != "off",
        metrics_port=args.metrics_port,
    )


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0-65535 (0 only where the kernel may pick)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, or None (checked as gunicorn will bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _cinder_settings(args: argparse.Namespace, base: CinderSettings) -> CinderSettings:
    """nova.conf's [cinder] (or voltrace's defaults), with the flags given on top."""
    overrides: dict[str, object] = {}
    if args.cinder_endpoint is not None:
        overrides["endpoint_template"] = args.cinder_endpoint or None
    if args.cinder_retries is not None:
        overrides["http_retries"] = args.cinder_retries
    if args.cinder_timeout is not None:
        overrides["timeout"] = args.cinder_timeout
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def _serve(args: argparse.Namespace) -> int:
    from voltrace.server import ServeConfig, serve

    cinder = CinderSettings()
    policy_file = args.policy_file
    conf = None
    if args.config_file:
        from voltrace import nova_conf

        try:
            conf = nova_conf.load(args.config_file)
        except nova_conf.NovaConfError as exc:
            print(f"voltrace serve: {exc}", file=sys.stderr)
            return 2
        cinder = conf.cinder
        policy_file = policy_file or conf.policy_file
    config = ServeConfig(
        host=args.host,
        port=args.port,
        cinder=_cinder_settings(args, cinder),
        policy_file=policy_file,
        size_from_snapshot=args.size_from_snapshot,
        workers=args.workers,
        threads=args.threads,
        telemetry=telemetry_config(args, "nova-api"),
    )
    if conf is not None:
        config.max_request_body_size = conf.max_request_body_size
    hmac_key = args.osprofiler_hmac_key
    if args.osprofiler_hmac_key_file:
        with open(args.osprofiler_hmac_key_file, encoding="utf-8") as handle:
            hmac_key = handle.read().strip()
    if hmac_key:
        from voltrace.osprofiler import request_hook

        config.telemetry.request_hooks.append(request_hook(hmac_key))
    if config.policy_file and not os.path.exists(config.policy_file):
        print(f"voltrace serve: policy file {config.policy_file} does not exist", file=sys.stderr)
        return 2
    busy = port_in_use(args.host, args.port)
    if busy is not None:
        print(f"voltrace serve: cannot listen on {args.host}:{args.port}: {busy}",
              file=sys.stderr)
        return 2
    print(f"voltrace serve: nova-api os-volumes on http://{args.host}:{args.port}/v2.1/os-volumes"
          f" -> cinder {config.cinder.endpoint_template or '(volumev3 from X-Service-Catalog)'}",
          file=sys.stderr, flush=True)
    return serve(config)


def _cinder_sim(args: argparse.Namespace) -> int:
    from voltrace import cinder_sim
    from voltrace.telemetry import Telemetry

    config = dataclasses.replace(telemetry_config(args, "cinder-api"), instrument_requests=False)
    telemetry = Telemetry.create(config)
    # run_cli blocks until SIGTERM/SIGINT; flush what we hold on the way out.
    try:
        return cinder_sim.run_cli(args, telemetry=telemetry)
    finally:
        telemetry.shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voltrace",
        description="See, measure and diagnose an OpenStack volume create, "
                    "nova-api to cinder-api.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="serve Nova's POST /v2.1/os-volumes, traced",
        description="Serve nova 34's POST /v2.1/os-volumes (and its version documents) on "
                    "gunicorn, answering exactly as nova-api does, with every stage traced, "
                    "logged and measured. Cinder is reached through python-cinderclient "
                    "with the caller's token.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on "
                       "(default %(default)s)")
    serve.add_argument("--port", type=port_number, default=8774,
                       help="port to listen on (default %(default)s, nova-api's)")
    serve.add_argument("--config-file", metavar="NOVA_CONF",
                       help="read [cinder], [oslo_policy], [oslo_middleware] and [api] from "
                            "nova.conf, as nova-api does; flags given here win")
    serve.add_argument("--cinder-endpoint", default=None, metavar="TEMPLATE",
                       help="nova's [cinder] endpoint_template (default "
                            f"{DEFAULT_ENDPOINT_TEMPLATE.replace('%', '%%')} without "
                            "--config-file); '' looks volumev3 up in X-Service-Catalog")
    serve.add_argument("--policy-file", metavar="F",
                       help="an oslo.policy YAML/JSON file (default: nova's policy defaults)")
    serve.add_argument("--size-from-snapshot", action="store_true",
                       help="the seed's older schema: size optional, taken from the snapshot")
    serve.add_argument("--workers", type=int, default=1,
                       help="gunicorn worker processes (default %(default)s)")
    serve.add_argument("--threads", type=int, default=16,
                       help="threads per worker (default %(default)s)")
    serve.add_argument("--cinder-timeout", type=float, default=None, metavar="SECONDS",
                       help="[cinder] timeout (default: none, like Nova)")
    serve.add_argument("--cinder-retries", type=int, default=None, metavar="N",
                       help="[cinder] http_retries: connect retries (default 3, like Nova)")
    serve.add_argument("--osprofiler-hmac-key", metavar="KEY",
                       default=os.environ.get("VOLTRACE_OSPROFILER_HMAC_KEY"),
                       help="send OSProfiler's signed X-Trace-Info/X-Trace-HMAC to Cinder so "
                            "its spans join voltrace's trace (env VOLTRACE_OSPROFILER_HMAC_KEY)")
    serve.add_argument("--osprofiler-hmac-key-file", metavar="PATH",
                       help="read the OSProfiler key from a file (kept out of ps and the env)")
    add_telemetry_arguments(serve)
    serve.set_defaults(func=_serve)

    from voltrace import cinder_sim

    sim = commands.add_parser("cinder-sim", help="a Cinder v3 API simulator over real HTTP")
    cinder_sim.add_cli_arguments(sim)
    add_telemetry_arguments(sim)
    sim.set_defaults(func=_cinder_sim)

    from voltrace import demo

    demo_parser = commands.add_parser("demo", help="run the scenario library end to end")
    demo.add_cli_arguments(demo_parser)
    demo_parser.set_defaults(func=demo.run_cli)

    from voltrace import load

    load_parser = commands.add_parser("load", help="steady create traffic against a nova-api")
    load.add_cli_arguments(load_parser)
    load_parser.set_defaults(func=load.run_cli)

    from voltrace.explain import cli as explain_cli

    explain = commands.add_parser("explain", help="diagnose creates from trace or log files")
    explain_cli.add_arguments(explain)
    explain.set_defaults(func=explain_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM as a clean exit, so `finally` blocks flush telemetry.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return int(args.func(args) or 0)
