"""The rows of a create's waterfall, drawn by ``terminal.draw_waterfall`` and ``html``.

From a trace: every span under nova-api's SERVER span, nested, in start order, on an
axis from the request's start to the last span's end (a Cinder span that outlived a
read timeout still shows). From logs: the stages, one after the other, from their
logged durations.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from voltrace import semconv
from voltrace.explain.model import Diagnosis
from voltrace.terminal import WaterfallRow
from voltrace.traces import Span, Trace

# A tooltip lists a span's attributes; a huge one is cut.
_DETAIL_VALUE_CHARS = 200


def span_label(span: Span) -> str:
    """A span's name, plus the path for HTTP client spans (named just 'POST')."""
    url = span.text("url.full")
    if span.kind == "client" and url:
        try:
            return f"{span.name} {urlsplit(url).path}"
        except ValueError:
            return f"{span.name} {url}"
    method = span.text(semconv.OSPROFILER_METHOD)
    if span.name in (semconv.RPC_SPAN, semconv.DRIVE_SPAN) and method:
        # OSProfiler's rpc/drive spans say what ran only in their "name" attribute.
        return f"{span.name} {'.'.join(method.split('.')[-2:])}"
    return span.name


def span_rows(trace: Trace, root: Span, d: Diagnosis) -> tuple[list[WaterfallRow], float]:
    """The rows under ``root``, and the axis length in ms."""
    walked = list(trace.walk(root))
    start = root.start_ns
    end = max([root.end_ns, *(span.end_ns for span, _ in walked)])
    axis = max(1, end - start)
    rows = []
    for span, depth in walked:
        failed = semconv.STAGE in span.attributes and span.name == d.failed_stage
        skipped = span.flag(semconv.STAGE_SKIPPED)
        raised = span.status == "error" or span.flag(semconv.OSPROFILER_ERROR)
        status = "error" if raised or failed else ("skipped" if skipped else "ok")
        rows.append(
            WaterfallRow(
                depth=depth,
                service=span.service,
                label=span_label(span),
                offset=min(1.0, max(0.0, (span.start_ns - start) / axis)),
                width=max(0.0, min(1.0, (span.end_ns - span.start_ns) / axis)),
                duration_ms=span.duration_ms,
                status=status,
                failed=failed,
                note=_note(span, root, d, failed),
                detail=_detail(span),
            )
        )
    return rows, axis / 1e6


def _note(span: Span, root: Span, d: Diagnosis, failed: bool) -> str:
    if failed:
        return d.failure_class or ""
    if span.kind == "client":
        status = span.text("http.response.status_code") or span.text(semconv.ERROR_TYPE)
        return status or ""
    if span.kind == "server" and span is not root:
        return span.text("http.response.status_code") or span.text(semconv.ERROR_TYPE) or ""
    if span.status == "error" or span.flag(semconv.OSPROFILER_ERROR):
        error = span.event("exception")
        if error is not None:
            return str(error.attributes.get("exception.type") or "").rsplit(".", 1)[-1]
        raised = span.event(semconv.OSPROFILER_ERROR_EVENT)
        if raised is not None:
            kind = raised.attributes.get(semconv.OSPROFILER_ERROR_KIND)
            return str(kind or "").rsplit(".", 1)[-1]
    if span.text(semconv.SCHEDULER_RESULT) == semconv.NO_VALID_BACKEND:
        return "no valid backend"
    if span.flag(semconv.STAGE_SKIPPED):
        return "skipped"
    if span.text(semconv.decision_attribute("size.source")) == "snapshot":
        return "size from snapshot"
    return ""


def _detail(span: Span) -> str:
    lines = [f"{span.name} ({span.kind}, {span.service})"]
    for key, value in sorted(span.attributes.items()):
        text = str(value)
        if len(text) > _DETAIL_VALUE_CHARS:
            text = text[: _DETAIL_VALUE_CHARS - 1] + "…"
        lines.append(f"{key} = {text}")
    return "\n".join(lines)


def stage_rows(d: Diagnosis) -> tuple[list[WaterfallRow], float]:
    """Rows from logged stage durations: the request, then its stages end to end."""
    total = d.duration_ms or sum(s.duration_ms for s in d.stages) or 1.0
    rows = [
        WaterfallRow(
            0,
            semconv.NOVA_API_SERVICE,
            "POST /v2.1/os-volumes",
            0.0,
            1.0,
            total,
            "error" if (d.http_status or 0) >= 500 else "ok",
            False,
            "",
        )
    ]
    offset = 0.0
    for s in d.stages:
        failed = s.name == d.failed_stage
        note = (d.failure_class or "") if failed else ("skipped" if s.status == "skipped" else "")
        rows.append(
            WaterfallRow(
                1,
                semconv.NOVA_API_SERVICE,
                s.name,
                min(1.0, offset / total),
                min(1.0, s.duration_ms / total),
                s.duration_ms,
                "error" if failed or s.status == "error" else s.status,
                failed,
                note,
                f"{s.name}: {s.duration_ms:.3f} ms",
            )
        )
        offset += s.duration_ms
    return rows, total
