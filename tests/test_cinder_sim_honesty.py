"""The simulator answers what a real cinder-api 29 answers: routing, auth, messages, os-services.

Expected bodies and headers were recorded from a real cinder-api 29.0.0
(``voltrace.devtools.real_cinder``, noauth) where the simulator models it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests

from tests.support.polling import poll
from voltrace.cinder_sim import CinderSimulator
from voltrace.cinder_sim.backends import BackendSettings

PROJECT = "ab" * 16
OTHER = "cd" * 16
TOKEN = "tok-honest"
FAST = BackendSettings(
    scheduling_s=0.005,
    volume_create_s=0.005,
    report_interval_s=0.05,
    service_down_time_s=0.3,
    rpc_response_timeout_s=0.1,
)
PLAIN_404 = b"404 Not Found\n\nThe resource could not be found.\n\n   "
JSON_404 = (
    b'{"message": "The resource could not be found.<br /><br />\\n\\n\\n", '
    b'"code": "404 Not Found", "title": "Not Found"}'
)
HTML_404 = (
    b"<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n"
    b"  <h1>404 Not Found</h1>\n  The resource could not be found.<br /><br />\n\n\n\n"
    b" </body>\n</html>"
)


@pytest.fixture(scope="module")
def keystone() -> Iterator[CinderSimulator]:
    with CinderSimulator(backend=FAST) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def noauth() -> Iterator[CinderSimulator]:
    with CinderSimulator(backend=FAST, auth_strategy="noauth") as simulator:
        yield simulator


@pytest.fixture
def sim(keystone: CinderSimulator) -> CinderSimulator:
    keystone.reset()
    return keystone


@pytest.fixture
def admin_sim(noauth: CinderSimulator) -> CinderSimulator:
    noauth.reset()
    return noauth


def call(
    sim: CinderSimulator,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    version: str | None = None,
    **kwargs: Any,
) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["X-Auth-Token"] = token
    if version is not None:
        headers["OpenStack-API-Version"] = f"volume {version}"
    return requests.request(method, sim.url + path, headers=headers, timeout=5, **kwargs)


def create(
    sim: CinderSimulator, project: str = PROJECT, token: str = TOKEN, **volume: Any
) -> dict[str, Any]:
    answer = call(
        sim, "POST", f"/v3/{project}/volumes", token=token, json={"volume": {"size": 1, **volume}}
    )
    assert answer.status_code == 202, answer.text
    return answer.json()["volume"]


def failed_volume(sim: CinderSimulator, project: str = PROJECT, token: str = TOKEN) -> str:
    """A volume that fails in the scheduler (too big for the pool), once it has failed."""
    sim.configure_backend(capacity_gb=1)
    volume = create(sim, project, token, size=2)
    poll(
        lambda: sim.volume_timeline(volume["id"])[-1][0] == "error",
        timeout=5,
        what="the volume fails",
    )
    return str(volume["id"])


# ---- routing: only project ids cinder's router accepts ---------------------------------


@pytest.mark.parametrize("project", ["p-member", "demo-project", "ABCDEF", "p", "ab_cd"])
def test_project_ids_outside_the_regex_have_no_route(sim: CinderSimulator, project: str) -> None:
    """[0-9a-f-]+ only: anything else is webob's bare 404, without cinder's headers."""
    for method, path in (
        ("POST", "volumes"),
        ("GET", f"volumes/{uuid.uuid4()}"),
        ("GET", "messages"),
        ("DELETE", "volumes/x"),
    ):
        answer = call(sim, method, f"/v3/{project}/{path}", json={"volume": {"size": 1}})
        assert answer.status_code == 404
        assert answer.headers["Content-Type"] == "text/html; charset=UTF-8"  # Accept: */*
        assert "x-compute-request-id" not in answer.headers
        assert answer.headers["x-openstack-request-id"].startswith("req-")
    assert sim.recorded[0].path == f"/v3/{project}/volumes"  # it reached cinder-api


@pytest.mark.parametrize(
    ("accept", "content_type", "body"),
    [
        (None, "text/plain; charset=UTF-8", PLAIN_404),
        ("*/*", "text/html; charset=UTF-8", HTML_404),
        ("application/json", "application/json", JSON_404),
        ("application/json;q=0.5, text/html;q=0.9", "text/html; charset=UTF-8", HTML_404),
        ("image/png", "text/plain; charset=UTF-8", PLAIN_404),
    ],
)
def test_unrouted_404_follows_webob_accept(
    sim: CinderSimulator, accept: str | None, content_type: str, body: bytes
) -> None:
    """The body is webob's, in the first of text/html, application/json that Accept takes."""
    import http.client

    connection = http.client.HTTPConnection(sim.host, sim.port, timeout=5)
    headers = {"X-Auth-Token": TOKEN, **({"Accept": accept} if accept else {})}
    connection.request("GET", "/v3/p-member/volumes/x", headers=headers)
    answer = connection.getresponse()
    assert (answer.status, answer.getheader("Content-Type"), answer.read()) == (
        404,
        content_type,
        body,
    )
    connection.close()


