"""What voltrace answers where nova 34 would run an API it does not serve.

The classes are listed in docs/nova-differences.md.

Always a 404 ``itemNotFound`` that names what nova would have done and points at the doc:
never a 5xx, never a silent nova-looking answer. The middleware in front (413, 401) still
answers first, as in nova.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import member_headers

HEADERS = member_headers("abc123")


def assert_out_of_scope(response, what: str) -> None:
    assert response.status == 404
    message = response.json()["itemNotFound"]["message"]
    assert what in message and "docs/nova-differences.md" in message


@pytest.mark.parametrize(
    "method, path, what",
    [
        ("GET", "/v2.1/os-volumes", "GET /os-volumes"),
        ("GET", "/v2.1/abc123/os-volumes/detail", "GET /os-volumes/detail"),
        ("DELETE", "/v2.1/os-volumes/1234", "DELETE /os-volumes/{id}"),
        ("POST", "/v2.1/servers", "POST /servers"),
        ("GET", "/v2.1/abc123/", "GET /"),
    ],
)
def test_other_nova_apis_are_out_of_scope(nova, method, path, what):
    """A route of nova's table other than the create: named, and out of scope."""
    body = b"{}" if method == "POST" else None
    assert_out_of_scope(nova.client().request(method, path, body, HEADERS), what)


def test_method_override_is_out_of_scope(nova):
    """routes' ?_method= would route POST as GET (the volume list) in nova."""
    response = nova.client().request(
        "POST", "/v2.1/os-volumes?_method=GET", b'{"volume": {"size": 1}}', HEADERS
    )
    assert_out_of_scope(response, "_method=GET")
    assert nova.sim.recorded == []


@pytest.mark.parametrize("path", ["/v2", "/v2/", "/v2/os-volumes"])
def test_legacy_v2_is_out_of_scope(nova, path):
    """The legacy /v2 pipeline and its version document."""
    assert_out_of_scope(nova.client().request("POST", path, b"{}", HEADERS), "legacy /v2")


@pytest.mark.parametrize(
    "method, path, what",
    [
        ("POST", "/", "version document for POST"),
        ("DELETE", "/v2.1/", "version document for DELETE"),
        ("GET", "/foo", "300 Multiple Choices"),
    ],
)
def test_version_documents_serve_only_get(nova, method, path, what):
    """Only GET/HEAD of / and /v2.1/ are served; nova's 300 choices page is not."""
    assert_out_of_scope(nova.client().request(method, path, None, {}), what)


def test_identity_is_still_checked_first(nova):
    """Under /v2.1/ the keystone context runs before the router: no user is 401."""
    headers = {k: v for k, v in HEADERS.items() if k != "X-User-Id"}
    assert nova.client().request("GET", "/v2.1/os-volumes", None, headers).status == 401


def test_healthcheck_is_served_only_when_asked(start_nova: Any) -> None:
    """--healthcheck mounts oslo.middleware's probe; it is never counted as a create."""
    with_probe = start_nova(healthcheck=True).client()
    answer = with_probe.request("GET", "/healthcheck")
    assert answer.status == 200
    without = start_nova().client()
    assert without.request("GET", "/healthcheck").status != 200
