"""`voltrace explain` on files voltrace did not write, and on damaged or wrong ones.

``tests/data/collector-file-export.jsonl`` is what an OpenTelemetry Collector's file
exporter writes when `voltrace serve` and `voltrace cinder-sim` export to it: each
line one export request as the Collector batched it (nova-api's spans and an
unrelated service's in one line, cinder-api's in the next), its resource
attributes (host.name, process.pid), flags and schema URLs, and a third line cut
short because the Collector was killed mid-write. The spans are those of a real
over-quota create and a real plain create, reshaped; the plain create lost its
nova-api half to the cut line.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.support.demo_run import demo_run
from voltrace.cli import main

COLLECTOR_FILE = Path(__file__).parent / "data" / "collector-file-export.jsonl"
OVER_QUOTA_TRACE = "019650ba3854b19384b79e95e54507dc"
LOST_HALF_TRACE = "034585d2e84dda68984e4d9d46829730"
UNRELATED_TRACE = "5b8efff798038103d269b633813fc60c"


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["explain", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_collector_file_export_is_diagnosed(capsys):
    """A Collector-written file: the intact create is diagnosed like voltrace's own file."""
    code, out, _ = explain(capsys, str(COLLECTOR_FILE), "--json")
    assert code == 0
    (d,) = [json.loads(line) for line in out.splitlines()]
    assert d["trace_id"] == OVER_QUOTA_TRACE
    assert (d["http_status"], d["failed_stage"], d["failure_class"]) == (
        403,
        "call_cinder",
        "over_quota",
    )
    assert d["error_type"] == "nova.exception.OverQuota"
    assert d["details"]["quota"] == "gigabytes"
    assert d["details"]["cinder_error_type"] == "VolumeSizeExceedsAvailableQuota"
    assert d["cinder_request_id"].startswith("req-")
    assert d["slowest_hop"]["target"] == "cinder-api"
    assert [s["name"] for s in d["stages"]] == [
        "parse",
        "authorize",
        "resolve_snapshot",
        "derive_size",
        "call_cinder",
    ]


def test_truncated_line_and_foreign_traces_get_clear_messages(capsys):
    """The cut line, the unrelated trace and the orphaned half are named, not raised."""
    code, _, err = explain(capsys, str(COLLECTOR_FILE), "--failed")
    assert code == 0
    warnings = err.splitlines()
    assert len(warnings) == 3, err
    assert f"{COLLECTOR_FILE}:3: not valid JSON, skipped (a truncated write?)" in warnings[0]
    unrelated = next(w for w in warnings if UNRELATED_TRACE in w)
    assert "not a voltrace volume create" in unrelated and "horizon" in unrelated
    orphan = next(w for w in warnings if LOST_HALF_TRACE in w)
    assert "parent that is not in the file" in orphan and "cinder-api" in orphan
    assert "Traceback" not in err


def protobuf_default_json(line: str) -> str:
    """The same request as protobuf's default JSON mapping: base64 ids, enum names."""
    request = json.loads(line)
    for resource_spans in request["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
                span["kind"] = [
                    "SPAN_KIND_UNSPECIFIED",
                    "SPAN_KIND_INTERNAL",
                    "SPAN_KIND_SERVER",
                    "SPAN_KIND_CLIENT",
                ][span["kind"]]
                if "code" in span["status"]:
                    span["status"]["code"] = [
                        "STATUS_CODE_UNSET",
                        "STATUS_CODE_OK",
                        "STATUS_CODE_ERROR",
                    ][span["status"]["code"]]
    return json.dumps(request)


def test_base64_ids_and_enum_names_read_the_same(capsys, tmp_path):
    """OTLP from protobuf's default JSON mapping (base64 ids, enum names) is understood."""
    intact = COLLECTOR_FILE.read_text().splitlines()[:2]
    converted = tmp_path / "protobuf.jsonl"
    converted.write_text("\n".join(protobuf_default_json(line) for line in intact) + "\n")
    code, out, err = explain(capsys, str(converted), "--json")
    assert code == 0, err
    (d,) = [json.loads(line) for line in out.splitlines()]
    assert (d["trace_id"], d["failure_class"]) == (OVER_QUOTA_TRACE, "over_quota")
    assert d["critical_path"][-1]["name"] == "check_quota"


def test_file_with_no_create_exits_1(capsys, tmp_path):
    """Only someone else's traces: say there is no volume create, exit 1."""
    other = tmp_path / "other.jsonl"
    request = json.loads(COLLECTOR_FILE.read_text().splitlines()[0])
    request["resourceSpans"] = request["resourceSpans"][1:]  # the horizon spans only
    other.write_text(json.dumps(request) + "\n")
    code, out, err = explain(capsys, str(other))
    assert (code, out) == (1, "")
    assert f"no volume create in {other}" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("", "is empty"),
        ("\x00\x01garbage\x02\n", "no line could be read as spans"),
        ('{"resourceMetrics": []}\n', "OTLP metrics or logs, not traces"),
    ],
)
def test_unreadable_trace_files_exit_2_with_a_reason(capsys, tmp_path, content, message):
    """Missing, empty, garbage, metrics: exit 2 and one line that says why."""
    path = tmp_path / "input.jsonl"
    if content is not None:
        path.write_text(content)
    code, out, err = explain(capsys, str(path))
    assert (code, out) == (2, "")
    assert message in err and "Traceback" not in err


def test_log_file_with_a_cut_line_still_diagnoses_the_rest(capsys, tmp_path, tmp_path_factory):
    """--logs: a line cut short is reported; every complete request is still diagnosed."""
    run = demo_run(tmp_path_factory)
    lines = (run.out / "logs.jsonl").read_text().splitlines()
    damaged = tmp_path / "logs.jsonl"
    damaged.write_text("\n".join([*lines, lines[0][:40]]) + "\n")
    code, out, err = explain(capsys, "--logs", str(damaged), "--json")
    assert code == 0
    assert f"{damaged}:{len(lines) + 1}: not a JSON log line" in err
    assert len(out.splitlines()) == len(run.summary)


def test_jaeger_single_trace_and_bare_list_are_read(capsys, tmp_path, tmp_path_factory):
    """Jaeger JSON as the UI downloads one trace, or as a bare list of traces."""
    run = demo_run(tmp_path_factory)
    document = json.loads((run.out / "jaeger.json").read_text())
    wanted = run.row("snapshot-not-found")["trace_id"]
    (trace,) = [t for t in document["data"] if t["traceID"] == wanted]
    for shape in (trace, [trace]):
        path = tmp_path / "one.json"
        path.write_text(json.dumps(shape))
        code, out, _ = explain(capsys, str(path), "--json")
        assert code == 0
        (d,) = [json.loads(line) for line in out.splitlines()]
        assert (d["failure_class"], d["details"]["snapshot_id"]) == (
            "snapshot_not_found",
            "3c0f7e2a-9d41-4b6e-8f0a-6c2b1d9e4a70",
        )