def test_hex_with_dashes_is_routed(sim: CinderSimulator) -> None:
    """abc-def matches [0-9a-f-]+: routed, so an unknown volume is cinder's itemNotFound."""
    missing = str(uuid.uuid4())
    answer = call(sim, "GET", f"/v3/abc-def/volumes/{missing}")
    assert answer.json() == {
        "itemNotFound": {"code": 404, "message": f"Volume {missing} could not be found."}
    }


def test_project_id_regex_is_configurable() -> None:
    """cinder's own option widens the routes, e.g. for a deployment with other project ids."""
    with CinderSimulator(backend=FAST, project_id_regex=r"[^/]+") as simulator:
        assert create(simulator, "p-member")["status"] == "creating"


def test_keystone_checks_the_token_before_routing(sim: CinderSimulator) -> None:
    """keystonemiddleware runs first: no token is 401 even where no route matches."""
    assert call(sim, "GET", "/v3/p-member/volumes/x", token=None).status_code == 401
    assert call(sim, "GET", "/v3/p-member/volumes/x").status_code == 404


# ---- noauth: the token is user:project, every caller an admin -----------------------------


def test_noauth_without_token_hands_one_out(admin_sim: CinderSimulator) -> None:
    """NoAuthMiddleware: 204 with X-Auth-Token admin:admin (or X-Auth-User:X-Auth-Project-Id)."""
    answer = call(admin_sim, "POST", f"/v3/{PROJECT}/volumes", token=None)
    assert answer.status_code == 204
    assert answer.headers["X-Auth-Token"] == "admin:admin"
    assert answer.headers["X-Server-Management-Url"] == f"{admin_sim.url}/v3/{PROJECT}/volumes"
    assert answer.headers["Content-Type"] == "text/plain; charset=UTF-8"
    assert answer.content == b""
    named = call(
        admin_sim,
        "GET",
        "/v3/p-member/volumes",
        token=None,
        headers={"X-Auth-User": "u", "X-Auth-Project-Id": PROJECT},
    )
    assert (named.status_code, named.headers["X-Auth-Token"]) == (204, f"u:{PROJECT}")


@pytest.mark.parametrize("token", ["tok", f"u:{OTHER}", "", ":"])
def test_noauth_token_for_another_project_is_malformed_url(
    admin_sim: CinderSimulator, token: str
) -> None:
    """The token's project (after ':', else the whole token) must be the URL's."""
    answer = call(
        admin_sim, "POST", f"/v3/{PROJECT}/volumes", token=token, json={"volume": {"size": 1}}
    )
    assert answer.status_code == 400
    assert answer.json() == {"badRequest": {"code": 400, "message": "Malformed request url"}}
    assert answer.headers["OpenStack-API-Version"] == "volume 3.0"


def test_noauth_broken_body_wins_over_the_project_check(admin_sim: CinderSimulator) -> None:
    """cinder decodes the body before it compares projects."""
    answer = call(admin_sim, "POST", f"/v3/{PROJECT}/volumes", token="tok", data=b"{nope")
    assert answer.json()["badRequest"]["message"] == "Malformed request body"


def test_noauth_project_token_creates_with_the_admin_view(admin_sim: CinderSimulator) -> None:
    """user:project creates; the admin view adds migration and host attributes, as recorded."""
    volume = create(admin_sim, token=f"u:{PROJECT}")
    assert (volume["user_id"], list(volume)[-1]) == ("u", "migration_status")
    created_alone = create(admin_sim, token=PROJECT)  # a bare token is user and project
    assert created_alone["user_id"] == PROJECT
    poll(
        lambda: admin_sim.volume_timeline(volume["id"])[-1][0] == "available",
        timeout=5,
        what="the volume is created",
    )
    shown = call(
        admin_sim, "GET", f"/v3/{PROJECT}/volumes/{volume['id']}", token=f"u:{PROJECT}"
    ).json()["volume"]
    assert list(shown)[-5:] == [
        "migration_status",
        "os-vol-tenant-attr:tenant_id",
        "os-vol-mig-status-attr:migstat",
        "os-vol-mig-status-attr:name_id",
        "os-vol-host-attr:host",
    ]
    assert shown["os-vol-host-attr:host"] == "cinder-sim@lvmdriver-1#lvmdriver-1"


