"""``explain --html`` and the demo's report: one self-contained page of waterfalls.

Inline CSS, no script, font or image from anywhere, so the page opens from a mail
attachment or an air-gapped host. Every value is HTML-escaped (trace files and clients
wrote them). Next-step commands sit each in its own block, never wrapped, selected
whole by one click.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from voltrace import semconv
from voltrace.explain.model import Diagnosis
from voltrace.terminal import WaterfallRow, escape, format_ms

SERVICE_CSS = {
    semconv.NOVA_API_SERVICE: "#4e79a7",
    semconv.CINDER_API_SERVICE: "#9c6ade",
    semconv.SCHEDULER_SERVICE: "#f28e2b",
    semconv.VOLUME_SERVICE: "#59a14f",
}
OTHER_CSS = "#76b7b2"
ERROR_CSS = "#d62728"

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
dt { color: #666; } dd { margin: 0; overflow-wrap: break-word; min-width: 0; }
dd.next { font-weight: 600; }
pre.cmd { margin: 4px 0; padding: 4px 8px; background: #f4f4f4; border-radius: 4px;
          white-space: pre; overflow-x: auto; user-select: all; font-weight: 400; }
.wf { display: grid; grid-template-columns: 90px minmax(220px, 34%) 1fr 78px 150px;
      align-items: center; row-gap: 2px; font-size: 12px; }
.wf .head { color: #666; border-bottom: 1px solid #ddd; padding-bottom: 2px; }
.wf .svc { font-weight: 600; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
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


def render_html(
    diagnoses: Sequence[Diagnosis], *, title: str = "voltrace", names: Sequence[str] | None = None
) -> str:
    """One self-contained page: a summary table, then a section per create.

    ``names`` labels each create (the demo passes its scenario names).
    """
    labels = list(names) if names is not None else [""] * len(diagnoses)
    named = names is not None
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _legend(diagnoses),
        '<table class="summary"><tr><th>#</th>'
        + ("<th>scenario</th>" if named else "")
        + "<th>request id</th><th>HTTP</th><th>failed stage</th><th>failure class</th>"
        "<th>total</th></tr>",
    ]
    for i, (d, name) in enumerate(zip(diagnoses, labels, strict=True), start=1):
        parts.append(
            f'<tr><td><a href="#create-{i}">{i}</a></td>'
            + (f"<td>{_e(name)}</td>" if named else "")
            + f'<td class="mono">{_e(d.request_id)}</td>'
            f"<td>{_e(d.http_status)}</td><td>{_e(d.failed_stage or '-')}</td>"
            f"<td>{_e(d.failure_class or '-')}</td><td>{_e(format_ms(d.duration_ms))}</td></tr>"
        )
    parts.append("</table>")
    parts.extend(
        _section(i, d, name)
        for i, (d, name) in enumerate(zip(diagnoses, labels, strict=True), start=1)
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(
    path: str | os.PathLike[str],
    diagnoses: Sequence[Diagnosis],
    *,
    title: str = "voltrace",
    names: Sequence[str] | None = None,
) -> None:
    """Write the page; OSError when the place cannot be written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A lone surrogate from a hostile file cannot be UTF-8: it is written as an escape.
    target.write_text(
        render_html(diagnoses, title=title, names=names),
        encoding="utf-8",
        errors="backslashreplace",
    )


def _e(value: object) -> str:
    """HTML-escaped, control characters shown as escapes (``cat report.html`` stays safe)."""
    return html.escape(escape(value))


def _css_color(service: str) -> str:
    return SERVICE_CSS.get(service, OTHER_CSS)


def _legend(diagnoses: Sequence[Diagnosis]) -> str:
    services = sorted({row.service for d in diagnoses for row in d.waterfall})
    items = [f'<span><i style="background:{_css_color(s)}"></i>{_e(s)}</span>' for s in services]
    items.append(f'<span><i style="background:{ERROR_CSS}"></i>error</span>')
    return f'<p class="legend">{"".join(items)}</p>'


