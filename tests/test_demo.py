"""`voltrace demo`: the scenario library end to end, its terminal output and its files."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import require
from tests.support.demo_run import (
    AFTER,
    EXPECTED,
    FAILURES,
    PROJECT,
    DemoRun,
    clean_env,
    demo_run,
    run_demo,
)
from voltrace.cli import main
from voltrace.traces import Span, read_trace_file

# Failures answered before nova-api calls Cinder, or with Cinder unreachable:
# their traces hold nova-api's spans only.
NOVA_ONLY = {"invalid-size", "policy-denied", "microversion-2.36", "cinder-unreachable"}
SCHEDULER, VOLUME = "cinder-scheduler", "cinder-volume"
# Past Nova's 200: the services each create reached. Every other create Nova answered 200
# went through both; the ones Nova refused reached neither.
ASYNC_SERVICES = {
    "no-valid-backend": {SCHEDULER},  # the scheduler found no pool: no cast on
    "scheduler-down": set(),  # the cast still waits in cinder-scheduler's queue
    "volume-service-down": {SCHEDULER},  # placed, then the cast waits for cinder-volume
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return demo_run(tmp_path_factory)


def otlp_spans(run: DemoRun) -> list[Span]:
    """Every span of traces.jsonl, read by voltrace's one OTLP JSON reader."""
    loaded = read_trace_file(run.out / "traces.jsonl")
    assert loaded.problems == []
    return [span for trace in loaded.traces for span in trace.spans]


def test_demo_exits_zero_with_every_scenario_as_expected(run):
    """The README's command ends with exit 0 and a summary row per scenario."""
    assert run.returncode == 0, run.stderr
    assert [r["scenario"] for r in run.summary] == list(EXPECTED)
    for row in run.summary:
        status, stage, failure = EXPECTED[row["scenario"]]
        assert (row["http_status"], row["failed_stage"], row["failure_class"]) == (
            status,
            stage,
            failure,
        ), row
        assert row["traced"] and row["as_expected"]
        assert re.match(r"^req-[0-9a-f-]{36}$", row["request_id"])
    table = run.stdout[run.stdout.index("scenario  ") :]
    for name, (status, stage, failure) in EXPECTED.items():
        line = next(ln for ln in table.splitlines() if ln.startswith(name + " "))
        assert line.split()[1:4] == [str(status), stage or "-", failure or "-"]
        assert line.endswith("yes")


def test_every_scenario_left_its_whole_trace_in_traces_jsonl(run):
    """Each create is one trace: nova-api's server span, its stages, and Cinder's side."""
    spans = otlp_spans(run)
    for row in run.summary:
        trace = [s for s in spans if s.trace_id == row["trace_id"]]
        services = {s.service for s in trace}
        expected = {"nova-api"} if row["scenario"] in NOVA_ONLY else {"nova-api", "cinder-api"}
        # cinder-hung: Nova gave up on each POST, but Cinder created all 4 volumes.
        if row["http_status"] == 200 or row["scenario"] == "cinder-hung":
            expected |= ASYNC_SERVICES.get(row["scenario"], {SCHEDULER, VOLUME})
        assert services == expected, row["scenario"]
        server = next(s for s in trace if s.name == "POST /v2.1/os-volumes")
        tags = server.attributes
        assert tags["openstack.request_id"] == row["request_id"]
        assert int(tags["http.response.status_code"]) == row["http_status"]
        assert tags["voltrace.failed_stage"] == (row["failed_stage"] or "none")
        stage_errors = [
            s.name for s in trace if "voltrace.stage" in s.attributes and s.status == "error"
        ]
        assert stage_errors == ([row["failed_stage"]] if row["failed_stage"] else [])


