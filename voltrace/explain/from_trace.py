"""A diagnosis per create, from its trace.

nova-api's SERVER span of a create (``voltrace.request.kind=create``) carries the
outcome; the failing stage's span carries the error, the Nova code it mirrors
(``voltrace.nova_code``, as real nova's instrumentor writes it too) and the fault's
details; the CLIENT spans under it say how many times Cinder was called and how each
call ended. Every value is read defensively: a trace file may say anything.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from voltrace import semconv
from voltrace.explain import advice, after_answer, timing
from voltrace.explain.model import Diagnosis, Hop, StageTiming, none_if_blank
from voltrace.explain.waterfall import span_label, span_rows
from voltrace.traces import Span, Trace

_READ_TIMEOUT = re.compile(r"read timeout=(?P<seconds>[0-9.]+)")
# The attribute the parse stage writes the schema field under (from its fault details).
SCHEMA_FIELD_ATTR = semconv.decision_attribute(advice.SCHEMA_FIELD_DETAIL)


def is_create(span: Span) -> bool:
    """nova-api's SERVER span of a volume create (not a probe, a version document...)."""
    if span.kind != "server":
        return False
    kind = span.text(semconv.REQUEST_KIND)
    if kind is not None:
        return kind == "create"
    # Traces written before voltrace.request.kind: the outcome, on POST os-volumes.
    if semconv.OUTCOME not in span.attributes:
        return False
    method = span.text("http.request.method") or span.name.partition(" ")[0]
    route = span.text("http.route") or span.name
    return method == "POST" and route.rstrip("/").endswith("os-volumes")


def is_other_request(span: Span) -> bool:
    """A request nova-api answered that is not a create (still has an outcome)."""
    return (
        span.kind == "server"
        and not is_create(span)
        and (semconv.REQUEST_KIND in span.attributes or semconv.OUTCOME in span.attributes)
    )


def create_roots(trace: Trace) -> list[Span]:
    """nova-api's SERVER span of every create in the trace (usually one)."""
    return [s for s in trace.spans if is_create(s)]


@dataclass
class TraceDiagnoser:
    """Diagnoses the creates of trace after trace, and keeps count of what it skipped."""

    waterfall: bool = False  # keep each create's waterfall rows (text and HTML need them)
    problems: list[str] = field(default_factory=list)
    other_requests: int = 0  # probes, version documents, unknown routes

    def diagnose(self, trace: Trace) -> list[Diagnosis]:
        roots = create_roots(trace)
        if not roots:
            others = sum(1 for s in trace.spans if is_other_request(s))
            if others:
                self.other_requests += others
            else:
                self.problems.append(not_a_create(trace))
            return []
        diagnoses = []
        for root in roots:
            try:
                diagnoses.append(diagnose_create(trace, root, waterfall=self.waterfall))
            except Exception as exc:  # a hostile file must never stop the others
                self.problems.append(
                    f"trace {trace.trace_id}: skipped, it could not be "
                    f"diagnosed ({type(exc).__name__}: {exc})"
                )
        return diagnoses

    def diagnose_all(self, traces: Iterable[Trace]) -> Iterator[Diagnosis]:
        for trace in traces:
            yield from self.diagnose(trace)


def diagnose_traces(
    traces: Iterable[Trace], problems: list[str] | None = None, *, waterfall: bool = False
) -> list[Diagnosis]:
    """A diagnosis per create, in the order they started; skipped traces go to ``problems``."""
    diagnoser = TraceDiagnoser(waterfall=waterfall)
    found = sorted(diagnoser.diagnose_all(traces), key=lambda d: d.started_ns)
    if problems is not None:
        problems.extend(diagnoser.problems)
    return found


def not_a_create(trace: Trace) -> str:
    root = trace.roots[0] if trace.roots else trace.spans[0]
    if any(semconv.STAGE in s.attributes for s in trace.spans):
        why = (
            "it has voltrace's stage spans but not nova-api's server span "
            "(part of the trace was lost: a truncated line, an export that failed?)"
        )
    elif root.parent_id:
        why = (
            f"its top span '{root.name}' ({root.service}) has a parent that is not in the "
            "file (part of the trace was lost: a truncated line, an export that failed?)"
        )
    else:
        why = f"not a voltrace volume create (root span '{root.name}' of {root.service})"
    return f"trace {trace.trace_id}: skipped: {why}"


