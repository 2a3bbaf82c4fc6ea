"""`voltrace explain` on real Cinder's own logs: what became of each create past Nova's 200.

The input is a recorded real run (``tests/data/real-cinder-29``: voltrace's JSON log of
nova's side, and cinder-api's, cinder-scheduler's and cinder-volume's oslo.log text, one
create per async class). The same classes on the live stack are in test_full_cinder.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from voltrace.cli import main
from voltrace.explain.from_cinder_logs import (
    MAX_RECORD_LINES,
    OsloLogFormat,
    OsloLogFormatError,
    records,
)

RECORDED = Path(__file__).parent / "data" / "real-cinder-29"
NOVA_LOG = RECORDED / "nova-api.jsonl"
CINDER_LOGS = [RECORDED / f"cinder-{s}.log" for s in ("api", "scheduler", "volume")]
SCHEDULER_LOG, VOLUME_LOG = CINDER_LOGS[1], CINDER_LOGS[2]
POOL_HOST = "testhost@fake1#fake"

AVAILABLE = "req-cef0f4cb-6599-4f7d-8c09-b473d96d9070"
NO_MATCHING_POOL = "req-7f0b4bbb-ed50-4198-a3e1-ae998910215c"
TOO_BIG = "req-ac84bad0-cc55-4fdc-b8ee-dcb871074d8b"
RESCHEDULED = "req-77aa405d-52d4-4832-8d2b-fd43bd62ea54"
NOT_RESCHEDULABLE = "req-a3c5cf1e-00d4-4173-8e84-4c2548078889"
VOLUME_SERVICE_DOWN = "req-1f31e139-f483-46d1-82b1-537acdc5b46a"
SCHEDULER_FROZEN = "req-d16284e6-89e6-4743-9243-c2d3cdab7d78"
VOLUME_FROZEN = "req-c4e2a9db-6c00-4027-a222-1c35c52f1241"
SLOW_BACKEND = "req-cb3ea32c-b546-4b40-a8bd-b6ceb3ecceec"

BACKEND_ERROR = (
    "cinder.exception.VolumeBackendAPIException: Bad or unexpected response from the storage "
    "volume backend API: injected: fault=backend (raised at fake_backend_driver.py:37 in "
    "create_volume, cinder-volume.log:{line})"
)

# request id: (verdict after "Nova answered 200; the volume then ", cause, attempts,
#              a log record that says so)
SETTLED = {
    AVAILABLE: ("became available", None, None, "cinder-volume.log:25: Created volume"),
    NO_MATCHING_POOL: (
        "failed in cinder-scheduler: no valid backend (capabilities)",
        "capabilities",
        None,
        "CapabilitiesFilter: (start: 1, end: 0)",
    ),
    TOO_BIG: (
        "failed in cinder-scheduler: no valid backend (capacity)",
        "capacity",
        None,
        f"Insufficient free space for volume creation on host {POOL_HOST} "
        "(requested / avail): 500/99.0",
    ),
    RESCHEDULED: (
        "failed in cinder-volume: driver error, 3 attempts (max_attempts_exceeded)",
        "max_attempts_exceeded",
        3,
        "No valid backend was found. Exceeded max scheduling attempts 3",
    ),
    NOT_RESCHEDULABLE: (
        "failed in cinder-volume: driver error, 1 attempt",
        None,
        1,
        ": create failed",
    ),
    VOLUME_SERVICE_DOWN: (
        "failed in cinder-scheduler: no valid backend (volume_service_down)",
        "volume_service_down",
        None,
        "volume service is down. (host: testhost@fake1)",
    ),
    SCHEDULER_FROZEN: ("became available", None, None, "Created volume successfully."),
    VOLUME_FROZEN: ("became available", None, None, "Created volume successfully."),
    SLOW_BACKEND: ("became available", None, None, "Created volume successfully."),
}


def explain(capsys: Any, *argv: str | Path) -> tuple[int, list[dict], str]:
    """``voltrace explain ARGV --json`` in process: status, one object per line, stderr."""
    code = main(["explain", *map(str, argv), "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def by_request(found: list[dict]) -> dict[str, dict]:
    return {d["request_id"]: d for d in found}


def test_every_async_class_from_nova_and_cinder_logs(capsys):
    """nova's JSON log and Cinder's three logs: each create's fate after its 200, certain,
    with the cause Cinder's API does not give (capacity, capabilities, service down)."""
    code, found, err = explain(capsys, NOVA_LOG, *CINDER_LOGS)
    assert (code, err) == (0, "")
    creates = by_request(found)
    assert set(creates) == set(SETTLED)
    for request_id, (verdict, cause, attempts, record) in SETTLED.items():
        d = creates[request_id]
        after = d["after_answer"]
        assert (d["outcome"], d["http_status"], after["source"]) == ("success", 200, "logs")
        assert after["verdict"] == f"Nova answered 200; the volume then {verdict}"
        assert (after["cause"], after["attempts"], after["certain"]) == (cause, attempts, True)
        assert any(record in line for line in after["evidence"]), after["evidence"]
        assert "what became of the volume: from Cinder's logs" in d["notes"]


