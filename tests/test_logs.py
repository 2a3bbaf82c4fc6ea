"""Structured logs that join the trace: one line per stage, one summary per request (issue 3)."""

from __future__ import annotations

import io
import json

from tests.conftest import member_headers
from voltrace.telemetry.logs import make_logger

STAGE_FIELDS = {"timestamp", "level", "event", "service", "stage", "outcome", "duration_ms",
                "trace_id", "span_id", "request_id", "global_request_id", "project_id",
                "user_id", "volume_id"}
ERROR_FIELDS = {"http_status", "error_type", "error_message", "failure_class"}


def _create_and_collect(nova, captured, volume, headers=None):
    response = nova.create(volume, headers=headers or member_headers())
    request_id = response.header("x-openstack-request-id")
    spans = captured.complete_trace(request_id)
    captured.wait_for(lambda c: any(e["event"] == "request.finished"
                                    for e in c.logs_for(request_id)))
    return response, spans, captured.logs_for(request_id)


def test_one_line_per_stage_with_ids_matching_the_spans(nova, captured):
    """Every stage line carries the trace id and its own stage span's id."""
    response, spans, logs = _create_and_collect(nova, captured, {"size": 1})
    stage_lines = [e for e in logs if e["event"].startswith("stage.")]
    assert [e["stage"] for e in stage_lines] == [
        "parse", "authorize", "resolve_snapshot", "derive_size", "call_cinder", "translate"]
    by_name = {s.name: s for s in spans if s.resource.attributes["service.name"] == "nova-api"}
    for line in stage_lines:
        assert set(line) >= STAGE_FIELDS, line
        span = by_name[line["stage"]]
        assert line["trace_id"] == f"{span.context.trace_id:032x}"
        assert line["span_id"] == f"{span.context.span_id:016x}"
        assert line["event"] == f"stage.{line['stage']}"
        assert line["service"] == "nova-api"
        assert line["project_id"] == "p-member" and line["user_id"] == "u-member"
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
        "parse", "authorize", "resolve_snapshot", "derive_size", "call_cinder", "translate"]
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
    assert "tok-XYZ" not in stream.getvalue() and "pw\"" not in stream.getvalue()
