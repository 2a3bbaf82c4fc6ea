"""Past Nova's 200: every asynchronous outcome of a create, on the complete real Cinder 29.

One stack for the session (cinder-api + cinder-scheduler + cinder-volume over our own
RabbitMQ and PostgreSQL, the fault-injecting fake driver, FAKE_CAPACITY_GB=100), with
``voltrace serve`` in front of it and the OSProfiler bridge on. Each test sends one create
through voltrace, in a project of its own, and pins what an SRE would see afterwards, as
shared/full-cinder.md's failure table measured it:

* the volume's status timeline and host;
* the user messages (event ids, request_id = cinder-api's id for the POST);
* os-services (microversion 3.7: DB-only, so it answers with the scheduler frozen);
* the trace joined through the bridge, read back from a real collector (rotel): nova-api's
  spans, then cinder-api's ``WSGI_POST``, the scheduler's and volume service's ``rpc``
  spans and the driver's ``drive`` span, each parented one level up.

"Down" is SIGSTOP, undone by SIGCONT: with PostgreSQL a frozen service holds no lock.

For no valid backend, the driver failures and both services down, ``voltrace explain
--cinder-url`` is also asked, with no trace and no log: its verdict from Cinder alone.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.full_cinder import (
    CAPACITY_GB,
    Created,
    FullCinder,
    create_through_nova,
    follow,
    full_cinder,
    host,
    post_request_id,
)
from tests.support.polling import poll
from tests.support.real_cinder import VoltraceServe, create
from voltrace.cli import main
from voltrace.devtools.cinder_stack import POOL, Tracing
from voltrace.devtools.cinder_venv import RealCinderError

pytestmark = pytest.mark.slow

NO_VALID_BACKEND = "VOLUME_VOLUME_001_003"
DRIVER_FAILED = "VOLUME_VOLUME_008_012"
USER_MESSAGES = {
    NO_VALID_BACKEND: "schedule allocate volume:Could not find any available weighted backend.",
    DRIVER_FAILED: "create volume from backend storage:Driver failed to create the volume.",
}
# What the fake driver raises, as the spans name it.
BACKEND_ERROR = "cinder.exception.VolumeBackendAPIException"
NO_RESCHEDULE_ERROR = "cinder.exception.MetadataUpdateFailure"
KIND = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
NOVA, API = "nova-api", "cinder-osapi_volume"
SCHEDULER, VOLUME = "cinder-cinder-scheduler", "cinder-cinder-volume"


@pytest.fixture(scope="session")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FullCinder]:
    """The complete Cinder and voltrace, started once for the whole run."""
    with full_cinder(tmp_path_factory.mktemp("full-cinder")) as running:
        yield running


@pytest.fixture
def cinder(full: FullCinder) -> Iterator[FullCinder]:
    """The session's stack, healthy before and after each test."""
    full.wait_healthy()
    yield full
    full.wait_healthy()


# -- what the API shows --------------------------------------------------------------------


def messages(full: FullCinder, created: Created) -> list[tuple[str, str, str, str]]:
    """``(event_id, user_message, message_level, request_id)`` of the volume's messages."""
    return [
        (m["event_id"], m["user_message"], m["message_level"], m["request_id"])
        for m in full.stack.messages(created.project, created.volume_id)
    ]


def message(event_id: str, created: Created) -> tuple[str, str, str, str]:
    return event_id, USER_MESSAGES[event_id], "ERROR", created.cinder_request_id


