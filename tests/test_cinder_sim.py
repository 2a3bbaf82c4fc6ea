"""Tests for voltrace.cinder_sim: real HTTP on 127.0.0.1, real python-cinderclient."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from cinderclient import client as cinder_client
from cinderclient import exceptions as cinder_exc
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import plugin, session
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.support.polling import poll
from voltrace.cinder_sim import (
    ROUTES,
    CinderSimulator,
    Fault,
    add_cli_arguments,
)
from voltrace.cinder_sim.backends import BackendSettings

TOKEN = "gAAAAA-user-token-from-nova"
GLOBAL_ID = "req-0b7d3c52-6f0e-4c8a-9b7e-2a1d4e5f6a7b"
REQUEST_ID_RE = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
# cinder 29 legacy_detail at microversion 3.0, in order (cinder/api/v3/views/volumes.py).
VOLUME_KEYS = [
    "id", "status", "size", "availability_zone", "created_at", "updated_at", "name",
    "description", "volume_type", "snapshot_id", "source_volid", "metadata", "links",
    "user_id", "bootable", "encrypted", "replication_status", "consistencygroup_id",
    "multiattach", "attachments",
]  # fmt: skip
SNAPSHOT_KEYS = [
    "id", "created_at", "updated_at", "name", "description", "volume_id", "status", "size",
    "metadata",
]  # fmt: skip


class _TokenAuth(plugin.BaseAuthPlugin):
    """Like nova's _ContextAuthPlugin: hands out the user's token, no catalog."""

    def get_token(self, session: Any, **kwargs: Any) -> str:
        return TOKEN


# ---- fixtures --------------------------------------------------------------------------


# Scheduling and creating in a few milliseconds: these tests are about the API.
FAST = BackendSettings(scheduling_s=0.005, volume_create_s=0.005)


@pytest.fixture
def sim() -> Iterator[CinderSimulator]:
    with CinderSimulator(port=0, backend=FAST) as simulator:
        yield simulator


@pytest.fixture
def project() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced_sim(exporter: InMemorySpanExporter) -> Iterator[CinderSimulator]:
    provider = TracerProvider(resource=Resource.create({"service.name": "cinder-api"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with CinderSimulator(port=0, tracer_provider=provider) as simulator:
        yield simulator
    provider.shutdown()


def make_client(sim: CinderSimulator, project: str) -> Any:
    """A cinderclient built the way nova.volume.cinder.cinderclient builds it."""
    return cinder_client.Client(
        "3.0",
        session=session.Session(),
        auth=_TokenAuth(),
        endpoint_override=sim.endpoint_template % {"project_id": project},
        connect_retries=0,
        global_request_id=GLOBAL_ID,
    )


def nova_body(**overrides: Any) -> dict[str, Any]:
    """The 11-key body nova sends for POST /volumes."""
    volume = {
        "size": 1,
        "consistencygroup_id": None,
        "snapshot_id": None,
        "name": None,
        "description": None,
        "volume_type": None,
        "availability_zone": None,
        "metadata": {},
        "imageRef": None,
        "source_volid": None,
        "backup_id": None,
    }
    volume.update(overrides)
    return {"volume": volume}


def post_volume(sim: CinderSimulator, project: str, body: Any, **kwargs: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"X-Auth-Token": TOKEN, "Content-Type": "application/json"}
    headers.update(kwargs.pop("headers", {}))
    return requests.post(
        f"{sim.url}/v3/{project}/volumes", data=data, headers=headers, timeout=5, **kwargs
    )


def get(sim: CinderSimulator, path: str, **headers: str) -> Any:
    return requests.get(sim.url + path, headers={"X-Auth-Token": TOKEN, **headers}, timeout=5)


# ---- volume create ---------------------------------------------------------------------


def test_create_answers_cinder_29_volume_shape(sim: CinderSimulator, project: str) -> None:
    """POST /volumes answers 202 with cinder 29's 3.0 detail view, keys in cinder's order."""
    resp = post_volume(sim, project, nova_body(size=2, name="vol-a", description="d"))
    assert resp.status_code == 202
    volume = resp.json()["volume"]
    assert list(volume) == VOLUME_KEYS
    assert volume["status"] == "creating"
    assert volume["size"] == 2
    assert volume["availability_zone"] == "nova"
    assert TIMESTAMP_RE.match(volume["created_at"])
    assert volume["updated_at"] is None
    assert (volume["name"], volume["description"]) == ("vol-a", "d")
    assert volume["volume_type"] == "__DEFAULT__"
    assert volume["bootable"] == "false"
    assert volume["encrypted"] is False and volume["multiattach"] is False
    assert volume["replication_status"] == "disabled"
    assert volume["attachments"] == [] and volume["metadata"] == {}
    assert volume["links"] == [
        {"rel": "self", "href": f"{sim.url}/v3/{project}/volumes/{volume['id']}"},
        {"rel": "bookmark", "href": f"{sim.url}/{project}/volumes/{volume['id']}"},
    ]


def test_responses_carry_cinder_headers(sim: CinderSimulator, project: str) -> None:
    """Both request-id headers (same req-<uuid>), the version header and Content-Length."""
    resp = post_volume(sim, project, nova_body())
    request_id = resp.headers["x-openstack-request-id"]
    assert REQUEST_ID_RE.match(request_id)
    assert resp.headers["x-compute-request-id"] == request_id
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["OpenStack-API-Version"] == "volume 3.0"
    assert resp.headers["Vary"] == "OpenStack-API-Version"
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    assert TOKEN not in str(resp.headers) and TOKEN not in resp.text


def test_cinderclient_create_then_lazy_get(sim: CinderSimulator, project: str) -> None:
    """Like nova, hasattr() on a missing attribute makes cinderclient GET the volume."""
    volume = make_client(sim, project).volumes.create(1, name="lazy")
    assert volume.status == "creating"
    assert not hasattr(volume, "volume_image_metadata")
    assert [(r.method, r.path) for r in sim.recorded] == [
        ("POST", f"/v3/{project}/volumes"),
        ("GET", f"/v3/{project}/volumes/{volume.id}"),
    ]
    assert getattr(volume, "os-vol-tenant-attr:tenant_id") == project
    # cinder-scheduler and cinder-volume finish after the 202 (the simulator's are fast).
    poll(
        lambda: make_client(sim, project).volumes.get(volume.id).status == "available",
        timeout=5,
        what="the volume becomes available",
    )


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (0, "Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1"),
        ("0", "Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1"),
        ("#$%", "Invalid input for field/attribute size. Value: #$%. '#$%' does not match "
                "'^[0-9]+$'"),
        ("", "Invalid input for field/attribute size. Value: . '' does not match '^[0-9]+$'"),
        (1.5, "Invalid input for field/attribute size. Value: 1.5. 1.5 is not of type "
              "'integer', 'string', 'null'"),
        (None, "Invalid input received: Volume size 'None' must be an integer and greater "
               "than 0"),
    ],
)  # fmt: skip
def test_size_validation(sim: CinderSimulator, project: str, size: Any, message: str) -> None:
    """Bad sizes get cinder's schema or API messages as a 400 badRequest."""
    resp = post_volume(sim, project, nova_body(size=size))
    assert resp.status_code == 400
    assert resp.json() == {"badRequest": {"code": 400, "message": message}}


