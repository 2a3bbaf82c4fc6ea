"""voltrace in front of a real cinder-api 29.0.0: Nova's answers and voltrace's trace (issue 6).

cinder-api runs from its own venv on 127.0.0.1 (noauth, sqlite; no volume
service, so volumes stay ``creating``). Expected Nova answers come from
nova-spec.md §4-§6 applied to what this Cinder really answers; Cinder's own
messages are pinned as Cinder 29 words them.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tests.conftest import NOVA_VOLUME_KEYS, require
from tests.support.net import free_port
from tests.support.polling import poll
from tests.support.real_cinder import DevTool, create, running_cinder
from voltrace.cinder import CinderSettings
from voltrace.client import Response
from voltrace.devtools import cinder_stack, processes
from voltrace.devtools.cinder_admin import CinderEndpoint
from voltrace.devtools.real_cinder import RealCinder
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry
from voltrace.testing import Captured

REQUEST_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STAGES = ["parse", "authorize", "resolve_snapshot", "derive_size", "call_cinder", "translate"]


@pytest.fixture(scope="module")
def cinder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCinder]:
    """One real cinder-api for the whole module (profiler off, as most clouds run it)."""
    with running_cinder(tmp_path_factory.mktemp("real-cinder")) as running:
        yield running


@pytest.fixture(scope="module")
def nova_url(cinder: RealCinder, telemetry: Telemetry) -> Iterator[str]:
    """voltrace with Nova's defaults ([cinder] http_retries 3, no timeout) in front of it."""
    config = ServeConfig(cinder=CinderSettings(endpoint_template=cinder.endpoint_template))
    with EmbeddedServer(build_service(config, telemetry)) as server:
        yield server.url


@pytest.fixture
def project() -> str:
    """A fresh Cinder project (own quota usage) per test."""
    return uuid.uuid4().hex


# -- helpers -----------------------------------------------------------------------------


def nova_view(volume: dict) -> dict:
    """nova-spec §4: Nova's volume view of a Cinder volume without attachments."""
    return {
        "id": volume["id"],
        "status": volume["status"],
        "size": volume["size"],
        "availabilityZone": volume["availability_zone"],
        "createdAt": volume["created_at"],
        "attachments": [{}],
        "displayName": volume["name"],
        "displayDescription": volume["description"],
        "volumeType": volume["volume_type"],
        "snapshotId": volume["snapshot_id"],
        "metadata": volume["metadata"] or {},
    }


def server_span(captured: Captured, response: Response) -> ReadableSpan:
    """nova-api's SERVER span of this response, once it has ended.

    There is no in-process cinder SERVER span, so ``complete_trace`` does not apply.
    """
    request_id = response.header("x-openstack-request-id")

    def ended(c: Captured) -> ReadableSpan | None:
        try:
            return c.server_span(request_id)
        except LookupError:
            return None

    return captured.wait_for(ended)


def stage_calls(captured: Captured, server: ReadableSpan) -> list[tuple[str, str, list]]:
    """``(stage, status, [(CLIENT span name, Cinder status, path), ...])`` in order."""
    result = []
    for stage in captured.children(captured.pipeline_span(server)):
        calls = []
        for child in captured.children(stage):
            assert child.kind is SpanKind.CLIENT, child.name
            assert captured.children(child) == []  # Cinder's side is another process
            attrs = child.attributes or {}
            calls.append(
                (
                    child.name,
                    attrs.get("http.response.status_code"),
                    urlsplit(str(attrs["url.full"])).path,
                )
            )
        result.append((stage.name, stage.status.status_code.name, calls))
    return result


def stage_span(captured: Captured, server: ReadableSpan, name: str) -> ReadableSpan:
    return next(s for s in captured.children(captured.pipeline_span(server)) if s.name == name)


