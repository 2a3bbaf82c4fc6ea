"""Drawing on a terminal: safe text, colours, the width, and the waterfall.

``voltrace demo`` and ``voltrace explain`` both print through this module. Three rules
hold for everything they draw:

* **Text from outside is escaped** (:func:`escape`): span names, attribute values, error
  messages and URLs come from trace files and from clients, and a raw ESC, OSC or C1
  byte in them would let a file clear the screen, retitle the window or write the
  clipboard (OSC 52). Control characters are shown as ``\\x1b``-style escapes.
* **Colours are ours only**, added after escaping, and only when the stream is a TTY,
  ``NO_COLOR`` is unset and ``--color`` does not say otherwise.
* **Lines fit the width** (``COLUMNS``, else the terminal's, else a default): nothing
  wraps at 80 columns, and wider terminals get longer labels and bars.

Standard library only.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

# C0 controls (tab and newline too: a value is drawn on one line), DEL, C1 controls,
# and the Unicode bidirectional overrides that can reorder what a terminal shows.
# Lone surrogates too: a file may hold them, and no terminal encoding can print them.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def escape(text: object) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u202e``)."""
    value = "" if text is None else str(text)
    return _UNSAFE.sub(_escaped, value)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def format_ms(ms: float | None) -> str:
    """A duration for people: ``27.1 ms``, ``1.25 s``, ``?`` when unknown."""
    if ms is None:
        return "?"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms"


def shorten(text: str, width: int, *, fancy: bool) -> str:
    """``text`` cut to ``width`` characters, the cut marked (``…``, or ``~`` in ASCII)."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + ("…" if fancy else "~")


COLOR_CHOICES = ("auto", "always", "never")


@dataclass(frozen=True)
class Terminal:
    """Where text goes: whether it may be coloured (and use non-ASCII), and how wide it is."""

    color: bool = False
    width: int = 100

    @classmethod
    def for_stream(cls, stream: Any, color: str = "auto", default_width: int = 100) -> Terminal:
        """The terminal behind ``stream``; ``color`` is ``auto``, ``always`` or ``never``."""
        if color == "always":
            colored = True
        elif color == "never" or "NO_COLOR" in os.environ:
            colored = False
        else:
            isatty = getattr(stream, "isatty", None)
            colored = bool(isatty and isatty())
        return cls(colored, terminal_width(default_width))

    def paint(self, text: str, *codes: str) -> str:
        """``text`` in SGR ``codes`` (``"1"`` bold, ``"31"`` red...), or as is without colour.

        ``text`` must already be escaped: only the codes added here reach the terminal.
        """
        if not self.color or not codes:
            return text
        return f"\033[{';'.join(codes)}m{text}\033[0m"

    def glyph(self, fancy: str, plain: str) -> str:
        """A Unicode symbol on a colour terminal, its ASCII stand-in otherwise."""
        return fancy if self.color else plain


def terminal_width(default: int = 100) -> int:
    """``COLUMNS`` if set, else the terminal's width, else ``default`` (at least 40)."""
    return max(40, shutil.get_terminal_size((default, 24)).columns)


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width``, broken between words (a long word stays whole
    on a line of its own, so a command or URL is never split)."""
    return textwrap.wrap(text, max(10, width), break_on_hyphens=False, break_long_words=False) or [
        ""
    ]


def add_color_argument(parser: Any) -> None:
    """``--color auto|always|never`` and ``--no-color`` (the same as ``--color never``)."""
    parser.add_argument(
        "--color",
        choices=COLOR_CHOICES,
        default="auto",
        help="ANSI colours: auto (a TTY without NO_COLOR, the default), always, never",
    )
    parser.add_argument(
        "--no-color",
        dest="color",
        action="store_const",
        const="never",
        help="the same as --color never: plain ASCII",
    )


Command = TypeVar("Command", bound=Callable[..., int])


def quiet_when_stdout_closes(command: Command) -> Command:
    """``voltrace ... | head``: when the reader goes away, exit 1 without a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs)
        except BrokenPipeError:
            # Python's docs: point stdout at devnull, so the flush at exit cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1

    return run  # type: ignore[return-value]


# ---------------------------------------------------------------------------
# The waterfall
# ---------------------------------------------------------------------------


@dataclass
class WaterfallRow:
    """One span (or one logged stage) of a waterfall, on the request's own time axis."""

    depth: int
    service: str
    label: str
    offset: float  # 0..1 of the axis
    width: float  # 0..1 of the axis
    duration_ms: float
    status: str  # ok, error, skipped
    failed: bool  # the failing stage itself
    note: str
    detail: str = ""  # everything known about the span, for the HTML tooltip