def diagnose_create(trace: Trace, root: Span, *, waterfall: bool = False) -> Diagnosis:
    """Everything the spans under one nova-api server span say."""
    total = root.duration_ms
    below = list(trace.descendants(root))
    stage_spans = [s for s in below if semconv.STAGE in s.attributes]
    summary = {
        field: none_if_blank(root.text(attribute)) for attribute, field in semconv.SUMMARY_FIELDS
    }
    d = Diagnosis(
        source="trace",
        trace_id=root.trace_id,
        **summary,
        outcome=root.text(semconv.OUTCOME) or "unknown",
        http_status=root.number("http.response.status_code") or root.number("http.status_code"),
        duration_ms=total,
        started_ns=root.start_ns,
        stages=[
            StageTiming(
                s.name, _stage_status(s), s.duration_ms, s.duration_ms / total if total else None
            )
            for s in stage_spans
        ],
    )
    failing = next((s for s in stage_spans if s.name == d.failed_stage), None)
    # Cinder's ids of the answers nova-api got (not of calls it gave up waiting for).
    answered = [timing.callee(trace, s) for s in below if s.kind == "client" and timing.answered(s)]
    cinder_ids = [
        none_if_blank(s.text(semconv.CINDER_REQUEST_ID)) for s in answered if s is not None
    ]
    stage_cinder_id = (
        none_if_blank(failing.text(semconv.CINDER_REQUEST_ID)) if failing is not None else None
    )
    d.cinder_request_id = (
        d.cinder_request_id or stage_cinder_id or next((i for i in reversed(cinder_ids) if i), None)
    )
    if d.failed_stage:
        d.nova_code = (
            failing.text(semconv.NOVA_CODE_ATTR) if failing is not None else None
        ) or semconv.NOVA_CODE.get(d.failed_stage)
    if failing is not None:
        error = failing.event("exception")
        if error is not None:
            d.error_type = _text(error.attributes.get("exception.type"))
            d.error_message = _text(error.attributes.get("exception.message"))
        else:
            d.error_message = failing.status_message or None
    # Nova's own message (the span's status) names what the cause's message may not.
    nova_message = failing.status_message if failing is not None else ""
    d.details = advice.message_details(
        d.failure_class, "\n".join(filter(None, [d.error_message, nova_message]))
    )
    if failing is not None:
        d.details.update(_trace_details(trace, failing, d.failure_class))
    _cinder_sends(trace, stage_spans, d)
    d.critical_path = critical_path(trace, root)
    d.slowest_hop = slowest_hop(trace, below, total)
    d.time_spent = timing.time_spent(trace, root)
    if not d.failed:
        d.after_answer = after_answer.from_spans(trace.spans, d.volume_id)
        if d.after_answer is not None and not d.after_answer.certain:
            d.notes.append(after_answer.UNCERTAIN_TRACE_NOTE)
    if waterfall:
        d.waterfall, d.waterfall_ms = span_rows(trace, root, d)
    return advice.explain(d)


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _stage_status(span: Span) -> str:
    if span.status == "error":
        return "error"
    return "skipped" if span.flag(semconv.STAGE_SKIPPED) else "ok"


def _trace_details(trace: Trace, failing: Span, failure_class: str | None) -> dict[str, Any]:
    """What only the trace knows: attempts, the callee's own error, its status, the field."""
    details: dict[str, Any] = {}
    retries = failing.number(semconv.CINDER_CONNECT_RETRIES)
    if retries is not None:
        details["connect_retries"] = retries
    field_name = failing.text(SCHEMA_FIELD_ATTR)
    if field_name and failure_class == "schema_invalid":
        details["field"] = field_name
    calls = [s for s in trace.descendants(failing) if s.kind == "client"]
    if not calls:
        return details
    last = calls[-1]
    if failure_class == "cinder_unreachable":
        details["attempts"] = len(calls)
        if last.text("url.full"):
            details["endpoint"] = last.text("url.full")
    status = last.number("http.response.status_code")
    if status is not None:
        details["cinder_status"] = status
    # The callee's step that failed (the simulator's check_quota, a real Cinder's own spans).
    for span in trace.descendants(last):
        error = span.event("exception")
        if span.status == "error" and error is not None:
            details["cinder_error_type"] = _text(error.attributes.get("exception.type"))
            quota = span.text("cinder.quota.resource")
            if quota and failure_class == "over_quota":
                details.setdefault("quota", quota)
    return details


