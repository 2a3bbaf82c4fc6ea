"""Capture voltrace's spans and log events in your own tests.

Like ``structlog.testing.capture_logs``::

    from voltrace.testing import capture

    with capture() as captured:
        client.create_volume({"size": 1}, headers=identity_headers())
    server = captured.server_span()
    assert server.attributes["voltrace.outcome"] == "success"
    assert [s.name for s in captured.children(captured.pipeline_span())] == [
        "parse", "authorize", "resolve_snapshot", "derive_size", "call_cinder", "translate"]

Every ``Telemetry`` voltrace builds feeds these listeners, whatever exporters
it also has; spans arrive when they end, logs when they are written.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from voltrace.telemetry.capture import LOG_LISTENERS, SPAN_LISTENERS


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes.get("service.name", ""))


@dataclass
class Captured:
    """Spans and log events seen while a ``capture()`` block was open."""

    spans: list[ReadableSpan] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def _add_span(self, span: ReadableSpan) -> None:
        with self._changed:
            self.spans.append(span)
            self._changed.notify_all()

    def _add_log(self, event: dict[str, Any]) -> None:
        with self._changed:
            self.logs.append(event)
            self._changed.notify_all()

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> Any:
        """Block until ``predicate(self)`` is truthy (spans end after the client has its answer)."""
        with self._changed:
            result = self._changed.wait_for(lambda: predicate(self), timeout)
        if not result:
            raise TimeoutError(f"telemetry never satisfied {predicate!r}")
        return result

    def complete_trace(self, request_id: str, timeout: float = 10.0) -> list[ReadableSpan]:
        """The whole trace of one create, once its server span and every hop have ended.

        Complete means: nova-api's server span for ``request_id`` has ended, and
        every client span that got an answer has the callee's server span under it.
        """

        def ready(captured: Captured) -> list[ReadableSpan] | None:
            try:
                server = captured.server_span(request_id)
            except LookupError:
                return None
            spans = captured.trace(server.context.trace_id)
            for span in spans:
                answered = "http.response.status_code" in (span.attributes or {})
                if span.kind is SpanKind.CLIENT and answered and not captured.children(span):
                    return None
            return spans

        return self.wait_for(ready, timeout)

    def server_spans(self, service: str = "nova-api") -> list[ReadableSpan]:
        return [s for s in self.spans if s.kind is SpanKind.SERVER and service_of(s) == service]

    def server_span(self, request_id: str | None = None) -> ReadableSpan:
        """nova-api's SERVER span (of the request with this id, when given)."""
        matches = [
            s
            for s in self.server_spans()
            if request_id is None or (s.attributes or {}).get("openstack.request_id") == request_id
        ]
        if len(matches) != 1:
            raise LookupError(f"expected one nova-api server span, found {len(matches)}")
        return matches[0]

    def trace(self, trace_id: int) -> list[ReadableSpan]:
        return sorted(
            (s for s in self.spans if s.context.trace_id == trace_id),
            key=lambda s: s.start_time or 0,
        )

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return sorted(
            (
                s
                for s in self.spans
                if s.parent is not None
                and s.parent.span_id == parent.context.span_id
                and s.context.trace_id == parent.context.trace_id
            ),
            key=lambda s: s.start_time or 0,
        )

    def pipeline_span(self, server: ReadableSpan | None = None) -> ReadableSpan:
        server = server or self.server_span()
        return next(s for s in self.children(server) if s.name == "create_volume")

    def tree(self, root: ReadableSpan) -> list[Any]:
        """``[(service, kind, name), [children...]]``, for whole-tree assertions."""
        return [
            (service_of(root), root.kind.name, root.name),
            [self.tree(child) for child in self.children(root)],
        ]

    def logs_for(self, request_id: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("request_id") == request_id]


@contextmanager
def capture() -> Iterator[Captured]:
    """Collect every voltrace span and log event produced inside the block."""
    captured = Captured()
    SPAN_LISTENERS.add(captured._add_span)
    LOG_LISTENERS.add(captured._add_log)
    try:
        yield captured
    finally:
        SPAN_LISTENERS.remove(captured._add_span)
        LOG_LISTENERS.remove(captured._add_log)
