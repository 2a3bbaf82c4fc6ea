"""structlog for voltrace: JSON lines by default, a readable console on a TTY.

Loggers are built per service (not via structlog's global configuration), so
nova-api and the demo's cinder-api can log side by side in one process.
"""

from __future__ import annotations

import logging
from typing import Any, TextIO

import structlog

from voltrace.telemetry.capture import forward_to_listeners

# "off" filters everything voltrace emits (it never logs at CRITICAL).
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "off": logging.CRITICAL}

# Keys that must never reach a log line, whatever a caller binds.
SECRET_KEYS = frozenset({"auth_token", "x-auth-token", "token", "password", "hmac_key",
                         "osprofiler_hmac_key", "X-Auth-Token"})


def _drop_secrets(logger: Any, method_name: str, event_dict: dict) -> dict:
    for key in SECRET_KEYS.intersection(event_dict):
        event_dict[key] = "***"
    return event_dict


def make_logger(stream: TextIO, *, fmt: str = "auto", level: str = "info",
                service: str = "nova-api") -> Any:
    """A bound structlog logger writing one line per event to ``stream``."""
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    elif fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        raise ValueError(f"log format must be auto, json or console, not {fmt!r}")
    processors = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
        forward_to_listeners,
        renderer,
    ]
    return structlog.wrap_logger(
        # WriteLogger: one write() + flush() per line, cheaper than PrintLogger's print().
        structlog.WriteLogger(stream),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        cache_logger_on_first_use=True,
    ).bind(service=service)
