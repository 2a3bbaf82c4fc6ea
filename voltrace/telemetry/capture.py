"""In-process listeners for finished spans and log events (what voltrace.testing uses).

Every tracer provider voltrace builds carries ``HUB``, and every logger carries
``forward_to_listeners``; with no listener registered both cost one check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor


class _Listeners:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: tuple[Callable[[Any], None], ...] = ()

    def add(self, listener: Callable[[Any], None]) -> None:
        with self._lock:
            self.items = (*self.items, listener)

    def remove(self, listener: Callable[[Any], None]) -> None:
        with self._lock:
            self.items = tuple(item for item in self.items if item != listener)


SPAN_LISTENERS = _Listeners()
LOG_LISTENERS = _Listeners()


class _SpanHub(SpanProcessor):
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        for listener in SPAN_LISTENERS.items:
            listener(span)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


HUB = _SpanHub()


def forward_to_listeners(logger: Any, method_name: str, event_dict: dict) -> dict:
    """A structlog processor: hand a copy of each event to registered listeners."""
    for listener in LOG_LISTENERS.items:
        listener(dict(event_dict))
    return event_dict