def test_digit_string_size_is_accepted(sim: CinderSimulator, project: str) -> None:
    """A size given as a digit string is stored and shown as an integer."""
    resp = post_volume(sim, project, nova_body(size="3"))
    assert resp.status_code == 202
    assert resp.json()["volume"]["size"] == 3


@pytest.mark.parametrize(
    ("body", "status", "fault"),
    [
        (b"{not json", 400, {"badRequest": {"code": 400, "message": "Malformed request body"}}),
        ({"size": 1}, 400, {"badRequest": {
            "code": 400, "message": "'volume' is a required property"}}),
        (b"", 500, {"computeFault": {"code": 500, "message": "The server has either erred or "
                                     "is incapable of performing the requested operation."}}),
    ],
)  # fmt: skip
def test_body_errors(
    sim: CinderSimulator, project: str, body: Any, status: int, fault: dict[str, Any]
) -> None:
    """Malformed JSON and a missing 'volume' are 400s; an empty body is cinder 29's 500."""
    resp = post_volume(sim, project, body)
    assert resp.status_code == status
    assert resp.json() == fault


def test_unknown_availability_zone(sim: CinderSimulator, project: str) -> None:
    """An unknown AZ is cinder's InvalidAvailabilityZone 400."""
    with pytest.raises(cinder_exc.BadRequest) as caught:
        make_client(sim, project).volumes.create(1, availability_zone="mars")
    assert caught.value.message == "Availability zone 'mars' is invalid."