def assert_outcome(
    server: ReadableSpan, status: int, outcome: str, stage: str = "none", failure: str = "none"
) -> None:
    attrs = server.attributes or {}
    assert (
        attrs["http.response.status_code"],
        attrs["voltrace.outcome"],
        attrs["voltrace.failed_stage"],
        attrs["voltrace.failure_class"],
    ) == (status, outcome, stage, failure)


def assert_failed_stage(
    captured: Captured, server: ReadableSpan, name: str, failure: str
) -> ReadableSpan:
    span = stage_span(captured, server, name)
    assert span.status.status_code.name == "ERROR"
    assert (span.attributes or {})["error.type"] == failure
    assert [e.name for e in span.events] == ["exception"]
    return span


def fault(response: Response) -> tuple[int, str, int, str]:
    ((name, body),) = response.json().items()
    return response.status, name, body["code"], body["message"]


def cinder_request_id(captured: Captured, server: ReadableSpan, stage: str) -> str:
    """The x-openstack-request-id of the last Cinder answer in ``stage`` (a real req-uuid)."""
    request_id = str((stage_span(captured, server, stage).attributes or {})["cinder.request_id"])
    assert REQUEST_ID.match(request_id)
    return request_id


# -- success -----------------------------------------------------------------------------


def test_plain_create_is_novas_view_of_the_real_volume(nova_url, cinder, project, captured):
    """200 with Nova's 11 keys in order, built from the volume Cinder really stored."""
    response = create(nova_url, project, {"size": 1})
    assert response.status == 200, response.body
    body = response.json()["volume"]
    assert list(body) == NOVA_VOLUME_KEYS
    stored = cinder.get_volume(project, body["id"])
    assert body == nova_view(stored)
    assert (
        body["status"],
        body["size"],
        body["availabilityZone"],
        body["volumeType"],
        body["attachments"],
        body["metadata"],
    ) == ("creating", 1, "nova", "__DEFAULT__", [{}], {})
    assert isinstance(body["createdAt"], str) and isinstance(body["size"], int)
    assert response.header("Location") == f"{nova_url}/v2.1/os-volumes/{body['id']}"
    assert response.header("Content-Type") == "application/json"
    request_id = response.header("x-openstack-request-id")
    assert REQUEST_ID.match(request_id) and response.header("x-compute-request-id") == request_id

    server = server_span(captured, response)
    assert stage_calls(captured, server) == [
        ("parse", "UNSET", []),
        ("authorize", "UNSET", []),
        ("resolve_snapshot", "UNSET", []),
        ("derive_size", "UNSET", []),
        (
            "call_cinder",
            "UNSET",
            [
                ("POST", 202, f"/v3/{project}/volumes"),
                ("GET", 200, f"/v3/{project}/volumes/{body['id']}"),
            ],
        ),
        ("translate", "UNSET", []),
    ]
    assert_outcome(server, 200, "success")
    attrs = server.attributes or {}
    assert attrs["voltrace.volume.id"] == body["id"]
    # Cinder's own request id: the one cinder-api logged for that GET, not one voltrace made up.
    cinder_id = cinder_request_id(captured, server, "call_cinder")
    assert attrs["cinder.request_id"] == cinder_id and cinder_id != request_id
    # ... logged under voltrace's request id as the global request id.
    assert re.search(rf"\[{request_id} {cinder_id} ", cinder.log_path.read_text())


