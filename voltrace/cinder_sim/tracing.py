"""One SERVER span per Cinder request, with an INTERNAL child span per simulator step.

The SERVER span continues the caller's W3C ``traceparent`` and carries the HTTP and
OpenStack attributes; steps (``validate``, ``check_quota``, ``persist``, ``lookup``,
``injected_latency``) are its children. Without a tracer provider nothing is traced:
the spans handed out are otel's ``INVALID_SPAN``, whose setters do nothing, and no
otel context is touched (that saves a good share of an untraced request's time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from voltrace.cinder_sim.errors import ApiError
from voltrace.cinder_sim.messages import Disconnect, Outcome, Request
from voltrace.cinder_sim.routes import Match

# The instrumentation scope name, the same as when all this was one module.
TRACER_NAME = "voltrace.cinder_sim"
_UNTRACED_STEP = contextlib.nullcontext(trace.INVALID_SPAN)


class Tracing:
    def __init__(self, tracer_provider: trace.TracerProvider | None) -> None:
        # The global tracer provider is never used: no provider, no spans.
        self.enabled = tracer_provider is not None
        self._tracer = (
            tracer_provider.get_tracer(TRACER_NAME)
            if tracer_provider is not None
            else trace.NoOpTracer()
        )
        self._propagator = TraceContextTextMapPropagator()

    @contextlib.contextmanager
    def server_span(self, request: Request, match: Match, request_id: str) -> Iterator[Span]:
        """The request's SERVER span, current while the request is handled."""
        if not self.enabled:
            yield trace.INVALID_SPAN
            return
        template = match.template
        with self._tracer.start_as_current_span(
            f"{request.method} {template}" if template else request.method,
            context=self._propagator.extract(request.lower_headers),
            kind=SpanKind.SERVER,
            attributes=_server_attributes(request, match, request_id),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def parent_context(self, server_span: Span) -> otel_context.Context | None:
        """What step spans hang off (None when untraced: there is nothing to hang off)."""
        return trace.set_span_in_context(server_span) if self.enabled else None

    def step(
        self, parent: otel_context.Context | None, name: str, attributes: dict[str, Any]
    ) -> AbstractContextManager[Span]:
        """A child INTERNAL span; an error inside marks it ERROR and records it."""
        if not self.enabled:
            return _UNTRACED_STEP
        return self._traced_step(parent, name, attributes)

    @contextlib.contextmanager
    def _traced_step(
        self, parent: otel_context.Context | None, name: str, attributes: dict[str, Any]
    ) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            name,
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes={k: v for k, v in attributes.items() if v is not None},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except ApiError as exc:
                span.set_attributes(exc.span_attributes)
                # Name the exception after the cinder class it mirrors, not our wrapper.
                span.record_exception(exc, attributes={"exception.type": exc.kind})
                span.set_status(Status(StatusCode.ERROR, exc.message))
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                raise


def finish_server_span(span: Span, outcome: Outcome) -> None:
    """Status and error attributes: 5xx and disconnects are errors, 4xx are not."""
    if isinstance(outcome, Disconnect):
        span.set_attribute("error.type", f"connection_{outcome.action}")
        span.set_status(Status(StatusCode.ERROR, f"fault injection: connection {outcome.action}"))
        return
    span.set_attribute("http.response.status_code", outcome.status)
    if outcome.status >= 500:
        span.set_attribute("error.type", str(outcome.status))
        span.set_status(Status(StatusCode.ERROR))


def _server_attributes(request: Request, match: Match, request_id: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "url.scheme": "http",
        "url.path": request.path,
        "server.address": request.server_host,
        "server.port": request.server_port,
        "network.protocol.version": "1.1",
        "client.address": request.client_address,
        "cinder.request_id": request_id,
    }
    if request.query:
        attributes["url.query"] = request.query
    if match.template:
        attributes["http.route"] = match.template
    if match.route:
        attributes["cinder_sim.route"] = match.route.name
    if "project_id" in match.params:
        attributes["openstack.project_id"] = match.params["project_id"]
    user_agent = request.header("User-Agent")
    if user_agent:
        attributes["user_agent.original"] = user_agent
    global_id = request.global_request_id  # oslo.middleware drops anything not req-<uuid>
    if global_id:
        attributes["openstack.global_request_id"] = global_id
    return attributes