def _cinder_sends(trace: Trace, stage_spans: list[Span], d: Diagnosis) -> None:
    """How many times the create reached Cinder: a read timeout makes keystoneauth send the
    POST again, and each one Cinder accepted may have made a volume."""
    call = next((s for s in stage_spans if s.name == "call_cinder"), None)
    if call is None:
        return
    posts = [
        s
        for s in trace.descendants(call)
        if s.kind == "client" and (s.text("http.request.method") or s.name).upper() == "POST"
    ]
    timeouts = [s for s in posts if timing.timed_out(s)]
    if not timeouts:
        return
    accepted = []
    for post in posts:
        server = timing.callee(trace, post)
        if server is None:
            continue
        status = server.number("http.response.status_code")
        if status is not None and 200 <= status < 300:
            accepted.append(server.text(semconv.CINDER_REQUEST_ID) or "?")
    d.details.update(posts=len(posts), read_timeouts=len(timeouts))
    if accepted:
        d.details.update(cinder_accepted=len(accepted), cinder_accepted_ids=accepted)
    for post in timeouts:
        event = post.event("exception")
        found = (
            _READ_TIMEOUT.search(str(event.attributes.get("exception.message") or ""))
            if event is not None
            else None
        )
        if found:
            with contextlib.suppress(ValueError):
                d.details["timeout_s"] = float(found.group("seconds"))
            break
    if not d.failed and len(posts) > 1:
        # It succeeded in the end; the earlier POSTs may each have made a volume too.
        d.notes.append(
            f"the create was sent {len(posts)} times (a read timeout made "
            f"keystoneauth retry); Cinder may hold up to {len(posts)} volumes, "
            f"of which nova-api returned one ({d.volume_id or '?'}): check "
            f"openstack volume list --project {d.project_id or 'PROJECT'} --long"
        )


def critical_path(trace: Trace, root: Span) -> list[dict[str, Any]]:
    """From the server span down, always into the child that ran longest within it.

    ``self_ms`` is the time a span spent outside its children (clipped to its window):
    the largest one on the path is where the request's time went; ``self_is`` says
    what that time was.
    """
    path: list[dict[str, Any]] = []
    seen: set[str] = set()
    node = root
    while node.span_id not in seen:
        seen.add(node.span_id)
        children = [c for c in trace.children(node) if c.span_id not in seen]
        inside = {c.span_id: timing.overlap_ms(node, c) for c in children}
        self_ms = max(0.0, node.duration_ms - sum(inside.values()))
        path.append(
            {
                "service": node.service,
                "name": span_label(node),
                "duration_ms": round(node.duration_ms, 3),
                "self_ms": round(self_ms, 3),
                "self_is": timing.own_time_meaning(trace, node, root),
            }
        )
        if not children:
            break
        node = max(children, key=lambda s: inside[s.span_id])
    return path


def slowest_hop(trace: Trace, below: list[Span], total: float) -> Hop | None:
    calls = [s for s in below if s.kind == "client"]
    if not calls:
        return None
    slowest = max(calls, key=lambda s: s.duration_ms)
    server = timing.callee(trace, slowest)
    address = slowest.text("server.address")
    port = slowest.text("server.port")
    target = server.service if server else (f"{address}:{port}" if address else "?")
    status: int | str | None = slowest.number("http.response.status_code") or slowest.text(
        semconv.ERROR_TYPE
    )
    return Hop(
        method=slowest.text("http.request.method") or slowest.name,
        url=slowest.text("url.full") or "",
        target=target,
        status=status,
        duration_ms=slowest.duration_ms,
        callee_ms=server.duration_ms if server else None,
        share=slowest.duration_ms / total if total else None,
    )
