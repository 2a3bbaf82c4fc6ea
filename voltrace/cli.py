"""The ``voltrace`` command: serve, cinder-sim, demo, load, explain.

Each subcommand lives in its own module, imported only when that subcommand
runs: ``voltrace explain`` never loads cinderclient, oslo or the OTel SDK.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from voltrace import __version__

# name -> (module, function adding its arguments, function running it, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "serve": (
        "voltrace.serve_cli",
        "add_cli_arguments",
        "run_cli",
        "serve Nova's POST /v2.1/os-volumes, traced",
    ),
    "cinder-sim": (
        "voltrace.cinder_sim.cli",
        "add_command_arguments",
        "run_command",
        "a Cinder v3 API simulator over real HTTP",
    ),
    "demo": (
        "voltrace.demo",
        "add_cli_arguments",
        "run_cli",
        "run the scenario library end to end",
    ),
    "load": (
        "voltrace.load",
        "add_cli_arguments",
        "run_cli",
        "steady create traffic against a nova-api",
    ),
    "explain": (
        "voltrace.explain.cli",
        "add_arguments",
        "run",
        "diagnose creates from trace or log files",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (every one when None)."""
    parser = argparse.ArgumentParser(
        prog="voltrace",
        description="See, measure and diagnose an OpenStack volume create, nova-api to cinder-api.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, add_arguments, run, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        if command is None or name == command:
            module = importlib.import_module(module_name)
            getattr(module, add_arguments)(sub)
            sub.set_defaults(func=getattr(module, run))
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    # SIGTERM as a clean exit, so `finally` blocks flush telemetry; the caller's handler
    # comes back afterwards (main() also runs in-process, in tests and embedding programs).
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return int(args.func(args) or 0)
    finally:
        signal.signal(signal.SIGTERM, previous)
