"""Where a create's time went, named for what it was.

A span's *own* time (its duration minus its children's) means different things:
between a CLIENT span and the callee's SERVER span it is the network and the callee's
accept queue; in a stage that retried a connection it is keystoneauth's backoff; at
nova-api's SERVER span it is the WSGI stack. :func:`time_spent` splits the whole
request that way, and :func:`own_time_meaning` says it for one span.

Children are clipped to their parent's window: a Cinder SERVER span that outlived the
CLIENT span which gave up on it (a read timeout) counts only while nova-api waited.
"""

from __future__ import annotations

import itertools

from voltrace import semconv
from voltrace.explain.model import TimeShare
from voltrace.traces import Span, Trace

INSIDE_CINDER = "inside cinder-api"
INSIDE_UNANSWERED = "inside cinder-api, until nova-api's read timeout gave up on it"
NETWORK = "network and queueing between nova-api and cinder-api"
FAILED_CONNECTS = "connecting to a cinder-api that did not accept"
UNANSWERED = "waiting for an answer until the read timeout (no cinder-api span)"
BACKOFF = "retry backoff between attempts (keystoneauth, [cinder] http_retries)"
NOVA_OWN = "nova-api's own work (stages, cinderclient, WSGI)"


def overlap_ms(outer: Span, inner: Span) -> float:
    """How long ``inner`` ran inside ``outer``'s window."""
    start = max(outer.start_ns, inner.start_ns)
    end = min(outer.end_ns, inner.end_ns)
    return max(0, end - start) / 1e6


def callee(trace: Trace, client: Span) -> Span | None:
    """The SERVER span a CLIENT span's request produced, if the callee traced it."""
    return next((c for c in trace.children(client) if c.kind == "server"), None)


def timed_out(span: Span) -> bool:
    """The call ended in a read timeout (the request went out; no answer came in time)."""
    error = str(span.attr(semconv.ERROR_TYPE) or "")
    event = span.event("exception")
    kind = str(event.attributes.get("exception.type") or "") if event is not None else ""
    return "ReadTimeout" in error or kind.endswith("ReadTimeout")


def answered(span: Span) -> bool:
    return span.number("http.response.status_code") is not None


def time_spent(trace: Trace, root: Span) -> list[TimeShare]:
    """The request's time by what it was, largest first (parts under 0.05 ms left out)."""
    total = root.duration_ms
    parts: dict[str, float] = {}

    def add(what: str, ms: float) -> None:
        parts[what] = parts.get(what, 0.0) + max(0.0, ms)

    below = list(trace.descendants(root))
    clients = [s for s in below if s.kind == "client"]
    for client in clients:
        server = callee(trace, client)
        inside = overlap_ms(client, server) if server is not None else 0.0
        if server is not None:
            add(INSIDE_UNANSWERED if timed_out(client) else INSIDE_CINDER, inside)
            add(NETWORK, client.duration_ms - inside)
        elif timed_out(client):
            add(UNANSWERED, client.duration_ms)
        elif not answered(client):
            add(FAILED_CONNECTS, client.duration_ms)
        else:
            add(NETWORK, client.duration_ms)  # answered, but the callee is not traced
    for parent in {id(s): s for s in below}.values():
        add(BACKOFF, backoff_ms(trace, parent))
    accounted = sum(parts.values())
    add(NOVA_OWN, total - accounted)
    return [
        TimeShare(what, ms, ms / total if total else None)
        for what, ms in sorted(parts.items(), key=lambda kv: -kv[1])
        if ms >= 0.05
    ]


def backoff_ms(trace: Trace, parent: Span) -> float:
    """The gaps between consecutive calls of ``parent`` that came after a failed call."""
    calls = sorted(
        (c for c in trace.children(parent) if c.kind == "client"), key=lambda s: s.start_ns
    )
    gaps = 0.0
    for before, after in itertools.pairwise(calls):
        if not answered(before) or before.status == "error":
            gaps += max(0, after.start_ns - before.end_ns) / 1e6
    return gaps


def own_time_meaning(trace: Trace, span: Span, root: Span) -> str:
    """What a span's own time (outside its children) was spent on."""
    if span.kind == "client":
        if callee(trace, span) is not None:
            return "network and queueing: sending, and cinder-api accepting the request"
        if timed_out(span):
            return "waiting for an answer until the read timeout"
        if not answered(span):
            return "trying to connect to a cinder-api that did not accept"
        return "the call, with no span from the callee"
    if backoff_ms(trace, span) > 0:
        attempts = sum(1 for c in trace.children(span) if c.kind == "client")
        retries = span.number(semconv.CINDER_CONNECT_RETRIES)
        budget = f", [cinder] http_retries={retries}" if retries is not None else ""
        return f"retry backoff between its {attempts} attempts (keystoneauth{budget})"
    if span is root:
        return "nova-api's WSGI stack: paste filters, routing, writing the answer"
    if span.kind == "server":
        return f"{span.service}'s own code, outside its traced steps"
    if span.service == root.service:
        return "nova-api's own code in it, outside any traced call"
    return f"{span.service}'s own code"