def _section(index: int, d: Diagnosis, name: str = "") -> str:
    state = "failed" if d.failed else "ok"
    heading = f"{_e(d.failure_class)} at {_e(d.failed_stage)}" if d.failed else "volume created"
    if name:
        heading = f"{_e(name)}: {heading}"
    facts: list[tuple[str, object]] = [
        ("outcome", f"{d.outcome}, HTTP {d.http_status}, {format_ms(d.duration_ms)}"),
        ("request id", d.request_id),
        ("trace id", d.trace_id),
    ]
    if d.failed:
        facts += [
            ("what", d.description),
            ("error", f"{d.error_type or '?'}: {d.error_message or ''}"),
            ("nova code", d.nova_code),
        ]
    else:
        facts.append(("volume", d.volume_id))
    facts.append(("cinder request", d.cinder_request_id or "none"))
    hotspot = d.hotspot
    if hotspot is not None and d.duration_ms:
        facts.append(
            (
                "time went to",
                f"{hotspot['name']} ({hotspot['service']}): "
                f"{format_ms(hotspot['self_ms'])} of its own, "
                f"{hotspot['self_ms'] / d.duration_ms:.0%}: "
                f"{hotspot['self_is']}",
            )
        )
    if d.time_spent:
        facts.append(
            (
                "time spent",
                "; ".join(
                    f"{t.what} {format_ms(t.ms)}"
                    + (f" ({t.share:.0%})" if t.share is not None else "")
                    for t in d.time_spent
                ),
            )
        )
    if d.slowest_hop is not None:
        hop = d.slowest_hop
        share = f" ({hop.share:.0%})" if hop.share is not None else ""
        facts.append(
            (
                "slowest hop",
                f"{hop.method} {hop.url} → {hop.target}: "
                f"{format_ms(hop.duration_ms)}{share}, {hop.status}",
            )
        )
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v)
    if d.link:
        items += f'<dt>trace link</dt><dd><a href="{_e(d.link)}">{_e(d.link)}</a></dd>'
    if d.advice is not None:
        commands = "".join(
            f'<pre class="cmd"><code>{_e(c)}</code></pre>' for c in d.advice.commands
        )
        items += f'<dt>next step</dt><dd class="next">{_e(d.advice.text)}{commands}</dd>'
    items += _after_answer(d)
    grid = [
        '<div class="wf">',
        '<div class="head">service</div><div class="head">span</div>'
        f'<div class="head">0 … {_e(format_ms(d.waterfall_ms or d.duration_ms))}</div>'
        '<div class="head dur">duration</div><div class="head">note</div>',
    ]
    grid.extend(_row(row) for row in d.waterfall)
    grid.append("</div>")
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in d.notes)
    # The waterfall first: it is what the page is for; the facts follow.
    return (
        f'<section class="create {state}" id="create-{index}">'
        f'<h2><span class="badge {state}">{_e(d.http_status)}</span>{heading}</h2>'
        f"{''.join(grid)}<dl>{items}</dl>{notes}</section>"
    )


def _row(row: WaterfallRow) -> str:
    classes = " ".join(c for c in (row.status, "failed" if row.failed else "") if c)
    bar_color = (
        "" if row.status in ("error", "skipped") else f"background:{_css_color(row.service)};"
    )
    detail = row.detail or f"{row.label}: {format_ms(row.duration_ms)}"
    tip = "\n".join(_e(line) for line in detail.split("\n"))
    return (
        f'<div class="svc" style="color:{_css_color(row.service)}">{_e(row.service)}</div>'
        f'<div class="name {classes}" style="padding-left:{row.depth * 14}px" '
        f'title="{tip}">{"✗ " if row.failed else ""}{_e(row.label)}</div>'
        f'<div class="track" title="{tip}"><div class="bar {row.status}" style="{bar_color}'
        f'left:{row.offset * 100:.3f}%;width:{row.width * 100:.3f}%"></div></div>'
        f'<div class="dur">{_e(format_ms(row.duration_ms))}</div>'
        f'<div class="note {classes}">{_e(row.note)}</div>'
    )


def _after_answer(d: Diagnosis) -> str:
    """The volume's fate in Cinder after Nova's answer, as more facts."""
    fate = d.after_answer
    if fate is None:
        return ""
    facts: list[tuple[str, object]] = [
        ("after the answer", fate.sentence(d.http_status)),
        ("request ids", f"nova {d.request_id or '?'}, cinder {fate.cinder_request_id or '?'}"),
    ]
    if fate.attempts is not None:
        facts.append(("attempts", fate.attempts))
    facts += [(f"attempt {n}", error) for n, error in enumerate(fate.errors, start=1)]
    facts += [("user message", f"{m['event_id']}: {m['user_message']}") for m in fate.messages]
    facts += [("cinder log", record) for record in fate.evidence]
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    if fate.advice is not None:
        commands = "".join(
            f'<pre class="cmd"><code>{_e(c)}</code></pre>' for c in fate.advice.commands
        )
        items += f'<dt>then</dt><dd class="next">{_e(fate.advice.text)}{commands}</dd>'
    return items
