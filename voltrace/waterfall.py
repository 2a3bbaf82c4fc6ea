"""Waterfalls of a create: in the terminal (``voltrace demo``) and as HTML (``explain --html``).

Both draw the same rows: every span under nova-api's server span, nested, in
start order, with bars to scale on the request's own time axis. The failing
stage is marked; spans in ERROR are red; skipped stages are dim. The HTML page
is self-contained (inline CSS, no script, font or image from anywhere), so it
opens from a mail attachment or an air-gapped host.

A diagnosis made from logs has no spans: its rows are the stages, laid out one
after the other from their logged durations.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from voltrace.diagnosis import Diagnosis, Style, format_ms, span_label, what
from voltrace.traces import Span

# Service colours (ANSI, then CSS); anything else gets the last pair.
_SERVICE_ANSI = {"nova-api": "36", "cinder-api": "35"}
_SERVICE_CSS = {"nova-api": "#4e79a7", "cinder-api": "#9c6ade"}
_OTHER_ANSI, _OTHER_CSS = "33", "#76b7b2"
ERROR_CSS = "#d62728"


@dataclass
class Row:
    depth: int
    service: str
    label: str
    offset: float  # 0..1 of the request
    width: float  # 0..1 of the request
    duration_ms: float
    status: str  # ok, error, skipped
    failed: bool  # the failing stage itself
    note: str
    span: Span | None = None


def rows(d: Diagnosis) -> list[Row]:
    """The waterfall's rows for one diagnosed create."""
    if d.trace is not None and d.root is not None:
        return _span_rows(d)
    return _stage_rows(d)


def _span_rows(d: Diagnosis) -> list[Row]:
    assert d.trace is not None and d.root is not None
    root = d.root
    start, total = root.start_ns, max(1, root.end_ns - root.start_ns)
    result = []
    for span, depth in d.trace.walk(root):
        skipped = span.attr("voltrace.stage.skipped") in (True, "true")
        failed = "voltrace.stage" in span.attributes and span.name == d.failed_stage
        status = "error" if span.status == "error" or failed else (
            "skipped" if skipped else "ok")
        result.append(Row(
            depth=depth,
            service=span.service,
            label=span_label(span),
            offset=max(0.0, (span.start_ns - start) / total),
            width=max(0.0, min(1.0, (span.end_ns - span.start_ns) / total)),
            duration_ms=span.duration_ms,
            status=status,
            failed=failed,
            note=_note(span, d, failed),
            span=span,
        ))
    return result


def _note(span: Span, d: Diagnosis, failed: bool) -> str:
    if failed:
        return f"{d.failure_class}"
    if span.kind == "client":
        status = span.attr("http.response.status_code") or span.attr("error.type")
        return str(status) if status is not None else ""
    if span.kind == "server" and span is not d.root:
        status = span.attr("http.response.status_code")
        return str(status) if status is not None else str(span.attr("error.type", ""))
    if span.status == "error":
        error = span.event("exception")
        if error is not None:
            return str(error.attributes.get("exception.type", "")).rsplit(".", 1)[-1]
    if span.attr("voltrace.stage.skipped") in (True, "true"):
        return "skipped"
    if span.attr("voltrace.size.source") == "snapshot":
        return "size from snapshot"
    return ""


def _stage_rows(d: Diagnosis) -> list[Row]:
    total = d.duration_ms or sum(s.duration_ms for s in d.stages) or 1.0
    result = [Row(0, "nova-api", "POST /v2.1/os-volumes", 0.0, 1.0, total,
                  "error" if (d.http_status or 0) >= 500 else "ok", False, "")]
    offset = 0.0
    for s in d.stages:
        failed = s.name == d.failed_stage
        result.append(Row(1, "nova-api", s.name, offset / total,
                          min(1.0, s.duration_ms / total), s.duration_ms,
                          "error" if failed or s.status == "error" else s.status, failed,
                          (d.failure_class or "") if failed else
                          ("skipped" if s.status == "skipped" else "")))
        offset += s.duration_ms
    return result


# ---------------------------------------------------------------------------
# Terminal
# ---------------------------------------------------------------------------