# ---- the user messages API ------------------------------------------------------------------


def test_messages_need_microversion_3_3(sim: CinderSimulator) -> None:
    """Below 3.3 the messages API does not exist: itemNotFound, echoing the version."""
    answer = call(sim, "GET", f"/v3/{PROJECT}/messages")
    assert answer.status_code == 404
    assert answer.json() == {
        "itemNotFound": {"code": 404, "message": "The resource could not be found."}
    }
    assert answer.headers["OpenStack-API-Version"] == "volume 3.0"
    empty = call(sim, "GET", f"/v3/{PROJECT}/messages", version="3.3")
    assert (empty.json(), empty.headers["OpenStack-API-Version"]) == (
        {"messages": []},
        "volume 3.3",
    )


def test_message_view_is_cinders(sim: CinderSimulator) -> None:
    """Keys, texts, level, links and a 30-day guarantee, as cinder 29 renders a message."""
    volume_id = failed_volume(sim)
    answer = call(sim, "GET", f"/v3/{PROJECT}/messages", version="3.3")
    (message,) = answer.json()["messages"]
    assert list(message) == [
        "id",
        "event_id",
        "user_message",
        "message_level",
        "created_at",
        "guaranteed_until",
        "request_id",
        "links",
        "resource_type",
        "resource_uuid",
    ]
    assert message["event_id"] == "VOLUME_VOLUME_001_003"
    assert message["user_message"] == (
        "schedule allocate volume:Could not find any available weighted backend."
    )
    assert (message["message_level"], message["resource_type"], message["resource_uuid"]) == (
        "ERROR",
        "VOLUME",
        volume_id,
    )
    created = datetime.fromisoformat(message["created_at"])
    assert datetime.fromisoformat(message["guaranteed_until"]) - created == timedelta(days=30)
    assert message["links"] == [
        {"rel": "self", "href": f"{sim.url}/v3/{PROJECT}/messages/{message['id']}"},
        {"rel": "bookmark", "href": f"{sim.url}/{PROJECT}/messages/{message['id']}"},
    ]
    one = call(sim, "GET", f"/v3/{PROJECT}/messages/{message['id']}", version="3.3")
    assert one.json() == {"message": message}
    missing = str(uuid.uuid4())
    gone = call(sim, "GET", f"/v3/{PROJECT}/messages/{missing}", version="3.3")
    assert gone.json() == {
        "itemNotFound": {"code": 404, "message": f"Message {missing} could not be found."}
    }


def test_message_filters_from_3_5(sim: CinderSimulator) -> None:
    """resource_uuid filters from 3.5 (ignored at 3.3); an unknown key matches nothing."""
    failed = failed_volume(sim)
    other = failed_volume(sim)
    at_3_3 = call(sim, "GET", f"/v3/{PROJECT}/messages?resource_uuid={failed}", version="3.3")
    assert len(at_3_3.json()["messages"]) == 2
    at_3_5 = call(sim, "GET", f"/v3/{PROJECT}/messages?resource_uuid={failed}", version="3.5")
    assert [m["resource_uuid"] for m in at_3_5.json()["messages"]] == [failed]
    newest_first = call(sim, "GET", f"/v3/{PROJECT}/messages", version="3.5").json()
    assert [m["resource_uuid"] for m in newest_first["messages"]] == [other, failed]
    nothing = call(sim, "GET", f"/v3/{PROJECT}/messages?foo=bar", version="3.5")
    assert nothing.json() == {"messages": []}
    paged = call(sim, "GET", f"/v3/{PROJECT}/messages?limit=5&sort_dir=asc", version="3.5")
    assert len(paged.json()["messages"]) == 2


def test_messages_are_per_project_for_members_and_all_for_noauth_admins(
    sim: CinderSimulator, admin_sim: CinderSimulator
) -> None:
    """A member sees its project's messages; under noauth every caller sees every project's."""
    failed_volume(sim, OTHER)
    mine = call(sim, "GET", f"/v3/{PROJECT}/messages", version="3.3").json()
    assert mine == {"messages": []}
    failed_volume(admin_sim, OTHER, token=f"u:{OTHER}")
    everyone = call(
        admin_sim, "GET", f"/v3/{PROJECT}/messages", version="3.3", token=f"u:{PROJECT}"
    ).json()["messages"]
    assert len(everyone) == 1
    assert everyone[0]["links"][0]["href"].startswith(f"{admin_sim.url}/v3/{PROJECT}/messages/")


