"""The eleven differences issue #10 found against real nova 34, each pinned (telemetry on).

Each test states nova's answer as the differential test measured it on real nova 34
(tests/test_differential.py); the server is voltrace in-process with the session's telemetry,
and every trace must still come out whole: telemetry never changes an answer.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import member_headers
from voltrace.cinder import CinderSettings
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry

PROJECT = "abc123"
HEADERS = member_headers(PROJECT)
GENERIC_500 = {
    "computeFault": {
        "code": 500,
        "message": (
            "The server has either erred or is incapable of performing the requested operation."
        ),
    }
}
VERSION_HEADERS = [
    ("OpenStack-API-Version", "compute 2.1"),
    ("X-OpenStack-Nova-API-Version", "2.1"),
    ("Vary", "OpenStack-API-Version"),
    ("Vary", "X-OpenStack-Nova-API-Version"),
]


def raw_exchange(url: str, request: bytes) -> tuple[bytes, bool]:
    """Send bytes as they are; return the answer and whether the server then closed."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            rest += sock.recv(65536)
        sock.settimeout(2)
        try:
            closed = sock.recv(1) == b""
        except (TimeoutError, ConnectionResetError):
            closed = False
        return head + b"\r\n\r\n" + rest, closed


def request_bytes(
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes = b"",
    extra_lines: tuple[str, ...] = (),
) -> bytes:
    lines = [
        f"{method} {target} HTTP/1.1",
        "Host: nova.test:8774",
        *(f"{k}: {v}" for k, v in headers.items()),
        *extra_lines,
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def version_header_pairs(response) -> list[tuple[str, str]]:
    names = {"openstack-api-version", "x-openstack-nova-api-version", "vary"}
    return [(k, v) for k, v in response.headers.items() if k.lower() in names]


def assert_traced(captured, response) -> None:
    """The answer's trace is complete: telemetry saw it through without failing."""
    captured.complete_trace(response.header("x-openstack-request-id"))


def test_first_schema_error_wins_not_best_match(nova, captured):
    """{size: -5, metadata: 1}: nova reports metadata, the first error jsonschema yields."""
    response = nova.create({"size": -5, "metadata": 1}, headers=HEADERS)
    assert response.status == 400
    assert response.json()["badRequest"]["message"] == (
        "Invalid input for field/attribute metadata. Value: 1. 1 is not of type 'object'"
    )
    assert_traced(captured, response)


@pytest.mark.parametrize("literal, shown", [("1e400", "inf"), ("-Infinity", "-inf")])
def test_infinite_size_is_a_type_error_400(nova, captured, literal, shown):
    """size = ±inf stops at `type` (400), never reaching int() in `minimum` (was a 500)."""
    body = f'{{"volume": {{"size": {literal}}}}}'.encode()
    response = nova.create(raw_body=body, headers=HEADERS)
    assert response.status == 400
    assert response.json()["badRequest"]["message"] == (
        f"Invalid input for field/attribute size. Value: {shown}. "
        f"{shown} is not of type 'integer', 'string'"
    )
    assert_traced(captured, response)


def test_json_too_deep_to_parse_is_faultwrappers_500_with_version_headers(nova, captured):
    """20,000 levels: json.loads' RecursionError escapes to FaultWrapper, as in nova."""
    response = nova.create(raw_body=b"[" * 20000 + b"]" * 20000, headers=HEADERS)
    assert response.status == 500
    assert response.json() == GENERIC_500
    assert version_header_pairs(response) == VERSION_HEADERS
    assert_traced(captured, response)


def test_deep_json_that_parses_gets_novas_answer_and_a_whole_trace(nova, captured):
    """500 levels under metadata reach Cinder (whose 400 nova relays); as the whole body,
    nova's schema 400 naming the list."""
    metadata = "[" * 500 + "]" * 500
    relayed = nova.create(
        raw_body=f'{{"volume": {{"size": 1, "metadata": {{"a": {metadata}}}}}}}'.encode(),
        headers=HEADERS,
    )
    assert relayed.status == 400
    assert relayed.json()["badRequest"]["message"].startswith("Invalid input received: ")
    assert [r.method for r in nova.sim.recorded] == ["POST"]
    assert_traced(captured, relayed)
    refused = nova.create(raw_body=b"[" * 500 + b"]" * 500, headers=HEADERS)
    assert refused.status == 400
    assert refused.json()["badRequest"]["message"].endswith("is not of type 'object'")
    assert_traced(captured, refused)


@pytest.mark.parametrize(
    "body",
    [
        b'{"volume": {"size": 1, "display_name": "\xff"}}',
        b"\xed\xa0\x80",
        b'{"volume": {"size": "caf\xe9"}}',
    ],
)
def test_body_that_is_not_utf8_is_faultwrappers_500(nova, captured, body):
    """nova logs the body as UTF-8 before parsing, outside every handler: a bare 500."""
    response = nova.create(raw_body=body, headers=HEADERS)
    assert response.status == 500
    assert response.json() == GENERIC_500
    assert version_header_pairs(response) == VERSION_HEADERS
    assert nova.sim.recorded == []
    assert_traced(captured, response)


def test_space_before_the_semicolon_is_an_unsupported_content_type(nova, captured):
    """webob splits 'application/json ; charset=utf-8' on ';' without stripping: 415."""
    headers = {**HEADERS, "Content-Type": "application/json ; charset=utf-8"}
    response = nova.create({"size": 1}, headers=headers)
    assert response.status == 415
    assert response.json() == {"badMediaType": {"code": 415, "message": "Unsupported Content-Type"}}
    assert nova.sim.recorded == []
    assert_traced(captured, response)


@pytest.mark.parametrize("project", ["ABC123", "p-member", "abc_123"])
def test_project_id_outside_novas_pattern_is_the_routers_404(nova, project):
    """ProjectMapper routes only [0-9a-f-]+ project ids; anything else matches no route."""
    response = nova.client().request(
        "POST", f"/v2.1/{project}/os-volumes", b'{"volume": {"size": 1}}', HEADERS
    )
    assert response.status == 404
    assert response.header("OpenStack-API-Version") is None  # the router, not a Resource
    assert nova.sim.recorded == []


@pytest.mark.parametrize(
    "target", ["/v2.1//os-volumes", "//v2.1/os-volumes", "/v2.1///abc123//os-volumes"]
)
def test_repeated_slashes_are_folded_and_routed(nova, target):
    """nova's URL map folds // before routing; Location shows the folded path."""
    answer, _ = raw_exchange(
        nova.url,
        request_bytes(
            "POST",
            target,
            {**HEADERS, "Content-Type": "application/json"},
            b'{"volume": {"size": 1}}',
        ),
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    location = next(line for line in answer.split(b"\r\n") if line.startswith(b"location:"))
    assert b"//os-volumes" not in location and b"/v2.1/" in location


def test_empty_user_id_is_no_user_401(nova):
    """nova's RequestContext drops a falsy user id: an empty X-User-Id is unauthenticated."""
    response = nova.create({"size": 1}, headers={**HEADERS, "X-User-Id": ""})
    assert response.status == 401


def test_empty_project_id_is_none_in_novas_messages(nova):
    """A falsy project id is dropped too, so the URL check compares against None."""
    response = nova.create(
        {"size": 1}, path=f"/v2.1/{PROJECT}/os-volumes", headers={**HEADERS, "X-Project-Id": ""}
    )
    assert response.status == 400
    assert response.json()["badRequest"]["message"] == (
        f"Malformed request URL: URL's project_id '{PROJECT}' doesn't match "
        "Context's project_id 'None'"
    )


def test_admin_without_a_token_is_novas_unauthorized_500(nova):
    """An admin context with no token would use [cinder]'s auth plugin; there is none."""
    response = nova.create({"size": 1}, headers={**HEADERS, "X-Roles": "admin", "X-Auth-Token": ""})
    assert response.status == 500
    assert response.json()["computeFault"]["message"].endswith(
        "<class 'cinderclient.exceptions.Unauthorized'>"
    )
    assert nova.sim.recorded == []


def test_forwarded_proto_is_ignored_by_default(nova):
    """oslo's enable_proxy_headers_parsing is False in nova: Location stays http."""
    response = nova.create({"size": 1}, headers={**HEADERS, "X-Forwarded-Proto": "https"})
    assert response.status == 200
    assert response.header("location").startswith("http://")


def test_forwarded_proto_is_honoured_when_enabled(start_nova):
    """With enable_proxy_headers_parsing=True (a trusted proxy in front) it is https."""
    nova = start_nova(enable_proxy_headers_parsing=True)
    response = nova.create({"size": 1}, headers={**HEADERS, "X-Forwarded-Proto": "https"})
    assert response.status == 200
    assert response.header("location").startswith("https://")


def test_duplicate_content_type_first_wins(nova):
    """Two Content-Type lines: the first decides, as in nova (here it is unsupported)."""
    answer, _ = raw_exchange(
        nova.url,
        request_bytes(
            "POST",
            "/v2.1/os-volumes",
            HEADERS,
            b'{"volume": {"size": 1}}',
            ("Content-Type: application/xml", "Content-Type: application/json"),
        ),
    )
    assert answer.startswith(b"HTTP/1.1 415 ")
    assert b"x-openstack-request-id: req-" in answer


def test_413_closes_and_says_so(nova):
    """The body is left unread, so the connection closes, and the answer says close."""
    answer, closed = raw_exchange(
        nova.url,
        request_bytes(
            "POST",
            "/v2.1/os-volumes",
            {**HEADERS, "Content-Type": "application/json"},
            b"x" * 120_000,
        ),
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer and b"keep-alive" not in answer.lower()
    assert closed


def test_root_version_document_is_novas(nova):
    """GET / answers nova's version list, without identity."""
    response = nova.client().request("GET", "/", None, {"Host": "nova.test:8774"})
    assert response.status == 200
    assert response.header("Content-Type") == "application/json"
    assert response.json() == {
        "versions": [
            {
                "id": "v2.0",
                "status": "DEPRECATED",
                "version": "",
                "min_version": "",
                "updated": "2025-07-04T12:00:00Z",
                "links": [{"rel": "self", "href": "http://nova.test:8774/v2/"}],
            },
            {
                "id": "v2.1",
                "status": "CURRENT",
                "version": "2.104",
                "min_version": "2.1",
                "updated": "2013-07-23T11:33:21Z",
                "links": [{"rel": "self", "href": "http://nova.test:8774/v2.1/"}],
            },
        ]
    }


@pytest.mark.parametrize("path", ["/v2.1", "/v2.1/"])
def test_v21_version_document_is_novas(nova, path):
    """GET /v2.1/ answers the v2.1 document with the microversion headers."""
    response = nova.client().request("GET", path, None, {"Host": "nova.test:8774"})
    assert response.status == 200
    assert version_header_pairs(response) == VERSION_HEADERS
    assert response.json() == {
        "version": {
            "id": "v2.1",
            "status": "CURRENT",
            "version": "2.104",
            "min_version": "2.1",
            "updated": "2013-07-23T11:33:21Z",
            "links": [
                {"rel": "self", "href": "http://nova.test:8774/v2.1/"},
                {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"},
            ],
            "media-types": [
                {
                    "base": "application/json",
                    "type": "application/vnd.openstack.compute+json;version=2.1",
                }
            ],
        }
    }


def test_version_document_refuses_an_unknown_microversion_like_nova(nova):
    """VersionsV2 is a Resource: compute 3.0 is its 406, echoing 3.0."""
    response = nova.client().request(
        "GET", "/v2.1/", None, {"OpenStack-API-Version": "compute 3.0"}
    )
    assert response.status == 406
    assert response.header("OpenStack-API-Version") == "compute 3.0"


@pytest.fixture
def plain_nova(sim) -> EmbeddedServer:
    """voltrace without any telemetry, to compare with the traced one."""
    config = ServeConfig(
        cinder=CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
    )
    with EmbeddedServer(build_service(config, None)) as server:
        yield server


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 20000 + b"]" * 20000,
        b'{"volume": {"size": "\\ud800"}}',
        b'{"volume": {"size": 1e400}}',
        b"\xff",
    ],
)
def test_telemetry_never_changes_an_answer(nova, plain_nova, body, telemetry: Telemetry):
    """The same hostile body, traced and untraced: byte-identical status and body."""
    from voltrace.client import NovaClient

    traced = nova.create(raw_body=body, headers=HEADERS)
    plain = NovaClient(plain_nova.url).create_volume(raw_body=body, headers=HEADERS)
    assert (traced.status, traced.body) == (plain.status, plain.body)
    assert json.loads(traced.body)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> str:
    """`voltrace serve` (gunicorn) as a real process, in front of a simulator."""
    from tests.support.real_cinder import VoltraceServe
    from voltrace.cinder_sim import CinderSimulator

    workdir = tmp_path_factory.mktemp("serve-nova-exact")
    with CinderSimulator(deterministic=True) as sim:
        serve = VoltraceServe(
            workdir, sim.endpoint_template, {"OTEL_TRACES_EXPORTER": "none"}, "--log-level", "off"
        )
        try:
            yield serve.wait_until_serving().url
        finally:
            serve.stop()


def test_serve_takes_the_first_content_type(served):
    """gunicorn refuses a repeated Content-Type (RFC 9110); voltrace serve takes the first."""
    answer, _ = raw_exchange(
        served,
        request_bytes(
            "POST",
            "/v2.1/os-volumes",
            HEADERS,
            b'{"volume": {"size": 1}}',
            ("Content-Type: application/xml", "Content-Type: application/json"),
        ),
    )
    assert answer.startswith(b"HTTP/1.1 415 ")
    assert b"x-openstack-request-id: req-" in answer


def test_serve_413_says_close(served):
    """gunicorn closes after a 413 (body unread); its header says so."""
    answer, closed = raw_exchange(
        served,
        request_bytes(
            "POST",
            "/v2.1/os-volumes",
            {**HEADERS, "Content-Type": "application/json"},
            b"x" * 120_000,
        ),
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer and closed


def test_serve_ignores_forwarded_proto(served):
    """gunicorn no longer trusts X-Forwarded-Proto from 127.0.0.1; nova trusts no proxy."""
    answer, _ = raw_exchange(
        served,
        request_bytes(
            "POST",
            "/v2.1/os-volumes",
            {**HEADERS, "Content-Type": "application/json", "X-Forwarded-Proto": "https"},
            b'{"volume": {"size": 1}}',
        ),
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"location: http://nova.test:8774/" in answer


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 900 + b"]" * 900,  # a schema error whose jsonschema str() would recurse too deep
        b"[" * 20000 + b"]" * 20000,
        b'{"volume": {"size": "\\ud800"}}',
        b"\xff",
    ],
)
def test_telemetry_records_hostile_bodies_without_failing(nova, captured, body):
    """No observer error at all: the fault's cause prints as nova's own message."""
    from voltrace.pipeline import OBSERVER_ERRORS

    before = OBSERVER_ERRORS.count
    response = nova.create(raw_body=body, headers=HEADERS)
    assert_traced(captured, response)
    assert OBSERVER_ERRORS.count == before
