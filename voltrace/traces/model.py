"""The span model every reader produces: ``Span``, ``Event`` and ``Trace``.

A trace file may be hostile (a span its own parent, a parent cycle A→B→A, a parent that
is missing, one span id used twice), so ``Trace`` never trusts the parent links: every
walk visits each span once, and a span whose parent is itself or absent is a root.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Event:
    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Span:
    """One finished span, whichever format it was read from."""

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    parent_id: str | None
    name: str
    kind: str  # server, client, internal, producer, consumer, unspecified
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str = "unset"  # unset, ok, error
    status_message: str = ""
    events: list[Event] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e6

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attributes.get(key, default)

    def text(self, key: str) -> str | None:
        """An attribute as text (None when absent or empty), whatever type the file gave."""
        value = self.attributes.get(key)
        if value is None or value == "":
            return None
        return value if isinstance(value, str) else str(value)

    def number(self, key: str) -> int | None:
        """An attribute as an integer (None when absent or not a number)."""
        return as_int(self.attributes.get(key))

    def flag(self, key: str) -> bool:
        """An attribute as a boolean (``true`` as text counts, as Jaeger tags write it)."""
        value = self.attributes.get(key)
        return value is True or (isinstance(value, str) and value.lower() == "true")

    def event(self, name: str) -> Event | None:
        return next((e for e in self.events if e.name == name), None)


def as_int(value: Any) -> int | None:
    """``value`` as an integer, or None (booleans, floats with a fraction, text that is not
    a number all give None)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 20:
        return int(value)
    return None


class Trace:
    """The spans of one trace id, with parent/child lookups that cannot loop."""

    def __init__(self, trace_id: str, spans: list[Span]) -> None:
        self.trace_id = trace_id
        self.spans = sorted(spans, key=lambda s: (s.start_ns, -s.end_ns))
        self._children: dict[str | None, list[Span]] = {}
        ids = {s.span_id for s in self.spans}
        for span in self.spans:
            own = span.parent_id in ids and span.parent_id != span.span_id
            self._children.setdefault(span.parent_id if own else None, []).append(span)

    def __repr__(self) -> str:
        return f"Trace({self.trace_id}, {len(self.spans)} spans)"

    @property
    def roots(self) -> list[Span]:
        """Spans whose parent is not in the trace (the caller's, or none)."""
        return self._children.get(None, [])

    def children(self, span: Span) -> list[Span]:
        return self._children.get(span.span_id, [])

    def descendants(self, span: Span) -> Iterator[Span]:
        walked = self.walk(span)
        next(walked)
        return (child for child, _ in walked)

    def walk(self, span: Span) -> Iterator[tuple[Span, int]]:
        """``span`` and everything under it, depth first in start order, with depths.

        Each span is visited once, so a span that is its own ancestor cannot loop.
        """
        seen: set[str] = set()
        stack = [(span, 0)]
        while stack:
            node, depth = stack.pop()
            if node.span_id in seen:
                continue
            seen.add(node.span_id)
            yield node, depth
            stack.extend((child, depth + 1) for child in reversed(self.children(node)))


def group_traces(spans: Iterable[Span]) -> list[Trace]:
    """Spans by trace id, in the order each trace first appears; a span exported twice
    (exporter retries, two exporters into one file) counts once."""
    grouper = TraceGrouper()
    for span in spans:
        grouper.add(span)
    return [grouper.pop(trace_id) for trace_id in list(grouper.open_ids())]


class TraceGrouper:
    """Collects spans per trace id until the caller pops a trace it knows is complete."""

    def __init__(self) -> None:
        self._spans: dict[str, dict[str, Span]] = {}

    def add(self, span: Span) -> None:
        by_id = self._spans.setdefault(span.trace_id, {})
        by_id.setdefault(span.span_id, span)  # the first copy of a duplicated span wins

    def open_ids(self) -> Iterator[str]:
        return iter(self._spans)

    def pop(self, trace_id: str) -> Trace:
        return Trace(trace_id, list(self._spans.pop(trace_id, {}).values()))

    def __len__(self) -> int:
        return len(self._spans)