# Service colours; anything else gets the last.
SERVICE_ANSI = {
    "nova-api": "36",
    "cinder-api": "35",
    "cinder-scheduler": "34",
    "cinder-volume": "32",
}
OTHER_ANSI = "33"

SERVICE_MAX = 16  # wider service names are cut
DURATION_WIDTH = 9
MIN_BAR, MAX_BAR = 10, 80
MIN_LABEL, MIN_NOTE, MAX_NOTE = 20, 8, 40


@dataclass(frozen=True)
class _Columns:
    service: int
    label: int
    bar: int
    note: int


def _columns(rows: Sequence[WaterfallRow], width: int) -> _Columns:
    """Column widths that fit ``width``.

    The bar keeps 20 columns; whole labels come first, then the notes; what
    does not fit is taken from the notes first, then the labels, then the bar.
    """
    service = min(SERVICE_MAX, max([len("service"), *(len(r.service) for r in rows)]))
    label = max([len("span"), *(2 * r.depth + len(r.label) for r in rows)])
    note = min(MAX_NOTE, max([0, *(len(r.note) + 5 for r in rows)]))
    # "  " service " " label mark "|" bar "|" duration, then "  " note
    fixed = 2 + service + 1 + 1 + 2 + DURATION_WIDTH
    room = width - fixed - 2 * MIN_BAR
    # The failing span's note (its failure class) is the one never to cut.
    least_note = min(note, max([MIN_NOTE, *(len(r.note) + 5 for r in rows if r.failed)]))
    if label + note > room:
        note = max(least_note, room - label)
    if label + note > room:
        label = max(MIN_LABEL, room - note)
    if label + note > room:
        note = max(0, room - label)
    bar = max(4, min(MAX_BAR, width - fixed - label - note))
    return _Columns(service, label, bar, note)


def draw_waterfall(
    rows: Sequence[WaterfallRow], total_ms: float | None, term: Terminal
) -> list[str]:
    """The rows as terminal lines, each at most ``term.width`` wide (ASCII without colour)."""
    if not rows:
        return []
    fancy = term.color
    cols = _columns(rows, term.width)
    axis = f"0{format_ms(total_ms):>{cols.bar - 1}}"[: cols.bar]
    out = [f"  {'service':<{cols.service}} {'span':<{cols.label}}  {axis}"]
    for row in rows:
        service = shorten(escape(row.service), cols.service, fancy=fancy)
        label = shorten("  " * row.depth + escape(row.label), cols.label, fancy=fancy)
        start = min(cols.bar - 1, int(row.offset * cols.bar))
        length = max(1, min(cols.bar - start, round(row.width * cols.bar)))
        blank_after = cols.bar - start - length
        if fancy:
            track = term.paint(" " * start + "█" * length + " " * blank_after, _bar_code(row))
            edge = term.paint("│", "2")
        else:
            char = {"error": "x", "skipped": "."}.get(row.status, "=")
            track = " " * start + char * length + " " * blank_after
            edge = "|"
        mark = term.glyph("✗", "!") if row.failed else " "
        name = f"{label:<{cols.label}}"
        if row.failed:
            name = term.paint(name, "1", "31")
        elif row.status == "skipped":
            name = term.paint(name, "2")
        note_text = escape(row.note)
        if row.failed:
            note_text = term.glyph("← ", "<- ") + note_text
        note_text = shorten(note_text, max(0, cols.note - 2), fancy=fancy)
        if note_text:
            note_text = (
                term.paint(note_text, "1", "31") if row.failed else term.paint(note_text, "2")
            )
        painted_service = term.paint(f"{service:<{cols.service}}", _service_code(row.service))
        line = (
            f"  {painted_service} {name}{mark}{edge}{track}{edge}"
            f"{format_ms(row.duration_ms):>{DURATION_WIDTH}}"
        )
        out.append(f"{line}  {note_text}" if note_text else line)
    return out


def _service_code(service: str) -> str:
    return SERVICE_ANSI.get(service, OTHER_ANSI)


def _bar_code(row: WaterfallRow) -> str:
    if row.status == "error":
        return "31"
    if row.status == "skipped":
        return "2"
    return _service_code(row.service)


def visible_width(line: str) -> int:
    """The columns ``line`` takes, not counting our SGR colour codes."""
    return len(_SGR.sub("", line))


_SGR = re.compile(r"\x1b\[[0-9;]*m")
