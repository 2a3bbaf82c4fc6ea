"""What telemetry keeps of a string: never a secret, never invalid UTF-8, never unbounded.

Client input reaches telemetry through Nova's error messages, stage decisions, URLs and
headers. Three things must never follow it into a span, an event or a log line:

* **the request's own token**, which Cinder (or anything else) may echo in a message:
  :func:`redacting` names it for the duration of a request, and :func:`clean_text`
  writes ``***`` in its place;
* **strings that are not UTF-8**: JSON allows a lone surrogate (``"\\ud800"``), Python
  keeps it, and every exporter's encoder rejects it (orjson ``TypeError``, protobuf
  ``UnicodeEncodeError``) together with the whole batch around it. It becomes U+FFFD;
* **unbounded copies**: a 114 KB ``size`` string is copied into the error message, the
  exception event and the log line. Every string is cut to
  :func:`value_length_limit` characters, as OpenTelemetry's
  ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` cuts attribute values (voltrace sets that limit
  on its tracer providers too, default :data:`DEFAULT_VALUE_LENGTH_LIMIT`).

voltrace cleans its own strings where it hands them to telemetry (the observer, the
SERVER-span annotator, the log processors). What other instrumentations record (the
requests instrumentation's URL, the Cinder simulator's messages) is checked once more on
the export threads (:func:`exportable`): a span an encoder would refuse, or whose status
message is over the limit, is exported as a cleaned copy, so one span can never fail a
batch.

Header capture (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*``) is the operator's choice,
but :data:`ALWAYS_SENSITIVE_HEADERS` are redacted whatever the variables say:
:func:`enforce_sensitive_headers` adds them to the operator's own list before any
instrumentation reads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Link, Status

# 4 KiB: a whole Nova error message, a URL or a stack frame fits; a hostile 114 KB value
# does not get copied into every span, event and log line.
DEFAULT_VALUE_LENGTH_LIMIT = 4096
REDACTED = "***"
# A shorter "token" cannot be told from an ordinary word in a message.
MIN_SECRET_LENGTH = 8

SANITIZE_FIELDS_VARIABLE = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
# Regexes, matched case-insensitively anywhere in the header name, as the instrumentations
# match OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS; WSGI spells "-" as "_".
ALWAYS_SENSITIVE_HEADERS = (
    "x[-_]auth[-_]token",
    "x[-_]subject[-_]token",
    "x[-_]service[-_]token",
    "x[-_]service[-_]catalog",
    "x[-_]trace[-_]hmac",
    "authorization",
    "cookie",
)

_SURROGATES = re.compile("[\ud800-\udfff]")
_REQUEST_SECRETS: ContextVar[tuple[str, ...]] = ContextVar("voltrace_request_secrets", default=())


def _limit_from_env() -> int:
    for name in ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"):
        raw = os.environ.get(name, "").strip()
        if raw.isdigit():
            return int(raw)
    return DEFAULT_VALUE_LENGTH_LIMIT


_limit = _limit_from_env()


def value_length_limit() -> int:
    """The longest string telemetry keeps, in characters (the OTel variables, else 4096)."""
    return _limit


def reload_limits() -> int:
    """Read the limit from the environment again (each ``Telemetry`` does, when built)."""
    global _limit
    _limit = _limit_from_env()
    return _limit


@contextmanager
def redacting(*secrets: str | None) -> Iterator[None]:
    """Within the block (this thread or task), ``clean_text`` writes ``***`` for each secret."""
    kept = tuple(s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH)
    if not kept:
        yield
        return
    token = _REQUEST_SECRETS.set(_REQUEST_SECRETS.get() + kept)
    try:
        yield
    finally:
        _REQUEST_SECRETS.reset(token)


def current_secrets() -> tuple[str, ...]:
    return _REQUEST_SECRETS.get()


def valid_utf8(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (unchanged if it encodes)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    return text


def clean_text(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` as telemetry may keep it: secrets redacted, cut to the limit, valid UTF-8."""
    request_secrets = _REQUEST_SECRETS.get()
    if request_secrets:
        text = _redact(text, request_secrets)
    if secrets:
        text = _redact(text, secrets)
    # Redact before cutting: a cut token would leave its first characters behind.
    if len(text) > _limit:
        text = text[:_limit]
    return text if text.isascii() else valid_utf8(text)