def test_name_description_metadata_zone_and_type_reach_cinder(nova_url, cinder, project, captured):
    """Every optional field is stored by Cinder and comes back in Nova's view."""
    volume_type = cinder.create_volume_type(f"gold-{uuid.uuid4().hex[:8]}")
    response = create(
        nova_url,
        project,
        {
            "size": "2",
            "display_name": "data",
            "display_description": "for the db",
            "metadata": {"tier": "gold", "owner": "ops"},
            "availability_zone": "nova",
            "volume_type": volume_type["name"],
        },
    )
    assert response.status == 200, response.body
    body = response.json()["volume"]
    stored = cinder.get_volume(project, body["id"])
    assert (
        stored["name"],
        stored["description"],
        stored["metadata"],
        stored["volume_type"],
        stored["size"],
    ) == ("data", "for the db", {"tier": "gold", "owner": "ops"}, volume_type["name"], 2)
    assert body == nova_view(stored)
    assert list(body) == NOVA_VOLUME_KEYS

    server = server_span(captured, response)
    assert_outcome(server, 200, "success")
    calls = {name: c for name, _, c in stage_calls(captured, server)}
    assert [(m, s) for m, s, _ in calls["call_cinder"]] == [("POST", 202), ("GET", 200)]
    attrs = stage_span(captured, server, "derive_size").attributes or {}
    assert (attrs["voltrace.size.source"], attrs["voltrace.size.value"]) == ("request", "'2'")


def test_create_from_a_real_snapshot(nova_url, cinder, project, captured):
    """GET snapshot 200, then POST with its id: the new volume names the snapshot."""
    snapshot = cinder.available_snapshot(project, size=2)
    response = create(nova_url, project, {"size": 2, "snapshot_id": snapshot["id"]})
    assert response.status == 200, response.body
    body = response.json()["volume"]
    assert (body["snapshotId"], body["size"]) == (snapshot["id"], 2)
    assert body == nova_view(cinder.get_volume(project, body["id"]))

    server = server_span(captured, response)
    assert_outcome(server, 200, "success")
    assert [(name, calls) for name, _, calls in stage_calls(captured, server)][2:5] == [
        ("resolve_snapshot", [("GET", 200, f"/v3/{project}/snapshots/{snapshot['id']}")]),
        ("derive_size", []),
        (
            "call_cinder",
            [
                ("POST", 202, f"/v3/{project}/volumes"),
                ("GET", 200, f"/v3/{project}/volumes/{body['id']}"),
            ],
        ),
    ]
    attrs = stage_span(captured, server, "resolve_snapshot").attributes or {}
    assert (attrs["voltrace.snapshot.id"], attrs["voltrace.snapshot.volume_size"]) == (
        snapshot["id"],
        2,
    )


# -- Cinder says no ------------------------------------------------------------------------

CINDER_400 = [
    pytest.param(
        {"size": 1.0},
        "Invalid input for field/attribute size. Value: 1.0. "
        "1.0 is not of type 'integer', 'string', 'null'",
        id="float-size",
    ),
    pytest.param(
        {"size": "01"},
        "Invalid input received: Invalid volume size provided for "
        "create request: 01 (size argument must be an integer (or string "
        "representation of an integer) and greater than zero).",
        id="zero-padded-size",
    ),
    pytest.param(
        {"size": 1, "display_name": "n" * 256},
        "Invalid input received: name has 256 characters, more than 255.",
        id="name-too-long",
    ),
    pytest.param(
        {"size": 1, "availability_zone": "bogus"},
        "Availability zone 'bogus' is invalid.",
        id="unknown-zone",
    ),
    pytest.param(
        {"size": 1, "metadata": {"k": 1}},
        "Invalid input for field/attribute k. Value: 1. 1 is not of type 'string'",
        id="metadata-not-string",
    ),
]


@pytest.mark.parametrize(("volume", "cinder_message"), CINDER_400)
def test_cinder_validation_error_is_a_400(
    nova_url, cinder, project, captured, volume, cinder_message
):
    """Nova's schema lets it through, Cinder answers 400: Invalid input received + suffix."""
    response = create(nova_url, project, volume)
    server = server_span(captured, response)
    cinder_id = cinder_request_id(captured, server, "call_cinder")
    assert fault(response) == (
        400,
        "badRequest",
        400,
        f"Invalid input received: {cinder_message} (HTTP 400) (Request-ID: {cinder_id})",
    )
    assert stage_calls(captured, server)[4:] == [
        ("call_cinder", "ERROR", [("POST", 400, f"/v3/{project}/volumes")])
    ]
    assert_failed_stage(captured, server, "call_cinder", "cinder_bad_request")
    assert_outcome(server, 400, "client_error", "call_cinder", "cinder_bad_request")