def test_unknown_volume_type_is_not_found(sim: CinderSimulator, project: str) -> None:
    """An unknown type name is a 404 that cinderclient raises as NotFound."""
    with pytest.raises(cinder_exc.NotFound) as caught:
        make_client(sim, project).volumes.create(1, volume_type="gold")
    assert caught.value.code == 404
    assert caught.value.message == "Volume type with name gold could not be found."
    assert REQUEST_ID_RE.match(caught.value.request_id)


def test_known_volume_type_is_shown_by_name(sim: CinderSimulator, project: str) -> None:
    """A configured type is accepted and echoed by name."""
    volume = make_client(sim, project).volumes.create(1, volume_type="lvmdriver-1")
    assert volume.volume_type == "lvmdriver-1"


def test_volume_quota_is_overlimit_with_retry_after(sim: CinderSimulator, project: str) -> None:
    """Going over the volumes quota is 413 overLimit with Retry-After: 0."""
    client = make_client(sim, project)
    client.quotas.update(project, volumes=1)
    client.volumes.create(1)
    with pytest.raises(cinder_exc.OverLimit) as caught:
        client.volumes.create(1)
    message = (
        "VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota 'volumes'."
    )
    assert caught.value.message == message
    assert caught.value.retry_after == 0
    resp = post_volume(sim, project, nova_body())
    assert resp.status_code == 413
    assert resp.headers["Retry-After"] == "0"
    assert resp.json() == {"overLimit": {"code": 413, "message": message, "retryAfter": "0"}}


def test_gigabytes_quota_message(sim: CinderSimulator, project: str) -> None:
    """Going over the gigabytes quota uses VolumeSizeExceedsAvailableQuota's text."""
    client = make_client(sim, project)
    client.quotas.update(project, gigabytes=5)
    client.volumes.create(2)
    with pytest.raises(cinder_exc.OverLimit) as caught:
        client.volumes.create(4)
    assert caught.value.message == (
        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed "
        "gigabytes quota. Requested 4G, quota is 5G and 2G has been consumed."
    )


def test_quota_holds_under_concurrent_creates(sim: CinderSimulator, project: str) -> None:
    """Concurrent creates never overshoot the volumes quota."""
    make_client(sim, project).quotas.update(project, volumes=5)
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(
            pool.map(lambda _: post_volume(sim, project, nova_body()).status_code, range(20))
        )
    assert sorted(statuses) == [202] * 5 + [413] * 15


# ---- snapshots -------------------------------------------------------------------------


def test_snapshot_get_shape(sim: CinderSimulator, project: str) -> None:
    """GET /snapshots/{id} shows cinder's snapshot view plus the extended attributes."""
    snap = sim.add_snapshot(project, size=3, name="snap")
    resp = get(sim, f"/v3/{project}/snapshots/{snap['id']}")
    body = resp.json()["snapshot"]
    assert list(body) == [
        *SNAPSHOT_KEYS,
        "os-extended-snapshot-attributes:project_id",
        "os-extended-snapshot-attributes:progress",
    ]
    assert body == snap
    assert (body["status"], body["size"], body["name"]) == ("available", 3, "snap")
    assert body["os-extended-snapshot-attributes:progress"] == "100%"
    via_client = make_client(sim, project).volume_snapshots.get(snap["id"])
    assert via_client.volume_id == snap["volume_id"]


def test_snapshot_get_unknown_is_404(sim: CinderSimulator, project: str) -> None:
    """An unknown snapshot id (or another project's) is itemNotFound."""
    missing = str(uuid.uuid4())
    with pytest.raises(cinder_exc.NotFound) as caught:
        make_client(sim, project).volume_snapshots.get(missing)
    assert caught.value.message == f"Snapshot {missing} could not be found."
    other = sim.add_snapshot("someone-else")
    resp = get(sim, f"/v3/{project}/snapshots/{other['id']}")
    assert resp.json() == {
        "itemNotFound": {"code": 404, "message": f"Snapshot {other['id']} could not be found."}
    }


