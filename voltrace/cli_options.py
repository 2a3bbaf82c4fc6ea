"""Command-line options shared by ``voltrace serve`` and ``voltrace cinder-sim``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voltrace.telemetry import TelemetryConfig


def add_telemetry_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by serve and cinder-sim; the OTEL_* variables apply as well."""
    group = parser.add_argument_group("telemetry (plus the standard OTEL_* variables)")
    group.add_argument(
        "--traces-file",
        metavar="PATH",
        help="append OTLP JSON export requests, one per line "
        "(the OpenTelemetry Collector file exporter's format)",
    )
    group.add_argument(
        "--jaeger-file",
        metavar="PATH",
        help="write traces in Jaeger's upload JSON (open it in any Jaeger UI)",
    )
    group.add_argument(
        "--otlp",
        action="store_true",
        help="also export spans over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    group.add_argument("--log-file", metavar="PATH", help="write JSON log lines here")
    group.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="auto: console on a TTY, JSON lines otherwise (default)",
    )
    group.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error", "off"), default="info"
    )
    group.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus /metrics on 127.0.0.1:PORT (PORT+i for worker i)",
    )


def telemetry_config(args: argparse.Namespace, service_name: str) -> TelemetryConfig:
    from voltrace.telemetry import TelemetryConfig

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