def test_volume_smaller_than_its_snapshot_is_a_400(nova_url, cinder, project, captured):
    """The snapshot exists (GET 200) but Cinder refuses a smaller volume: 400 from call_cinder."""
    snapshot = cinder.available_snapshot(project, size=2)
    response = create(nova_url, project, {"size": 1, "snapshot_id": snapshot["id"]})
    server = server_span(captured, response)
    cinder_id = cinder_request_id(captured, server, "call_cinder")
    assert fault(response) == (
        400,
        "badRequest",
        400,
        "Invalid input received: Invalid input received: Volume size '1'GB cannot be smaller "
        "than the snapshot size 2GB. They must be >= original snapshot size. "
        f"(HTTP 400) (Request-ID: {cinder_id})",
    )
    assert [(n, s, [c[:2] for c in calls]) for n, s, calls in stage_calls(captured, server)][
        2:
    ] == [
        ("resolve_snapshot", "UNSET", [("GET", 200)]),
        ("derive_size", "UNSET", []),
        ("call_cinder", "ERROR", [("POST", 400)]),
    ]
    assert_outcome(server, 400, "client_error", "call_cinder", "cinder_bad_request")


@pytest.mark.parametrize(
    ("quota", "size", "cinder_message"),
    [
        pytest.param(
            {"volumes": 1},
            1,
            "VolumeLimitExceeded: Maximum number of volumes allowed "
            "(1) exceeded for quota 'volumes'.",
            id="volumes",
        ),
        pytest.param(
            {"gigabytes": 1},
            2,
            "VolumeSizeExceedsAvailableQuota: Requested volume or "
            "snapshot exceeds allowed gigabytes quota. Requested 2G, quota is 1G and 0G "
            "has been consumed.",
            id="gigabytes",
        ),
    ],
)
def test_over_quota_is_a_403_with_cinders_message(
    nova_url, cinder, project, captured, quota, size, cinder_message
):
    """A quota set through Cinder's quota API: Cinder 413 becomes 403, Cinder's words only."""
    cinder.set_quota(project, **quota)
    if "volumes" in quota:
        assert create(nova_url, project, {"size": size}).status == 200  # uses the one volume
    response = create(nova_url, project, {"size": size})
    assert fault(response) == (403, "forbidden", 403, cinder_message)
    server = server_span(captured, response)
    assert stage_calls(captured, server)[4:] == [
        ("call_cinder", "ERROR", [("POST", 413, f"/v3/{project}/volumes")])
    ]
    span = assert_failed_stage(captured, server, "call_cinder", "over_quota")
    assert span.events[0].attributes["exception.type"] == "nova.exception.OverQuota"
    assert_outcome(server, 403, "client_error", "call_cinder", "over_quota")


def test_missing_snapshot_is_a_404_in_novas_words(nova_url, project, captured):
    """Cinder's GET snapshot 404 becomes Nova's 'Snapshot X could not be found.'; no POST."""
    snapshot_id = str(uuid.uuid4())
    response = create(nova_url, project, {"size": 1, "snapshot_id": snapshot_id})
    assert fault(response) == (
        404,
        "itemNotFound",
        404,
        f"Snapshot {snapshot_id} could not be found.",
    )
    server = server_span(captured, response)
    assert stage_calls(captured, server) == [
        ("parse", "UNSET", []),
        ("authorize", "UNSET", []),
        ("resolve_snapshot", "ERROR", [("GET", 404, f"/v3/{project}/snapshots/{snapshot_id}")]),
    ]
    assert_failed_stage(captured, server, "resolve_snapshot", "snapshot_not_found")
    assert_outcome(server, 404, "client_error", "resolve_snapshot", "snapshot_not_found")