def test_create_from_snapshot(sim: CinderSimulator, project: str) -> None:
    """A snapshot-based create inherits the snapshot's size; a smaller size is a 400."""
    snap = sim.add_snapshot(project, size=3)
    resp = post_volume(sim, project, nova_body(size=None, snapshot_id=snap["id"]))
    assert resp.status_code == 202
    assert (resp.json()["volume"]["size"], resp.json()["volume"]["snapshot_id"]) == (3, snap["id"])
    resp = post_volume(sim, project, nova_body(size=2, snapshot_id=snap["id"]))
    assert resp.json()["badRequest"]["message"] == (
        "Invalid input received: Volume size '2'GB cannot be smaller than the snapshot size "
        "3GB. They must be >= original snapshot size."
    )
    missing = str(uuid.uuid4())
    resp = post_volume(sim, project, nova_body(snapshot_id=missing))
    assert resp.status_code == 404
    assert resp.json()["itemNotFound"]["message"] == f"Snapshot {missing} could not be found."


def test_create_snapshot_through_api(sim: CinderSimulator, project: str) -> None:
    """POST /snapshots answers 202 'creating'; the stored snapshot is then available."""
    client = make_client(sim, project)
    volume = client.volumes.create(2)
    poll(
        lambda: client.volumes.get(volume.id).status == "available",
        timeout=5,
        what="the volume becomes available",
    )
    snap = client.volume_snapshots.create(volume.id, force=False, name="s1")
    assert (snap.status, snap.size, snap.volume_id, snap.name) == ("creating", 2, volume.id, "s1")
    assert list(snap._info) == SNAPSHOT_KEYS
    shown = client.volume_snapshots.get(snap.id)
    assert shown.status == "available"
    assert getattr(shown, "os-extended-snapshot-attributes:progress") == "100%"


# ---- quota sets ------------------------------------------------------------------------


def test_quota_set_api(sim: CinderSimulator, project: str) -> None:
    """Quota sets: cinder's key order, update without 'id', usage=true, bad keys."""
    defaults = get(sim, f"/v3/{project}/os-quota-sets/{project}/defaults").json()["quota_set"]
    assert list(defaults) == [
        "volumes",
        "per_volume_gigabytes",
        "snapshots",
        "gigabytes",
        "backups",
        "backup_gigabytes",
        "volumes___DEFAULT__",
        "gigabytes___DEFAULT__",
        "snapshots___DEFAULT__",
        "volumes_lvmdriver-1",
        "gigabytes_lvmdriver-1",
        "snapshots_lvmdriver-1",
        "groups",
        "id",
    ]
    assert (defaults["volumes"], defaults["gigabytes"], defaults["snapshots"]) == (10, 1000, 10)
    assert get(sim, f"/v3/{project}/os-quota-sets/defaults").json()["quota_set"]["id"] == (
        "defaults"
    )
    url = f"{sim.url}/v3/{project}/os-quota-sets/{project}"
    headers = {"X-Auth-Token": TOKEN}
    updated = requests.put(
        url, json={"quota_set": {"volumes": 3, "gigabytes": "50"}}, headers=headers, timeout=5
    ).json()["quota_set"]
    assert "id" not in updated and (updated["volumes"], updated["gigabytes"]) == (3, 50)
    post_volume(sim, project, nova_body(size=4))
    usage = get(sim, f"/v3/{project}/os-quota-sets/{project}?usage=true").json()["quota_set"]
    assert usage["volumes"] == {"limit": 3, "in_use": 1, "reserved": 0}
    assert usage["gigabytes"] == {"limit": 50, "in_use": 4, "reserved": 0}
    assert usage["id"] == project
    bad = requests.put(url, json={"quota_set": {"cats": 1}}, headers=headers, timeout=5)
    assert bad.json()["badRequest"]["message"] == (
        "Invalid input received: Bad key(s) in quota set: cats"
    )
    below = requests.put(url, json={"quota_set": {"gigabytes": 1}}, headers=headers, timeout=5)
    assert below.json()["badRequest"]["message"] == (
        "Quota gigabytes limit must be equal or greater than existing resources. Current "
        "usage is 4 and the requested limit is 1."
    )


# ---- routing, auth, versions -----------------------------------------------------------


def test_versions_documents(sim: CinderSimulator) -> None:
    """GET / is a 300 without a token; GET /v3/ needs one; both list v3.0 up to 3.71."""
    root = requests.get(sim.url + "/", timeout=5)
    assert root.status_code == 300
    assert root.json() == {
        "versions": [
            {
                "id": "v3.0",
                "status": "CURRENT",
                "version": "3.71",
                "min_version": "3.0",
                "updated": "2023-08-31T00:00:00Z",
                "links": [
                    {
                        "rel": "describedby",
                        "type": "text/html",
                        "href": "https://docs.openstack.org/",
                    },
                    {"rel": "self", "href": f"{sim.url}/v3/"},
                ],
                "media-types": [
                    {
                        "base": "application/json",
                        "type": "application/vnd.openstack.volume+json;version=3",
                    }
                ],
            }
        ]
    }
    assert requests.get(sim.url + "/v3/", timeout=5).status_code == 401
    assert get(sim, "/v3/").json() == root.json()