def explained(full: FullCinder, created: Created, capsys: Any) -> dict:
    """``voltrace explain --cinder-url`` with the project's noauth token, from Cinder alone."""
    token = f"admin:{created.project}"
    code = main(
        [
            "explain",
            "--cinder-url",
            full.stack.endpoint_template,
            "--project-id",
            created.project,
            "--os-token",
            token,
            "--volume-id",
            created.volume_id,
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert token not in out + err
    said = dict(json.loads(out))
    # Cinder's own id for the POST, which its user messages carry.
    if said["after_answer"]["messages"]:
        assert said["after_answer"]["cinder_request_id"] == created.cinder_request_id
    return said


# -- the trace -----------------------------------------------------------------------------


def label(span: dict) -> tuple[str, str, str, str | None]:
    """``(service, kind, name, error)``: rpc/drive spans named by the method they ran,
    taskflow spans by their flow or task; ``error`` is the exception class raised there."""
    attrs = span["attributes"]
    name = span["name"]
    if name in ("rpc", "drive"):
        name = f"{name} {'.'.join(str(attrs['name']).split('.')[-2:])}"
    elif name == "taskflow.flow.run":
        name = f"flow {attrs['taskflow.flow.name']}"
    elif name.startswith("taskflow.task."):
        task = str(attrs["taskflow.task.name"]).split(";")[0].rsplit(".", 1)[-1]
        name = f"{attrs['taskflow.task.method']} {task}"
    error = None
    if str(attrs.get("error")) == "True" or span["status_code"] == 2:
        # OSProfiler: attribute error=True and a `log` event; OTel: status ERROR + `exception`.
        raised = [
            e["attributes"] for e in span.get("events", []) if e["name"] in ("log", "exception")
        ]
        error = next((str(a.get("error.kind") or a.get("exception.type")) for a in raised), "error")
    return span["resource"].get("service.name"), KIND[span["kind"]], name, error


def tree(spans: list[dict], root: dict) -> list:
    """``[label, [subtrees]]``, subtrees sorted: rotel's output carries no start times."""
    children = {s["span_id"]: s for s in spans if s["parent_span_id"] == root["span_id"]}
    return [label(root), sorted((tree(spans, c) for c in children.values()), key=repr)]


def node(service: str, kind: str, name: str, *children: list, error: str | None = None) -> list:
    return [(service, kind, name, error), sorted(children, key=repr)]


def joined_trace(
    created: Created, cinder_post: list, get_service: str = API, get_name: str | None = None
) -> list:
    """The whole trace voltrace should show for this create, ``cinder_post`` under its POST."""
    p, volume_id = created.project, created.volume_id
    get_name = get_name or f"WSGI_GET_/v3/{p}/volumes/{volume_id}"
    return node(
        NOVA,
        "SERVER",
        "POST /v2.1/os-volumes",
        node(
            NOVA,
            "INTERNAL",
            "create_volume",
            node(NOVA, "INTERNAL", "parse"),
            node(NOVA, "INTERNAL", "authorize"),
            node(NOVA, "INTERNAL", "resolve_snapshot"),
            node(NOVA, "INTERNAL", "derive_size"),
            node(
                NOVA,
                "INTERNAL",
                "call_cinder",
                node(NOVA, "CLIENT", "POST", cinder_post),
                node(NOVA, "CLIENT", "GET", node(get_service, "SERVER", get_name)),
            ),
            node(NOVA, "INTERNAL", "translate"),
        ),
    )


def wsgi_post(created: Created, *scheduled: list) -> list:
    return node(API, "SERVER", f"WSGI_POST_/v3/{created.project}/volumes", *scheduled)


def scheduler_rpc(*children: list) -> list:
    return node(SCHEDULER, "INTERNAL", "rpc SchedulerManager.create_volume", *children)


def volume_rpc(*children: list, error: str | None = None) -> list:
    return node(VOLUME, "INTERNAL", "rpc VolumeManager.create_volume", *children, error=error)


def driver_create(error: str | None = None) -> list:
    return node(VOLUME, "INTERNAL", "drive FaultyFakeDriver.create_volume", error=error)


def failed_round(next_round: list) -> list:
    """One driver failure that is rescheduled: clean up the volume, cast back to the scheduler."""
    return volume_rpc(
        driver_create(error=BACKEND_ERROR),
        node(
            VOLUME,
            "INTERNAL",
            "rpc VolumeManager.driver_delete_volume",
            node(VOLUME, "INTERNAL", "drive FakeLoggingVolumeDriver.delete_volume"),
        ),
        next_round,
        error=BACKEND_ERROR,
    )


def assert_trace(full: FullCinder, created: Created, cinder_post: list) -> None:
    """The collector gets the whole joined tree (services export one span at a time)."""
    expected = joined_trace(created, cinder_post)
    actual: list[Any] = []

    def arrived() -> bool:
        spans = full.collector.spans()
        root = next(
            (
                s
                for s in spans
                if s["kind"] == 2
                and s["resource"].get("service.name") == NOVA
                and s["attributes"].get("openstack.request_id") == created.request_id
            ),
            None,
        )
        if root is None:
            return False
        in_trace = [s for s in spans if s["trace_id"] == root["trace_id"]]
        actual[:] = tree(in_trace, root)
        return actual == expected

    with contextlib.suppress(TimeoutError):  # the comparison below shows what arrived
        poll(arrived, 20, f"the joined trace of {created.request_id}")
    assert actual == expected
    assert created.response.json()["volume"]["status"] == "creating"  # Nova's 200 said so


# -- the failure table, one test per class ---------------------------------------------------


def test_available(cinder):
    """creating → available on the fake pool; no messages; api → scheduler → volume → drive."""
    created = create_through_nova(cinder, {"size": 1})
    volume = follow(cinder.stack, created)
    assert (created.statuses, host(volume)) == (["creating", "available"], POOL)
    assert messages(cinder, created) == []
    assert cinder.stack.service_states() == {"cinder-scheduler": "up", "cinder-volume": "up"}
    assert_trace(cinder, created, wsgi_post(created, scheduler_rpc(volume_rpc(driver_create()))))


@pytest.mark.parametrize("why", ["extra_spec", "capacity"])
def test_no_valid_backend(cinder, why, capsys):
    """A type whose backend name matches no pool, or a size over the pool's capacity:
    creating → error, never placed, one 001_003; only the scheduler ran (no error raised)."""
    if why == "extra_spec":
        volume_type = cinder.stack.create_volume_type(
            f"nowhere-{uuid.uuid4().hex[:8]}", {"volume_backend_name": "nope"}
        )
        created = create_through_nova(cinder, {"size": 1, "volume_type": volume_type["name"]})
    else:
        created = create_through_nova(cinder, {"size": CAPACITY_GB * 5})
    volume = follow(cinder.stack, created)
    assert (created.statuses, host(volume)) == (["creating", "error"], None)
    assert messages(cinder, created) == [message(NO_VALID_BACKEND, created)]
    assert cinder.stack.service_states() == {"cinder-scheduler": "up", "cinder-volume": "up"}
    said = explained(cinder, created, capsys)
    assert said["verdict"] == "The volume failed in cinder-scheduler: no valid backend"
    assert "cinder get-pools --detail" in said["after_answer"]["commands"]
    assert_trace(cinder, created, wsgi_post(created, scheduler_rpc()))


def test_driver_failure_is_rescheduled_then_no_valid_backend(cinder, capsys):
    """VolumeBackendAPIException: three attempts on the same host (3 times 008_012), then the
    scheduler gives up (001_003, host cleared); 3 nested rounds in one trace."""
    created = create_through_nova(cinder, {"size": 1, "metadata": {"fault": "backend"}})
    volume = follow(cinder.stack, created)
    assert (created.statuses, host(volume)) == (["creating", "error"], None)
    assert messages(cinder, created) == [message(DRIVER_FAILED, created)] * 3 + [
        message(NO_VALID_BACKEND, created)
    ]
    said = explained(cinder, created, capsys)
    assert said["verdict"] == (
        "The volume failed in cinder-volume: driver error, 3 attempts (max_attempts_exceeded)"
    )
    # Each failed round casts back to the scheduler; the last scheduler run finds no backend
    # (NoValidBackend is handled there, not raised: that span has no error).
    attempts = scheduler_rpc()
    for _ in range(3):
        attempts = scheduler_rpc(failed_round(attempts))
    assert_trace(cinder, created, wsgi_post(created, attempts))


def test_non_reschedulable_driver_failure(cinder, capsys):
    """MetadataUpdateFailure is in no_reschedule_types: error on the host, one 008_012."""
    created = create_through_nova(cinder, {"size": 1, "metadata": {"fault": "noresched"}})
    volume = follow(cinder.stack, created)
    assert (created.statuses, host(volume)) == (["creating", "error"], POOL)
    assert messages(cinder, created) == [message(DRIVER_FAILED, created)]
    said = explained(cinder, created, capsys)
    assert said["verdict"] == "The volume failed in cinder-volume: driver error, 1 attempt"
    assert said["host"] == POOL
    assert_trace(
        cinder,
        created,
        wsgi_post(
            created,
            scheduler_rpc(
                volume_rpc(driver_create(error=NO_RESCHEDULE_ERROR), error=NO_RESCHEDULE_ERROR)
            ),
        ),
    )


def test_scheduler_down_leaves_creating_until_it_returns(cinder, capsys):
    """A frozen scheduler: the cast waits in its queue, the volume stays creating with no
    host while os-services says the scheduler is down; after SIGCONT it becomes available."""
    stack = cinder.stack
    stack.freeze("cinder-scheduler")
    try:
        created = create_through_nova(cinder, {"size": 1})
        poll(
            lambda: stack.service_states()["cinder-scheduler"] == "down",
            20,
            "os-services to show cinder-scheduler down",
        )
        volume = stack.get_volume(created.project, created.volume_id)
        assert (volume["status"], host(volume)) == ("creating", None)
        assert stack.service_states() == {"cinder-scheduler": "down", "cinder-volume": "up"}
        assert messages(cinder, created) == []
        said = explained(cinder, created, capsys)
        assert said["verdict"].startswith(
            "The volume is stuck in creating: cinder-scheduler down since 20"
        )
        assert said["after_answer"]["down_for_s"] >= 0
    finally:
        stack.thaw("cinder-scheduler")
    volume = follow(stack, created)
    assert (created.statuses, host(volume)) == (["creating", "available"], POOL)
    assert messages(cinder, created) == []
    assert_trace(cinder, created, wsgi_post(created, scheduler_rpc(volume_rpc(driver_create()))))


def test_volume_service_down_stuck_then_no_valid_backend(cinder, capsys):
    """A frozen cinder-volume: a create sent at once is placed (host set) and stays
    creating; once os-services shows it down, the next create fails in the scheduler
    (001_003). After SIGCONT the queued cast is consumed: the first becomes available."""
    stack = cinder.stack
    stack.freeze("cinder-volume")
    try:
        stuck = create_through_nova(cinder, {"size": 1})
        # The scheduler places it while the service still counts as up; the cast then waits.
        placed = poll(
            lambda: host(v := stack.get_volume(stuck.project, stuck.volume_id)) and v,
            20,
            "the scheduler to place the volume",
        )
        assert (placed["status"], host(placed)) == ("creating", POOL)
        poll(
            lambda: stack.service_states()["cinder-volume"] == "down",
            20,
            "os-services to show cinder-volume down",
        )
        assert stack.get_volume(stuck.project, stuck.volume_id)["status"] == "creating"
        assert messages(cinder, stuck) == []
        said = explained(cinder, stuck, capsys)
        service_host = POOL.split("#")[0]
        assert said["verdict"].startswith(
            f"The volume is stuck in creating: cinder-volume on {service_host} down since 20"
        )
        assert said["after_answer"]["commands"] == ["openstack volume service list"]

        after_down = create_through_nova(cinder, {"size": 1})
        volume = follow(stack, after_down)
        assert (after_down.statuses, host(volume)) == (["creating", "error"], None)
        assert messages(cinder, after_down) == [message(NO_VALID_BACKEND, after_down)]
        said = explained(cinder, after_down, capsys)
        assert said["verdict"] == "The volume failed in cinder-scheduler: no valid backend"
        assert stack.get_volume(stuck.project, stuck.volume_id)["status"] == "creating"
        assert stack.service_states() == {"cinder-scheduler": "up", "cinder-volume": "down"}
    finally:
        stack.thaw("cinder-volume")
    volume = follow(stack, stuck)
    assert (stuck.statuses, host(volume)) == (["creating", "available"], POOL)
    assert_trace(cinder, after_down, wsgi_post(after_down, scheduler_rpc()))
    assert_trace(cinder, stuck, wsgi_post(stuck, scheduler_rpc(volume_rpc(driver_create()))))


def test_slow_backend_stays_creating_on_its_host_then_available(cinder, capsys):
    """The driver sleeps (sleep_s): creating with the host set while it works, then
    available; all services up throughout, no messages."""
    created = create_through_nova(cinder, {"size": 1, "metadata": {"sleep_s": "2"}})
    working = poll(
        lambda: host(v := cinder.stack.get_volume(created.project, created.volume_id)) and v,
        20,
        "the scheduler to place the volume",
    )
    assert (working["status"], host(working)) == ("creating", POOL)
    assert cinder.stack.service_states() == {"cinder-scheduler": "up", "cinder-volume": "up"}
    # explain --follow waits it out on the real Cinder, with its progress on stderr.
    assert (
        main(
            [
                "explain",
                "--cinder-url",
                f"{cinder.stack.url}/v3/{created.project}",
                "--os-token",
                f"admin:{created.project}",
                "--volume-id",
                created.volume_id,
                "--follow",
                "--timeout",
                "30",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert f"waiting for volume {created.volume_id}: creating" in err
    assert f"The volume became available on {POOL}" in out
    volume = follow(cinder.stack, created)
    assert (created.statuses, host(volume)) == (["creating", "available"], POOL)
    assert messages(cinder, created) == []
    assert_trace(cinder, created, wsgi_post(created, scheduler_rpc(volume_rpc(driver_create()))))


# -- when it cannot start -------------------------------------------------------------------


def running_with(argument: str) -> list[int]:
    """PIDs whose command line contains ``argument``."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and argument in (entry / "cmdline").read_bytes().decode(
                errors="replace"
            ).replace("\0", " "):
                found.append(int(entry.name))
    return found


def test_a_stack_that_cannot_start_fails_with_its_logs_and_leaves_nothing(full):
    """No database: the first service to die at start is named in the error's first line,
    with the services' log tails after it; every process of that stack is gone."""
    workdir = full.base.workdir / full.base.free_vhosts[0]  # where the next stack lives
    with pytest.raises(RealCinderError) as failure:
        full.base.stack(database_url=full.base.pg.url("no_such_database"), startup_timeout=60)
    first, *rest = str(failure.value).splitlines()
    assert re.fullmatch(
        r"cinder-(volume|scheduler) exited 1 while starting \(waiting for .+\)", first
    )
    assert any('database "no_such_database" does not exist' in line for line in rest), rest
    assert running_with(str(workdir)) == []


# -- the alternative: OpenTelemetry's own instrumentations inside Cinder --------------------


@pytest.fixture(scope="module")
def otel_cinder(full: FullCinder) -> Iterator[tuple[Any, VoltraceServe]]:
    """A second stack on its own vhost and database, traced by the PyPI oslo.messaging and
    taskflow instrumentations (W3C traceparent), with a voltrace that signs nothing."""
    stack = full.base.stack(tracing=Tracing("otel", full.collector.http_endpoint))
    try:
        nova = VoltraceServe(
            stack.workdir,
            stack.endpoint_template,
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": full.collector.http_endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_BSP_SCHEDULE_DELAY": "50",
            },
        )
        try:
            yield stack, nova.wait_until_serving()
        finally:
            nova.stop()
    finally:
        stack.stop()


def test_otel_instrumentations_join_voltraces_w3c_trace(otel_cinder, full):
    """Without the bridge: voltrace's traceparent reaches cinder-api, the casts carry it,
    and the trace shows PRODUCER/CONSUMER hops and every taskflow task of the create."""
    stack, nova = otel_cinder
    project = uuid.uuid4().hex
    response = create(nova.url, project, {"size": 1})
    assert response.status == 200, response.body
    request_id = response.header("x-openstack-request-id")
    created = Created(
        response,
        project,
        request_id,
        post_request_id(stack, request_id),
        response.json()["volume"]["id"],
        ["creating"],
    )
    assert follow(stack, created)["status"] == "available"

    def tasks(service: str, *names: str, under: dict[str, list] | None = None) -> list[list]:
        return [
            node(service, "INTERNAL", f"execute {name}", *(under or {}).get(name, []))
            for name in names
        ]

    def hop(sender: str, receiver: str, *receiver_children: list) -> list:
        return node(
            sender,
            "PRODUCER",
            "create_volume send",
            node(receiver, "CONSUMER", "create_volume receive", *receiver_children),
        )

    volume_flow = node(
        "cinder-volume",
        "INTERNAL",
        "flow volume_create_manager",
        *tasks(
            "cinder-volume",
            "ExtractVolumeRefTask",
            "OnFailureRescheduleTask",
            "ExtractVolumeSpecTask",
            "NotifyVolumeActionTask",
            "CreateVolumeFromSpecTask",
            "CreateVolumeOnFinishTask",
        ),
    )
    scheduler_flow = node(
        "cinder-scheduler",
        "INTERNAL",
        "flow volume_create_scheduler",
        *tasks(
            "cinder-scheduler",
            "ExtractSchedulerSpecTask",
            "ScheduleCreateVolumeTask",
            under={
                "ScheduleCreateVolumeTask": [hop("cinder-scheduler", "cinder-volume", volume_flow)]
            },
        ),
    )
    api_flow = node(
        "cinder-api",
        "INTERNAL",
        "flow volume_create_api",
        *tasks(
            "cinder-api",
            "ExtractVolumeRequestTask",
            "QuotaReserveTask",
            "EntryCreateTask",
            "QuotaCommitTask",
            "VolumeCastTask",
            under={"VolumeCastTask": [hop("cinder-api", "cinder-scheduler", scheduler_flow)]},
        ),
    )
    post = node("cinder-api", "SERVER", f"POST /{project}/volumes", api_flow)
    expected = joined_trace(
        created,
        post,
        get_service="cinder-api",
        get_name=f"GET /{project}/volumes/{created.volume_id}",
    )
    actual: list[Any] = []

    def arrived() -> bool:
        spans = full.collector.spans()
        root = next(
            (
                s
                for s in spans
                if s["kind"] == 2 and s["attributes"].get("openstack.request_id") == request_id
            ),
            None,
        )
        if root is None:
            return False
        in_trace = [s for s in spans if s["trace_id"] == root["trace_id"]]
        actual[:] = tree(in_trace, root)
        return actual == expected

    with contextlib.suppress(TimeoutError):  # the comparison below shows what arrived
        poll(arrived, 20, f"the joined trace of {request_id}")
    assert actual == expected