def test_unknown_volume_type_is_a_500(nova_url, project, captured):
    """Cinder's 404 for the type is not caught by Nova's controller: 500 nova NotFound."""
    response = create(nova_url, project, {"size": 1, "volume_type": "no-such-type"})
    assert fault(response) == (
        500,
        "computeFault",
        500,
        "Unexpected API Error. Please contact the administrator\n<class 'nova.exception.NotFound'>",
    )
    server = server_span(captured, response)
    assert stage_calls(captured, server)[4:] == [
        ("call_cinder", "ERROR", [("POST", 404, f"/v3/{project}/volumes")])
    ]
    span = assert_failed_stage(captured, server, "call_cinder", "cinder_not_found")
    assert span.events[0].attributes["exception.message"] == (
        "Volume type with name no-such-type could not be found."
    )
    assert_outcome(server, 500, "server_error", "call_cinder", "cinder_not_found")
    assert server.status.status_code.name == "ERROR"
    assert captured.pipeline_span(server).status.status_code.name == "ERROR"


# -- the dev tool's command line -----------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("full", [False, True], ids=["api-only", "full"])
def test_run_on_a_busy_port_fails_clearly(tmp_path, busy_port, full):
    """`run` never claims to serve on a port another process holds: one line, exit 1."""
    tool = DevTool(tmp_path, "run", "--port", str(busy_port), *(["--full"] if full else []))
    assert tool.finish() == 1
    assert tool.output().splitlines()[-1] == (
        f"real_cinder: port {busy_port} on 127.0.0.1 is already in use; stop that process "
        "or choose another --port"
    )
    assert "Traceback" not in tool.output() and "cinder-api 29.0.0 on" not in tool.output()


def test_run_keeps_and_names_the_cinder_api_log(tmp_path):
    """`run` prints where cinder-api logs; after SIGTERM the log is still there to grep."""
    tool = DevTool(tmp_path, "run", "--port", str(free_port()), "--workdir", str(tmp_path / "work"))
    try:
        output = tool.wait_for_output("(kept after exit)")
    finally:
        assert tool.stop() == 0
    log = re.search(r"^log: (\S+) \(kept after exit\)$", output, re.MULTILINE)
    assert log is not None, output
    assert log.group(1) == str(tmp_path / "work" / "log" / "cinder-api.log")
    assert "GET /" in Path(log.group(1)).read_text()


def test_run_full_serves_a_complete_cinder_and_stops_everything_it_started(tmp_path):
    """`run --full`: a create becomes available; SIGTERM stops every process it started
    (services, their forks, beam and its helpers, epmd, postgres) and keeps the logs."""
    missing = cinder_stack.missing_prerequisites()
    require(not missing, "the complete Cinder needs " + "; ".join(missing))
    port = free_port()
    tool = DevTool(
        tmp_path, "run", "--full", "--port", str(port), "--workdir", str(tmp_path / "work")
    )
    try:
        tool.wait_for_output("(kept after exit)", timeout=180)
        started = [tool.process.pid, *processes.descendants(tool.process.pid)]
        names = {
            Path(f"/proc/{pid}/comm").read_text().strip() for pid in started if processes.alive(pid)
        }
        assert {"beam.smp", "epmd", "postgres", "erl_child_setup"} <= names, names
        admin = CinderEndpoint(port)
        project = uuid.uuid4().hex
        volume = admin.create_volume(project, size=1)
        poll(
            lambda: admin.get_volume(project, volume["id"])["status"] == "available",
            30,
            "the volume to become available",
        )
    finally:
        code = tool.stop()
    assert code == 0, tool.output()
    assert processes.wait_gone(started, timeout=10) == []
    assert (tmp_path / "work" / "cinder" / "log" / "cinder-volume.log").stat().st_size > 0