def render_text(d: Diagnosis, *, width: int = 100, style: Style | None = None) -> list[str]:
    """The waterfall as terminal lines; ASCII only when colours are off."""
    style = style or Style(False)
    fancy = style.color
    service_width, label_width, dur_width = 10, 40, 9
    # Leave room on the right for the note (a status, an error type).
    bar_width = max(20, min(60, width - service_width - label_width - dur_width - 26))
    total = d.duration_ms or 0.0
    axis = f"0{format_ms(total):>{bar_width - 1}}"
    out = [f"  {'service':<{service_width}} {'span':<{label_width}}  {axis}"]
    for row in rows(d):
        label = ("  " * row.depth + row.label)
        if len(label) > label_width:
            label = label[: label_width - 1] + ("…" if fancy else "~")
        start = min(bar_width - 1, int(row.offset * bar_width))
        length = max(1, min(bar_width - start, round(row.width * bar_width)))
        if fancy:
            cells = " " * start + "█" * length + " " * (bar_width - start - length)
            track = style(cells, _bar_code(row))
            edge = style("│", "2")
        else:
            char = {"error": "x", "skipped": "."}.get(row.status, "=")
            track = " " * start + char * length + " " * (bar_width - start - length)
            edge = "|"
        mark = ("✗" if fancy else "!") if row.failed else " "
        service = style(f"{row.service:<{service_width}}", _service_code(row.service))
        name = f"{label:<{label_width}}"
        if row.failed:
            name = style(name, "1", "31")
        elif row.status == "skipped":
            name = style(name, "2")
        note = row.note
        if row.failed:
            note = style(f"<- {note}" if not fancy else f"← {note}", "1", "31")
        elif note:
            note = style(note, "2")
        out.append(f"  {service} {name}{mark}{edge}{track}{edge}"
                   f"{format_ms(row.duration_ms):>{dur_width}}  {note}".rstrip())
    return out


def _service_code(service: str) -> str:
    return _SERVICE_ANSI.get(service, _OTHER_ANSI)


def _bar_code(row: Row) -> str:
    if row.status == "error":
        return "31"
    if row.status == "skipped":
        return "2"
    return _service_code(row.service)


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 12px; }
h2 { font-size: 16px; margin: 0 0 8px; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
              font-size: 12px; }
table.summary { border-collapse: collapse; margin-bottom: 24px; }
table.summary td, table.summary th { padding: 3px 10px; border-bottom: 1px solid #e5e5e5;
                                     text-align: left; }
section.create { border: 1px solid #ddd; border-radius: 6px; padding: 14px 16px;
                 margin-bottom: 22px; }