def clean_value(value: Any, secrets: Sequence[str] = ()) -> Any:
    """An attribute value with each of its strings cleaned (other types unchanged)."""
    if type(value) is str:
        return clean_text(value, secrets)
    if isinstance(value, (list, tuple)):
        return tuple(clean_text(v, secrets) if isinstance(v, str) else v for v in value)
    return value


def clean_attributes(attributes: dict[str, Any], secrets: Sequence[str] = ()) -> dict[str, Any]:
    """``attributes`` with every string cleaned; the same dict when none needed it."""
    every_secret = (*_REQUEST_SECRETS.get(), *secrets)
    for value in attributes.values():
        if type(value) is str:
            needs = len(value) > _limit or not value.isascii() or _carries(value, every_secret)
        else:
            needs = isinstance(value, (list, tuple))
        if needs:
            return {key: clean_value(value, secrets) for key, value in attributes.items()}
    return attributes


def _carries(text: str, secrets: tuple[str, ...]) -> bool:
    # A plain loop: any() over a generator costs several times more, on every log field.
    for secret in secrets:  # noqa: SIM110
        if secret in text:
            return True
    return False


# -- the export-thread check -------------------------------------------------------


def _unencodable(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unencodable_value(value: Any) -> bool:
    if isinstance(value, str):
        return _unencodable(value)
    if isinstance(value, (list, tuple)):
        return any(isinstance(v, str) and _unencodable(v) for v in value)
    return False


def _unencodable_attributes(attributes: Any) -> bool:
    return bool(attributes) and any(
        _unencodable(key) or _unencodable_value(value) for key, value in attributes.items()
    )


def needs_cleaning(span: ReadableSpan) -> bool:
    """Whether an encoder would refuse this span (a string that is not UTF-8), or its status
    message is longer than the limit (the SDK bounds attributes, not status messages)."""
    description = span.status.description
    return (
        _unencodable(span.name)
        or _unencodable_attributes(span.attributes)
        or bool(description and (len(description) > _limit or _unencodable(description)))
        or any(_unencodable(e.name) or _unencodable_attributes(e.attributes) for e in span.events)
        or any(_unencodable_attributes(link.attributes) for link in span.links)
    )


def _utf8_attributes(attributes: Any) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if isinstance(value, str):
            value = valid_utf8(value)
        elif isinstance(value, (list, tuple)):
            value = tuple(valid_utf8(v) if isinstance(v, str) else v for v in value)
        cleaned[valid_utf8(key)] = value
    return cleaned


def cleaned_copy(span: ReadableSpan) -> ReadableSpan:
    """The same span with every string valid UTF-8 and the status message cut to the limit
    (ids, times, kind and everything else unchanged)."""
    status = span.status
    if status.description:
        status = Status(status.status_code, valid_utf8(status.description[:_limit]))
    return ReadableSpan(
        name=valid_utf8(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_utf8_attributes(span.attributes),
        events=[
            Event(valid_utf8(e.name), _utf8_attributes(e.attributes), e.timestamp)
            for e in span.events
        ],
        links=[Link(link.context, _utf8_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def exportable(spans: Sequence[ReadableSpan]) -> Sequence[ReadableSpan]:
    """``spans``, each one that ``needs_cleaning`` replaced by its ``cleaned_copy``.

    Runs on the export threads: for a clean batch it is one ``isascii()`` per string.
    """
    if not any(needs_cleaning(span) for span in spans):
        return spans
    return [cleaned_copy(span) if needs_cleaning(span) else span for span in spans]


# -- header capture ------------------------------------------------------------------


def enforce_sensitive_headers() -> str:
    """Add :data:`ALWAYS_SENSITIVE_HEADERS` to the operator's sanitize list, keeping theirs.

    The requests instrumentation reads the variable once, when it instruments; the WSGI
    instrumentation on every request. Call this before either reads it.
    """
    given = [
        f.strip() for f in os.environ.get(SANITIZE_FIELDS_VARIABLE, "").split(",") if f.strip()
    ]
    merged = ",".join([*given, *(f for f in ALWAYS_SENSITIVE_HEADERS if f not in given)])
    os.environ[SANITIZE_FIELDS_VARIABLE] = merged
    return merged
