"""Command-line options shared by ``voltrace serve`` and ``voltrace cinder-sim``."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voltrace.telemetry import TelemetryConfig


# serve's --client-timeout default (ServeConfig's too): a request (its headers and its
# body) must reach voltrace whole within this long of its first byte. Behind the
# buffering proxy Nova's deployments use (haproxy, nginx, apache) requests arrive whole
# at once and this never fires; facing
# clients directly it is what nginx's client_header_timeout/client_body_timeout and
# apache's mod_reqtimeout are, at their tighter end: a 114 KB body (the largest nova takes)
# needs 12 KB/s.
CLIENT_TIMEOUT_S = 10.0


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
        choices=("auto", "json", "console", "oslo"),  # voltrace.telemetry.logs.LOG_FORMATS
        default="auto",
        help="auto: console on a TTY, JSON lines otherwise (default); oslo: the lines "
        "nova-api writes with oslo.log's default format, for existing grep and ELK patterns",
    )
    group.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error", "off"), default="info"
    )
    group.add_argument(
        "--trust-incoming-trace-context",
        action="store_true",
        default=os.environ.get("VOLTRACE_TRUST_INCOMING_TRACE_CONTEXT", "").lower() == "true",
        help="continue a caller's W3C traceparent (only behind a gateway you run); default: "
        "a trace of our own that links to the caller's (env VOLTRACE_TRUST_INCOMING_TRACE_CONTEXT)",
    )
    group.add_argument(
        "--forward-baggage",
        action="store_true",
        default=os.environ.get("VOLTRACE_FORWARD_BAGGAGE", "").lower() == "true",
        help="forward a caller's W3C baggage to Cinder, cut to 64 members and 8192 bytes "
        "(default: never, it may hold anything; env VOLTRACE_FORWARD_BAGGAGE)",
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
        trust_incoming_trace_context=args.trust_incoming_trace_context,
        forward_baggage=args.forward_baggage,
    )
