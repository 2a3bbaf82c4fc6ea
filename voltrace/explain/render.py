"""One create's diagnosis as terminal text: the facts, the waterfall, the next step.

Every value comes from a file or a client, so each goes through ``terminal.escape``
before any colour is added; lines are wrapped to the terminal's width, between words
(a command is never split).
"""

from __future__ import annotations

from voltrace.explain.after_answer import AfterAnswer
from voltrace.explain.model import Diagnosis
from voltrace.terminal import Terminal, draw_waterfall, escape, format_ms, wrap

LABEL_WIDTH = 16
# A log record is shown up to this long (the file and line lead to the rest).
MAX_EVIDENCE_CHARS = 240


class _Rows:
    """Labelled rows, each value escaped and wrapped between words to the terminal."""

    def __init__(self, term: Terminal) -> None:
        self.term = term
        self.value_width = max(30, term.width - LABEL_WIDTH)
        self.lines: list[str] = []

    def row(self, label: str, value: str, *codes: str) -> None:
        wrapped = wrap(escape(value), self.value_width)
        paint = self.term.paint
        self.lines.append(f"  {label:<{LABEL_WIDTH - 2}}{paint(wrapped[0], *codes)}")
        self.lines.extend(" " * LABEL_WIDTH + paint(more, *codes) for more in wrapped[1:])

    def commands(self, commands: list[str]) -> None:
        """Each command on a line of its own, whole, indented: ready to copy."""
        for command in commands:
            self.lines.append(" " * LABEL_WIDTH + "  " + self.term.paint(escape(command), "1"))


def format_text(d: Diagnosis, term: Terminal | None = None, *, waterfall: bool = True) -> str:
    """The human-readable diagnosis of one create."""
    term = term or Terminal()
    rows = _Rows(term)
    row, lines = rows.row, rows.lines
    mark = term.paint("FAILED", "1", "31") if d.failed else term.paint("OK", "1", "32")
    lines.append(
        f"{mark} {escape(d.request_id or '(no request id)')}  trace "
        f"{escape(d.trace_id or '?')}" + term.paint(f"  (from the {d.source})", "2")
    )
    if d.link:
        row("trace link", d.link)
    took = f", {format_ms(d.duration_ms)}" if d.duration_ms is not None else ""
    row("outcome", f"{d.outcome}, HTTP {d.http_status}{took}")
    if d.failed:
        row("failed stage", f"{d.failed_stage}: {d.failure_class} ({d.description})")
        if d.error_type or d.error_message:
            first = (d.error_message or "").strip().splitlines()[:1] or [""]
            message = first[0] if len(first[0]) <= 300 else first[0][:299] + "…"
            row("error", f"{d.error_type or '?'}: {message}")
        if d.nova_code:
            row("nova code", d.nova_code)
    elif d.volume_id:
        row("volume", d.volume_id)
    row("cinder req", d.cinder_request_id or "none (Cinder never answered)")
    for i, s in enumerate(d.stages):
        share = f"{s.share:6.1%}" if s.share is not None else ""
        status = f"{s.status:<8}"
        line = f"{escape(s.name):<17}{status}{format_ms(s.duration_ms):>10} {share}"
        label = "stages" if i == 0 else ""
        painted = term.paint(line, "31") if s.status == "error" else line
        lines.append(f"  {label:<{LABEL_WIDTH - 2}}{painted}")
    if d.critical_path:
        row(
            "critical path",
            " > ".join(
                f"{p['name']} ({p['service']}) {format_ms(p['duration_ms'])}"
                for p in d.critical_path
            ),
        )
    hotspot = d.hotspot
    if hotspot is not None and d.duration_ms:
        row(
            "time went to",
            f"{hotspot['name']} ({hotspot['service']}): "
            f"{format_ms(hotspot['self_ms'])} of its own, "
            f"{hotspot['self_ms'] / d.duration_ms:.0%} of the request: "
            f"{hotspot['self_is']}",
        )
    if d.time_spent:
        row(
            "time spent",
            "; ".join(
                f"{t.what} {format_ms(t.ms)}" + (f" ({t.share:.0%})" if t.share is not None else "")
                for t in d.time_spent
            ),
        )
    if d.slowest_hop is not None:
        hop = d.slowest_hop
        share = f" ({hop.share:.0%} of the request)" if hop.share is not None else ""
        inside = (
            f"; {format_ms(hop.callee_ms)} inside {hop.target}" if hop.callee_ms is not None else ""
        )
        row(
            "slowest hop",
            f"{hop.method} {hop.url} -> {hop.target}: "
            f"{format_ms(hop.duration_ms)}{share}, {hop.status}{inside}",
        )
    elif d.source == "trace":
        row("slowest hop", "none: the create never called Cinder")
    if d.advice is not None:
        row("next step", d.advice.text, "1")
        rows.commands(d.advice.commands)
    for note in d.notes:
        row("note", note, "2")
    if d.after_answer is not None:
        lines.extend(
            fate_lines(d.after_answer, term, request_id=d.request_id, http_status=d.http_status)
        )
    if waterfall and d.waterfall:
        lines.append("")
        lines.extend(draw_waterfall(d.waterfall, d.waterfall_ms, term))
    return "\n".join(lines)


def fate_lines(
    fate: AfterAnswer,
    term: Terminal | None = None,
    *,
    request_id: str | None = None,
    http_status: int | None = None,
) -> list[str]:
    """What became of the volume after Nova's answer, as rows (``http_status`` None:
    no answer of Nova's is known, only Cinder's side)."""
    rows = _Rows(term or Terminal())
    row = rows.row
    row("after answer", fate.sentence(http_status), "1")
    row("request ids", f"nova {request_id or '?'}, cinder {fate.cinder_request_id or '?'}")
    if fate.attempts is not None:
        row("attempts", f"{fate.attempts} (reschedules: {max(fate.attempts - 1, 0)})")
    for n, error in enumerate(fate.errors, start=1):
        row(f"attempt {n}", error, "31")
    for said in fate.messages:
        row("user message", f"{said['event_id']}: {said['user_message']}")
    for record in fate.evidence:
        clipped = (
            record[: MAX_EVIDENCE_CHARS - 1] + "…" if len(record) > MAX_EVIDENCE_CHARS else record
        )
        row("cinder log", clipped, "2")
    if fate.advice is not None:
        row("then", fate.advice.text, "1")
        rows.commands(fate.advice.commands)
    return rows.lines
