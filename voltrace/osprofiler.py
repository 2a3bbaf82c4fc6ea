"""The OSProfiler bridge: Cinder's own spans, inside voltrace's trace.

OpenStack services trace with OSProfiler, which speaks its own signed headers,
not W3C ``traceparent``. OSProfiler's OTLP driver (osprofiler 4.1+; 4.4.0 tested) turns
those headers into OpenTelemetry ids, so a caller that picks the right header
values gets Cinder's spans in *its own* trace, under *its own* client span.

Usage::

    voltrace serve --cinder-endpoint 'http://cinder:8776/v3/%(project_id)s' --otlp
    # with the key in the environment, so it stays out of `ps`:
    VOLTRACE_OSPROFILER_HMAC_KEY=... voltrace serve ...

or, in code::

    from voltrace.osprofiler import request_hook
    TelemetryConfig(..., request_hooks=[request_hook(key)])

Every traced (sampled) call to Cinder then carries two headers, built from the
CLIENT span that opentelemetry-instrumentation-requests opened for it:

``X-Trace-Info``
    ``base64url(json.dumps({"base_id": ..., "parent_id": ...}))`` where
    ``base_id = str(UUID(int=trace_id))`` and ``parent_id = str(UUID(int=span_id))``.
``X-Trace-HMAC``
    the hex HMAC-SHA1 of that base64 text under the shared key, exactly as
    ``osprofiler._utils.signed_pack`` computes it.

On the Cinder side, ``osprofiler.web.WsgiMiddleware`` checks the HMAC against
``[profiler] hmac_keys`` and starts a trace; the OTLP driver maps
``trace_id = UUID(base_id).int`` and the parent span id to the low 64 bits of
``UUID(parent_id)``, which gives back voltrace's trace id and client span id
exactly. Cinder's ``WSGI_POST_/v3/{project}/volumes`` SERVER span therefore
lands under voltrace's ``POST`` CLIENT span. ``docs/osprofiler-bridge.md`` is
the operator recipe (``cinder.conf``, key handling, caveats, verification).

Properties:

* **No shared state.** The headers are a pure function of the span handed to
  the hook; osprofiler's thread-local profiler is not used (nor imported), so
  concurrent requests on gunicorn's threads cannot mix their ids.
* **Sampling is honoured.** An unsampled span sends no headers, so Cinder
  profiles exactly the requests voltrace records.
* **The key stays in this process.** Only its HMAC leaves; the key is never
  logged, never a span attribute, never exported, and ``repr()`` hides it. The
  request instrumentation reads the headers it may capture *before* this hook
  runs, so not even the HMAC becomes an attribute.
* A wrong key is silently ignored by Cinder (no Cinder spans, nothing else
  changes): the bridge can never break a create.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

from opentelemetry.trace import Span

#: The headers osprofiler.web reads (osprofiler/web.py: X_TRACE_INFO, X_TRACE_HMAC).
X_TRACE_INFO = "X-Trace-Info"
X_TRACE_HMAC = "X-Trace-HMAC"


def trace_info(trace_id: int, span_id: int) -> dict[str, str]:
    """OSProfiler's trace info for an OpenTelemetry (trace id, parent span id)."""
    return {"base_id": str(uuid.UUID(int=trace_id)), "parent_id": str(uuid.UUID(int=span_id))}


def signed_headers(trace_id: int, span_id: int, hmac_key: str) -> dict[str, str]:
    """``X-Trace-Info`` and ``X-Trace-HMAC`` as osprofiler's ``signed_pack`` makes them."""
    packed = base64.urlsafe_b64encode(json.dumps(trace_info(trace_id, span_id)).encode("utf-8"))
    signature = hmac.new(hmac_key.encode("utf-8"), packed, hashlib.sha1).hexdigest()
    return {X_TRACE_INFO: packed.decode("ascii"), X_TRACE_HMAC: signature}


class OSProfilerRequestHook:
    """``request_hook(span, request)`` for opentelemetry-instrumentation-requests."""

    __slots__ = ("_key",)

    def __init__(self, hmac_key: str) -> None:
        if not hmac_key:
            raise ValueError(
                "the OSProfiler HMAC key must not be empty "
                "(osprofiler ignores unsigned trace headers)"
            )
        self._key = hmac_key

    def __call__(self, span: Span, request: Any) -> None:
        context = span.get_span_context()
        if not (context.is_valid and context.trace_flags.sampled):
            return
        if context.trace_id == context.span_id:
            # osprofiler reads base_id == parent_id as "no parent" (cannot happen
            # with random ids; better no Cinder span than a detached one).
            return
        request.headers.update(signed_headers(context.trace_id, context.span_id, self._key))

    def __repr__(self) -> str:
        return "OSProfilerRequestHook(hmac_key=<hidden>)"


def request_hook(hmac_key: str) -> OSProfilerRequestHook:
    """A requests hook that signs each traced Cinder call for OSProfiler with ``hmac_key``."""
    return OSProfilerRequestHook(hmac_key)
