"""Structured logs that join the trace: one line per stage, one summary per request (issue 3).

Also: oslo.log-style lines for grep and ELK habits, and hostile text (terminal escapes, lone
surrogates, huge values, the request's token) that never reaches a log line as it came.
"""

from __future__ import annotations

import io
import json
import re

import orjson

from tests.conftest import TEST_TOKEN, member_headers
from voltrace.cinder import CinderSettings
from voltrace.client import NovaClient
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry, TelemetryConfig
from voltrace.telemetry.hygiene import DEFAULT_VALUE_LENGTH_LIMIT, redacting
from voltrace.telemetry.logs import make_logger

# nova's logging_context_format_string: time.msecs pid LEVEL logger [global req user
# project domain system_scope user_domain project_domain] message
OSLO_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (?P<pid>\d+) (?P<level>[A-Z]+) "
    r"(?P<name>[\w.]+) \[(?P<context>[^\]]*)\] (?P<message>.*)$"
)
HOSTILE = "\x1b]52;c;aGk=\x07\x1b[2J\x1b]0;pwned\x07\x9b1m\r\nFAKE LINE"

STAGE_FIELDS = {
    "timestamp",
    "level",
    "event",
    "service",
    "stage",
    "outcome",
    "duration_ms",
    "trace_id",
    "span_id",
    "request_id",
    "global_request_id",
    "project_id",
    "user_id",
    "volume_id",
}
ERROR_FIELDS = {"http_status", "error_type", "error_message", "failure_class"}


def _create_and_collect(nova, captured, volume, headers=None):
    response = nova.create(volume, headers=headers or member_headers())
    request_id = response.header("x-openstack-request-id")
    spans = captured.complete_trace(request_id)
    captured.wait_for(
        lambda c: any(e["event"] == "request.finished" for e in c.logs_for(request_id))
    )
    return response, spans, captured.logs_for(request_id)


def test_one_line_per_stage_with_ids_matching_the_spans(nova, captured):
    """Every stage line carries the trace id and its own stage span's id."""
    response, spans, logs = _create_and_collect(nova, captured, {"size": 1})
    stage_lines = [e for e in logs if e["event"].startswith("stage.")]
    assert [e["stage"] for e in stage_lines] == [
        "parse",
        "authorize",
        "resolve_snapshot",
        "derive_size",
        "call_cinder",
        "translate",
    ]
    by_name = {s.name: s for s in spans if s.resource.attributes["service.name"] == "nova-api"}
    for line in stage_lines:
        assert set(line) >= STAGE_FIELDS, line
        span = by_name[line["stage"]]
        assert line["trace_id"] == f"{span.context.trace_id:032x}"
        assert line["span_id"] == f"{span.context.span_id:016x}"
        assert line["event"] == f"stage.{line['stage']}"
        assert line["service"] == "nova-api"
        assert (
            line["project_id"] == "a1ce0000000000000000000000000001"
            and line["user_id"] == "u-member"
        )
    assert stage_lines[2]["outcome"] == "skipped"
    assert stage_lines[-1]["volume_id"] == response.json()["volume"]["id"]


def test_summary_line_matches_the_server_span(nova, captured):
    """request.finished carries the outcome, status, ids and every stage's duration."""
    response, _, logs = _create_and_collect(nova, captured, {"size": 1})
    request_id = response.header("x-openstack-request-id")
    server = captured.server_span(request_id)
    (summary,) = [e for e in logs if e["event"] == "request.finished"]
    assert summary["outcome"] == "success"
    assert summary["http_status"] == 200
    assert summary["trace_id"] == f"{server.context.trace_id:032x}"
    assert summary["span_id"] == f"{server.context.span_id:016x}"
    assert summary["request_id"] == request_id
    assert summary["global_request_id"] == request_id
    assert summary["cinder_request_id"] == server.attributes["cinder.request_id"]
    assert [s["name"] for s in summary["stages"]] == [
        "parse",
        "authorize",
        "resolve_snapshot",
        "derive_size",
        "call_cinder",
        "translate",
    ]
    assert all(s["duration_ms"] >= 0 for s in summary["stages"])


def test_failing_stage_line_says_why(nova, captured):
    """The failing stage's line has the status, failure class, error type and message."""
    _, _, logs = _create_and_collect(nova, captured, {"size": 1, "snapshot_id": "nope"})
    failing = next(e for e in logs if e.get("stage") == "resolve_snapshot")
    assert set(failing) >= ERROR_FIELDS
    assert failing["level"] == "warning"
    assert failing["outcome"] == "error"
    assert failing["http_status"] == 404
    assert failing["failure_class"] == "snapshot_not_found"
    assert failing["error_type"] == "nova.exception.SnapshotNotFound"
    assert failing["error_message"] == "Snapshot nope could not be found."
    summary = next(e for e in logs if e["event"] == "request.finished")
    assert summary["failed_stage"] == "resolve_snapshot"


