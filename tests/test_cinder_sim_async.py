"""Past the 202: the simulator's cinder-scheduler and cinder-volume, one test per outcome class.

Each test follows one create over real HTTP and checks what a real cinder 29 shows
(``../shared/full-cinder.md``): the volume's status timeline and host, the user messages,
os-services, and the whole trace (services, parents, statuses) and log events.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from opentelemetry.sdk.trace import ReadableSpan

from tests.support.polling import poll
from voltrace.cinder_sim import CinderSimulator
from voltrace.cinder_sim import async_create as names
from voltrace.cinder_sim.backends import BackendFault, BackendSettings
from voltrace.telemetry import Telemetry
from voltrace.testing import Captured, capture, service_of

TOKEN = "tok-async"
NOVA_REQUEST_ID = "req-0b7d3c52-6f0e-4c8a-9b7e-2a1d4e5f6a7b"
HOST = "cinder-sim@lvmdriver-1#lvmdriver-1"
NO_BACKEND = (
    "VOLUME_VOLUME_001_003",
    "schedule allocate volume:Could not find any available weighted backend.",
)
DRIVER_FAILED = (
    "VOLUME_VOLUME_008_012",
    "create volume from backend storage:Driver failed to create the volume.",
)
# Milliseconds instead of cinder's tenths of seconds; liveness in tenths instead of minutes.
FAST = BackendSettings(
    scheduling_s=0.01, volume_create_s=0.01, report_interval_s=0.05, service_down_time_s=0.3
)
API_STEPS = [
    ("cinder-api", "validate", None, "UNSET"),
    ("cinder-api", "check_quota", None, "UNSET"),
    ("cinder-api", "persist", None, "UNSET"),
]


@pytest.fixture(scope="module")
def server(cinder_telemetry: Telemetry) -> Iterator[CinderSimulator]:
    with CinderSimulator(telemetry=cinder_telemetry, backend=FAST) as simulator:
        yield simulator


@pytest.fixture
def sim(server: CinderSimulator) -> Iterator[CinderSimulator]:
    """The module's simulator, as configured, with nothing left from the previous test."""
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def project() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def captured() -> Iterator[Captured]:
    with capture() as spans_and_logs:
        yield spans_and_logs


# ---- helpers -----------------------------------------------------------------------------


