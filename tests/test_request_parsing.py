"""What happens before the schema: body limit, identity, Content-Type, JSON (spec §1 steps 0-3)."""

from __future__ import annotations

import pytest

from tests.conftest import member_headers

# Real cinder-api (and so the simulator) routes only hex project ids.
PROJECT = "abc123"


def test_body_over_114688_bytes_is_413_from_sizelimit(nova):
    """oslo.middleware's sizelimit answers before auth, with its own (webob) body."""
    body = b'{"volume": {"size": 1, "display_name": "' + b"x" * 114688 + b'"}}'
    response = nova.create(raw_body=body, headers=member_headers(PROJECT))
    assert response.status == 413
    assert b"Request is too large. Larger than max_request_body_size (%s)." in response.body
    assert response.header("x-openstack-request-id").startswith("req-")
    assert nova.sim.recorded == []


def test_body_of_exactly_114688_bytes_passes_the_limit(nova):
    """The limit is inclusive: a body of exactly the maximum goes on to Cinder."""
    prefix = b'{"volume": {"size": 1, "display_name": "'
    suffix = b'"}}'
    body = prefix + b"x" * (114688 - len(prefix) - len(suffix)) + suffix
    assert len(body) == 114688
    response = nova.create(raw_body=body, headers=member_headers(PROJECT))
    # Nova sets no length limit on display_name; Cinder's own 255-character check answers.
    assert response.status == 400
    assert "more than 255" in response.json()["badRequest"]["message"]
    assert [r.method for r in nova.sim.recorded] == ["POST"]


def test_no_user_is_401_webob_body(nova):
    """Without X-User-Id the keystone context answers a plain webob 401, not a Nova fault."""
    headers = member_headers(PROJECT)
    del headers["X-User-Id"]
    response = nova.create({"size": 1}, headers=headers)
    assert response.status == 401
    assert response.json()["title"] == "Unauthorized"
    assert "unauthorized" not in response.json()


@pytest.mark.parametrize("content_type", ["application/xml", "text/html", "application/jsonx"])
def test_unsupported_content_type_is_415(nova, content_type):
    """Only JSON content types are accepted."""
    headers = {**member_headers(PROJECT), "Content-Type": content_type}
    response = nova.create({"size": 1}, headers=headers)
    assert response.status == 415
    assert response.json() == {"badMediaType": {"code": 415, "message": "Unsupported Content-Type"}}
    assert response.header("Content-Type") == "application/json; charset=UTF-8"


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "",
        "application/vnd.openstack.compute+json",
        "application/json; charset=utf-8",
    ],
)
def test_accepted_content_types(nova, content_type):
    """text/plain and an empty value count as none; the compute+json type is JSON."""
    headers = {**member_headers(PROJECT), "Content-Type": content_type}
    assert nova.create({"size": 1}, headers=headers).status == 200


def test_missing_content_type_is_accepted(nova):
    """No Content-Type header at all is fine."""
    client = nova.client()
    response = client.request(
        "POST", "/v2.1/os-volumes", b'{"volume": {"size": 1}}', member_headers(PROJECT)
    )
    assert response.status == 200


@pytest.mark.parametrize(
    "body", [b"{bad", b'{"volume": ', b"nul\x00", b'\xef\xbb\xbf{"volume": {"size": 1}}']
)
def test_malformed_json_is_400(nova, body):
    """UTF-8 that is not JSON (a BOM included) is a malformed request body."""
    response = nova.create(raw_body=body, headers=member_headers(PROJECT))
    assert response.status == 400
    assert response.json() == {"badRequest": {"code": 400, "message": "Malformed request body"}}


def test_empty_body_reaches_the_schema_as_none(nova):
    """Content-Length 0 means no body: the schema reports None is not an object."""
    response = nova.create(raw_body=b"", headers=member_headers(PROJECT))
    assert response.status == 400
    assert response.json()["badRequest"]["message"] == "None is not of type 'object'"


def test_content_type_is_checked_before_the_body(nova):
    """A bad Content-Type wins over a malformed body."""
    headers = {**member_headers(PROJECT), "Content-Type": "application/xml"}
    assert nova.create(raw_body=b"{bad", headers=headers).status == 415


def test_version_is_checked_before_content_type(nova):
    """The microversion is parsed first of all."""
    headers = {
        **member_headers(PROJECT),
        "Content-Type": "application/xml",
        "OpenStack-API-Version": "compute 9.9",
    }
    assert nova.create({"size": 1}, headers=headers).status == 406


def test_invalid_service_catalog_is_500_from_keystone_context(nova, captured):
    """Nova's keystone context refuses a catalog that is not JSON, before the pipeline."""
    headers = {**member_headers(PROJECT), "X-Service-Catalog": "{not json"}
    response = nova.create({"size": 1}, headers=headers)
    assert response.status == 500
    assert b"Invalid service catalog json." in response.body
    request_id = response.header("x-openstack-request-id")
    captured.complete_trace(request_id)
    server = captured.server_span(request_id)
    assert server.attributes["voltrace.failed_stage"] == "keystonecontext"
    assert server.attributes["voltrace.failure_class"] == "invalid_service_catalog"
