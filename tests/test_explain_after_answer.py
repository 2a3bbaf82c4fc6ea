"""explain after Nova's answer: the volume's fate in cinder-scheduler / cinder-volume."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.polling import poll
from voltrace.cinder_sim import CinderSimulator
from voltrace.cinder_sim import async_create as names
from voltrace.cinder_sim.backends import BackendFault, BackendSettings
from voltrace.explain import after_answer
from voltrace.telemetry import Telemetry
from voltrace.testing import Captured, capture
from voltrace.traces.sdk import spans_from_sdk

TOKEN = "tok-after"
NOVA_REQUEST_ID = "req-0b7d3c52-6f0e-4c8a-9b7e-2a1d4e5f6a7c"
FAST = BackendSettings(
    scheduling_s=0.01, volume_create_s=0.01, report_interval_s=0.05, service_down_time_s=0.3
)


@pytest.fixture(scope="module")
def server(cinder_telemetry: Telemetry) -> Iterator[CinderSimulator]:
    with CinderSimulator(telemetry=cinder_telemetry, backend=FAST) as simulator:
        yield simulator


@pytest.fixture
def sim(server: CinderSimulator) -> Iterator[CinderSimulator]:
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def captured() -> Iterator[Captured]:
    with capture() as spans_and_logs:
        yield spans_and_logs


def settle(sim: CinderSimulator, captured: Captured) -> tuple[str, str]:
    """Create a volume as nova does and wait for its settling span; (volume id, request id)."""
    project = uuid.uuid4().hex
    answer = requests.post(
        f"{sim.url}/v3/{project}/volumes",
        json={"volume": {"size": 1}},
        headers={"X-Auth-Token": TOKEN, "X-OpenStack-Request-ID": NOVA_REQUEST_ID},
        timeout=5,
    )
    assert answer.status_code == 202, answer.text
    volume_id = answer.json()["volume"]["id"]

    def settled(c: Captured) -> Any:
        return next(
            (
                s
                for s in c.spans
                if (s.attributes or {}).get(names.OUTCOME)
                and (s.attributes or {}).get(names.VOLUME_ID) == volume_id
            ),
            None,
        )

    captured.wait_for(settled)
    poll(
        lambda: any(e.get("event") == names.LOG_SETTLED for e in captured.logs),
        timeout=5,
        what="create.settled is logged",
    )
    return volume_id, answer.headers["x-openstack-request-id"]


def verdicts(captured: Captured, volume_id: str) -> list[after_answer.AfterAnswer]:
    """explain's verdict from the trace, then from the logs."""
    from_trace = after_answer.from_spans(spans_from_sdk(captured.spans), volume_id)
    from_logs = after_answer.from_logs(captured.logs, NOVA_REQUEST_ID)
    assert from_trace is not None and from_logs is not None
    return [from_trace, from_logs]


def test_available(sim: CinderSimulator, captured: Captured) -> None:
    """A volume that became available: no next step, one attempt."""
    volume_id, request_id = settle(sim, captured)
    for found in verdicts(captured, volume_id):
        assert (found.outcome, found.failure, found.advice) == ("available", None, None)
        assert found.cinder_request_id == request_id
        assert "became available" in found.sentence(200)


def test_no_valid_backend_by_capacity(sim: CinderSimulator, captured: Captured) -> None:
    """Too big for the pool: failed in cinder-scheduler, capacity, get-pools to run."""
    sim.configure_backend(capacity_gb=0)
    volume_id, _ = settle(sim, captured)
    for found in verdicts(captured, volume_id):
        assert (found.outcome, found.failed_service, found.failure, found.cause) == (
            "error",
            "cinder-scheduler",
            "no_valid_backend",
            "capacity",
        )
        assert "cinder get-pools --detail" in (found.advice.commands if found.advice else [])
        assert found.messages and found.messages[-1]["event_id"] == "VOLUME_VOLUME_001_003"
        assert found.sentence(200) == (
            "Nova answered 200; the volume then failed in cinder-scheduler: "
            "no valid backend (capacity)"
        )


def test_driver_failure_with_reschedules(sim: CinderSimulator, captured: Captured) -> None:
    """A driver that always fails: rescheduled, then no valid backend; the attempts counted."""
    sim.inject_backend_fault(BackendFault("driver_error"))
    volume_id, _ = settle(sim, captured)
    for found in verdicts(captured, volume_id):
        assert found.outcome == "error"
        assert found.attempts is not None and found.attempts > 1
        assert "VOLUME_VOLUME_008_012" in {m["event_id"] for m in found.messages}


def test_the_simulator_speaks_semconvs_names() -> None:
    """The simulator's and the follower's names are voltrace.semconv's, not copies."""
    from voltrace import follow, semconv

    for short, name in [
        ("OUTCOME", "CREATE_OUTCOME"),
        ("FAILURE", "CREATE_FAILURE"),
        ("CAUSE", "CREATE_CAUSE"),
        ("ATTEMPTS", "CREATE_ATTEMPTS"),
        ("HOST", "CINDER_HOST"),
        ("VOLUME_ID", "CINDER_VOLUME_ID"),
        ("USER_MESSAGE_EVENT", "USER_MESSAGE_EVENT"),
        ("LOG_SETTLED", "LOG_SETTLED"),
        ("SCHEDULER_SERVICE", "SCHEDULER_SERVICE"),
        ("VOLUME_SERVICE", "VOLUME_SERVICE"),
    ]:
        assert getattr(names, short) is getattr(semconv, name), short
    assert follow.FOLLOW_SPAN is semconv.FOLLOW_SPAN
    assert follow.DRIVER_FAILED_EVENT == semconv.DRIVER_FAILED_EVENT