def test_missing_token_is_keystonemiddleware_401(sim: CinderSimulator, project: str) -> None:
    """Without X-Auth-Token the answer is keystonemiddleware's 401, not cinder's."""
    resp = post_volume(sim, project, nova_body(), headers={"X-Auth-Token": ""})
    assert resp.status_code == 401
    assert resp.json() == {
        "error": {
            "code": 401,
            "title": "Unauthorized",
            "message": "The request you have made requires authentication.",
        }
    }
    assert resp.headers["WWW-Authenticate"].startswith("Keystone uri=")
    assert "x-compute-request-id" not in resp.headers


def test_unknown_route_and_wrong_method(sim: CinderSimulator, project: str) -> None:
    """An unknown path is 404; a known path with the wrong method is 405."""
    missing = get(sim, f"/v3/{project}/backups")
    assert missing.status_code == 404
    assert missing.json()["itemNotFound"]["code"] == 404
    wrong = requests.delete(
        f"{sim.url}/v3/{project}/volumes/x", headers={"X-Auth-Token": TOKEN}, timeout=5
    )
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "GET"
    assert wrong.json()["badMethod"]["code"] == 405


def test_unknown_volume_get_is_404(sim: CinderSimulator, project: str) -> None:
    """GET of an unknown volume is cinder's VolumeNotFound text."""
    resp = get(sim, f"/v3/{project}/volumes/nope")
    message = "Volume nope could not be found."
    assert resp.json() == {"itemNotFound": {"code": 404, "message": message}}


# ---- determinism and recording ---------------------------------------------------------


def test_deterministic_mode_repeats_ids_and_times() -> None:
    """Two deterministic runs give identical volume ids, request ids and timestamps."""
    runs = []
    for _ in range(2):
        with CinderSimulator(deterministic=True) as simulator:
            answers = [post_volume(simulator, "0a" * 16, nova_body()) for _ in range(2)]
            runs.append(
                [
                    (
                        a.json()["volume"]["id"],
                        a.json()["volume"]["created_at"],
                        a.headers["x-openstack-request-id"],
                    )
                    for a in answers
                ]
            )
    assert runs[0] == runs[1]
    assert runs[0][0][1] == "2026-11-27T08:00:00.000000"
    assert runs[0][0][0] != runs[0][1][0]
    assert REQUEST_ID_RE.match(runs[0][0][2])


def test_recorded_requests_are_exact(sim: CinderSimulator, project: str) -> None:
    """recorded keeps nova's exact headers and its 11-key body."""
    make_client(sim, project).volumes.create(1, name="n", metadata={"k": "v"})
    post = sim.recorded[0]
    assert post.json() == nova_body(name="n", metadata={"k": "v"})
    assert post.headers["X-Auth-Token"] == TOKEN
    assert post.headers["X-OpenStack-Request-ID"] == GLOBAL_ID
    assert post.headers["User-Agent"] == "python-cinderclient"
    assert post.headers["Content-Type"] == "application/json"
    assert "OpenStack-API-Version" not in post.headers
    sim.clear_recorded()
    assert sim.recorded == []


# ---- faults ----------------------------------------------------------------------------


def test_fault_parse_forms() -> None:
    """Fault.parse understands the CLI forms and rejects nonsense."""
    assert Fault.parse("volumes.create:status=500") == Fault("volumes.create", status=500)
    assert Fault.parse("volumes.create:latency_ms=300").latency_ms == 300
    assert Fault.parse("snapshots.get:action=reset,times=2") == Fault(
        "snapshots.get", action="reset", times=2
    )
    parsed = Fault.parse("volumes.create:status=413,headers.Retry-After=0")
    assert parsed.headers == {"Retry-After": "0"}
    assert Fault.parse('volumes.get:status=500,body={"x":1}').body == {"x": 1}
    for bad in (
        "volumes.create",
        "nope:status=500",
        "volumes.create:action=explode",
        "volumes.create:colour=red",
        "volumes.create:times=0",
    ):
        with pytest.raises(ValueError):
            Fault.parse(bad)
    assert set(ROUTES) >= {"volumes.create", "snapshots.get"}


