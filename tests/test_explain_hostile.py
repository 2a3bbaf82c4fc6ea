"""`voltrace explain` on hostile trace files: it never loops, never raises, never lets a file
write to the terminal, and reports what it skipped."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from voltrace.cli import main

ROOT = Path(__file__).resolve().parent.parent
COLLECTOR_FILE = ROOT / "tests" / "data" / "collector-file-export.jsonl"
# The over-quota create in the Collector file: nova-api's line, then cinder-api's.
NOVA_LINE, CINDER_LINE = (json.loads(line) for line in COLLECTOR_FILE.read_text().splitlines()[:2])
SERVER, PIPELINE, CALL_CINDER = "147eaa1bcf7f1895", "6031265e142ceed7", "b80be4ee5017ba0b"
# What a terminal obeys: ESC (CSI, OSC), BEL, C1 controls (CSI 0x9b, OSC 0x9d).
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
OUR_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
HOSTILE = (
    "\x1b]52;c;ZXZpbA==\x07\x1b[2J\x1b]0;pwned\x07\x9b31m\x9d0;title\x9c<script>alert(1)</script>"
)


def spans(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for rs in document["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


def span(document: dict[str, Any], span_id: str) -> dict[str, Any]:
    return next(s for s in spans(document) if s["spanId"] == span_id)


def write(path: Path, *lines: Any) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def run_explain(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A real `voltrace explain` process, killed if it ever takes 60 s (a loop)."""
    return subprocess.run(
        [sys.executable, "-m", "voltrace", "explain", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize("shape", ["cycle", "self-parent", "cycle-below", "duplicate-ids"])
def test_parent_links_that_lie_never_loop(tmp_path, shape):
    """A→B→A, a span its own parent, a cycle under the create, one id twice: an answer."""
    nova, cinder = copy.deepcopy(NOVA_LINE), copy.deepcopy(CINDER_LINE)
    if shape == "cycle":
        span(nova, SERVER)["parentSpanId"] = PIPELINE
    elif shape == "self-parent":
        span(nova, SERVER)["parentSpanId"] = SERVER
        span(nova, CALL_CINDER)["parentSpanId"] = CALL_CINDER
    elif shape == "cycle-below":
        span(nova, PIPELINE)["parentSpanId"] = CALL_CINDER
    else:
        twin = copy.deepcopy(span(nova, CALL_CINDER))
        twin["parentSpanId"] = CALL_CINDER
        nova["resourceSpans"][0]["scopeSpans"][0]["spans"].append(twin)
    done = run_explain(write(tmp_path / "t.jsonl", nova, cinder))
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr
    if shape != "cycle-below":
        assert "over_quota" in done.stdout


MALFORMED = {
    "events are not objects": lambda s: s.update(events=["x"]),
    "status is text": lambda s: s.update(status="x"),
    "attributes are text": lambda s: s.update(attributes="x"),
    "attribute without value": lambda s: s.update(attributes=[{"key": "k"}, "x", {"v": 1}]),
    "start time is text": lambda s: s.update(startTimeUnixNano="soon"),
    "kind is unknown": lambda s: s.update(kind="SPAN_KIND_SIDEWAYS"),
    "id is not hex": lambda s: s.update(spanId="zz"),
    "retries are text": lambda s: s["attributes"].append(
        {"key": "cinder.connect_retries", "value": {"stringValue": "many"}}
    ),
    "status code is text": lambda s: s["attributes"].append(
        {"key": "http.response.status_code", "value": {"stringValue": "abc"}}
    ),
    "nested values": lambda s: s["attributes"].append(
        {"key": "deep", "value": json.loads('{"arrayValue": {"values": [' * 50 + "]}}" * 50)}
    ),
}


@pytest.mark.parametrize("damage", sorted(MALFORMED))
def test_malformed_spans_are_skipped_and_reported(capsys, tmp_path, damage):
    """A span with a field of the wrong type is skipped (or read around), never a traceback."""
    nova, cinder = copy.deepcopy(NOVA_LINE), copy.deepcopy(CINDER_LINE)
    for target in (SERVER, CALL_CINDER):
        MALFORMED[damage](span(nova, target))
    path = write(tmp_path / "t.jsonl", nova, cinder)
    code = main(["explain", str(path), "--no-color"])
    err = capsys.readouterr().err
    assert code in (0, 1)
    assert "Traceback" not in err
    if code == 1:  # the create's span was unreadable, or lost what made it one: it says so
        assert "skipped" in err


@pytest.mark.parametrize(
    "line",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"resourceSpans": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"resourceSpans": "x"}',
        '{"resourceSpans": [{"scopeSpans": [{"spans": "x"}]}]}',
        '{"data": [{"spans": [{"traceID": 5, "spanID": []}], "processes": []}]}',
        '{"data": [{"spans": [{"traceID": "ab", "spanID": "cd", "tags": "x", "references": 7, '
        '"logs": [1], "startTime": "x"}]}]}',
        '{"data": [5, "x", null]}',
        '{"x\\ud800\\u001b[2J": 1}',
    ],
)
def test_hostile_lines_beside_a_good_create(capsys, tmp_path, line):
    """Deep nesting, wrong shapes, a malformed Jaeger trace: skipped, named, the rest read."""
    path = write(tmp_path / "t.jsonl", line, NOVA_LINE, CINDER_LINE)
    code = main(["explain", str(path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["failure_class"] == "over_quota"
    assert "Traceback" not in err and f"{path}:1: " in err


def test_a_malformed_jaeger_document_exits_2_with_a_reason(capsys, tmp_path):
    """A Jaeger document with no readable span at all: exit 2, one reason, no traceback."""
    path = tmp_path / "jaeger.json"
    path.write_text('{"data": [{"traceID": "x", "spans": [{"spanID": 3}]}]}')
    assert main(["explain", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(path) in err


def hostile_create(tmp_path: Path) -> Path:
    """The over-quota create with terminal escapes in every string a file can carry."""
    nova, cinder = copy.deepcopy(NOVA_LINE), copy.deepcopy(CINDER_LINE)
    for document in (nova, cinder):
        for s in spans(document):
            s["name"] += HOSTILE
            for attribute in s.get("attributes", []):
                value = attribute["value"]
                if "stringValue" in value and attribute["key"] not in (
                    "voltrace.outcome",
                    "voltrace.failure_class",
                    "voltrace.failed_stage",
                    "voltrace.request.kind",
                    "voltrace.stage",
                    "http.request.method",
                    "http.route",
                ):
                    value["stringValue"] += HOSTILE
            for event in s.get("events", []):
                for attribute in event.get("attributes", []):
                    attribute["value"] = {"stringValue": HOSTILE}
        document["resourceSpans"][0]["resource"]["attributes"].append(
            {"key": "service.name", "value": {"stringValue": "nova-api" + HOSTILE}}
        )
    span(nova, CALL_CINDER)["name"] = "call_cinder"
    return write(tmp_path / "hostile.jsonl", nova, cinder)


@pytest.mark.parametrize("color", ["never", "always"])
def test_no_escape_sequence_from_a_file_reaches_the_terminal(tmp_path, color):
    """ESC, OSC 52, BEL and C1 from span names, attributes and messages are shown escaped;
    only explain's own colour codes remain."""
    done = run_explain(hostile_create(tmp_path), "--color", color)
    assert done.returncode in (0, 1), done.stderr
    for stream in (done.stdout, done.stderr):
        cleaned = OUR_COLOURS.sub("", stream) if color == "always" else stream
        assert not CONTROL.search(cleaned), CONTROL.search(cleaned)
    assert "\\x1b]52" in done.stdout + done.stderr


def test_the_html_report_escapes_everything(tmp_path):
    """The HTML report of the hostile create holds no markup or control byte from the file."""
    report = tmp_path / "report.html"
    done = run_explain(hostile_create(tmp_path), "--html", str(report), "--json")
    assert done.returncode == 0, done.stderr
    page = report.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert not CONTROL.search(page.replace("\n", "")), CONTROL.search(page.replace("\n", ""))
    assert "\\x1b]52" in page