def test_each_driver_attempt_names_its_exception_and_where_it_was_raised(capsys):
    """The traceback under each failed task (lines with no request ids) is read as that
    record's: its last line is the exception, its last frame where it was raised."""
    _, found, _ = explain(capsys, NOVA_LOG, VOLUME_LOG, SCHEDULER_LOG)
    after = by_request(found)[RESCHEDULED]["after_answer"]
    assert after["errors"] == [BACKEND_ERROR.format(line=n) for n in (28, 121, 213)]
    assert after["error_type"] == "cinder.exception.VolumeBackendAPIException"
    assert after["cinder_request_id"] == "req-e8e411c8-0b4e-4a76-9aff-16cc6bba40f7"
    assert [line.split(": ", 1)[1] for line in after["evidence"][:3]] == [
        f"Error scheduling 9832fb14-35f0-4a21-a141-78ba998f234f from last vol-service: {POOL_HOST}"
    ] * 3
    other = by_request(found)[NOT_RESCHEDULABLE]["after_answer"]
    assert other["errors"] == [
        "cinder.exception.MetadataUpdateFailure: Failed to update metadata for volume: "
        "injected: fault=noresched (raised at fake_backend_driver.py:35 in create_volume, "
        "cinder-volume.log:305)"
    ]


def test_the_text_report_shows_the_attempts_and_the_log_records(capsys):
    assert main(["explain", str(NOVA_LOG), *map(str, CINDER_LOGS), "--request-id", TOO_BIG]) == 0
    out = capsys.readouterr().out
    assert "\n  cinder log    " in out and "\n                  cinder get-pools --detail\n" in out
    words = " ".join(out.split())  # as wrapped to the terminal's width
    assert "after answer Nova answered 200; the volume then failed in cinder-scheduler" in words
    assert "cinder-scheduler.log:21: Insufficient free space for volume creation" in words


def test_cinder_logs_alone_give_each_creates_fate(capsys):
    """No nova file: one verdict per create Cinder's logs name, by nova's request id, or
    picked by Cinder's own request id; --failed leaves the available ones out."""
    code, found, err = explain(capsys, *CINDER_LOGS)
    assert (code, err) == (0, "")
    fates = {d["request_id"]: d["verdict"] for d in found}
    assert fates == {
        request_id: "The volume " + verdict for request_id, (verdict, *_) in SETTLED.items()
    }
    code, found, _ = explain(capsys, *CINDER_LOGS, "--failed")
    assert {d["request_id"] for d in found} == {
        NO_MATCHING_POOL,
        TOO_BIG,
        RESCHEDULED,
        NOT_RESCHEDULABLE,
        VOLUME_SERVICE_DOWN,
    }
    code, found, _ = explain(
        capsys, SCHEDULER_LOG, "--request-id", "req-636f6167-2e03-407e-8d14-fceb0e0255e1"
    )
    assert [d["request_id"] for d in found] == [TOO_BIG]
    assert main(["explain", str(SCHEDULER_LOG), "--request-id", "req-nothing"]) == 1
    capsys.readouterr()
    # What needs nova's side is said to be left out, not silently dropped.
    assert main(["explain", str(SCHEDULER_LOG), "--summary", "--json"]) == 0
    assert "--summary: not with Cinder's logs alone" in capsys.readouterr().err