def issue(sim: CinderSimulator) -> str:
    """Create a volume as nova does, without waiting for it; its id."""
    answer = requests.post(
        f"{sim.url}/v3/{uuid.uuid4().hex}/volumes",
        json={"volume": {"size": 1}},
        headers={"X-Auth-Token": TOKEN, "X-OpenStack-Request-ID": NOVA_REQUEST_ID},
        timeout=5,
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["volume"]["id"])


def test_scheduler_down_is_stuck(sim: CinderSimulator, captured: Captured) -> None:
    """No scheduler: the logs show the cast, nothing after it: stuck, waiting on the scheduler."""
    sim.stop_service("cinder-scheduler")
    issue(sim)
    assert sim.wait_idle(5)
    poll(
        lambda: any(e.get("event") == names.LOG_CREATE_ISSUED for e in captured.logs),
        timeout=5,
        what="cinder-api logs the cast",
    )
    found = after_answer.from_logs(captured.logs, NOVA_REQUEST_ID)
    assert found is not None
    assert (found.outcome, found.failed_service) == ("stuck", "cinder-scheduler")
    assert found.advice is not None and found.advice.commands == ["openstack volume service list"]


def test_volume_service_down_is_stuck(sim: CinderSimulator, captured: Captured) -> None:
    """Placed on a cinder-volume that is down but still looks up: stuck, waiting on it."""
    # Long enough that the scheduler places it before cinder-volume looks down, under load.
    sim.configure_backend(service_down_time_s=3.0)
    sim.stop_service("cinder-volume")
    volume_id = issue(sim)
    poll(
        lambda: (
            any(e.get("event") == names.LOG_BACKEND_SELECTED for e in captured.logs)
            and any(
                (s.attributes or {}).get(names.SCHEDULER_RESULT) == "scheduled"
                for s in captured.spans
            )
        ),
        timeout=5,
        what="the scheduler places the volume",
    )
    for found in verdicts(captured, volume_id):
        assert (found.outcome, found.failed_service) == ("stuck", "cinder-volume")
        assert found.host
        assert f"stuck creating (waiting on cinder-volume on {FAST.volume_service_host})" in (
            found.sentence(200)
        )


def test_non_reschedulable_driver_failure(sim: CinderSimulator, captured: Captured) -> None:
    """A failure cinder never reschedules: one attempt, the driver's log on the host to read."""
    sim.inject_backend_fault(BackendFault("driver_error_no_reschedule"))
    volume_id, request_id = settle(sim, captured)
    for found in verdicts(captured, volume_id):
        assert (found.outcome, found.failed_service, found.failure, found.attempts) == (
            "error",
            "cinder-volume",
            "driver_error",
            1,
        )
        assert found.advice is not None and request_id in found.advice.text


def test_slow_backend_is_available(sim: CinderSimulator, captured: Captured) -> None:
    """A slow driver still ends available: nothing to do."""
    sim.inject_backend_fault(BackendFault("slow_driver", delay_s=0.2))
    volume_id, _ = settle(sim, captured)
    for found in verdicts(captured, volume_id):
        assert (found.outcome, found.advice) == ("available", None)


def test_text_json_and_html_say_what_happened_after_the_answer(
    sim: CinderSimulator, captured: Captured
) -> None:
    """The after-the-answer part is in the text, the JSON and the HTML of a diagnosis."""
    from voltrace.explain.html import render_html
    from voltrace.explain.model import Diagnosis
    from voltrace.explain.render import format_text

    sim.configure_backend(capacity_gb=0)
    volume_id, _ = settle(sim, captured)
    fate = after_answer.from_spans(spans_from_sdk(captured.spans), volume_id)
    d = Diagnosis(
        source="trace",
        trace_id="t",
        request_id=NOVA_REQUEST_ID,
        outcome="success",
        http_status=200,
        after_answer=fate,
    )
    said = "the volume then failed in cinder-scheduler: no valid backend (capacity)"
    assert said in " ".join(format_text(d, waterfall=False).split())  # wrapped to the width
    assert said in d.to_json()["after_answer"]["verdict"]
    assert d.to_json()["after_answer"]["cause"] == "capacity"
    assert said in render_html([d])


def test_through_nova_explain_reads_the_fate_from_the_trace_and_the_logs(
    sim: CinderSimulator, nova: Any, captured: Captured
) -> None:
    """Through voltrace: Nova answers 200, then explain finds the scheduler's no valid backend."""
    from tests.conftest import member_headers
    from voltrace.explain.from_logs import diagnose_logs
    from voltrace.explain.from_trace import diagnose_traces
    from voltrace.traces import group_traces

    sim.configure_backend(capacity_gb=0)
    answer = nova.create({"size": 1}, headers=member_headers())
    assert answer.status == 200
    volume_id = answer.json()["volume"]["id"]
    poll(
        lambda: (
            any(e.get("event") == names.LOG_SETTLED for e in captured.logs)
            and any((s.attributes or {}).get(names.OUTCOME) for s in captured.spans)
        ),
        timeout=10,
        what="the create settles",
    )
    [from_trace] = diagnose_traces(group_traces(spans_from_sdk(captured.spans)))
    from_logs = diagnose_logs(captured.logs)
    assert from_logs is not None
    for d in (from_trace, from_logs):
        assert d.after_answer is not None, d.source
        assert d.after_answer.sentence(d.http_status) == (
            "Nova answered 200; the volume then failed in cinder-scheduler: "
            "no valid backend (capacity)"
        )
    assert from_trace.volume_id == volume_id