@pytest.mark.parametrize(
    ("version", "status", "echo", "message"),
    [
        (
            "3.99",
            406,
            "volume 3.99",
            "Version 3.99 is not supported by the API. Minimum is 3.0 and maximum is 3.71.",
        ),
        (
            "3.x",
            400,
            None,
            "API Version String 3.x is of invalid format. Must be of format MajorNum.MinorNum.",
        ),
        ("latest", 200, "volume 3.71", None),
    ],
)
def test_message_route_versions(
    sim: CinderSimulator, version: str, status: int, echo: str | None, message: str | None
) -> None:
    """Out of range is 406 (echoed), a bad format 400 (no version headers), latest is 3.71."""
    answer = call(sim, "GET", f"/v3/{PROJECT}/messages", version=version)
    assert answer.status_code == status
    assert answer.headers.get("OpenStack-API-Version") == echo
    if message is not None:
        assert next(iter(answer.json().values()))["message"] == message


# ---- os-services -------------------------------------------------------------------------------


def test_os_services_db_view(sim: CinderSimulator) -> None:
    """At 3.0 and 3.7 (cluster), keys in cinder's order; volume services carry replication keys."""
    at_3_0 = call(sim, "GET", f"/v3/{PROJECT}/os-services").json()["services"]
    assert [list(s) for s in at_3_0] == [
        ["binary", "host", "zone", "status", "state", "updated_at", "disabled_reason"],
        [
            "binary",
            "host",
            "zone",
            "status",
            "state",
            "updated_at",
            "disabled_reason",
            "replication_status",
            "active_backend_id",
            "frozen",
        ],
    ]
    assert [(s["binary"], s["host"], s["zone"], s["status"], s["state"]) for s in at_3_0] == [
        ("cinder-scheduler", "cinder-sim", "nova", "enabled", "up"),
        ("cinder-volume", "cinder-sim@lvmdriver-1", "nova", "enabled", "up"),
    ]
    assert at_3_0[1]["replication_status"] == "disabled"
    at_3_7 = call(sim, "GET", f"/v3/{PROJECT}/os-services", version="3.7")
    assert list(at_3_7.json()["services"][0])[6] == "cluster"
    assert at_3_7.headers["OpenStack-API-Version"] == "volume 3.7"
    only = call(sim, "GET", f"/v3/{PROJECT}/os-services?binary=cinder-volume").json()
    assert [s["binary"] for s in only["services"]] == ["cinder-volume"]
    by_host = call(sim, "GET", f"/v3/{PROJECT}/os-services?host=cinder-sim").json()
    assert [s["binary"] for s in by_host["services"]] == ["cinder-scheduler"]


def test_os_services_goes_down_and_freezes_updated_at(sim: CinderSimulator) -> None:
    """A stopped service turns down after service_down_time; its updated_at stops moving."""
    sim.stop_service("cinder-volume")

    def volume_service() -> dict[str, Any]:
        services = call(sim, "GET", f"/v3/{PROJECT}/os-services").json()["services"]
        return next(s for s in services if s["binary"] == "cinder-volume")

    down = poll(
        lambda: volume_service()["state"] == "down" and volume_service(),
        timeout=5,
        what="cinder-volume shows down",
    )
    assert volume_service()["updated_at"] == down["updated_at"]
    sim.start_service("cinder-volume")
    assert volume_service()["state"] == "up"


def test_os_services_from_3_49_asks_the_scheduler(sim: CinderSimulator) -> None:
    """3.49 adds backend_state through an RPC call: with the scheduler down, a 500 after the
    RPC timeout."""
    services = call(sim, "GET", f"/v3/{PROJECT}/os-services", version="3.49").json()["services"]
    assert services[1]["backend_state"] == "up" and "backend_state" not in services[0]
    sim.stop_service("cinder-scheduler")
    assert call(sim, "GET", f"/v3/{PROJECT}/os-services", version="3.48").status_code == 200
    answer = call(sim, "GET", f"/v3/{PROJECT}/os-services", version="3.49")
    assert answer.status_code == 500
    assert answer.json()["computeFault"]["message"] == (
        "The server has either erred or is incapable of performing the requested operation."
    )
