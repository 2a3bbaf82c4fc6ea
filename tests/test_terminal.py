"""What explain and the demo draw on a terminal: escaped, fitted to the width, coloured by us."""

from __future__ import annotations

import re

import pytest

from voltrace.terminal import (
    Terminal,
    WaterfallRow,
    draw_waterfall,
    escape,
    visible_width,
)

LONG_LABEL = "GET /v3/de30de30de30de30de30de30de30de30/volumes/8bc2597d-04ca-4c6d-b42b-c0409caed56b"


def rows() -> list[WaterfallRow]:
    return [
        WaterfallRow(0, "nova-api", "POST /v2.1/os-volumes", 0.0, 1.0, 27.1, "ok", False, ""),
        WaterfallRow(1, "nova-api", "call_cinder", 0.1, 0.8, 23.2, "error", True, "over_quota"),
        WaterfallRow(2, "nova-api", LONG_LABEL, 0.2, 0.3, 11.5, "ok", False, "200"),
        WaterfallRow(
            3,
            "cinder-api",
            "check_quota",
            0.3,
            0.2,
            6.1,
            "error",
            False,
            "VolumeSizeExceedsAvailableQuota",
        ),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "\x1b[2J",
        "\x1b]52;c;ZXZpbA==\x07",
        "\x9b31m",
        "\x9d0;x\x9c",
        "a\tb\nc\r",
        "\u202eevil",
        "\ud800",
    ],
)
def test_escape_shows_every_control_character(text):
    """ESC, OSC 52, C1, tabs and newlines, bidi overrides, lone surrogates: shown escaped."""
    shown = escape(text)
    assert not re.search("[\x00-\x1f\x7f-\x9f\u202a-\u202e\ud800-\udfff]", shown)
    assert "\\x" in shown or "\\u" in shown


@pytest.mark.parametrize("width", [80, 100, 160])
@pytest.mark.parametrize("color", [False, True])
def test_waterfall_fits_the_width(width, color):
    """No line wider than the terminal, at 80 columns too (nothing wraps)."""
    lines = draw_waterfall(rows(), 27.1, Terminal(color, width))
    assert max(visible_width(line) for line in lines) <= width


def test_labels_and_the_failure_are_whole_at_160_columns():
    """A wide terminal gets whole labels, and the failing row's note is never cut."""
    lines = draw_waterfall(rows(), 27.1, Terminal(False, 160))
    assert any(LONG_LABEL in line for line in lines)
    assert any(line.endswith("<- over_quota") for line in lines)
    narrow = draw_waterfall(rows(), 27.1, Terminal(False, 80))
    assert any(line.endswith("<- over_quota") for line in narrow)


def test_hostile_labels_are_escaped_and_only_our_colours_remain():
    """A span name with escapes is drawn escaped; the only SGR codes are the renderer's."""
    hostile = [
        WaterfallRow(
            0, "nova\x1b]0;x\x07", "POST \x1b[2J\x9b", 0, 1, 1.0, "ok", False, "\x1b]52;c;QQ==\x07"
        )
    ]
    for color in (False, True):
        text = "\n".join(draw_waterfall(hostile, 1.0, Terminal(color, 100)))
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", re.sub(r"\x1b\[[0-9;]*m", "", text))


def test_no_color_means_ascii(monkeypatch):
    """Off a TTY, or with NO_COLOR, the waterfall is plain ASCII."""
    monkeypatch.setenv("NO_COLOR", "1")

    class Tty:
        def isatty(self) -> bool:
            return True

    term = Terminal.for_stream(Tty())
    assert not term.color
    assert "\n".join(draw_waterfall(rows(), 27.1, term)).isascii()


def test_columns_sets_the_width(monkeypatch):
    """COLUMNS decides the width when set (as shutil.get_terminal_size reads it)."""
    monkeypatch.setenv("COLUMNS", "80")
    assert Terminal.for_stream(None).width == 80
