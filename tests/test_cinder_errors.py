"""Every row of the spec's error tables (§6): Cinder's answer → what Nova's client sees."""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import member_headers, set_volume_quota
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import Fault

# Replaced, in expected messages, by the request id Cinder actually answered with.
CINDER_REQ = "{cinder_request_id}"


def unexpected(class_path: str) -> dict:
    return {
        "computeFault": {
            "code": 500,
            "message": (
                f"Unexpected API Error. Please contact the administrator\n<class '{class_path}'>"
            ),
        }
    }


def cinder_fault(status: int, name: str, message: str) -> Fault:
    """A Cinder error with a known request id, so Nova's message is predictable."""
    return Fault("volumes.create", status=status, body={name: {"code": status, "message": message}})


def traced_server_span(captured, response):
    request_id = response.header("x-openstack-request-id")
    captured.complete_trace(request_id)
    return captured.server_span(request_id)


def with_cinder_id(body: dict, server) -> dict:
    """Fill in the request id Cinder answered with (cinderclient quotes it in str(e))."""
    text = json.dumps(body).replace(CINDER_REQ, server.attributes["cinder.request_id"])
    return json.loads(text)


CREATE_ROWS = [
    # (fault, status, body, failure class)
    (
        cinder_fault(400, "badRequest", "Invalid size"),
        400,
        {
            "badRequest": {
                "code": 400,
                "message": "Invalid input received: Invalid size (HTTP 400) "
                f"(Request-ID: {CINDER_REQ})",
            }
        },
        "cinder_bad_request",
    ),
    (
        cinder_fault(403, "forbidden", "Policy says no"),
        403,
        {
            "forbidden": {
                "code": 403,
                "message": f"Policy says no (HTTP 403) (Request-ID: {CINDER_REQ})",
            }
        },
        "cinder_forbidden",
    ),
    (
        Fault(
            "volumes.create",
            status=413,
            headers={"Retry-After": "0"},
            body={
                "overLimit": {
                    "code": 413,
                    "message": "VolumeLimitExceeded: Maximum number of volumes allowed (1) "
                    "exceeded for quota 'volumes'.",
                    "retryAfter": "0",
                }
            },
        ),
        403,
        {
            "forbidden": {
                "code": 403,
                "message": "VolumeLimitExceeded: Maximum number of volumes "
                "allowed (1) exceeded for quota 'volumes'.",
            }
        },
        "over_quota",
    ),
    (
        Fault("volumes.create", status=413, body=""),
        403,
        {"forbidden": {"code": 403, "message": "Request Entity Too Large"}},
        "over_quota",
    ),
    (
        cinder_fault(404, "itemNotFound", "Volume type with name x could not be found."),
        500,
        unexpected("nova.exception.NotFound"),
        "cinder_not_found",
    ),
    (
        cinder_fault(401, "unauthorized", "no"),
        500,
        unexpected("cinderclient.exceptions.Unauthorized"),
        "cinder_unauthorized",
    ),
    (
        cinder_fault(406, "computeFault", "no"),
        500,
        unexpected("cinderclient.exceptions.NotAcceptable"),
        "cinder_server_error",
    ),
    (
        cinder_fault(501, "notImplemented", "no"),
        500,
        unexpected("cinderclient.exceptions.HTTPNotImplemented"),
        "cinder_server_error",
    ),
    (
        cinder_fault(500, "computeFault", "boom"),
        500,
        unexpected("cinderclient.exceptions.ClientException"),
        "cinder_server_error",
    ),
    (
        cinder_fault(503, "serviceUnavailable", "busy"),
        500,
        unexpected("cinderclient.exceptions.ClientException"),
        "cinder_server_error",
    ),
    (
        Fault("volumes.get", status=404),
        500,
        unexpected("nova.exception.NotFound"),
        "cinder_not_found",
    ),
]


@pytest.mark.parametrize(
    "fault, status, body, failure_class",
    CREATE_ROWS,
    ids=[f"{r[0].route}-{r[0].status}-{r[1]}" for r in CREATE_ROWS],
)
def test_create_error_translation(nova, captured, fault, status, body, failure_class):
    """Cinder's answer to POST volumes (or the lazy GET) becomes Nova's fault."""
    nova.sim.inject(fault)
    response = nova.create({"size": 1})
    server = traced_server_span(captured, response)
    assert (response.status, response.json()) == (status, with_cinder_id(body, server))
    assert response.header("Content-Type") == "application/json; charset=UTF-8"
    assert server.attributes["voltrace.failure_class"] == failure_class
    assert server.attributes["voltrace.failed_stage"] == "call_cinder"


def test_over_quota_from_real_quota_enforcement(nova):
    """A quota set through Cinder's API is enforced: 413 → 403 with Cinder's message."""
    nova.sim.reset()
    set_volume_quota(nova.sim, "a1ce0000000000000000000000000001", 1)
    assert nova.create({"size": 1}).status == 200
    response = nova.create({"size": 1})
    assert response.status == 403
    assert response.json()["forbidden"]["message"] == (
        "VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota 'volumes'."
    )