def test_fault_forced_status(sim: CinderSimulator, project: str) -> None:
    """A forced 500 answers computeFault without creating anything."""
    sim.inject(Fault("volumes.create", status=500))
    with pytest.raises(cinder_exc.ClientException) as caught:
        make_client(sim, project).volumes.create(1)
    assert caught.value.code == 500
    assert caught.value.message == (
        "The server has either erred or is incapable of performing the requested operation."
    )
    usage = get(sim, f"/v3/{project}/os-quota-sets/{project}?usage=true").json()
    assert usage["quota_set"]["volumes"]["in_use"] == 0


def test_fault_forced_413_with_headers_and_body(sim: CinderSimulator, project: str) -> None:
    """A forced 413 carries the given Retry-After; a given body is sent verbatim."""
    sim.inject(Fault("volumes.create", status=413, headers={"Retry-After": "0"}, times=1))
    with pytest.raises(cinder_exc.OverLimit) as caught:
        make_client(sim, project).volumes.create(1)
    assert caught.value.retry_after == 0
    sim.inject(Fault("volumes.create", status=503, body={"oops": {"message": "down"}}))
    resp = post_volume(sim, project, nova_body())
    assert (resp.status_code, resp.json()) == (503, {"oops": {"message": "down"}})


def test_fault_latency(sim: CinderSimulator, project: str) -> None:
    """latency_ms delays the answer; the request then succeeds normally."""
    sim.inject(Fault("volumes.create", latency_ms=150))
    started = time.perf_counter()
    resp = post_volume(sim, project, nova_body())
    assert time.perf_counter() - started >= 0.15
    assert resp.status_code == 202


def test_fault_drop(sim: CinderSimulator, project: str) -> None:
    """drop closes the connection unanswered: a ConnectFailure for keystoneauth."""
    sim.inject(Fault("volumes.create", action="drop"))
    with pytest.raises((ks_exc.ConnectFailure, cinder_exc.ConnectionError)):
        make_client(sim, project).volumes.create(1)


def test_fault_reset_sends_rst(sim: CinderSimulator, project: str) -> None:
    """reset aborts the TCP connection (RST), which a raw socket sees as a reset."""
    sim.inject(Fault("snapshots.get", action="reset"))
    with socket.create_connection((sim.host, sim.port), timeout=5) as conn:
        conn.sendall(
            f"GET /v3/{project}/snapshots/x HTTP/1.1\r\nHost: sim\r\n"
            f"X-Auth-Token: {TOKEN}\r\n\r\n".encode()
        )
        with pytest.raises(ConnectionResetError):
            conn.recv(1024)
    with pytest.raises((ks_exc.ConnectFailure, cinder_exc.ConnectionError)):
        make_client(sim, project).volume_snapshots.get(str(uuid.uuid4()))


def test_fault_garbage(sim: CinderSimulator, project: str) -> None:
    """garbage answers the success status with a body that is not JSON."""
    sim.inject(Fault("volumes.create", action="garbage"))
    resp = post_volume(sim, project, nova_body())
    assert resp.status_code == 202
    with pytest.raises(ValueError):
        resp.json()


def test_fault_truncated(sim: CinderSimulator, project: str) -> None:
    """truncated keeps the status but cuts the JSON in half (Content-Length matches)."""
    sim.inject(Fault("volumes.create", action="truncated"))
    resp = post_volume(sim, project, nova_body())
    assert resp.status_code == 202
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    assert resp.content.startswith(b'{"volume": {"id": ')
    with pytest.raises(ValueError):
        resp.json()


def test_fault_times_counts_down(sim: CinderSimulator, project: str) -> None:
    """times=N applies to the next N matching requests only, then the fault is gone."""
    sim.inject(Fault("volumes.create", status=503, times=2))
    statuses = [post_volume(sim, project, nova_body()).status_code for _ in range(3)]
    assert statuses == [503, 503, 202]
    assert sim.faults == []


# ---- admin endpoints and lifecycle -----------------------------------------------------


