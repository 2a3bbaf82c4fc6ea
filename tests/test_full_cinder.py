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

For every class, ``voltrace explain`` is asked three ways and must agree:

* from Cinder alone (``--cinder-url``, no trace, no log): the reference verdict;
* from the trace, the collector's spans of that create written as OTLP JSON lines: the
  same fate (outcome, service, failure, cause, attempts, host) and sentence. Where the
  trace cannot know (a scheduler rpc with nothing under it: no valid backend, or a frozen
  cinder-volume; "since when" a service is down) it says so, and trace + ``--cinder-url``
  gives Cinder's verdict;
* from voltrace serve's JSON logs: nova-api's lines end at its 200 and real Cinder logs
  oslo.log text, so the logs alone have no fate (asserted), and logs + ``--cinder-url``
  give Cinder's verdict.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
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
    write_trace,
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


def cinder_args(full: FullCinder, created: Created) -> list[str]:
    """``--cinder-url`` and the project's noauth token (admin: sees the volume's host)."""
    return ["--cinder-url", full.stack.endpoint_template, "--os-token", f"admin:{created.project}"]


def explain_json(capsys: Any, *argv: str) -> dict:
    """``voltrace explain ARGV --json``, in process; its one JSON object."""
    code = main(["explain", *argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "admin:" not in out + err  # the token is never printed
    lines = out.splitlines()
    assert len(lines) == 1, out
    return dict(json.loads(lines[0]))


def explained(full: FullCinder, created: Created, capsys: Any) -> dict:
    """``voltrace explain --cinder-url`` with the project's noauth token, from Cinder alone."""
    said = explain_json(
        capsys,
        *cinder_args(full, created),
        "--project-id",
        created.project,
        "--volume-id",
        created.volume_id,
    )
    # Cinder's own id for the POST, which its user messages carry.
    if said["after_answer"]["messages"]:
        assert said["after_answer"]["cinder_request_id"] == created.cinder_request_id
    return said


def from_files(capsys: Any, created: Created, *argv: str) -> dict:
    """``voltrace explain FILES --request-id <nova's id>``: Nova's 200 for this create."""
    said = explain_json(capsys, *argv, "--request-id", created.request_id)
    assert (said["request_id"], said["volume_id"]) == (created.request_id, created.volume_id)
    assert (said["outcome"], said["http_status"], said["project_id"]) == (
        "success",
        200,
        created.project,
    )
    return said


def from_trace(
    full: FullCinder, created: Created, spans: list[dict], tmp_path: Path, capsys: Any, *extra: str
) -> dict:
    """explain on the create's trace as the collector got it (nova-api's spans and real
    Cinder's OSProfiler spans), written as OTLP JSON lines."""
    path = write_trace(spans, tmp_path / f"trace-{created.request_id}-{len(spans)}.jsonl")
    said = from_files(capsys, created, str(path), *extra)
    assert said["source"] == "trace"
    return said


def from_logs(full: FullCinder, created: Created, capsys: Any, *extra: str) -> dict:
    """explain on voltrace serve's JSON logs (nova-api's lines only: real Cinder logs text)."""
    said = from_files(capsys, created, "--logs", str(full.log_file), *extra)
    assert said["source"] == "logs"
    return said


# What makes a verdict: where it settled and why (down_since/down_for_s move with the clock).
FATE = ("outcome", "failed_service", "failure", "cause", "attempts", "host")
_FOR_HOW_LONG = re.compile(r" \([0-9.]+ (s|min|h)\)")


def agrees(said: dict, cinder_said: dict) -> None:
    """A diagnosis from files says, after Nova's 200, the fate Cinder's API gives."""
    after, cinder = said["after_answer"], cinder_said["after_answer"]
    assert after is not None, said
    assert {k: after[k] for k in FATE} == {k: cinder[k] for k in FATE}
    if after["source"] != "cinder" and after["outcome"] == "stuck":
        return  # since when the service is down is in os-services only, not in a trace
    # The same sentence, but for "Nova answered 200; … then" (Cinder asked alone has no 200).
    verdict = after["verdict"].removeprefix("Nova answered 200; ")
    verdict = verdict.replace("the volume then ", "the volume ", 1)
    assert _FOR_HOW_LONG.sub("", verdict[0].upper() + verdict[1:]) == _FOR_HOW_LONG.sub(
        "", cinder_said["verdict"]
    )


def from_all_logs(full: FullCinder, created: Created, capsys: Any, *extra: str) -> dict:
    """explain on nova's JSON logs and Cinder's own (oslo.log text of all three services)."""
    services = ("cinder-api", "cinder-scheduler", "cinder-volume")
    cinder_logs = [str(full.stack.log_path(service)) for service in services]
    said = from_files(capsys, created, "--logs", str(full.log_file), *cinder_logs, *extra)
    assert said["source"] == "logs"
    assert said["after_answer"]["source"] == ("cinder" if extra else "logs")
    return said


def agrees_from_cinder_logs(
    full: FullCinder, created: Created, capsys: Any, cinder_said: dict, cause: str | None
) -> None:
    """Cinder's logs give the fate Cinder's API gives, and the cause its API cannot (the
    filter that left no backend, a service seen down). They never name the pool."""
    cinder = cinder_said["after_answer"]
    if cinder["outcome"] not in ("available", "error"):
        # Not settled: the logs cannot say why (the scheduler logs nothing when it places
        # a create), say so, and --cinder-url asks Cinder.
        unsettled = from_all_logs(full, created, capsys)
        assert unsettled["after_answer"]["certain"] is False
        agrees(from_all_logs(full, created, capsys, *cinder_args(full, created)), cinder_said)
        return
    # Cinder logs a create's last record just after it sets the volume's status.
    settled = poll(
        lambda: (said := from_all_logs(full, created, capsys))["after_answer"]["certain"] and said,
        20,
        f"Cinder's logs to settle {created.request_id}",
    )
    fate = settled["after_answer"]
    same = [k for k in FATE if k not in ("cause", "host")]
    assert {k: fate[k] for k in same} == {k: cinder[k] for k in same}
    assert fate["cause"] == (cause or cinder["cause"])
    assert fate["host"] is None
    assert fate["cinder_request_id"] == created.cinder_request_id


def assert_explains(
    full: FullCinder,
    created: Created,
    spans: list[dict],
    tmp_path: Path,
    capsys: Any,
    cinder_said: dict,
    *,
    trace_is_sure: bool = True,
    cause_in_logs: str | None = None,
) -> None:
    """explain from the trace and from the logs gives the verdict explain gets from Cinder.

    The trace alone settles it (``trace_is_sure``), or says it cannot (a scheduler ``rpc``
    with no cinder-volume span under it: OSProfiler hides the scheduler's result), and then
    ``--cinder-url`` asks Cinder. nova-api's logs alone never know the fate past the 200,
    so explain on them asks Cinder for it; with Cinder's own logs they know it, with the
    cause (``cause_in_logs``) Cinder's API does not give.
    """
    said = from_trace(full, created, spans, tmp_path, capsys)
    assert said["after_answer"]["certain"] is trace_is_sure
    if trace_is_sure:
        agrees(said, cinder_said)
    else:
        assert any("--cinder-url asks Cinder" in note for note in said["notes"]), said["notes"]
    asked = from_trace(full, created, spans, tmp_path, capsys, *cinder_args(full, created))
    agrees(asked, cinder_said)
    logs_alone = from_logs(full, created, capsys)
    assert logs_alone["after_answer"] is None  # nova's lines end at its 200
    agrees(from_logs(full, created, capsys, *cinder_args(full, created)), cinder_said)
    agrees_from_cinder_logs(full, created, capsys, cinder_said, cause_in_logs)


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


def traced(
    full: FullCinder, created: Created, until: Callable[[list[dict], dict], bool], what: str
) -> list[dict]:
    """The collector's spans of the create's trace once ``until(spans, nova_root)`` holds
    (or, at the timeout, what had arrived)."""
    found: list[dict] = []

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
        found[:] = [root, *(s for s in spans if s["trace_id"] == root["trace_id"] and s != root)]
        return until(found, root)

    with contextlib.suppress(TimeoutError):  # the caller's assertion shows what arrived
        poll(arrived, 20, f"{what} of {created.request_id}")
    return found


def has_span(service: str, name: str) -> Callable[[list[dict], dict], bool]:
    """``until`` for :func:`traced`: a span of ``service`` named ``name`` (or prefixed)."""
    return lambda spans, _root: any(
        s["resource"].get("service.name") == service and s["name"].startswith(name) for s in spans
    )


def assert_trace(full: FullCinder, created: Created, cinder_post: list) -> list[dict]:
    """The collector gets the whole joined tree (services export one span at a time);
    returns the trace's spans."""
    expected = joined_trace(created, cinder_post)
    spans = traced(
        full, created, lambda spans, root: tree(spans, root) == expected, "the joined trace"
    )
    assert spans, f"no trace of {created.request_id}"
    assert tree(spans, spans[0]) == expected
    assert created.response.json()["volume"]["status"] == "creating"  # Nova's 200 said so
    return spans


# -- the failure table, one test per class ---------------------------------------------------


def test_available(cinder, capsys, tmp_path):
    """creating → available on the fake pool; no messages; api → scheduler → volume → drive;
    explain from the trace, the logs and Cinder: available on the pool."""
    created = create_through_nova(cinder, {"size": 1})
    volume = follow(cinder.stack, created)
    assert (created.statuses, host(volume)) == (["creating", "available"], POOL)
    assert messages(cinder, created) == []
    assert cinder.stack.service_states() == {"cinder-scheduler": "up", "cinder-volume": "up"}
    spans = assert_trace(
        cinder, created, wsgi_post(created, scheduler_rpc(volume_rpc(driver_create())))
    )
    said = explained(cinder, created, capsys)
    assert said["verdict"] == f"The volume became available on {POOL}"
    assert_explains(cinder, created, spans, tmp_path, capsys, said)


@pytest.mark.parametrize("why", ["extra_spec", "capacity"])
def test_no_valid_backend(cinder, why, capsys, tmp_path):
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
    spans = assert_trace(cinder, created, wsgi_post(created, scheduler_rpc()))
    # The trace's guess (a scheduler rpc with nothing under it) is right, and says it guesses.
    assert_explains(
        cinder,
        created,
        spans,
        tmp_path,
        capsys,
        said,
        trace_is_sure=False,
        cause_in_logs="capabilities" if why == "extra_spec" else "capacity",
    )
    guessed = from_trace(cinder, created, spans, tmp_path, capsys)
    agrees(guessed, said)


def test_driver_failure_is_rescheduled_then_no_valid_backend(cinder, capsys, tmp_path):
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
    spans = assert_trace(cinder, created, wsgi_post(created, attempts))
    # Three failed volume rounds, the last cast back to a scheduler that placed it nowhere.
    assert_explains(cinder, created, spans, tmp_path, capsys, said)
    assert from_trace(cinder, created, spans, tmp_path, capsys)["after_answer"]["error_type"] == (
        BACKEND_ERROR
    )


def test_non_reschedulable_driver_failure(cinder, capsys, tmp_path):
    """MetadataUpdateFailure is in no_reschedule_types: error on the host, one 008_012."""
    created = create_through_nova(cinder, {"size": 1, "metadata": {"fault": "noresched"}})
    volume = follow(cinder.stack, created)
    assert (created.statuses, host(volume)) == (["creating", "error"], POOL)
    assert messages(cinder, created) == [message(DRIVER_FAILED, created)]
    said = explained(cinder, created, capsys)
    assert said["verdict"] == "The volume failed in cinder-volume: driver error, 1 attempt"
    assert said["host"] == POOL
    spans = assert_trace(
        cinder,
        created,
        wsgi_post(
            created,
            scheduler_rpc(
                volume_rpc(driver_create(error=NO_RESCHEDULE_ERROR), error=NO_RESCHEDULE_ERROR)
            ),
        ),
    )
    # The host comes from the volume manager's arguments, as OSProfiler recorded them.
    assert_explains(cinder, created, spans, tmp_path, capsys, said)
    assert from_trace(cinder, created, spans, tmp_path, capsys)["after_answer"]["error_type"] == (
        NO_RESCHEDULE_ERROR
    )


def test_scheduler_down_leaves_creating_until_it_returns(cinder, capsys, tmp_path):
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
        # The trace so far: cinder-api's POST and no scheduler span under it. It says stuck,
        # waiting on cinder-scheduler; only Cinder knows since when.
        spans = traced(cinder, created, has_span(API, "WSGI_POST_"), "cinder-api's POST")
        assert not has_span(SCHEDULER, "rpc")(spans, spans[0])
        alone = from_trace(cinder, created, spans, tmp_path, capsys)
        assert alone["after_answer"]["verdict"] == (
            "Nova answered 200; the volume is stuck creating (waiting on cinder-scheduler)"
        )
        assert_explains(cinder, created, spans, tmp_path, capsys, said)
    finally:
        stack.thaw("cinder-scheduler")
    volume = follow(stack, created)
    assert (created.statuses, host(volume)) == (["creating", "available"], POOL)
    assert messages(cinder, created) == []
    spans = assert_trace(
        cinder, created, wsgi_post(created, scheduler_rpc(volume_rpc(driver_create())))
    )
    said = explained(cinder, created, capsys)
    assert said["verdict"] == f"The volume became available on {POOL}"
    assert_explains(cinder, created, spans, tmp_path, capsys, said)


def test_volume_service_down_stuck_then_no_valid_backend(cinder, capsys, tmp_path):
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
        # The trace so far ends at the scheduler's rpc, as for no valid backend: the trace
        # alone cannot tell them apart, says so, and --cinder-url settles it.
        spans = traced(cinder, stuck, has_span(SCHEDULER, "rpc"), "the scheduler's rpc")
        assert not has_span(VOLUME, "rpc")(spans, spans[0])
        assert_explains(cinder, stuck, spans, tmp_path, capsys, said, trace_is_sure=False)

        after_down = create_through_nova(cinder, {"size": 1})
        volume = follow(stack, after_down)
        assert (after_down.statuses, host(volume)) == (["creating", "error"], None)
        assert messages(cinder, after_down) == [message(NO_VALID_BACKEND, after_down)]
        down_said = explained(cinder, after_down, capsys)
        assert down_said["verdict"] == "The volume failed in cinder-scheduler: no valid backend"
        assert stack.get_volume(stuck.project, stuck.volume_id)["status"] == "creating"
        assert stack.service_states() == {"cinder-scheduler": "up", "cinder-volume": "down"}
    finally:
        stack.thaw("cinder-volume")
    volume = follow(stack, stuck)
    assert (stuck.statuses, host(volume)) == (["creating", "available"], POOL)
    spans = assert_trace(cinder, after_down, wsgi_post(after_down, scheduler_rpc()))
    assert_explains(
        cinder,
        after_down,
        spans,
        tmp_path,
        capsys,
        down_said,
        trace_is_sure=False,
        cause_in_logs="volume_service_down",
    )
    agrees(from_trace(cinder, after_down, spans, tmp_path, capsys), down_said)
    spans = assert_trace(
        cinder, stuck, wsgi_post(stuck, scheduler_rpc(volume_rpc(driver_create())))
    )
    said = explained(cinder, stuck, capsys)
    assert said["verdict"] == f"The volume became available on {POOL}"
    assert_explains(cinder, stuck, spans, tmp_path, capsys, said)


def test_slow_backend_stays_creating_on_its_host_then_available(cinder, capsys, tmp_path):
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
    spans = assert_trace(
        cinder, created, wsgi_post(created, scheduler_rpc(volume_rpc(driver_create())))
    )
    said = explained(cinder, created, capsys)
    assert said["verdict"] == f"The volume became available on {POOL}"
    assert_explains(cinder, created, spans, tmp_path, capsys, said)


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
    with the services' log tails after it; every process of that stack is gone. Each of the
    three dies on the database; which is first depends on the machine's load."""
    workdir = full.base.workdir / full.base.free_vhosts[0]  # where the next stack lives
    with pytest.raises(RealCinderError) as failure:
        full.base.stack(database_url=full.base.pg.url("no_such_database"), startup_timeout=60)
    first, *rest = str(failure.value).splitlines()
    assert re.fullmatch(
        r"cinder-(api|scheduler|volume) exited 1 while starting \(waiting for .+\)", first
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
