"""`voltrace explain` on the demo's output: the right diagnosis, from traces or logs alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.demo_run import EXPECTED, FAILURES, PROJECT, DemoRun, demo_run
from voltrace.cli import main

REQUIRED_KEYS = {
    "trace_id",
    "request_id",
    "outcome",
    "http_status",
    "failed_stage",
    "error_type",
    "stages",
}
# What a diagnosis from the logs must share with the one from the trace.
SAME_FROM_LOGS = (
    "trace_id",
    "request_id",
    "global_request_id",
    "outcome",
    "http_status",
    "failed_stage",
    "failure_class",
    "error_type",
    "error_message",
    "nova_code",
    "cinder_request_id",
    "project_id",
    "user_id",
    "volume_id",
    "summary",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    done = demo_run(tmp_path_factory)
    assert done.returncode == 0, done.stderr
    return done


def explain_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, dict]:
    """`voltrace explain ... --json`, as {request_id: diagnosis}."""
    assert main(["explain", *args, "--json"]) == 0
    out = capsys.readouterr().out
    diagnoses = [json.loads(line) for line in out.splitlines()]
    return {d["request_id"]: d for d in diagnoses}


def explain_text(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["explain", *args, "--no-color"]) == 0
    return capsys.readouterr().out


def test_failed_json_names_stage_and_class_of_every_failure(run, capsys):
    """--failed --json: one object per failed create, with its stage and failure class."""
    found = explain_json(capsys, str(run.out / "traces.jsonl"), "--failed")
    assert set(found) == {run.request_id(name) for name in FAILURES}
    for name in FAILURES:
        d = found[run.request_id(name)]
        status, stage, failure = EXPECTED[name]
        assert set(d) >= REQUIRED_KEYS
        assert (d["http_status"], d["failed_stage"], d["failure_class"]) == (
            status,
            stage,
            failure,
        ), name
        assert d["outcome"] == ("server_error" if status >= 500 else "client_error")
        assert d["trace_id"] == run.row(name)["trace_id"]
        assert d["error_type"] and d["next_step"] and d["nova_code"]
        assert [s["status"] for s in d["stages"]][-1] == "error"
        assert d["stages"][-1]["name"] == stage
        assert all(s["status"] in ("ok", "skipped") for s in d["stages"][:-1])


def test_logs_alone_give_the_same_answers(run, capsys):
    """--logs rebuilds each failed create's diagnosis from logs.jsonl, matching the trace's."""
    from_trace = explain_json(capsys, str(run.out / "traces.jsonl"), "--failed")
    from_logs = explain_json(capsys, "--logs", str(run.out / "logs.jsonl"), "--failed")
    assert set(from_logs) == set(from_trace)
    for request_id, d in from_trace.items():
        logged = from_logs[request_id]
        assert {k: logged[k] for k in SAME_FROM_LOGS} == {k: d[k] for k in SAME_FROM_LOGS}
        assert [(s["name"], s["status"]) for s in logged["stages"]] == [
            (s["name"], s["status"]) for s in d["stages"]
        ]
        # The facts read from the error message are the same; the trace adds timings.
        for key, value in logged["details"].items():
            if key != "attempts":
                assert d["details"][key] == value, key
        assert logged["source"] == "logs" and d["source"] == "trace"


def test_jaeger_file_gives_the_same_answers(run, capsys):
    """jaeger.json and traces.jsonl of one run give the same diagnosis of every create."""
    from_otlp = explain_json(capsys, str(run.out / "traces.jsonl"))
    from_jaeger = explain_json(capsys, str(run.out / "jaeger.json"))
    assert set(from_jaeger) == {run.request_id(name) for name in EXPECTED}
    for request_id, d in from_otlp.items():
        jaeger = from_jaeger[request_id]
        for key in (*SAME_FROM_LOGS, "details", "next_step"):
            assert jaeger[key] == d[key], key
        assert [s["name"] for s in jaeger["critical_path"]] == [
            s["name"] for s in d["critical_path"]
        ]


def test_request_id_finds_a_create_by_nova_or_cinder_id(run, capsys):
    """--request-id takes the req- id from nova's log or answer, or Cinder's."""
    request_id = run.request_id("cinder-500")
    found = explain_json(capsys, str(run.out / "traces.jsonl"), "--request-id", request_id)
    assert list(found) == [request_id]
    cinder_id = found[request_id]["cinder_request_id"]
    assert cinder_id.startswith("req-") and cinder_id != request_id
    by_cinder = explain_json(capsys, str(run.out / "traces.jsonl"), "--request-id", cinder_id)
    assert list(by_cinder) == [request_id]


def test_request_id_repeats(run, capsys):
    """--request-id repeats: every create named, in the order they were made."""
    slow, quota = run.request_id("cinder-slow"), run.request_id("over-quota")
    found = explain_json(
        capsys, str(run.out / "traces.jsonl"), "--request-id", slow, "--request-id", quota
    )
    assert list(found) == [quota, slow]


def test_trace_id_selects_one_create(run, capsys):
    """--trace-id takes a full trace id or a prefix of 8+ hex digits."""
    trace_id = run.row("policy-denied")["trace_id"]
    for wanted in (trace_id, trace_id[:12].upper()):
        found = explain_json(capsys, str(run.out / "traces.jsonl"), "--trace-id", wanted)
        assert [d["trace_id"] for d in found.values()] == [trace_id]


def test_over_quota_names_the_quota_and_the_commands(run, capsys):
    """Over quota: which quota, the numbers, and the quota show / quota-usage commands."""
    text = explain_text(
        capsys, str(run.out / "traces.jsonl"), "--request-id", run.request_id("over-quota")
    )
    flat = " ".join(text.split())
    assert "failed stage call_cinder: over_quota" in flat
    assert "Cinder quota 'gigabytes' exceeded (1500G asked, limit 1000G" in flat
    assert f"openstack quota show --volume {PROJECT}" in flat
    assert f"cinder quota-usage {PROJECT}" in flat
    assert "nova code nova/volume/cinder.py:API.create" in flat
    assert "error nova.exception.OverQuota: VolumeSizeExceedsAvailableQuota" in flat


def test_unreachable_names_the_endpoint_and_the_retries(run, capsys):
    """Cinder unreachable: the endpoint tried, how many attempts, the configured retries."""
    request_id = run.request_id("cinder-unreachable")
    d = explain_json(capsys, str(run.out / "traces.jsonl"), "--request-id", request_id)[request_id]
    endpoint = d["details"]["endpoint"]
    assert endpoint.startswith("http://127.0.0.1:")
    assert endpoint.endswith(f"/v3/{PROJECT}/volumes")
    assert (d["details"]["attempts"], d["details"]["connect_retries"]) == (3, 2)
    assert d["details"]["reason"] == "Connection refused"
    assert d["cinder_request_id"] is None
    assert f"tried {endpoint} 3 times (1 + 2 retries, [cinder] http_retries=2)" in d["next_step"]
    assert "openstack endpoint list --service volumev3" in d["next_step"]
    hops = d["slowest_hop"]
    assert hops["status"] == "ConnectionError" and hops["callee_ms"] is None


def test_slow_cinder_is_the_slowest_hop_and_where_the_time_went(run, capsys):
    """A slow Cinder: the create succeeds, and the slowest hop and critical path point at it."""
    request_id = run.request_id("cinder-slow")
    d = explain_json(capsys, str(run.out / "traces.jsonl"), "--request-id", request_id)[request_id]
    assert (d["outcome"], d["http_status"], d["failed_stage"]) == ("success", 200, None)
    assert d["next_step"] is None
    hop = d["slowest_hop"]
    assert hop["method"] == "POST" and hop["target"] == "cinder-api"
    assert hop["share"] > 0.5 and hop["callee_ms"] <= hop["duration_ms"]
    path = [(p["service"], p["name"]) for p in d["critical_path"]]
    assert path[0] == ("nova-api", "POST /v2.1/os-volumes")
    assert path[-2:] == [
        ("cinder-api", "POST /v3/{project_id}/volumes"),
        ("cinder-api", "injected_latency"),
    ]
    call_cinder = next(s for s in d["stages"] if s["name"] == "call_cinder")
    assert call_cinder["share"] == max(s["share"] for s in d["stages"])
    assert sum(s["share"] for s in d["stages"]) <= 1.0


def test_every_create_without_filters(run, capsys):
    """No filter: every create of the run, in the order they were made, with a count."""
    text = explain_text(capsys, str(run.out / "traces.jsonl"))
    order = [text.index(run.request_id(name)) for name in EXPECTED]
    assert order == sorted(order)
    assert f"{len(EXPECTED)} create(s), {len(FAILURES)} failed" in text


def test_no_match_says_so_and_exits_1(run, capsys):
    """A request id that is not in the file: a clear message and exit 1."""
    code = main(["explain", str(run.out / "traces.jsonl"), "--request-id", "req-nope"])
    assert code == 1
    assert f"none of the {len(EXPECTED)} create(s)" in capsys.readouterr().err


def without_trace(source: Path, target: Path, trace_id: str) -> None:
    """Copy an OTLP JSON-lines file, leaving out every span of one trace (as if sampled out)."""
    lines = []
    for line in source.read_text().splitlines():
        request = json.loads(line)
        for resource_spans in request["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                scope_spans["spans"] = [s for s in scope_spans["spans"] if s["traceId"] != trace_id]
        lines.append(json.dumps(request))
    target.write_text("\n".join(lines) + "\n")


def test_logs_fill_in_a_create_whose_trace_is_missing(run, capsys, tmp_path):
    """PATH plus --logs: a create with no trace in PATH is diagnosed from the logs."""
    lost = run.row("unknown-volume-type")
    partial = tmp_path / "partial.jsonl"
    without_trace(run.out / "traces.jsonl", partial, lost["trace_id"])
    found = explain_json(capsys, str(partial), "--logs", str(run.out / "logs.jsonl"), "--failed")
    assert set(found) == {run.request_id(name) for name in FAILURES}
    d = found[lost["request_id"]]
    assert (d["source"], d["failed_stage"], d["failure_class"]) == (
        "logs",
        "call_cinder",
        "cinder_not_found",
    )
    assert d["details"]["volume_type"] == "gold"
    assert any("diagnosed from the logs" in note for note in d["notes"])
    assert all(
        found[run.request_id(n)]["source"] == "trace"
        for n in FAILURES
        if n != "unknown-volume-type"
    )


def test_unreachable_time_is_named_retry_backoff(run, capsys):
    """Cinder unreachable: the time between attempts is called keystoneauth's retry backoff."""
    request_id = run.request_id("cinder-unreachable")
    d = explain_json(capsys, str(run.out / "traces.jsonl"), "--request-id", request_id)[request_id]
    spent = {t["what"]: t["duration_ms"] for t in d["time_spent"]}
    assert any(what.startswith("retry backoff") for what in spent)
    assert any(what.startswith("connecting to a cinder-api") for what in spent)
    assert d["critical_path"][2]["self_is"].startswith("retry backoff between its 3 attempts")


def test_text_shows_the_waterfall_and_copyable_commands(run, capsys):
    """The text has the waterfall, and each next-step command on a line of its own."""
    text = explain_text(
        capsys, str(run.out / "traces.jsonl"), "--request-id", run.request_id("over-quota")
    )
    lines = text.splitlines()
    assert any(line.startswith("  service ") for line in lines)
    assert f"                  openstack quota show --volume {PROJECT}" in lines


def test_a_log_file_given_as_path_is_read_as_logs(run, capsys):
    """PATH may be a log file: it is recognised and diagnosed from the logs."""
    found = explain_json(capsys, str(run.out / "logs.jsonl"), "--failed")
    assert set(found) == {run.request_id(name) for name in FAILURES}
    assert {d["source"] for d in found.values()} == {"logs"}