def test_global_request_id_is_logged(nova, captured):
    """An incoming valid global id is the global_request_id of every line."""
    global_id = "req-11111111-2222-4333-8444-555555555555"
    headers = {**member_headers(), "X-OpenStack-Request-ID": global_id}
    _, _, logs = _create_and_collect(nova, captured, {"size": 1}, headers=headers)
    assert {e["global_request_id"] for e in logs} == {global_id}


def test_json_renderer_writes_one_json_object_per_line():
    """Not a TTY: JSON lines with an ISO UTC timestamp."""
    stream = io.StringIO()
    logger = make_logger(stream, fmt="auto")
    logger.info("stage.parse", stage="parse", duration_ms=0.1)
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "stage.parse"
    assert event["level"] == "info"
    assert event["timestamp"].endswith("Z")


def test_console_renderer_on_a_tty():
    """On a terminal the same events are rendered for humans, not as JSON."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    make_logger(stream, fmt="auto").info("stage.parse", stage="parse")
    output = stream.getvalue()
    assert "stage.parse" in output
    assert not output.lstrip().startswith("{")


def test_secret_keys_are_masked_whatever_a_caller_binds():
    """A token bound by mistake is written as ***."""
    stream = io.StringIO()
    make_logger(stream, fmt="json").info("oops", auth_token="tok-XYZ", password="pw")
    assert "tok-XYZ" not in stream.getvalue() and 'pw"' not in stream.getvalue()


def test_oslo_lines_read_like_nova_api(sim):
    """--log-format oslo: a real create's lines in nova's default context format, so
    grep on the request id finds every stage line and the summary."""
    stream = io.StringIO()
    oslo = Telemetry.create(
        TelemetryConfig(
            service_name="nova-api",
            use_env_service_name=False,
            log_stream=stream,
            log_format="oslo",
        )
    )
    try:
        config = ServeConfig(
            cinder=CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
        )
        with EmbeddedServer(build_service(config, oslo)) as server:
            client = NovaClient(server.url)
            response = client.create_volume({"size": 1}, headers=member_headers())
            client.close()
    finally:
        oslo.shutdown()
    request_id = response.header("x-openstack-request-id")
    lines = [line for line in stream.getvalue().splitlines() if request_id in line]
    parsed = [OSLO_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [m["name"] for m in parsed] == ["nova.api.openstack.compute.volumes"] * 6 + [
        "nova.api.openstack.requestlog"
    ]
    assert {m["context"] for m in parsed} == {
        f"None {request_id} u-member a1ce0000000000000000000000000001 - - - -"
    }
    assert {m["level"] for m in parsed} == {"INFO"}
    summary = parsed[-1]["message"]
    assert summary.startswith("request.finished ")
    assert " outcome=success " in summary and " http_status=200 " in summary
    assert '"name":"call_cinder"' in summary  # structured values stay compact JSON


def test_oslo_line_carries_a_callers_global_request_id_and_no_context_before_auth():
    """A caller's global id comes first, as oslo.context logs it; no identity gives [-]."""
    stream = io.StringIO()
    logger = make_logger(stream, fmt="oslo")
    logger.warning(
        "stage.parse",
        request_id="req-1",
        global_request_id="req-g",
        user_id="u",
        project_id="p",
        outcome="error",
        error_message="two words",
    )
    logger.info("request.finished", http_status=413)
    first, second = (OSLO_LINE.match(line) for line in stream.getvalue().splitlines())
    assert first["context"] == "req-g req-1 u p - - - -"
    assert first["level"] == "WARNING"
    assert first["message"] == 'stage.parse outcome=error error_message="two words"'
    assert second["context"] == "-"


def test_terminal_formats_escape_control_characters():
    """Console and oslo lines show ESC, BEL, C1 and CR/LF as visible escapes: hostile text
    cannot clear the screen, retitle the window, write the clipboard or fake a line."""
    for fmt in ("console", "oslo"):
        stream = io.StringIO()
        logger = make_logger(stream, fmt=fmt)
        logger.warning("stage.parse", volume_type=HOSTILE)
        logger.warning("stage.parse", snapshot_id=HOSTILE.replace(" ", ""))  # no quoting
        output = stream.getvalue()
        assert output.count("\n") == 2, fmt
        printed = re.sub(r"\x1b\[[0-9;]*m", "", output)  # the renderer's own colours
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", printed), (fmt, printed)
        assert printed.count("x1b]52;c;aGk=") == 2, fmt


def test_log_fields_are_bounded_valid_utf8_and_never_carry_the_token():
    """A 114 KB message is cut to the limit, a lone surrogate becomes U+FFFD (strict JSON
    parsers read the line), and the request's own token is written as ***."""
    stream = io.StringIO()
    logger = make_logger(stream, fmt="json")
    with redacting(TEST_TOKEN):
        logger.warning(
            "stage.call_cinder",
            error_message=f"Invalid token {TEST_TOKEN}",
            volume_type="\ud800" + "9" * 114_000,
        )
    event = orjson.loads(stream.getvalue())
    assert event["error_message"] == "Invalid token ***"
    assert event["volume_type"].startswith("\ufffd999")
    assert len(event["volume_type"]) == DEFAULT_VALUE_LENGTH_LIMIT
