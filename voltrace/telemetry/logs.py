"""structlog for voltrace: JSON lines by default, a readable console on a TTY, or oslo.log lines.

Loggers are built per service (not via structlog's global configuration), so
nova-api and the demo's cinder-api can log side by side in one process.

Formats (``--log-format``):

``json``
    one JSON object per line, the fields ``voltrace explain --logs`` reads;
``console``
    structlog's coloured console renderer, for a human at a terminal (``auto`` on a TTY);
``oslo``
    the line nova-api writes with oslo.log's default ``logging_context_format_string``,
    so existing grep and ELK patterns keep working::

        2026-12-01 12:00:00.123 1234 INFO nova.api.openstack.requestlog \
            [None req-3f… u-1 p-1 - - - -] request.finished outcome=success http_status=200 …

    (one line; wrapped here).

    ``[global_request_id request_id user project domain system_scope user_domain
    project_domain]`` as oslo.context fills it (``None`` when the caller sent no global
    request id, ``-`` for what voltrace does not know), ``[-]`` before keystonecontext
    ran; then the event and its fields as ``key=value``. Local time, as oslo.log.

Every field is cleaned before it is written (``hygiene.clean_text``: the request's token
redacted, lone surrogates replaced, cut to the attribute length limit). For the two
formats drawn on a terminal, control characters are escaped (``\\x1b`` is written as the
four characters ``\\x1b``), so a hostile ``volume_type`` cannot clear a screen, retitle a
window or write the clipboard.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, TextIO

import structlog

import voltrace.telemetry.hygiene as hygiene
from voltrace.telemetry.capture import forward_to_listeners

LOG_FORMATS = ("auto", "json", "console", "oslo")

# "off" filters everything voltrace emits (it never logs at CRITICAL).
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL,
}

# Keys that must never reach a log line, whatever a caller binds.
SECRET_KEYS = frozenset(
    {
        "auth_token",
        "x-auth-token",
        "token",
        "password",
        "hmac_key",
        "osprofiler_hmac_key",
        "X-Auth-Token",
    }
)

# C0 controls, DEL and C1 controls (CSI, OSC ... in 8-bit form), and the Unicode line and
# paragraph separators: each written as a visible escape.
_TERMINAL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_TERMINAL_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def _drop_secrets(logger: Any, method_name: str, event_dict: dict) -> dict:
    for key in SECRET_KEYS.intersection(event_dict):
        event_dict[key] = "***"
    return event_dict


def _clean_fields(logger: Any, method_name: str, event_dict: dict) -> dict:
    """Every string field as telemetry may keep it (hygiene.clean_text), checked cheaply."""
    secrets = hygiene.current_secrets()
    limit = hygiene.value_length_limit()
    for key, value in event_dict.items():
        if type(value) is not str:
            continue
        if len(value) > limit or not value.isascii():
            event_dict[key] = hygiene.clean_text(value)
            continue
        for secret in secrets:
            if secret in value:
                event_dict[key] = hygiene.clean_text(value)
                break
    return event_dict


def terminal_safe(text: str) -> str:
    """``text`` with every control character written as a visible escape."""
    return text if text.isprintable() else text.translate(_TERMINAL_ESCAPES)


def _escape_controls(logger: Any, method_name: str, event_dict: dict) -> dict:
    for key, value in event_dict.items():
        if type(value) is str and not value.isprintable():
            event_dict[key] = value.translate(_TERMINAL_ESCAPES)
    return event_dict


# The oslo.log logger name each event would have in nova-api (or cinder-api).
_OSLO_NAMES = (
    ("stage.", "nova.api.openstack.compute.volumes"),
    ("request.", "nova.api.openstack.requestlog"),
    ("telemetry.", "voltrace.telemetry"),
)
_CONTEXT_KEYS = ("request_id", "global_request_id", "user_id", "project_id")


def oslo_logger_name(event: str, service: str) -> str:
    if service == "cinder-api":
        return "cinder.api.openstack.wsgi"
    return next((name for prefix, name in _OSLO_NAMES if event.startswith(prefix)), "voltrace")


def _oslo_value(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value and '"' not in value else json.dumps(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


class OsloRenderer:
    """One line per event in oslo.log's default context format (see the module docstring)."""

    def __init__(self) -> None:
        self._pid = os.getpid()

    def __call__(self, logger: Any, method_name: str, event_dict: dict) -> str:
        fields = dict(event_dict)
        event = str(fields.pop("event", ""))
        level = str(fields.pop("level", method_name)).upper()
        fields.pop("timestamp", None)
        service = str(fields.pop("service", ""))
        request_id, global_id, user, project = (fields.pop(k, None) for k in _CONTEXT_KEYS)
        if request_id:
            # oslo.context logs the global id only when the caller sent one.
            shown_global = global_id if global_id and global_id != request_id else "None"
            context = f"[{shown_global} {request_id} {user or '-'} {project or '-'} - - - -]"
        else:
            context = "[-]"
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        message = event + "".join(
            f" {key}={_oslo_value(value)}" for key, value in fields.items() if value is not None
        )
        if os.getpid() != self._pid:  # a gunicorn worker forked after the logger was built
            self._pid = os.getpid()
        return (
            f"{stamp}.{int(now % 1 * 1000):03d} {self._pid} {level} "
            f"{oslo_logger_name(event, service)} {context} {message}"
        )


def make_logger(
    stream: TextIO, *, fmt: str = "auto", level: str = "info", service: str = "nova-api"
) -> Any:
    """A bound structlog logger writing one line per event to ``stream``."""
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    elif fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    elif fmt == "oslo":
        renderer = OsloRenderer()
    else:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
        _clean_fields,
        forward_to_listeners,
    ]
    if fmt != "json":  # JSON escapes control characters itself
        processors.append(_escape_controls)
    processors.append(renderer)
    return structlog.wrap_logger(
        # WriteLogger: one write() + flush() per line, cheaper than PrintLogger's print().
        structlog.WriteLogger(stream),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        cache_logger_on_first_use=True,
    ).bind(service=service)