def test_admin_endpoints(sim: CinderSimulator, project: str) -> None:
    """/__sim__/ scripts faults, lists recorded requests and resets, without being recorded."""
    admin = sim.url + "/__sim__"
    listed = requests.post(
        f"{admin}/faults", json={"route": "volumes.get", "status": 500}, timeout=5
    ).json()
    assert listed[0]["route"] == "volumes.get" and listed[0]["status"] == 500
    spec = requests.post(f"{admin}/faults", json={"spec": "versions:latency_ms=1"}, timeout=5)
    assert len(spec.json()) == 2
    assert requests.post(f"{admin}/faults", json={"route": "x"}, timeout=5).status_code == 400
    assert requests.delete(f"{admin}/faults", timeout=5).json() == []

    post_volume(sim, project, nova_body(name="seen"))
    recorded = requests.get(f"{admin}/requests", timeout=5).json()
    assert len(recorded) == 1
    assert recorded[0]["method"] == "POST"
    assert json.loads(recorded[0]["body"])["volume"]["name"] == "seen"
    volume_id = post_volume(sim, project, nova_body()).json()["volume"]["id"]
    assert requests.post(f"{admin}/reset", timeout=5).status_code == 204
    assert sim.recorded == []
    gone = get(sim, f"/v3/{project}/volumes/{volume_id}")
    assert gone.status_code == 404


def test_stop_is_idempotent_and_closes_keepalive(project: str) -> None:
    """stop() can be called twice (or before start) and ends idle keep-alive connections."""
    CinderSimulator().stop()
    simulator = CinderSimulator().start()
    with requests.Session() as http:
        assert http.get(simulator.url + "/", timeout=5).status_code == 300
        simulator.stop()
        simulator.stop()
        with pytest.raises(requests.ConnectionError):
            http.get(simulator.url + "/", timeout=5)


def test_keepalive_requests_do_not_stall(sim: CinderSimulator, project: str) -> None:
    """Keep-alive requests answer in about a millisecond (no 40 ms delayed-ACK stall)."""
    with requests.Session() as http:
        http.headers["X-Auth-Token"] = TOKEN
        quota_url = f"{sim.url}/v3/{project}/os-quota-sets/{project}"
        http.put(quota_url, json={"quota_set": {"volumes": -1}}, timeout=5)  # opens it
        url = f"{sim.url}/v3/{project}/volumes"
        started = time.perf_counter()
        for _ in range(20):
            assert http.post(url, json=nova_body(), timeout=5).status_code == 202
        assert time.perf_counter() - started < 0.4


def test_serve_forever_blocks_until_stop() -> None:
    """serve_forever() serves in the calling thread until stop() is called elsewhere."""
    simulator = CinderSimulator()
    thread = threading.Thread(target=simulator.serve_forever, daemon=True)
    thread.start()
    assert requests.get(simulator.url + "/", timeout=5).status_code == 300
    simulator.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_cli_serves_until_sigterm() -> None:
    """The CLI prints its URL, serves, and exits 0 on SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(
        [
            "--port",
            "0",
            "--fault",
            "volumes.get:status=500",
            "--availability-zone",
            "az1",
            "--volume-type",
            "gold",
        ]
    )
    assert (args.port, args.fault[0].status, args.availability_zones) == (0, 500, ["az1"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--fault", "bogus"])

    proc = subprocess.Popen(
        [sys.executable, "-m", "voltrace.cinder_sim", "--port", "0", "--deterministic"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("cinder-sim listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert requests.get(url + "/", timeout=5).status_code == 300
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- tracing ---------------------------------------------------------------------------


def _traceparent() -> tuple[str, int, int]:
    trace_id, span_id = uuid.uuid4().int >> 1, uuid.uuid4().int >> 65
    return f"00-{trace_id:032x}-{span_id:016x}-01", trace_id, span_id


def _spans_by_name(exporter: InMemorySpanExporter) -> dict[str, Any]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_server_span_continues_callers_trace(
    traced_sim: CinderSimulator, exporter: InMemorySpanExporter, project: str
) -> None:
    """The SERVER span joins the caller's W3C trace; step spans are its children."""
    traceparent, trace_id, parent_id = _traceparent()
    # The suite instruments `requests` for nova-api; keep it from replacing our traceparent.
    with suppress_http_instrumentation():
        post_volume(
            traced_sim,
            project,
            nova_body(size=2),
            headers={
                "traceparent": traceparent,
                "X-OpenStack-Request-ID": GLOBAL_ID,
                "User-Agent": "python-cinderclient",
            },
        )
    spans = _spans_by_name(exporter)
    assert set(spans) == {"POST /v3/{project_id}/volumes", "validate", "check_quota", "persist"}
    server = spans["POST /v3/{project_id}/volumes"]
    assert server.kind is SpanKind.SERVER
    assert server.context.trace_id == trace_id
    assert server.parent.span_id == parent_id and server.parent.is_remote
    assert server.resource.attributes["service.name"] == "cinder-api"
    assert server.instrumentation_scope.name == "voltrace.cinder_sim"
    attrs = server.attributes
    assert attrs["http.request.method"] == "POST"
    assert attrs["url.path"] == f"/v3/{project}/volumes"
    assert attrs["http.route"] == "/v3/{project_id}/volumes"
    assert attrs["http.response.status_code"] == 202
    assert (attrs["server.address"], attrs["server.port"]) == ("127.0.0.1", traced_sim.port)
    assert attrs["user_agent.original"] == "python-cinderclient"
    assert attrs["openstack.global_request_id"] == GLOBAL_ID
    assert REQUEST_ID_RE.match(attrs["cinder.request_id"])
    assert server.status.status_code is StatusCode.UNSET
    for name in ("validate", "check_quota", "persist"):
        assert spans[name].parent.span_id == server.context.span_id
        assert spans[name].kind is SpanKind.INTERNAL
    assert spans["validate"].attributes["cinder.volume.size"] == 2
    assert spans["persist"].attributes["cinder.volume_id"]
    assert TOKEN not in json.dumps([dict(s.attributes) for s in exporter.get_finished_spans()])