def test_jaeger_file_and_logs_hold_the_same_creates(run):
    """jaeger.json has every trace with its services; logs.jsonl a summary line per create."""
    document = json.loads((run.out / "jaeger.json").read_text())
    traces = {t["traceID"]: t for t in document["data"]}
    finished = {}
    for line in (run.out / "logs.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "request.finished":
            finished[event["request_id"]] = event
    for row in run.summary:
        services = {p["serviceName"] for p in traces[row["trace_id"]]["processes"].values()}
        assert "nova-api" in services
        assert ("cinder-api" in services) is (row["scenario"] not in NOVA_ONLY)
        log = finished[row["request_id"]]
        assert (log["http_status"], log["trace_id"]) == (row["http_status"], row["trace_id"])
        assert log.get("failure_class") == row["failure_class"]
    assert len(traces) == len(finished) == len(EXPECTED)


def test_waterfall_shows_both_services_and_marks_the_failing_span(run):
    """Per scenario: nested spans of both services, the failing stage marked, a diagnosis."""
    section = run.section("over-quota").splitlines()
    rows = [ln for ln in section if ln.startswith(("  nova-api ", "  cinder-api "))]

    def row(name: str) -> str:
        return next(r for r in rows if r[13:].lstrip().startswith(name))

    def depth(name: str) -> int:
        label = row(name)[13:]
        return len(label) - len(label.lstrip())

    assert (
        depth("POST /v2.1/os-volumes")
        < depth("create_volume")
        < depth("call_cinder")
        < depth(f"POST /v3/{PROJECT[:8]}")
        < depth("POST /v3/{project_id}/volumes")
        < depth("check_quota")
    )
    assert row("check_quota").startswith("  cinder-api ")
    assert row("call_cinder").startswith("  nova-api ")
    marked = [r for r in rows if "!|" in r]
    assert marked == [row("call_cinder")]
    assert "<- over_quota" in marked[0] and "x" in marked[0].split("|")[1]
    diagnosis = next(ln for ln in section if ln.startswith("  => "))
    assert "HTTP 403 over_quota at call_cinder" in diagnosis
    assert "quota 'gigabytes'" in diagnosis
    for name in FAILURES:
        status, stage, failure = EXPECTED[name]
        assert f"=> HTTP {status} {failure} at {stage}" in run.section(name)


def test_output_off_a_tty_is_plain_ascii(run):
    """Not a TTY and --no-color: no escape codes, nothing but ASCII, still drawn to scale."""
    assert "\x1b[" not in run.stdout
    assert run.stdout.isascii()
    slow = run.section("cinder-slow").splitlines()
    latency = next(ln for ln in slow if "injected_latency" in ln)
    validate = next(ln for ln in slow if "validate" in ln)
    assert latency.split("|")[1].count("=") > 5 * max(1, validate.split("|")[1].count("="))
    assert "slowest hop: POST to cinder-api" in next(ln for ln in slow if ln.startswith("  => "))


def test_demo_prints_where_the_files_are_and_how_to_open_them(run):
    """The end names the four files and the Jaeger and explain commands."""
    tail = run.stdout[run.stdout.rindex("Traces:") :]
    for name in ("traces.jsonl", "jaeger.json", "logs.jsonl", "report.html"):
        assert str(run.out / name) in tail
        assert (run.out / name).stat().st_size > 0
    assert "http://localhost:16686" in tail and "jaeger.json" in tail
    assert f"voltrace explain {run.out / 'traces.jsonl'} --failed" in tail


def test_list_names_every_scenario(capsys):
    """--list prints the scenario library and starts nothing."""
    assert main(["demo", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(EXPECTED)


def test_unknown_scenario_is_refused(capsys, tmp_path):
    """A misspelt --scenario is an error that lists the known names."""
    assert main(["demo", "--scenario", "over-qouta", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "over-qouta" in err and "over-quota" in err


def test_scenario_option_runs_only_those_and_replaces_old_output(capsys, tmp_path):
    """--scenario (repeatable) selects; a second run into the same --out starts afresh."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scenario", "plain-create"]) == 0
    assert (
        main(["demo", "--out", str(out), "--scenario", "over-quota", "--scenario", "invalid-size"])
        == 0
    )
    assert "[2/2] invalid-size" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert [r["scenario"] for r in summary] == ["over-quota", "invalid-size"]
    written = DemoRun(out, 0, "", "", summary)
    assert {s.trace_id for s in otlp_spans(written)} == {r["trace_id"] for r in summary}


def test_otlp_option_sends_both_services_to_the_collector(tmp_path, monkeypatch, capsys):
    """--otlp exports to OTEL_EXPORTER_OTLP_ENDPOINT: a real collector gets one whole trace."""
    try:
        from tests.support.rotel import RotelCollector
    except ImportError:
        require(False, "rotel (x86_64, CPython 3.11) is needed for a real OTLP collector")
    with RotelCollector(tmp_path) as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.http_endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        out = tmp_path / "demo"
        assert main(["demo", "--otlp", "--scenario", "over-quota", "--out", str(out)]) == 0
        trace_id = json.loads((out / "summary.json").read_text())[0]["trace_id"]
        spans = collector.wait_for_spans(
            lambda got: (
                {s["resource"].get("service.name") for s in got if s["trace_id"] == trace_id}
                == {"nova-api", "cinder-api"}
            )
        )
    assert f"spans also sent to {collector.http_endpoint}" in capsys.readouterr().out
    names = {s["name"] for s in spans if s["trace_id"] == trace_id}
    assert {"POST /v2.1/os-volumes", "call_cinder", "check_quota"} <= names


def test_sampled_out_create_is_diagnosed_from_the_logs(tmp_path, monkeypatch, capsys):
    """No trace (sampled out): the logs still diagnose it, and the demo exits 1 saying why."""
    import voltrace.demo

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    monkeypatch.setattr(voltrace.demo, "TRACE_WAIT_S", 0.5)  # the deadline for spans to arrive
    assert main(["demo", "--scenario", "policy-denied", "--out", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "no trace arrived for policy-denied (OTEL_TRACES_SAMPLER=always_off)" in err
    assert "(no trace arrived: diagnosed from the logs)" in out
    assert "=> HTTP 403 policy_denied at authorize" in out
    assert json.loads((tmp_path / "summary.json").read_text())[0]["traced"] is False


def test_hung_cinder_is_sent_four_times_and_says_so(run):
    """cinder-hung: the POST went out 4 times (the simulator saw 4), and the diagnosis says
    Cinder may hold up to 4 volumes, with the commands to find them."""
    row = run.row("cinder-hung")
    assert row["creates_received"] == 4 and row["as_expected"]
    assert "The create was sent 4 times; Cinder may hold up to 4 volumes" in row["next_step"]
    assert f"openstack volume list --project {PROJECT} --long" in row["next_step"]
    section = " ".join(run.section("cinder-hung").split())
    assert "read timeout" in section and "Cinder may hold up to 4 volumes" in section
    assert section.count("ReadTimeout") == 4


def test_list_wraps_titles_and_cuts_none(capsys, monkeypatch):
    """--list at 60 columns: every title whole, continued under itself, no line too wide."""
    monkeypatch.setenv("COLUMNS", "60")
    assert main(["demo", "--list"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 60
    flat = " ".join(out.split())
    from voltrace.demo import SCENARIOS

    for scenario in SCENARIOS:
        assert " ".join(scenario.title.split()) in flat


def test_unwritable_out_is_one_line_and_exit_2(tmp_path, capsys):
    """--out where nothing can be written: one clear line, exit 2, nothing started."""
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert main(["demo", "--out", str(blocked / "demo"), "--scenario", "plain-create"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voltrace demo: cannot write to") and err.count("\n") == 1


# -- past Nova's answer ------------------------------------------------------------------

Tree = list  # [(service, label, status), [subtrees]]


def async_tree(spans: list[Span], parent: Span) -> list[Tree]:
    """The cinder-scheduler / cinder-volume spans under ``parent``, as nested labels; rpc
    and drive spans are named by the method they ran (OSProfiler's ``name``)."""
    children = sorted(
        (s for s in spans if s.parent_id == parent.span_id and s.service in (SCHEDULER, VOLUME)),
        key=lambda s: s.start_ns,
    )
    return [
        [
            (
                c.service,
                f"{c.name} {'.'.join(str(c.attributes['name']).split('.')[-2:])}",
                c.status,
            ),
            async_tree(spans, c),
        ]
        for c in children
    ]


def create_on_backend(status: str = "unset", *, round_after: list[Tree] | None = None) -> Tree:
    """cinder-volume's rpc create_volume and the driver's call; a failed round also cleans
    up (driver_delete_volume) and casts back to the scheduler, under the failed rpc."""
    drive = [(VOLUME, "drive LVMVolumeDriver.create_volume", status), []]
    cleanup = [
        (VOLUME, "rpc VolumeManager.driver_delete_volume", "unset"),
        [[(VOLUME, "drive LVMVolumeDriver.delete_volume", "unset"), []]],
    ]
    under = [drive] if round_after is None else [drive, cleanup, *round_after]
    return [(VOLUME, "rpc VolumeManager.create_volume", status), under]


def schedule(*children: Tree) -> Tree:
    return [(SCHEDULER, "rpc SchedulerManager.create_volume", "unset"), list(children)]


def rescheduled(rounds: int) -> Tree:
    """``rounds`` failed driver calls, each rescheduled, then the scheduler gives up."""
    tree = schedule()
    for _ in range(rounds):
        tree = schedule(create_on_backend("error", round_after=[tree]))
    return tree


ASYNC_TREES = {
    "no-valid-backend": [schedule()],
    "driver-failure-rescheduled": [rescheduled(3)],
    "scheduler-down": [],
    "volume-service-down": [schedule()],
    "slow-backend": [schedule(create_on_backend())],
    "plain-create": [schedule(create_on_backend())],
}


def test_each_create_past_the_answer_is_one_trace_with_cinders_services(run):
    """Under cinder-api's POST: the scheduler's rpc, cinder-volume's rpc under it, the
    driver's call under that, in one trace; ERROR exactly where the driver raised."""
    spans = otlp_spans(run)
    for name, expected in ASYNC_TREES.items():
        row = run.row(name)
        trace = [s for s in spans if s.trace_id == row["trace_id"]]
        post = next(
            s
            for s in trace
            if s.service == "cinder-api" and s.name == "POST /v3/{project_id}/volumes"
        )
        assert async_tree(trace, post) == expected, name
        errors = {s.name for s in trace if s.status == "error"}
        assert errors == ({"rpc", "drive"} if name == "driver-failure-rescheduled" else set()), name
    slow = [s for s in spans if s.trace_id == run.row("slow-backend")["trace_id"]]
    driver = next(s for s in slow if s.name == "drive")
    assert driver.duration_ms >= 300  # the slow driver's 0.3 s, inside the same trace


def test_every_volume_is_followed_until_it_settles_and_its_fate_checked(run):
    """Each create Nova answered 200 has its fate in summary.json and on screen, with the
    user messages Cinder recorded, and the stuck ones their next step."""
    for name, verdict in AFTER.items():
        row = run.row(name)
        assert row["after_answer"] == verdict and row["as_expected"], row
        section = " ".join(run.section(name).split())
        assert f"=> {verdict}" in section, name
    assert run.row("over-quota")["after_answer"] is None  # Nova refused it: nothing after
    rescheduled = " ".join(run.section("driver-failure-rescheduled").split())
    assert rescheduled.count("user message VOLUME_VOLUME_008_012") == 3
    assert "user message VOLUME_VOLUME_001_003" in rescheduled
    for stuck in ("scheduler-down", "volume-service-down"):
        assert "openstack volume service list" in run.section(stuck)
    table = run.stdout[run.stdout.index("scenario  ") :]
    fates = {"no-valid-backend": "error", "scheduler-down": "stuck", "slow-backend": "available"}
    for name, fate in fates.items():
        line = next(ln for ln in table.splitlines() if ln.startswith(name + " "))
        assert line.split()[-2:] == [fate, "yes"]


@pytest.mark.parametrize("source", ["trace", "logs"])
def test_explain_reads_each_fate_back_from_the_demos_files(run, source, capsys):
    """`voltrace explain` on traces.jsonl, then on logs.jsonl alone: the same verdict on
    every volume as the demo printed (Cinder's lines come after nova-api's in the logs)."""
    args = (
        [str(run.out / "traces.jsonl")]
        if source == "trace"
        else ["--logs", str(run.out / "logs.jsonl")]
    )
    assert main(["explain", *args, "--json"]) == 0
    said = {}
    for line in capsys.readouterr().out.splitlines():
        d = json.loads(line)
        said[d["request_id"]] = (d["after_answer"] or {}).get("verdict")
    for name in EXPECTED:
        assert said[run.request_id(name)] == AFTER.get(name), (source, name)


def test_sampled_out_fate_is_read_from_cinders_log_lines(tmp_path, monkeypatch, capsys):
    """No trace at all: the demo still says what became of the volume, from the
    scheduler's and the volume service's log lines (nova's id is their global one)."""
    import voltrace.demo

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    monkeypatch.setattr(voltrace.demo, "TRACE_WAIT_S", 0.5)
    assert main(["demo", "--scenario", "driver-failure-rescheduled", "--out", str(tmp_path)]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "(no trace arrived: diagnosed from the logs)" in out
    assert f"=> {AFTER['driver-failure-rescheduled']}" in out
    row = json.loads((tmp_path / "summary.json").read_text())[0]
    assert (row["traced"], row["after_answer"]) == (False, AFTER["driver-failure-rescheduled"])


# -- --nova real (h1's RealNovaDemo, wired into the demo) ------------------------------


@pytest.mark.slow
def test_nova_real_runs_scenarios_through_real_nova_api(tmp_path):
    """--nova real: the same scenarios, a Nova answer and a fate past it, through real
    nova-api 34 with voltrace's instrumentation."""
    from voltrace.instrumentation import nova_venv

    require(
        nova_venv.is_built(), "the nova venv: python -m voltrace.instrumentation.nova_venv build"
    )
    out = tmp_path / "demo"
    done = run_demo(
        out,
        "--nova",
        "real",
        "--no-color",
        *("--scenario", "plain-create", "--scenario", "cinder-500"),
        *("--scenario", "no-valid-backend"),
    )
    assert done.returncode == 0, done.stderr
    assert "nova-api (real nova-api 34, instrumented)" in done.stdout
    rows = {r["scenario"]: r for r in json.loads((out / "summary.json").read_text())}
    assert rows["cinder-500"]["failure_class"] == "cinder_server_error"
    assert rows["no-valid-backend"]["after_answer"] == AFTER["no-valid-backend"]
    assert all(r["as_expected"] and r["traced"] for r in rows.values())


def test_nova_real_without_its_venv_is_one_line_and_exit_2(tmp_path):
    """No venv built: one line saying how to build it, exit 2, nothing started."""
    done = run_demo(
        tmp_path / "demo",
        "--nova",
        "real",
        "--scenario",
        "plain-create",
        env=clean_env(XDG_CACHE_HOME=str(tmp_path / "empty-cache")),
    )
    assert done.returncode == 2
    assert done.stderr.startswith("voltrace demo --nova real: ")
    assert "python -m voltrace.instrumentation.nova_venv build" in done.stderr
    assert done.stderr.count("\n") == 1 and done.stdout == ""
