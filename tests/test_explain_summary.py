"""explain over many files and many creates: directories, split services, --summary, links,
and big files read in bounded memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.demo_run import EXPECTED, FAILURES, DemoRun, demo_run
from voltrace.cli import main
from voltrace.traces import TraceReader


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    done = demo_run(tmp_path_factory)
    assert done.returncode == 0, done.stderr
    return done


def explain_json(capsys, *args: str) -> list[dict]:
    assert main(["explain", *args, "--json"]) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def split_by_service(source: Path, directory: Path) -> None:
    """nova-api's spans in one file, cinder-api's in another (two terminals, two files)."""
    directory.mkdir()
    for service in ("nova-api", "cinder-api"):
        lines = []
        for line in source.read_text().splitlines():
            request = json.loads(line)
            request["resourceSpans"] = [
                rs
                for rs in request["resourceSpans"]
                if {"key": "service.name", "value": {"stringValue": service}}
                in rs["resource"]["attributes"]
            ]
            lines.append(json.dumps(request))
        (directory / f"{service}.jsonl").write_text("\n".join(lines) + "\n")


def test_a_directory_of_split_files_joins_each_trace(run, capsys, tmp_path):
    """Two files, one per service, in a directory: every create whole, Cinder's side too."""
    split_by_service(run.out / "traces.jsonl", tmp_path / "split")
    whole = {d["request_id"]: d for d in explain_json(capsys, str(run.out / "traces.jsonl"))}
    joined = {d["request_id"]: d for d in explain_json(capsys, str(tmp_path / "split"))}
    assert joined.keys() == whole.keys()
    for request_id, d in whole.items():
        assert joined[request_id]["critical_path"] == d["critical_path"]
        assert joined[request_id]["next_step"] == d["next_step"]


def test_the_demo_directory_reads_traces_and_logs_together(run, capsys):
    """The demo's own directory: traces, the Jaeger copy and the logs, each create once."""
    found = explain_json(capsys, str(run.out))
    assert sorted(d["request_id"] for d in found) == sorted(
        run.request_id(name) for name in EXPECTED
    )
    assert {d["source"] for d in found} == {"trace"}


def test_summary_counts_percentiles_and_the_slowest(run, capsys):
    """--summary: counts by outcome and class, p50/p95/p99 per stage, the slowest with ids."""
    (summary,) = explain_json(capsys, str(run.out / "traces.jsonl"), "--summary", "--slowest", "3")
    assert summary["creates"] == len(EXPECTED)
    assert sum(summary["by_outcome"].values()) == len(EXPECTED)
    assert summary["by_outcome"]["success"] == len(EXPECTED) - len(FAILURES)
    classes = {
        (r["failed_stage"], r["failure_class"]): r["count"] for r in summary["by_failure_class"]
    }
    assert classes[("call_cinder", "cinder_unreachable")] == 2  # refused, and hung
    assert sum(classes.values()) == len(FAILURES)
    stages = summary["stages_ms"]
    assert stages["parse"]["count"] == len(EXPECTED)
    assert (
        stages["call_cinder"]["p50"] <= stages["call_cinder"]["p95"] <= stages["call_cinder"]["p99"]
    )
    slowest = summary["slowest"]
    assert len(slowest) == 3 and slowest[0]["request_id"] == run.request_id("cinder-hung")
    assert summary["resent_creates"] == 1


def test_summary_text_names_the_resent_create(run, capsys):
    """The text summary has the tables and says a create was sent more than once."""
    assert main(["explain", str(run.out / "traces.jsonl"), "--summary", "--no-color"]) == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert "p50 p95 p99" in flat and "(whole create)" in flat
    assert run.request_id("cinder-hung") in text
    assert "were sent to Cinder more than once" in flat


def test_jaeger_url_links_every_create(run, capsys, tmp_path, monkeypatch):
    """--jaeger-url (or VOLTRACE_JAEGER_URL) links each trace in the JSON, text and HTML."""
    monkeypatch.setenv("VOLTRACE_JAEGER_URL", "http://jaeger.example:16686/")
    report = tmp_path / "r.html"
    found = explain_json(capsys, str(run.out / "traces.jsonl"), "--html", str(report))
    for d in found:
        assert d["link"] == f"http://jaeger.example:16686/trace/{d['trace_id']}"
    assert f'href="{found[0]["link"]}"' in report.read_text()
    assert (
        main(
            [
                "explain",
                str(run.out / "traces.jsonl"),
                "--failed",
                "--no-color",
                "--jaeger-url",
                "https://j.example",
            ]
        )
        == 0
    )
    assert "trace link    https://j.example/trace/" in capsys.readouterr().out
    assert main(["explain", str(run.out / "traces.jsonl"), "--jaeger-url", "javascript:x"]) == 2


def test_a_big_file_is_streamed_a_few_traces_at_a_time(run, tmp_path):
    """Read twice, a file written as spans end holds only a window of traces at once."""
    lines = (run.out / "traces.jsonl").read_text().splitlines()
    big = tmp_path / "big.jsonl"
    copies = 40
    with big.open("w") as out:
        for copy in range(copies):
            for line in lines:
                request = json.loads(line)
                for rs in request["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        for span in ss["spans"]:
                            span["traceId"] = f"{copy:04x}" + span["traceId"][4:]
                out.write(json.dumps(request) + "\n")
    reader = TraceReader([big], single_pass_bytes=0)
    traces = list(reader.traces())
    assert len(traces) == copies * len(EXPECTED) and reader.problems == []
    assert reader.peak_open <= 2 * len(EXPECTED)  # one copy of the demo, give or take
