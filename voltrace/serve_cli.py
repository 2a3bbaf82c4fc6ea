"""``voltrace serve``: its options and how they become a ServeConfig."""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys

from voltrace.cinder import DEFAULT_ENDPOINT_TEMPLATE, CinderSettings
from voltrace.cli_options import CLIENT_TIMEOUT_S, add_telemetry_arguments, telemetry_config


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve nova 34's POST /v2.1/os-volumes (and its version documents) on "
        "gunicorn, answering exactly as nova-api does, with every stage traced, "
        "logged and measured. Cinder is reached through python-cinderclient "
        "with the caller's token."
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=8774,
        help="port to listen on (default %(default)s, nova-api's)",
    )
    parser.add_argument(
        "--config-file",
        metavar="NOVA_CONF",
        help="read [cinder], [oslo_policy] and [oslo_middleware] from "
        "nova.conf, as nova-api does; flags given here win",
    )
    parser.add_argument(
        "--cinder-endpoint",
        default=None,
        metavar="TEMPLATE",
        help="nova's [cinder] endpoint_template (default "
        f"{DEFAULT_ENDPOINT_TEMPLATE.replace('%', '%%')} without "
        "--config-file); '' looks volumev3 up in X-Service-Catalog",
    )
    parser.add_argument(
        "--enable-proxy-headers-parsing",
        action="store_true",
        help="trust X-Forwarded-Proto/Forwarded from a proxy in front, as oslo's "
        "[oslo_middleware] option of the same name (default off, like nova)",
    )
    parser.add_argument(
        "--healthcheck",
        action="store_true",
        help="serve oslo.middleware's /healthcheck for load balancers (nova 34's "
        "api-paste.ini has none; operators add it)",
    )
    parser.add_argument(
        "--follow-volumes",
        action="store_true",
        help="after each 200, poll Cinder with the caller's token until the volume settles, "
        "for the async-outcome metrics, span and log line (not something Nova does)",
    )
    parser.add_argument(
        "--follow-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up following a volume still creating after this long "
        "(default %(default)s; counted as stuck_creating)",
    )
    parser.add_argument(
        "--policy-file",
        metavar="F",
        help="an oslo.policy YAML/JSON file (default: nova's policy defaults)",
    )
    parser.add_argument(
        "--size-from-snapshot",
        action="store_true",
        help="the seed's older schema: size optional, taken from the snapshot",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="gunicorn worker processes (default %(default)s)"
    )
    parser.add_argument(
        "--threads", type=int, default=16, help="threads per worker (default %(default)s)"
    )
    parser.add_argument(
        "--client-timeout",
        type=non_negative_seconds,
        default=CLIENT_TIMEOUT_S,
        metavar="SECONDS",
        help="a client must send its whole request (headers and body) within this long, or "
        "gets a 408 and is closed; half-sent requests wait without holding a thread "
        "(default %(default)s; 0: unbounded, only behind a buffering proxy such as "
        "haproxy/nginx/apache, as Nova's own deployments put in front of nova-api)",
    )
    parser.add_argument(
        "--cinder-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="[cinder] timeout: give up on a Cinder call after this long, opt-in (default: "
        "none, like Nova; a hung Cinder then holds a thread per create until every "
        "--threads is taken). A timed-out POST is retried --cinder-retries times, as "
        "keystoneauth does for Nova: a slow Cinder may then create the volume more than once",
    )
    parser.add_argument(
        "--cinder-retries",
        type=int,
        default=None,
        metavar="N",
        help="[cinder] http_retries: connect retries (default 3, like Nova)",
    )
    parser.add_argument(
        "--osprofiler-hmac-key",
        metavar="KEY",
        default=os.environ.get("VOLTRACE_OSPROFILER_HMAC_KEY"),
        help="send OSProfiler's signed X-Trace-Info/X-Trace-HMAC to Cinder so "
        "its spans join voltrace's trace (env VOLTRACE_OSPROFILER_HMAC_KEY)",
    )
    parser.add_argument(
        "--osprofiler-hmac-key-file",
        metavar="PATH",
        help="read the OSProfiler key from a file (kept out of ps and the env)",
    )
    add_telemetry_arguments(parser)


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0-65535 (0 only where the kernel may pick)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0-65535)")
    return port


def non_negative_seconds(text: str) -> float:
    """An argparse type: a duration in seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds >= 0 or seconds == float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds (0 or more)")
    return seconds


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


def run_cli(args: argparse.Namespace) -> int:
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
        client_timeout_s=args.client_timeout or None,
        telemetry=telemetry_config(args, "nova-api"),
    )
    if conf is not None:
        config.max_request_body_size = conf.max_request_body_size
        config.enable_proxy_headers_parsing = conf.enable_proxy_headers_parsing
    if args.enable_proxy_headers_parsing:
        config.enable_proxy_headers_parsing = True
    config.healthcheck = args.healthcheck
    if args.follow_volumes:
        from voltrace.follow import FollowSettings

        config.follow = FollowSettings(timeout_s=args.follow_timeout)
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
        print(f"voltrace serve: cannot listen on {args.host}:{args.port}: {busy}", file=sys.stderr)
        return 2
    print(
        f"voltrace serve: nova-api os-volumes on http://{args.host}:{args.port}/v2.1/os-volumes"
        f" -> cinder {config.cinder.endpoint_template or '(volumev3 from X-Service-Catalog)'}",
        file=sys.stderr,
        flush=True,
    )
    return serve(config)
