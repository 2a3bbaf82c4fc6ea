"""`voltrace explain --cinder-url`: the volume's fate from Cinder alone, on the simulator.

No trace and no logs: explain reads the volume, its user messages (microversion 3.5) and
os-services (3.7) from a simulated Cinder over real HTTP, with the user's token, and says
what became of the volume. The same calls against the complete real Cinder are in
tests/test_full_cinder.py. Errors (unreachable, 401, no token) run as subprocesses: one
line on stderr, a non-zero exit, and never the token.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.polling import poll
from voltrace.cinder_sim import CinderSimulator, Fault
from voltrace.cinder_sim.backends import BackendFault, BackendSettings
from voltrace.cli import main

TOKEN = "gAAAAAB-secret-token-never-printed"
FAST = BackendSettings(
    scheduling_s=0.01, volume_create_s=0.01, report_interval_s=0.05, service_down_time_s=0.3
)
POOL_HOST = f"{FAST.volume_service_host}#{FAST.pool}"


@pytest.fixture(scope="module")
def server() -> Iterator[CinderSimulator]:
    with CinderSimulator(backend=FAST) as simulator:
        yield simulator


@pytest.fixture
def sim(server: CinderSimulator) -> Iterator[CinderSimulator]:
    server.reset()
    yield server
    server.reset()


def create(sim: CinderSimulator, project: str, **volume: Any) -> str:
    """POST a create as Nova does (no waiting); the volume id."""
    answer = requests.post(
        f"{sim.url}/v3/{project}/volumes",
        json={"volume": {"size": 1, **volume}},
        headers={"X-Auth-Token": TOKEN},
        timeout=5,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["volume"]["id"])


def settled(sim: CinderSimulator, volume_id: str) -> str:
    return str(
        poll(
            lambda: (s := sim.volume_story(volume_id)["status"]) != "creating" and s,
            5,
            f"volume {volume_id} to settle",
        )
    )


def ask(sim: CinderSimulator, project: str, volume_id: str, capsys: Any, *extra: str) -> dict:
    """explain --cinder-url ... --json, in process: the one JSON object it prints."""
    url = f"{sim.url}/v3/{project}"
    code = main(
        [
            "explain",
            *("--cinder-url", url, "--os-token", TOKEN, "--volume-id", volume_id),
            "--json",
            *extra,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert TOKEN not in out + err
    return dict(json.loads(out))


def test_no_valid_backend(sim, capsys):
    """Too big for the pool: error, 001_003 with the create's request id, failed in the
    scheduler, and the capacity commands to run."""
    project = uuid.uuid4().hex
    sim.configure_backend(capacity_gb=0)
    volume_id = create(sim, project)
    assert settled(sim, volume_id) == "error"
    said = ask(sim, project, volume_id, capsys)
    assert said["verdict"] == "The volume failed in cinder-scheduler: no valid backend"
    fate = said["after_answer"]
    assert [m["event_id"] for m in fate["messages"]] == ["VOLUME_VOLUME_001_003"]
    assert fate["cinder_request_id"].startswith("req-")
    assert "cinder get-pools --detail" in fate["commands"]


def test_driver_failure_with_reschedules(sim, capsys):
    """A driver that always fails: three 008_012, then the scheduler's 001_003: a driver
    error after 3 attempts, the scheduler out of attempts."""
    project = uuid.uuid4().hex
    sim.inject_backend_fault(BackendFault("driver_error"))
    volume_id = create(sim, project)
    assert settled(sim, volume_id) == "error"
    said = ask(sim, project, volume_id, capsys)
    assert said["verdict"] == (
        "The volume failed in cinder-volume: driver error, 3 attempts (max_attempts_exceeded)"
    )
    assert [m["event_id"] for m in said["after_answer"]["messages"]] == [
        "VOLUME_VOLUME_008_012"
    ] * 3 + ["VOLUME_VOLUME_001_003"]


def test_volume_service_down_is_stuck_since_its_last_heartbeat(sim, capsys):
    """Placed on a cinder-volume that then shows down: stuck in creating, which service,
    since its last heartbeat, and for how long."""
    project = uuid.uuid4().hex
    # The scheduler must place it while cinder-volume still counts as up: a down time the
    # create's POST and scheduling cannot outlast on a loaded machine (0.3 s could).
    sim.configure_backend(service_down_time_s=3.0)
    sim.stop_service("cinder-volume")
    volume_id = create(sim, project)
    poll(
        lambda: sim.volume_story(volume_id)["host"] == POOL_HOST,
        5,
        "the scheduler to place the volume",
    )
    poll(
        lambda: (
            {s["binary"]: s["state"] for s in sim.backend_state()["services"]}["cinder-volume"]
            == "down"
        ),
        20,
        "os-services to show cinder-volume down",
    )
    said = ask(sim, project, volume_id, capsys)
    fate = said["after_answer"]
    assert said["status"] == "creating"
    assert said["verdict"].startswith(
        f"The volume is stuck in creating: cinder-volume on {FAST.volume_service_host} "
        "down since 20"
    )
    assert fate["outcome"] == "stuck" and fate["down_for_s"] >= 0
    assert fate["down_since"].endswith(" UTC")
    assert fate["commands"] == ["openstack volume service list"]


def test_scheduler_down_is_stuck(sim, capsys):
    """No scheduler: no host yet, os-services says cinder-scheduler down."""
    project = uuid.uuid4().hex
    sim.stop_service("cinder-scheduler", down_for_s=1.0)
    volume_id = create(sim, project)
    said = ask(sim, project, volume_id, capsys)
    assert said["verdict"].startswith(
        "The volume is stuck in creating: cinder-scheduler down since"
    )


def test_follow_waits_with_progress_until_available(sim):
    """--follow on a slow driver: progress lines on stderr while creating, then the verdict;
    the token comes from OS_AUTH_TOKEN."""
    project = uuid.uuid4().hex
    sim.inject_backend_fault(BackendFault("slow_driver", delay_s=1.0, times=1))
    volume_id = create(sim, project)
    done = run_explain(
        "--cinder-url",
        f"{sim.url}/v3/{project}",
        "--volume-id",
        volume_id,
        "--follow",
        "--timeout",
        "20",
        env={"OS_AUTH_TOKEN": TOKEN},
    )
    assert done.returncode == 0, done.stderr
    assert f"voltrace explain: waiting for volume {volume_id}: creating, " in done.stderr
    # A member's view of a volume has no host (os-vol-host-attr:host is for admins).
    assert "verdict       The volume became available\n" in done.stdout
    assert TOKEN not in done.stdout + done.stderr


def test_follow_gives_up_at_its_timeout_and_says_still_creating(sim, capsys):
    """Every service up and the driver slow past --timeout: still creating, not stuck."""
    project = uuid.uuid4().hex
    sim.inject_backend_fault(BackendFault("slow_driver", delay_s=5.0, times=1))
    volume_id = create(sim, project)
    said = ask(sim, project, volume_id, capsys, "--follow", "--timeout", "0.3")
    assert said["after_answer"]["outcome"] == "creating"
    assert "still creating" in said["verdict"] and "no service it needs is down" in said["verdict"]
    assert said["notes"] == ["still creating after 0.3 s"]


# -- the CLI's errors, as a user meets them ------------------------------------------------


def run_explain(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {"PATH": "/usr/bin:/bin", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "voltrace", "explain", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean,
    )


def test_unreachable_cinder_is_one_line_and_exit_2():
    """Nothing listens at --cinder-url: one line naming it, exit 2."""
    with socket.socket() as bound:  # bound, never listening: refused, and no one else's
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}/v3/{uuid.uuid4().hex}"
        done = run_explain("--cinder-url", url, "--os-token", TOKEN, "--volume-id", "v1")
    assert done.returncode == 2
    assert done.stderr == f"voltrace explain: cannot reach Cinder at {url}: connection refused\n"
    assert done.stdout == ""


def test_refused_token_is_one_line_and_exit_2(sim):
    """Cinder answers 401: one line, exit 2, and the token appears nowhere."""
    sim.inject(Fault("volumes.get", status=401))
    url = f"{sim.url}/v3/{uuid.uuid4().hex}"
    done = run_explain("--cinder-url", url, "--volume-id", "v1", env={"OS_TOKEN": TOKEN})
    assert done.returncode == 2
    assert done.stderr.startswith(f"voltrace explain: Cinder at {url} refused the token (401")
    assert done.stderr.count("\n") == 1
    assert TOKEN not in done.stdout + done.stderr


def test_no_token_and_unknown_volume(sim):
    """No token anywhere: exit 2 saying how to get one; a volume Cinder lacks: exit 1."""
    url = f"{sim.url}/v3/{uuid.uuid4().hex}"
    done = run_explain("--cinder-url", url, "--volume-id", "v1")
    assert done.returncode == 2 and "--cinder-url needs a token" in done.stderr
    assert done.stderr.count("\n") == 1
    missing = str(uuid.uuid4())
    done = run_explain("--cinder-url", url, "--volume-id", missing, "--os-token", TOKEN)
    assert done.returncode == 1
    assert done.stderr == f"voltrace explain: Cinder at {url} has no volume {missing}\n"


def test_files_that_do_not_hold_the_fate_ask_cinder_for_it(sim, nova, captured, tmp_path, capsys):
    """A create through voltrace whose Cinder logs nothing past the answer: explain on the
    logs alone cannot say what became of the volume; with --cinder-url it asks Cinder (in
    the create's own project, from the logs) and says it, with a note that it did."""
    from tests.conftest import member_headers

    sim.configure_backend(capacity_gb=0)
    answer = nova.create({"size": 1}, headers=member_headers())
    assert answer.status == 200
    request_id = answer.header("x-openstack-request-id")
    poll(
        lambda: any(
            e.get("event") == "request.finished" and e.get("request_id") == request_id
            for e in captured.logs
        ),
        5,
        "nova-api logs request.finished",
    )
    logs = tmp_path / "logs.jsonl"
    mine = [e for e in captured.logs if e.get("request_id") == request_id]
    logs.write_text("".join(json.dumps(e, default=str) + "\n" for e in mine))
    assert main(["explain", "--logs", str(logs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["after_answer"] is None

    code = main(
        [
            "explain",
            *("--logs", str(logs), "--cinder-url", sim.endpoint_template),
            *("--os-token", TOKEN, "--follow", "--timeout", "10", "--json"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    assert d["after_answer"]["verdict"] == (
        "Nova answered 200; the volume then failed in cinder-scheduler: no valid backend"
    )
    assert d["after_answer"]["source"] == "cinder"
    assert "what became of the volume: asked Cinder (the files do not say)" in d["notes"]
    assert TOKEN not in out + err