def test_a_directory_holding_nova_and_cinder_logs(capsys, tmp_path):
    """Cinder's *.log files under a directory are read too (other .log files are not)."""
    for path in [NOVA_LOG, *CINDER_LOGS]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "unrelated.log").write_text("not a log explain reads\n")
    code, found, err = explain(capsys, tmp_path)
    assert (code, err) == (0, "")
    assert {d["request_id"]: d["after_answer"]["verdict"] for d in found} == {
        request_id: f"Nova answered 200; the volume then {verdict}"
        for request_id, (verdict, *_) in SETTLED.items()
    }


def test_cinder_logs_settle_what_the_trace_can_only_guess(capsys):
    """Real Cinder's trace ends at the scheduler's span (no valid backend, or a volume
    service that has not run it yet); the scheduler's log says which, and why."""
    trace = RECORDED / "trace-no-valid-backend.jsonl"
    _, [guessed], _ = explain(capsys, trace)
    assert guessed["after_answer"]["certain"] is False
    assert any("--cinder-url asks Cinder which" in note for note in guessed["notes"])
    _, [settled], _ = explain(capsys, trace, SCHEDULER_LOG)
    assert (settled["source"], settled["after_answer"]["source"]) == ("trace", "logs")
    assert settled["after_answer"]["verdict"] == (
        "Nova answered 200; the volume then failed in cinder-scheduler: no valid backend (capacity)"
    )
    assert settled["after_answer"]["certain"] is True
    assert not any("--cinder-url asks Cinder which" in note for note in settled["notes"])


def cut_before(path: Path, marker: str, into: Path) -> Path:
    """``path`` as it was just before the first line holding ``marker`` was written."""
    lines = path.read_text().splitlines(keepends=True)
    first = next(n for n, line in enumerate(lines) if marker in line)
    into.write_text("".join(lines[:first]))
    return into


@pytest.mark.parametrize(
    ("request_id", "marker", "waiting_on"),
    [
        # Frozen scheduler: cinder-api cast it, no other service wrote a line yet.
        (SCHEDULER_FROZEN, "req-d16284e6-89e6-4743-9243-c2d3cdab7d78", None),
        # Slow driver: cinder-volume started it and has not finished.
        (SLOW_BACKEND, "volume-4264cb90-74c4-4cd6-91c1-7fe9f7dc3369 (", "cinder-volume"),
    ],
)
def test_a_create_the_logs_have_not_settled_is_never_a_verdict(
    capsys, tmp_path, request_id, marker, waiting_on
):
    """The scheduler logs nothing when it places a create (debug off): unsettled logs are
    reported stuck but uncertain, and --cinder-url is what asks Cinder."""
    volume_log = cut_before(VOLUME_LOG, marker, tmp_path / "cinder-volume.log")
    _, found, _ = explain(capsys, NOVA_LOG, *CINDER_LOGS[:2], volume_log)
    d = by_request(found)[request_id]
    after = d["after_answer"]
    assert (after["outcome"], after["certain"], after["failed_service"]) == (
        "stuck",
        False,
        waiting_on,
    )
    assert any("--cinder-url asks Cinder which" in note for note in d["notes"])


# -- the format --------------------------------------------------------------------------

CUSTOM = "%(asctime)s %(levelname)s [%(global_request_id)s|%(request_id)s] %(name)s: %(message)s"


def rewritten(source: Path, into: Path) -> Path:
    """``source`` in the CUSTOM format; traceback lines without any prefix."""
    out = []
    with open(source) as handle:
        for record in records(handle, source.name, OsloLogFormat()):
            out.append(
                f"2026-12-02 04:06:00,000 {record.level} "
                f"[{record.global_request_id}|{record.request_id}] {record.logger}: "
                f"{record.message}\n"
            )
            out.extend(f"    {line}\n" for line in record.more)
    into.write_text("".join(out))
    return into