section.create.failed { border-left: 6px solid #d62728; }
section.create.ok { border-left: 6px solid #59a14f; }
.badge { display: inline-block; min-width: 34px; text-align: center; border-radius: 4px;
         color: #fff; padding: 0 6px; margin-right: 6px; }
.badge.ok { background: #59a14f; } .badge.failed { background: #d62728; }
dl { display: grid; grid-template-columns: 120px 1fr; gap: 2px 12px; margin: 14px 0 0; }
dt { color: #666; } dd { margin: 0; word-break: break-word; }
dd.next { font-weight: 600; }
.wf { display: grid; grid-template-columns: 90px minmax(220px, 34%) 1fr 78px 150px;
      align-items: center; row-gap: 2px; font-size: 12px; }
.wf .head { color: #666; border-bottom: 1px solid #ddd; padding-bottom: 2px; }
.wf .svc { font-weight: 600; }
.wf .name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.wf .track { position: relative; height: 14px; background: #f4f4f4; }
.wf .bar { position: absolute; top: 1px; bottom: 1px; min-width: 2px; border-radius: 2px; }
.wf .dur { text-align: right; padding-right: 8px; }
.wf .note { color: #666; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.wf .error .bar, .wf .bar.error { background: #d62728; }
.wf .skipped { color: #999; }
.wf .bar.skipped { background: #ccc; }
.wf .failed { color: #d62728; font-weight: 700; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 10px; margin-right: 4px;
            vertical-align: middle; }
p.note { color: #666; margin: 6px 0 0; }
"""


def render_html(diagnoses: Sequence[Diagnosis], *, title: str = "voltrace",
                names: Sequence[str] | None = None) -> str:
    """One self-contained page: a summary table, then a section per create.

    ``names`` labels each create (the demo passes its scenario names).
    """
    names = list(names) if names is not None else [""] * len(diagnoses)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _legend(diagnoses),
        '<table class="summary"><tr><th>#</th><th></th><th>request id</th><th>HTTP</th>'
        "<th>failed stage</th><th>failure class</th><th>total</th></tr>",
    ]
    for i, (d, name) in enumerate(zip(diagnoses, names, strict=True), start=1):
        parts.append(
            f'<tr><td><a href="#create-{i}">{i}</a></td><td>{_e(name)}</td>'
            f'<td class="mono">{_e(d.request_id)}</td>'
            f"<td>{_e(d.http_status)}</td><td>{_e(d.failed_stage or '-')}</td>"
            f"<td>{_e(d.failure_class or '-')}</td><td>{_e(format_ms(d.duration_ms))}</td></tr>")
    parts.append("</table>")
    parts.extend(_section(i, d, name)
                 for i, (d, name) in enumerate(zip(diagnoses, names, strict=True), start=1))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: str | os.PathLike[str], diagnoses: Sequence[Diagnosis], *,
               title: str = "voltrace", names: Sequence[str] | None = None) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_html(diagnoses, title=title, names=names), encoding="utf-8")


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _css_color(service: str) -> str:
    return _SERVICE_CSS.get(service, _OTHER_CSS)


def _legend(diagnoses: Sequence[Diagnosis]) -> str:
    services = sorted({row.service for d in diagnoses for row in rows(d)})
    items = [f'<span><i style="background:{_css_color(s)}"></i>{_e(s)}</span>'
             for s in services]
    items.append(f'<span><i style="background:{ERROR_CSS}"></i>error</span>')
    return f'<p class="legend">{"".join(items)}</p>'


def _section(index: int, d: Diagnosis, name: str = "") -> str:
    state = "failed" if d.failed else "ok"
    heading = (f"{_e(d.failure_class)} at {_e(d.failed_stage)}" if d.failed
               else "volume created")
    if name:
        heading = f"{_e(name)}: {heading}"
    facts = [
        ("outcome", f"{d.outcome}, HTTP {d.http_status}, {format_ms(d.duration_ms)}"),
        ("request id", d.request_id),
        ("trace id", d.trace_id),
    ]
    if d.failed:
        facts += [("what", what(d)),
                  ("error", f"{d.error_type or '?'}: {d.error_message or ''}"),
                  ("nova code", d.nova_code)]
    else:
        facts.append(("volume", d.volume_id))
    facts.append(("cinder request", d.cinder_request_id or "none"))
    hotspot = d.hotspot
    if hotspot is not None and d.duration_ms:
        facts.append(("time went to", f"{hotspot['name']} ({hotspot['service']}): "
                                      f"{format_ms(hotspot['self_ms'])} of its own, "
                                      f"{hotspot['self_ms'] / d.duration_ms:.0%}"))
    if d.slowest_hop is not None:
        hop = d.slowest_hop
        share = f" ({hop.share:.0%})" if hop.share is not None else ""
        facts.append(("slowest hop", f"{hop.method} {hop.url} → {hop.target}: "
                                     f"{format_ms(hop.duration_ms)}{share}, {hop.status}"))
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v)
    if d.next_step:
        items += f'<dt>next step</dt><dd class="next">{_e(d.next_step)}</dd>'
    grid = [
        '<div class="wf">',
        '<div class="head">service</div><div class="head">span</div>'
        f'<div class="head">0 … {_e(format_ms(d.duration_ms))}</div>'
        '<div class="head dur">duration</div><div class="head">note</div>',
    ]
    for row in rows(d):
        classes = " ".join(c for c in (row.status, "failed" if row.failed else "") if c)
        bar_color = "" if row.status in ("error", "skipped") else \
            f"background:{_css_color(row.service)};"
        tip = _e(_tooltip(row))
        grid.append(
            f'<div class="svc" style="color:{_css_color(row.service)}">{_e(row.service)}</div>'
            f'<div class="name {classes}" style="padding-left:{row.depth * 14}px" '
            f'title="{tip}">{"✗ " if row.failed else ""}{_e(row.label)}</div>'
            f'<div class="track" title="{tip}"><div class="bar {row.status}" style="{bar_color}'
            f'left:{row.offset * 100:.3f}%;width:{row.width * 100:.3f}%"></div></div>'
            f'<div class="dur">{_e(format_ms(row.duration_ms))}</div>'
            f'<div class="note {classes}">{_e(row.note)}</div>')
    grid.append("</div>")
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in d.notes)
    # The waterfall first: it is what the page is for; the facts follow.
    return (f'<section class="create {state}" id="create-{index}">'
            f'<h2><span class="badge {state}">{_e(d.http_status)}</span>{heading}</h2>'
            f"{''.join(grid)}<dl>{items}</dl>{notes}</section>")


def _tooltip(row: Row) -> str:
    if row.span is None:
        return f"{row.label}: {format_ms(row.duration_ms)}"
    lines = [f"{row.span.name} ({row.span.kind}, {row.span.service})"]
    lines += [f"{k} = {v}" for k, v in sorted(row.span.attributes.items())]
    return "\n".join(lines)