def create(sim: CinderSimulator, project: str, **volume: Any) -> tuple[str, str]:
    """POST /volumes as nova does; returns (volume id, cinder's request id)."""
    answer = requests.post(
        f"{sim.url}/v3/{project}/volumes",
        json={"volume": {"size": 1, **volume}},
        headers={"X-Auth-Token": TOKEN, "X-OpenStack-Request-ID": NOVA_REQUEST_ID},
        timeout=5,
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["volume"]["status"] == "creating"
    return answer.json()["volume"]["id"], answer.headers["x-openstack-request-id"]


def show(sim: CinderSimulator, project: str, volume_id: str) -> dict[str, Any]:
    answer = requests.get(
        f"{sim.url}/v3/{project}/volumes/{volume_id}", headers={"X-Auth-Token": TOKEN}, timeout=5
    )
    assert answer.status_code == 200
    return answer.json()["volume"]


def settled(sim: CinderSimulator, project: str, volume_id: str) -> str:
    """Poll the volume (GET, as a user would) until it leaves creating; its status."""
    return poll(
        lambda: (
            show(sim, project, volume_id)["status"] != "creating"
            and show(sim, project, volume_id)["status"]
        ),
        timeout=10,
        what=f"volume {volume_id} settles",
    )


def messages(sim: CinderSimulator, project: str, volume_id: str) -> list[dict[str, Any]]:
    answer = requests.get(
        f"{sim.url}/v3/{project}/messages?resource_uuid={volume_id}",
        headers={"X-Auth-Token": TOKEN, "OpenStack-API-Version": "volume 3.5"},
        timeout=5,
    )
    assert answer.status_code == 200
    return answer.json()["messages"]


def events(found: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(event_id, user_message) oldest first (the API lists newest first)."""
    return [(m["event_id"], m["user_message"]) for m in reversed(found)]


def services(sim: CinderSimulator, project: str) -> dict[str, str]:
    answer = requests.get(
        f"{sim.url}/v3/{project}/os-services",
        headers={"X-Auth-Token": TOKEN, "OpenStack-API-Version": "volume 3.7"},
        timeout=5,
    )
    return {s["binary"]: s["state"] for s in answer.json()["services"]}


def api_span(captured: Captured, request_id: str) -> ReadableSpan:
    found = [
        s
        for s in captured.spans
        if (s.attributes or {}).get("cinder.request_id") == request_id and s.name.startswith("POST")
    ]
    assert len(found) == 1
    return found[0]


def settling_span(captured: Captured, volume_id: str) -> ReadableSpan:
    """The span that settled the volume, once it has ended."""

    def ready(c: Captured) -> ReadableSpan | None:
        return next(
            (
                s
                for s in c.spans
                if (s.attributes or {}).get(names.OUTCOME)
                and (s.attributes or {}).get(names.VOLUME_ID) == volume_id
            ),
            None,
        )

    return captured.wait_for(ready)


def tree(captured: Captured, span: ReadableSpan) -> list[Any]:
    """[(service, span name, OSProfiler method, status), [children]] for whole-trace asserts."""
    attributes = span.attributes or {}
    node = (service_of(span), span.name, attributes.get(names.METHOD), span.status.status_code.name)
    return [node, [tree(captured, child) for child in captured.children(span)]]


def flat(nodes: list[Any]) -> list[Any]:
    """The nodes of a tree, depth first."""
    node, children = nodes
    return [node] + [n for child in children for n in flat(child)]


def scheduler(status: str = "UNSET") -> tuple[str, str, str, str]:
    return ("cinder-scheduler", "rpc", names.SCHEDULER_CREATE, status)


def volume_rpc(status: str = "UNSET") -> tuple[str, str, str, str]:
    return ("cinder-volume", "rpc", names.VOLUME_CREATE, status)


def drive(status: str = "UNSET") -> tuple[str, str, str, str]:
    return ("cinder-volume", "drive", names.DRIVER_CREATE, status)


DELETE = [
    [
        ("cinder-volume", "rpc", names.VOLUME_DRIVER_DELETE, "UNSET"),
        [[("cinder-volume", "drive", names.DRIVER_DELETE, "UNSET"), []]],
    ]
]


def settled_log(captured: Captured, request_id: str) -> dict[str, Any]:
    return next(e for e in captured.logs_for(request_id) if e["event"] == names.LOG_SETTLED)


def log_events(captured: Captured, request_id: str) -> list[tuple[str, str]]:
    return [
        (e["service"], e["event"])
        for e in captured.logs_for(request_id)
        if e["event"] != "api.request"
    ]


# ---- one test per outcome ------------------------------------------------------------------


def test_create_becomes_available(sim: CinderSimulator, project: str, captured: Captured) -> None:
    """creating -> available on host@backend#pool, no message; api -> scheduler -> volume."""
    volume_id, request_id = create(sim, project)
    assert settled(sim, project, volume_id) == "available"
    assert sim.volume_timeline(volume_id) == [
        ("creating", None),
        ("creating", HOST),
        ("available", HOST),
    ]
    assert messages(sim, project, volume_id) == []
    assert services(sim, project) == {"cinder-scheduler": "up", "cinder-volume": "up"}

    settling = settling_span(captured, volume_id)
    root = api_span(captured, request_id)
    assert tree(captured, root) == [
        ("cinder-api", "POST /v3/{project_id}/volumes", None, "UNSET"),
        [*([step, []] for step in API_STEPS), [scheduler(), [[volume_rpc(), [[drive(), []]]]]]],
    ]
    assert settling.attributes[names.OUTCOME] == "available"
    assert settling.attributes[names.HOST] == HOST
    assert settling.attributes[names.REQUEST_ID] == request_id
    assert settling.attributes[names.GLOBAL_REQUEST_ID] == NOVA_REQUEST_ID
    assert settling.context.trace_id == root.context.trace_id
    assert log_events(captured, request_id) == [
        ("cinder-api", names.LOG_CREATE_ISSUED),
        ("cinder-scheduler", names.LOG_BACKEND_SELECTED),
        ("cinder-volume", names.LOG_CREATE_STARTED),
        ("cinder-volume", names.LOG_CREATED),
        ("cinder-volume", names.LOG_SETTLED),
    ]
    assert settled_log(captured, request_id)["outcome"] == "available"


def test_no_valid_backend_by_capacity(
    sim: CinderSimulator, project: str, captured: Captured
) -> None:
    """Bigger than the pool's free space: error, host null, 001_003, scheduler span not ERROR."""
    sim.configure_backend(capacity_gb=10)
    fits, _ = create(sim, project, size=8)
    assert settled(sim, project, fits) == "available"
    volume_id, request_id = create(sim, project, size=5)  # 8 of 10 GB are taken
    assert settled(sim, project, volume_id) == "error"
    assert sim.volume_timeline(volume_id) == [("creating", None), ("error", None)]
    found = messages(sim, project, volume_id)
    assert events(found) == [NO_BACKEND]
    assert [(m["request_id"], m["message_level"]) for m in found] == [(request_id, "ERROR")]
    assert services(sim, project) == {"cinder-scheduler": "up", "cinder-volume": "up"}

    settling = settling_span(captured, volume_id)
    assert tree(captured, api_span(captured, request_id))[1][-1] == [scheduler(), []]
    attributes = settling.attributes
    assert (settling.name, service_of(settling)) == ("rpc", "cinder-scheduler")
    assert attributes[names.SCHEDULER_RESULT] == "no_valid_backend"
    assert attributes[names.FILTERED_BY] == "CapacityFilter"
    assert attributes[names.SCHEDULER_REASON] == "No weighed backends available"
    assert (attributes[names.FAILURE], attributes[names.CAUSE]) == ("no_valid_backend", "capacity")
    assert [e.attributes[names.MESSAGE_EVENT_ID] for e in settling.events] == [NO_BACKEND[0]]
    assert log_events(captured, request_id) == [
        ("cinder-api", names.LOG_CREATE_ISSUED),
        ("cinder-scheduler", names.LOG_FILTER_REJECTED),
        ("cinder-scheduler", names.LOG_MESSAGE_CREATED),
        ("cinder-scheduler", names.LOG_NO_VALID_BACKEND),
        ("cinder-scheduler", names.LOG_SETTLED),
    ]
    rejected = next(
        e for e in captured.logs_for(request_id) if e["event"] == names.LOG_FILTER_REJECTED
    )
    assert (rejected["filter"], rejected["requested_gb"], rejected["available_gb"]) == (
        "CapacityFilter",
        5,
        2.0,
    )


def test_no_valid_backend_by_extra_specs(
    sim: CinderSimulator, project: str, captured: Captured
) -> None:
    """A type whose volume_backend_name no backend reports: CapabilitiesFilter, 001_003."""
    sim.set_volume_type_extra_specs("lvmdriver-1", {"volume_backend_name": "nope"})
    volume_id, request_id = create(sim, project, volume_type="lvmdriver-1")
    assert settled(sim, project, volume_id) == "error"
    assert sim.volume_timeline(volume_id) == [("creating", None), ("error", None)]
    assert events(messages(sim, project, volume_id)) == [NO_BACKEND]
    untyped, _ = create(sim, project)  # __DEFAULT__ has no extra specs: it lands
    assert settled(sim, project, untyped) == "available"

    settling = settling_span(captured, volume_id)
    assert tree(captured, api_span(captured, request_id))[1][-1] == [scheduler(), []]
    assert settling.attributes[names.FILTERED_BY] == "CapabilitiesFilter"
    assert settling.attributes[names.CAUSE] == "capabilities"
    rejected = next(
        e for e in captured.logs_for(request_id) if e["event"] == names.LOG_FILTER_REJECTED
    )
    assert (rejected["extra_spec"], rejected["capability"]) == (
        "volume_backend_name=nope",
        "lvmdriver-1",
    )


def test_driver_failure_is_rescheduled_to_exhaustion(
    sim: CinderSimulator, project: str, captured: Captured
) -> None:
    """cinder 29's same-host reschedules: 3 x 008_012, then 001_003; 17 spans, nested."""
    sim.inject_backend_fault(BackendFault("driver_error"))
    volume_id, request_id = create(sim, project)
    assert settled(sim, project, volume_id) == "error"
    assert sim.volume_timeline(volume_id) == [
        ("creating", None),
        *[("creating", HOST), ("creating", None)] * 3,
        ("error", None),
    ]
    found = messages(sim, project, volume_id)
    assert events(found) == [DRIVER_FAILED] * 3 + [NO_BACKEND]
    assert {m["request_id"] for m in found} == {request_id}
    assert services(sim, project) == {"cinder-scheduler": "up", "cinder-volume": "up"}

    settling = settling_span(captured, volume_id)
    last_round: list[Any] = [scheduler(), []]
    for _ in range(3):
        last_round = [
            scheduler(),
            [[volume_rpc("ERROR"), [[drive("ERROR"), []], *DELETE, last_round]]],
        ]
    assert tree(captured, api_span(captured, request_id))[1][-1] == last_round
    assert len(flat(tree(captured, api_span(captured, request_id)))) == 1 + 3 + 16
    assert (service_of(settling), settling.attributes[names.ATTEMPT]) == ("cinder-scheduler", 4)
    assert settling.attributes[names.SCHEDULER_REASON] == (
        f"Exceeded max scheduling attempts 3 for resource {volume_id}"
    )
    assert (
        settling.attributes[names.FAILURE],
        settling.attributes[names.CAUSE],
        settling.attributes[names.ATTEMPTS],
    ) == ("driver_error", "max_attempts_exceeded", 3)
    failed = [
        s
        for s in captured.trace(settling.context.trace_id)
        if s.name == "drive" and (s.attributes or {}).get(names.OSPROFILER_ERROR)
    ]
    assert len(failed) == 3
    assert [(e.name, e.attributes[names.OSPROFILER_ERROR_KIND]) for e in failed[0].events] == [
        ("log", "VolumeBackendAPIException")
    ]
    log = settled_log(captured, request_id)
    assert (log["failed_service"], log["failure"], log["cause"], log["attempts"]) == (
        "cinder-scheduler",
        "driver_error",
        "max_attempts_exceeded",
        3,
    )
    assert log["event_ids"] == [DRIVER_FAILED[0]] * 3 + [NO_BACKEND[0]]
    assert [e["event"] for e in captured.logs_for(request_id)].count(names.LOG_RESCHEDULED) == 3


def test_driver_failure_without_retries(
    sim: CinderSimulator, project: str, captured: Captured
) -> None:
    """scheduler_max_attempts = 1: one 008_012, error with the host kept, no reschedule."""
    sim.configure_backend(scheduler_max_attempts=1)
    volume_id, request_id = create(sim, project, metadata={"fault": "backend"})
    assert settled(sim, project, volume_id) == "error"
    assert sim.volume_timeline(volume_id) == [
        ("creating", None),
        ("creating", HOST),
        ("error", HOST),
    ]
    assert events(messages(sim, project, volume_id)) == [DRIVER_FAILED]
    settling = settling_span(captured, volume_id)
    assert tree(captured, api_span(captured, request_id))[1][-1] == [
        scheduler(),
        [[volume_rpc("ERROR"), [[drive("ERROR"), []]]]],
    ]
    assert settling.attributes[names.CAUSE] == "reschedule_disabled"
    assert settling.attributes[names.RESCHEDULED] is False


def test_transient_driver_failure_succeeds_on_reschedule(
    sim: CinderSimulator, project: str, captured: Captured
) -> None:
    """One failed driver call: rescheduled once, then available; the 008_012 stays."""
    sim.inject_backend_fault(BackendFault("driver_error", times=1))
    volume_id, request_id = create(sim, project)
    assert settled(sim, project, volume_id) == "available"
    assert events(messages(sim, project, volume_id)) == [DRIVER_FAILED]
    settling = settling_span(captured, volume_id)
    assert tree(captured, api_span(captured, request_id))[1][-1] == [
        scheduler(),
        [
            [
                volume_rpc("ERROR"),
                [[drive("ERROR"), []], *DELETE, [scheduler(), [[volume_rpc(), [[drive(), []]]]]]],
            ]
        ],
    ]
    assert settling.attributes[names.ATTEMPTS] == 2


@pytest.mark.parametrize("how", ["metadata", "fault"])
def test_non_reschedulable_driver_failure(
    sim: CinderSimulator, project: str, captured: Captured, how: str
) -> None:
    """MetadataUpdateFailure is never rescheduled: one 008_012, error on the host."""
    if how == "fault":
        sim.inject_backend_fault(BackendFault("driver_error_no_reschedule"))
        volume_id, request_id = create(sim, project)
    else:
        volume_id, request_id = create(sim, project, metadata={"fault": "noresched"})
    assert settled(sim, project, volume_id) == "error"
    assert sim.volume_timeline(volume_id) == [
        ("creating", None),
        ("creating", HOST),
        ("error", HOST),
    ]
    assert events(messages(sim, project, volume_id)) == [DRIVER_FAILED]
    settling = settling_span(captured, volume_id)
    assert tree(captured, api_span(captured, request_id))[1][-1] == [
        scheduler(),
        [[volume_rpc("ERROR"), [[drive("ERROR"), []]]]],
    ]
    assert settling.attributes[names.ERROR_TYPE] == "MetadataUpdateFailure"
    assert (settling.attributes[names.FAILURE], settling.attributes[names.CAUSE]) == (
        "driver_error",
        "not_reschedulable",
    )
    log = settled_log(captured, request_id)
    assert (log["failed_service"], log["host"]) == ("cinder-volume", HOST)


def test_scheduler_down_then_recovers(
    sim: CinderSimulator, project: str, captured: Captured
) -> None:
    """Scheduler stopped: creating, host null, no spans, os-services down; restarted: available."""
    sim.stop_service("cinder-scheduler")
    volume_id, request_id = create(sim, project)
    assert sim.wait_idle(5)  # the cast waits in the scheduler's queue, nothing else to do
    assert show(sim, project, volume_id)["status"] == "creating"
    assert sim.volume_timeline(volume_id) == [("creating", None)]
    assert tree(captured, api_span(captured, request_id))[1] == [[s, []] for s in API_STEPS]
    poll(
        lambda: services(sim, project) == {"cinder-scheduler": "down", "cinder-volume": "up"},
        timeout=5,
        what="os-services shows the scheduler down",
    )
    assert messages(sim, project, volume_id) == []

    sim.start_service("cinder-scheduler")
    assert settled(sim, project, volume_id) == "available"
    assert services(sim, project)["cinder-scheduler"] == "up"
    settling_span(captured, volume_id)
    assert tree(captured, api_span(captured, request_id))[1][-1] == [
        scheduler(),
        [[volume_rpc(), [[drive(), []]]]],
    ]
    assert [e["event"] for e in captured.logs if e.get("binary") == "cinder-scheduler"] == [
        names.LOG_SERVICE_STOPPED,
        names.LOG_SERVICE_STARTED,
    ]


def test_volume_service_down(sim: CinderSimulator, project: str, captured: Captured) -> None:
    """Stuck creating with host set while it still looks up; once seen down, 001_003; back: done."""
    # Long enough that the first create is placed before cinder-volume looks down, even on a
    # loaded machine.
    sim.configure_backend(service_down_time_s=3.0)
    sim.stop_service("cinder-volume")
    stuck, stuck_request = create(sim, project)
    poll(
        lambda: sim.volume_timeline(stuck) == [("creating", None), ("creating", HOST)],
        timeout=5,
        what="the scheduler places the volume",
    )
    assert sim.wait_idle(5)
    assert show(sim, project, stuck)["status"] == "creating"
    assert tree(captured, api_span(captured, stuck_request))[1][-1] == [scheduler(), []]

    poll(
        lambda: services(sim, project) == {"cinder-scheduler": "up", "cinder-volume": "down"},
        timeout=20,
        what="os-services shows cinder-volume down",
    )
    late, late_request = create(sim, project)
    assert settled(sim, project, late) == "error"
    assert sim.volume_timeline(late) == [("creating", None), ("error", None)]
    assert events(messages(sim, project, late)) == [NO_BACKEND]
    settling = settling_span(captured, late)
    assert settling.attributes[names.CAUSE] == "volume_service_down"
    assert (service_of(settling), settling.name) == ("cinder-scheduler", "rpc")
    assert names.LOG_SERVICE_DOWN in [e["event"] for e in captured.logs_for(late_request)]

    sim.start_service("cinder-volume")
    assert settled(sim, project, stuck) == "available"
    assert messages(sim, project, stuck) == []
    settling_span(captured, stuck)
    assert tree(captured, api_span(captured, stuck_request))[1][-1] == [
        scheduler(),
        [[volume_rpc(), [[drive(), []]]]],
    ]


@pytest.mark.parametrize("how", ["fault", "metadata"])
def test_slow_backend(sim: CinderSimulator, project: str, captured: Captured, how: str) -> None:
    """A slow driver: creating for at least its delay, then available; the time is in drive."""
    delay_s = 0.5
    if how == "fault":
        sim.inject_backend_fault(BackendFault("slow_driver", delay_s=delay_s))
        volume_id, request_id = create(sim, project)
    else:
        volume_id, request_id = create(sim, project, metadata={"sleep_s": str(delay_s)})
    assert show(sim, project, volume_id)["status"] == "creating"
    assert settled(sim, project, volume_id) == "available"
    assert events(messages(sim, project, volume_id)) == []
    settling = settling_span(captured, volume_id)
    assert tree(captured, api_span(captured, request_id))[1][-1] == [
        scheduler(),
        [[volume_rpc(), [[drive(), []]]]],
    ]
    driver = captured.children(settling)[0]
    assert driver.end_time - driver.start_time >= delay_s * 1e9


# ---- the machinery: determinism, bounds, reset, admin API ---------------------------------


def test_deterministic_runs_repeat_ids_messages_and_timelines() -> None:
    """Two --deterministic runs of the same creates give the same ids, messages and timelines."""
    runs = []
    project = "0d" * 16
    for _ in range(2):
        with CinderSimulator(
            deterministic=True, backend=FAST, backend_faults=[BackendFault("driver_error", times=1)]
        ) as simulator:
            volume_id, request_id = create(simulator, project)
            assert settled(simulator, project, volume_id) == "available"
            story = simulator.volume_story(volume_id)
            runs.append(
                (
                    volume_id,
                    request_id,
                    story["timeline"],
                    [(m["id"], m["created_at"]) for m in story["messages"]],
                )
            )
    assert runs[0] == runs[1]
    assert runs[0][3][0][1] == "2026-11-27T08:00:00.000000"


def test_in_flight_creates_are_bounded(
    cinder_telemetry: Telemetry, project: str, captured: Captured
) -> None:
    """Past max_in_flight a cast is dropped (logged): that volume stays creating."""
    bounded = BackendSettings(scheduling_s=0.01, volume_create_s=0.01, max_in_flight=1)
    with CinderSimulator(
        telemetry=cinder_telemetry, backend=bounded, services_down=["cinder-scheduler"]
    ) as simulator:
        first, _ = create(simulator, project)
        second, second_request = create(simulator, project)
        dropped = [
            e for e in captured.logs_for(second_request) if e["event"] == names.LOG_CAST_DROPPED
        ]
        assert [e["reason"] for e in dropped] == ["max_in_flight"]
        simulator.start_service("cinder-scheduler")
        assert settled(simulator, project, first) == "available"
        assert simulator.wait_idle(5)
        assert simulator.volume_timeline(second) == [("creating", None)]


def test_reset_abandons_creates_in_flight(sim: CinderSimulator, project: str) -> None:
    """reset() drops queued and running work: nothing of it comes back afterwards."""
    sim.inject_backend_fault(BackendFault("slow_driver", delay_s=5))
    volume_id, _ = create(sim, project)
    poll(
        lambda: sim.volume_timeline(volume_id)[-1] == ("creating", HOST),
        timeout=5,
        what="the volume reaches cinder-volume",
    )
    sim.reset()
    assert sim.wait_idle(5)
    assert sim.backend_state()["faults"] == []
    with pytest.raises(KeyError):
        sim.volume_timeline(volume_id)
    answer = requests.get(
        f"{sim.url}/v3/{project}/messages",
        headers={"X-Auth-Token": TOKEN, "OpenStack-API-Version": "volume 3.3"},
        timeout=5,
    )
    assert answer.json() == {"messages": []}


def test_stop_with_work_in_flight_is_clean(project: str) -> None:
    """stop() while creates are in flight and held returns promptly and joins its threads."""
    simulator = CinderSimulator(backend=BackendSettings(driver_s=5))
    simulator.start()
    create(simulator, project)
    simulator.stop_service("cinder-scheduler")
    create(simulator, project)
    simulator.stop()
    names_alive = {t.name for t in threading.enumerate()}
    assert not names_alive & {
        f"cinder-sim:{simulator.port}",
        f"cinder-sim:{simulator.port}:services",
    }


def test_admin_api_drives_the_backend(sim: CinderSimulator, project: str) -> None:
    """/__sim__/ changes settings, injects driver faults, stops services and sets extra specs."""
    admin = sim.url + "/__sim__"
    state = requests.patch(
        f"{admin}/backend", json={"capacity_gb": 5, "scheduling_s": [0, 0.01]}, timeout=5
    ).json()
    assert state["settings"]["capacity_gb"] == 5
    assert state["settings"]["scheduling_s"] == [0, 0.01]
    assert state["free_capacity_gb"] == 5
    assert requests.patch(f"{admin}/backend", json={"nope": 1}, timeout=5).status_code == 400
    faults = requests.post(
        f"{admin}/backend/faults", json={"spec": "driver_error:times=2"}, timeout=5
    ).json()
    assert faults == [{"kind": "driver_error", "times": 2, "delay_s": 0.0}]
    assert (
        requests.post(f"{admin}/backend/faults", json={"kind": "x"}, timeout=5).status_code == 400
    )
    assert requests.delete(f"{admin}/backend/faults", timeout=5).json() == []
    down = requests.put(
        f"{admin}/services/cinder-volume", json={"state": "down", "down_for_s": 60}, timeout=5
    ).json()
    assert [(s["binary"], s["running"], s["state"]) for s in down] == [
        ("cinder-scheduler", True, "up"),
        ("cinder-volume", False, "down"),
    ]
    assert (
        requests.put(f"{admin}/services/cinder-api", json={"state": "down"}, timeout=5).status_code
        == 400
    )
    requests.put(f"{admin}/services/cinder-volume", json={"state": "up"}, timeout=5)
    assert (
        requests.put(
            f"{admin}/volume-types/lvmdriver-1",
            json={"extra_specs": {"volume_backend_name": "x"}},
            timeout=5,
        ).status_code
        == 200
    )
    volume_id, _ = create(sim, project, volume_type="lvmdriver-1")
    assert settled(sim, project, volume_id) == "error"
    story = requests.get(f"{admin}/volumes/{volume_id}", timeout=5).json()
    assert (story["status"], story["timeline"]) == ("error", [["creating", None], ["error", None]])
    assert [m["event_id"] for m in story["messages"]] == [NO_BACKEND[0]]
    assert requests.get(f"{admin}/volumes/nope", timeout=5).status_code == 404


def test_the_api_span_says_it_cast_the_create(
    sim: CinderSimulator, project: str, captured: Captured
) -> None:
    """With its services traced, cinder-api's SERVER span names the service it cast the
    create to and the volume: what lets explain call a create no scheduler span follows
    stuck, rather than untraced."""
    sim.stop_service("cinder-scheduler")
    volume_id, request_id = create(sim, project)
    attributes = api_span(captured, request_id).attributes or {}
    assert attributes[names.CAST_TO] == "cinder-scheduler"
    assert attributes[names.VOLUME_ID] == volume_id


def test_purged_queue_leaves_the_create_creating(
    sim: CinderSimulator, project: str, captured: Captured
) -> None:
    """start_service(purge=True): the service is up again, the creates that waited in its
    queue are dropped (they stay creating, no span of theirs appears), new ones settle."""
    sim.configure_backend(service_down_time_s=3.0)  # placed while it still looks up
    sim.stop_service("cinder-volume")
    stuck, _ = create(sim, project)
    poll(
        lambda: sim.volume_story(stuck)["host"] == HOST,
        timeout=5,
        what="the scheduler places the volume",
    )
    sim.start_service("cinder-volume", purge=True)
    fresh, _ = create(sim, project)
    assert settled(sim, project, fresh) == "available"
    assert sim.wait_idle(5)
    assert show(sim, project, stuck)["status"] == "creating"
    volume_spans = [
        s
        for s in captured.spans
        if service_of(s) == "cinder-volume" and (s.attributes or {}).get(names.VOLUME_ID) == stuck
    ]
    assert volume_spans == []