def test_unknown_volume_type_is_500(nova):
    """The simulator's own 404 for an unknown type becomes Nova's 500 NotFound."""
    response = nova.create({"size": 1, "volume_type": "gold"})
    assert (response.status, response.json()) == (500, unexpected("nova.exception.NotFound"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cinder_unreachable_is_500_after_retries(start_nova, captured):
    """Connection refused, retried connect_retries times, then CinderConnectionFailed."""
    endpoint = f"http://127.0.0.1:{_closed_port()}/v3/%(project_id)s"
    nova = start_nova(
        cinder=CinderSettings(endpoint_template=endpoint, http_retries=2, connect_retry_delay=0.01)
    )
    response = nova.create({"size": 1})
    assert (response.status, response.json()) == (
        500,
        unexpected("nova.exception.CinderConnectionFailed"),
    )
    spans = captured.complete_trace(response.header("x-openstack-request-id"))
    attempts = [s for s in spans if s.name == "POST"]
    assert len(attempts) == 3  # the first try and two retries, each a CLIENT span


SNAPSHOT_ROWS = [
    (
        Fault("snapshots.get", status=404),
        404,
        {"itemNotFound": {"code": 404, "message": "Snapshot snap-1 could not be found."}},
        "snapshot_not_found",
    ),
    (
        Fault("snapshots.get", status=403, body={"forbidden": {"code": 403, "message": "nope"}}),
        403,
        {"forbidden": {"code": 403, "message": f"nope (HTTP 403) (Request-ID: {CINDER_REQ})"}},
        "cinder_forbidden",
    ),
    (
        Fault("snapshots.get", status=400),
        500,
        unexpected("nova.exception.InvalidInput"),
        "cinder_bad_request",
    ),
    (
        Fault("snapshots.get", status=413),
        500,
        unexpected("cinderclient.exceptions.OverLimit"),
        "cinder_server_error",
    ),
    (
        Fault("snapshots.get", status=500),
        500,
        unexpected("cinderclient.exceptions.ClientException"),
        "cinder_server_error",
    ),
]


@pytest.mark.parametrize(
    "fault, status, body, failure_class",
    SNAPSHOT_ROWS,
    ids=[f"snapshot-{r[0].status}" for r in SNAPSHOT_ROWS],
)
def test_snapshot_error_translation(nova, captured, fault, status, body, failure_class):
    """Cinder's answer to GET snapshot becomes Nova's fault; no volume is created."""
    nova.sim.inject(fault)
    response = nova.create({"size": 1, "snapshot_id": "snap-1"})
    server = traced_server_span(captured, response)
    assert (response.status, response.json()) == (status, with_cinder_id(body, server))
    assert [r.method for r in nova.sim.recorded] == ["GET"]
    assert server.attributes["voltrace.failed_stage"] == "resolve_snapshot"
    assert server.attributes["voltrace.failure_class"] == failure_class


def test_garbage_json_from_cinder_is_500(nova):
    """An unreadable 202 body makes cinderclient fail the way it fails in Nova: a 500."""
    nova.sim.inject(Fault("volumes.create", action="garbage"))
    response = nova.create({"size": 1})
    assert response.status == 500
    assert "Unexpected API Error" in response.json()["computeFault"]["message"]


def test_catalog_endpoint_is_used_without_a_template(start_nova, sim):
    """With no endpoint_template, the volumev3 publicURL of X-Service-Catalog is used."""
    nova = start_nova(cinder=CinderSettings(endpoint_template=None, http_retries=0))
    catalog = [
        {
            "type": "volumev3",
            "name": "cinderv3",
            "endpoints": [
                {
                    "region": "RegionOne",
                    "publicURL": f"{sim.url}/v3/a1ce0000000000000000000000000001",
                    "internalURL": "http://internal.invalid/v3/a1ce0000000000000000000000000001",
                }
            ],
        }
    ]
    from voltrace.client import identity_headers

    headers = identity_headers(
        user_id="u",
        project_id="a1ce0000000000000000000000000001",
        roles="member",
        token="t",
        catalog=catalog,
    )
    response = nova.create({"size": 1}, headers=headers)
    assert response.status == 200
    assert sim.recorded[0].path == "/v3/a1ce0000000000000000000000000001/volumes"


def test_catalog_without_volumev3_is_500(start_nova):
    """No volumev3 entry: keystoneauth's EndpointNotFound, a 500."""
    nova = start_nova(cinder=CinderSettings(endpoint_template=None, http_retries=0))
    headers = {
        **member_headers(),
        "X-Service-Catalog": '[{"type": "image", "endpoints": [{"publicURL": "http://glance.invalid"}]}]',
    }
    response = nova.create({"size": 1}, headers=headers)
    assert (response.status, response.json()) == (
        500,
        unexpected("keystoneauth1.exceptions.catalog.EndpointNotFound"),
    )


def test_non_v3_endpoint_is_500(start_nova, sim):
    """An endpoint without a v3 segment: cinderclient's UnsupportedVersion, a 500."""
    nova = start_nova(cinder=CinderSettings(endpoint_template=f"{sim.url}/v2/%(project_id)s"))
    response = nova.create({"size": 1})
    assert (response.status, response.json()) == (
        500,
        unexpected("cinderclient.exceptions.UnsupportedVersion"),
    )
    assert sim.recorded == []