def test_failed_step_span_is_error_but_4xx_server_span_is_not(
    traced_sim: CinderSimulator, exporter: InMemorySpanExporter, project: str
) -> None:
    """A quota failure marks check_quota ERROR with the exception; 413 leaves SERVER unset."""
    requests.put(
        f"{traced_sim.url}/v3/{project}/os-quota-sets/{project}",
        json={"quota_set": {"gigabytes": 1}},
        headers={"X-Auth-Token": TOKEN},
        timeout=5,
    )
    exporter.clear()
    assert post_volume(traced_sim, project, nova_body(size=2)).status_code == 413
    spans = _spans_by_name(exporter)
    check = spans["check_quota"]
    assert check.status.status_code is StatusCode.ERROR
    assert check.attributes["cinder.quota.resource"] == "gigabytes"
    assert check.events[0].name == "exception"
    assert check.events[0].attributes["exception.type"] == "VolumeSizeExceedsAvailableQuota"
    assert "persist" not in spans
    assert spans["POST /v3/{project_id}/volumes"].status.status_code is StatusCode.UNSET


def test_fault_spans(
    traced_sim: CinderSimulator, exporter: InMemorySpanExporter, project: str
) -> None:
    """Injected latency gets its own span; a forced 500 and a drop make SERVER ERROR."""
    traced_sim.inject(Fault("volumes.get", latency_ms=20, status=500, times=1))
    assert get(traced_sim, f"/v3/{project}/volumes/x").status_code == 500
    spans = _spans_by_name(exporter)
    server = spans["GET /v3/{project_id}/volumes/{volume_id}"]
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes["cinder_sim.fault"] == "volumes.get:status=500,latency_ms=20,times=1"
    assert spans["injected_latency"].parent.span_id == server.context.span_id
    assert spans["injected_latency"].end_time - spans["injected_latency"].start_time >= 20e6

    exporter.clear()
    traced_sim.inject(Fault("snapshots.get", action="drop", times=1))
    with pytest.raises(requests.ConnectionError):
        get(traced_sim, f"/v3/{project}/snapshots/x")
    (dropped,) = exporter.get_finished_spans()
    assert dropped.name == "GET /v3/{project_id}/snapshots/{snapshot_id}"
    assert dropped.status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in dropped.attributes


def test_snapshot_lookup_span(
    traced_sim: CinderSimulator, exporter: InMemorySpanExporter, project: str
) -> None:
    """A GET has a lookup child span; a 404 marks the lookup ERROR only."""
    missing = str(uuid.uuid4())
    assert get(traced_sim, f"/v3/{project}/snapshots/{missing}").status_code == 404
    spans = _spans_by_name(exporter)
    lookup = spans["lookup"]
    assert lookup.attributes["cinder.snapshot_id"] == missing
    assert lookup.status.status_code is StatusCode.ERROR
    server = spans["GET /v3/{project_id}/snapshots/{snapshot_id}"]
    assert server.attributes["http.response.status_code"] == 404
    assert server.status.status_code is StatusCode.UNSET
