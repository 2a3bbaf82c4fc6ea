"""Routing and microversion handling, as nova's wsgi.Resource does them (spec §1, §4)."""

from __future__ import annotations

import pytest

from tests.conftest import member_headers

# Real cinder-api (and so the simulator) routes only hex project ids.
PROJECT = "abc123"

VERSION_HEADERS = ("OpenStack-API-Version", "X-OpenStack-Nova-API-Version")


def test_create_without_project_in_path(nova):
    """POST /v2.1/os-volumes reaches the controller."""
    response = nova.create({"size": 1}, headers=member_headers(PROJECT))
    assert response.status == 200


def test_create_with_matching_project_in_path(nova):
    """POST /v2.1/{project_id}/os-volumes works and keeps the project in Location."""
    response = nova.create(
        {"size": 1}, path="/v2.1/abc123/os-volumes", headers=member_headers(PROJECT)
    )
    assert response.status == 200
    volume_id = response.json()["volume"]["id"]
    assert response.header("location") == f"{nova.url}/v2.1/abc123/os-volumes/{volume_id}"


def test_project_mismatch_is_400(nova):
    """A URL project other than the token's is a malformed URL."""
    response = nova.create(
        {"size": 1}, path="/v2.1/abc456/os-volumes", headers=member_headers(PROJECT)
    )
    assert response.status == 400
    assert response.json() == {
        "badRequest": {
            "code": 400,
            "message": (
                "Malformed request URL: URL's project_id 'abc456' doesn't match "
                "Context's project_id 'abc123'"
            ),
        }
    }
    assert nova.sim.recorded == []


def test_default_version_is_2_1(nova):
    """No version header means 2.1, echoed in both version headers and two Vary lines."""
    response = nova.create({"size": 1}, headers=member_headers(PROJECT))
    assert response.header("OpenStack-API-Version") == "compute 2.1"
    assert response.header("X-OpenStack-Nova-API-Version") == "2.1"
    assert response.header_values("Vary") == list(VERSION_HEADERS)


@pytest.mark.parametrize(
    "header, value, echoed",
    [
        ("OpenStack-API-Version", "compute 2.35", "2.35"),
        ("X-OpenStack-Nova-API-Version", "2.20", "2.20"),
        ("OpenStack-API-Version", "compute 2.1", "2.1"),
    ],
)
def test_supported_versions_are_echoed(nova, header, value, echoed):
    """Both the standard and the legacy header select the version."""
    response = nova.create({"size": 1}, headers={**member_headers(PROJECT), header: value})
    assert response.status == 200
    assert response.header("OpenStack-API-Version") == f"compute {echoed}"
    assert response.header("X-OpenStack-Nova-API-Version") == echoed


def test_standard_header_wins_over_legacy(nova):
    """With both headers, OpenStack-API-Version decides."""
    headers = {
        **member_headers(PROJECT),
        "OpenStack-API-Version": "compute 2.36",
        "X-OpenStack-Nova-API-Version": "2.2",
    }
    assert nova.create({"size": 1}, headers=headers).status == 404


def test_invalid_version_string_is_400_without_version_headers(nova):
    """A version that is not MajorNum.MinorNum is a 400 and no version is echoed."""
    headers = {**member_headers(PROJECT), "OpenStack-API-Version": "compute 2.abc"}
    response = nova.create({"size": 1}, headers=headers)
    assert response.status == 400
    assert response.json() == {
        "badRequest": {
            "code": 400,
            "message": (
                "API Version String 2.abc is of invalid format. "
                "Must be of format MajorNum.MinorNum."
            ),
        }
    }
    assert response.header("OpenStack-API-Version") is None


@pytest.mark.parametrize("value", ["3.0", "2.105", "1.1"])
def test_version_outside_global_range_is_406(nova, value):
    """Versions outside 2.1..2.104 are 406 computeFault, with the requested version echoed."""
    headers = {**member_headers(PROJECT), "OpenStack-API-Version": f"compute {value}"}
    response = nova.create({"size": 1}, headers=headers)
    assert response.status == 406
    assert response.json() == {
        "computeFault": {
            "code": 406,
            "message": (
                f"Version {value} is not supported by the API. Minimum is 2.1 and maximum is 2.104."
            ),
        }
    }
    assert response.header("OpenStack-API-Version") == f"compute {value}"


@pytest.mark.parametrize("value", ["compute 2.36", "compute 2.104", "compute latest"])
def test_versions_above_2_35_are_404_before_the_schema(nova, value):
    """os-volumes is a proxy API capped at 2.35: 404 even for an invalid body."""
    headers = {**member_headers(PROJECT), "OpenStack-API-Version": value}
    response = nova.create({"size": 0, "bogus": 1}, headers=headers)
    assert response.status == 404
    assert response.json() == {
        "itemNotFound": {"code": 404, "message": "The resource could not be found."}
    }
    expected = "2.104" if value.endswith("latest") else value.split()[1]
    assert response.header("OpenStack-API-Version") == f"compute {expected}"


def test_unknown_path_is_novas_router_404(nova):
    """A path nova routes nowhere gets the router's plain webob 404, as in nova."""
    response = nova.client().request("POST", "/v2.1/no-such-api", b"{}", member_headers(PROJECT))
    assert response.status == 404
    assert b"The resource could not be found." in response.body
    assert response.header("OpenStack-API-Version") is None