def test_a_deployments_own_log_format(capsys, tmp_path):
    """--oslo-log-format takes the deployment's logging_context_format_string; the same
    logs in that format give the same verdicts, continuation lines and all."""
    logs = [rewritten(path, tmp_path / path.name) for path in CINDER_LOGS]
    code, found, _ = explain(capsys, NOVA_LOG, *logs, "--oslo-log-format", CUSTOM)
    assert code == 0
    creates = by_request(found)
    for request_id, (verdict, *_) in SETTLED.items():
        assert creates[request_id]["after_answer"]["verdict"].endswith(verdict)
    assert creates[RESCHEDULED]["after_answer"]["errors"][0].startswith(
        "cinder.exception.VolumeBackendAPIException: "
    )
    # Without the format these are no logs explain knows: the trace reader rejects them.
    assert main(["explain", str(logs[1])]) == 2
    assert "no line could be read as spans" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fmt", "missing"),
    [
        ("%(asctime)s [%(request_id)s] %(message)s", "%(global_request_id)s"),
        ("%(asctime)s [%(global_request_id)s]", "%(message)s"),
    ],
)
def test_a_format_that_cannot_join_to_nova_is_refused(capsys, fmt, missing):
    with pytest.raises(OsloLogFormatError, match=re.escape(missing)):
        OsloLogFormat(fmt)
    assert main(["explain", str(SCHEDULER_LOG), "--oslo-log-format", fmt]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voltrace explain: --oslo-log-format: ") and missing in err


# -- hostile lines -----------------------------------------------------------------------


def test_hostile_cinder_log_lines_are_bounded_and_escaped(capsys, tmp_path):
    """Binary bytes, terminal escapes in a message, a 3 MB line, a traceback of 100,000 lines:
    explain still reads every create, keeps a record's first and last lines only, and
    prints no control character it read, in the text or the HTML report."""
    lines = SCHEDULER_LOG.read_text().splitlines(keepends=True)
    hostile = tmp_path / "cinder-scheduler.log"
    flood = "".join(
        f"2026-12-02 04:06:10.300 3963 ERROR cinder.x  frame {n}\n" for n in range(10**5)
    )
    escape = lines[20].replace("on host testhost", "on host \x1b]0;owned\x07testhost")
    hostile.write_text(
        "".join(lines[:20])
        + "\x00\xff garbage \x1b[2J\n"
        + "x" * 3_000_000
        + "\n"
        + escape
        + "".join(lines[21:25])
        + flood
        + "".join(lines[25:])
    )
    code, found, _ = explain(capsys, NOVA_LOG, hostile, VOLUME_LOG)
    assert code == 0
    assert by_request(found)[TOO_BIG]["after_answer"]["cause"] == "capacity"
    report = tmp_path / "report.html"
    argv = ["explain", str(NOVA_LOG), str(hostile), "--request-id", TOO_BIG]
    assert main([*argv, "--html", str(report)]) == 0
    out = capsys.readouterr().out
    assert "\x1b]" not in out and "\x07" not in out
    page = report.read_text()
    assert "<dt>cinder log</dt>" in page and "Insufficient free space" in page
    assert "\x1b" not in page and "\x07" not in page
    with open(hostile) as handle:
        longest = max(len(r.more) for r in records(handle, "x", OsloLogFormat()))
    assert longest <= MAX_RECORD_LINES


README_EXAMPLE = ("cinder-scheduler.log", "cinder-volume.log", "--no-color")


def test_the_readme_example_is_what_explain_prints():
    """README's "After Nova answers" shows this recorded create as explain prints it."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    shown = re.search(r"```\n(req-77aa405d-[^\n]*\(from Cinder's logs\)\n.*?)```", readme, re.S)
    assert shown, "README.md no longer shows the rescheduled create from Cinder's logs"
    printed = subprocess.run(
        [sys.executable, "-m", "voltrace", "explain", *README_EXAMPLE, "--request-id", RESCHEDULED],
        cwd=RECORDED,
        env={**os.environ, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == shown.group(1)
