"""A successful create: Nova's 200 answer and exactly what Cinder receives (spec §4, §5)."""

from __future__ import annotations

import json
import re
import uuid

from tests.conftest import NOVA_CINDER_CREATE_KEYS, NOVA_VOLUME_KEYS, TEST_TOKEN, member_headers
from voltrace.client import NovaClient

REQ_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_response_body_fields_and_order(nova):
    """The 200 body has Nova's 11 keys, in Nova's order, built from Cinder's POST answer."""
    response = nova.create(
        {
            "size": 2,
            "display_name": "db",
            "display_description": "data",
            "availability_zone": "nova",
            "volume_type": "lvmdriver-1",
            "metadata": {"tier": "gold"},
        }
    )
    assert response.status == 200
    body = json.loads(response.body)
    volume = body["volume"]
    assert list(body) == ["volume"]
    assert list(volume) == NOVA_VOLUME_KEYS
    assert nova.sim.recorded[0].json()["volume"]["name"] == "db"
    assert volume["status"] == "creating"
    assert volume["size"] == 2
    assert volume["availabilityZone"] == "nova"
    assert volume["attachments"] == [{}]
    assert volume["displayName"] == "db"
    assert volume["displayDescription"] == "data"
    assert volume["volumeType"] == "lvmdriver-1"
    assert volume["snapshotId"] is None
    assert volume["metadata"] == {"tier": "gold"}
    uuid.UUID(volume["id"])
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$", volume["createdAt"])


def test_defaults_come_from_cinder(nova):
    """Unset fields are null for Nova and filled by Cinder (default volume type)."""
    volume = nova.create({"size": 1}).json()["volume"]
    assert volume["displayName"] is None
    assert volume["volumeType"] == "__DEFAULT__"
    assert volume["metadata"] == {}


def test_success_headers(nova):
    """200, JSON without charset, lowercase location, version and request-id headers."""
    response = nova.create({"size": 1})
    assert response.header("Content-Type") == "application/json"
    names = [name for name, _ in response.headers.items()]
    assert "location" in names and "Location" not in names
    volume_id = response.json()["volume"]["id"]
    assert response.header("location") == f"{nova.url}/v2.1/os-volumes/{volume_id}"
    request_id = response.header("x-openstack-request-id")
    assert REQ_ID.match(request_id)
    assert response.header("x-compute-request-id") == request_id


def test_location_keeps_the_query_string(nova):
    """Location is req.url + '/' + id, query string included, as in Nova."""
    response = nova.create({"size": 1}, path="/v2.1/os-volumes?foo=bar")
    volume_id = response.json()["volume"]["id"]
    assert response.header("location") == f"{nova.url}/v2.1/os-volumes?foo=bar/{volume_id}"


def test_compute_json_accept_is_honoured(nova):
    """The response type follows Accept among Nova's two JSON types."""
    headers = {**member_headers(), "Accept": "application/vnd.openstack.compute+json"}
    response = nova.create({"size": 1}, headers=headers)
    assert response.header("Content-Type") == "application/vnd.openstack.compute+json"


def test_cinder_receives_novas_post_and_lazy_get(nova):
    """POST /v3/{p}/volumes with all 11 keys, then the lazy GET of the new volume."""
    response = nova.create({"size": 3, "display_name": "", "metadata": {"a": "b"}})
    volume_id = response.json()["volume"]["id"]
    post, get = nova.sim.recorded
    assert (post.method, post.path) == ("POST", "/v3/a1ce0000000000000000000000000001/volumes")
    assert (get.method, get.path) == (
        "GET",
        f"/v3/a1ce0000000000000000000000000001/volumes/{volume_id}",
    )
    assert get.body == b""
    body = post.json()
    assert list(body["volume"]) == NOVA_CINDER_CREATE_KEYS
    assert body == {
        "volume": {
            "size": 3,
            "consistencygroup_id": None,
            "snapshot_id": None,
            "name": "",
            "description": None,
            "volume_type": None,
            "availability_zone": None,
            "metadata": {"a": "b"},
            "imageRef": None,
            "source_volid": None,
            "backup_id": None,
        }
    }


def test_cinder_receives_the_users_token_and_novas_headers(nova):
    """The user's token, nova's request id, cinderclient's UA; no microversion header at 3.0."""
    response = nova.create({"size": 1})
    request_id = response.header("x-openstack-request-id")
    for recorded in nova.sim.recorded:
        headers = {k.lower(): v for k, v in recorded.headers.items()}
        assert headers["x-auth-token"] == TEST_TOKEN
        assert headers["x-openstack-request-id"] == request_id
        assert headers["accept"] == "application/json"
        assert headers["user-agent"] == "python-cinderclient"
        assert headers["accept-encoding"] == "gzip, deflate"
        assert headers["connection"] == "keep-alive"
        assert "openstack-api-version" not in headers
        assert re.match(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[13]$", headers["traceparent"])
    post_headers = {k.lower(): v for k, v in nova.sim.recorded[0].headers.items()}
    assert post_headers["content-type"] == "application/json"


def test_valid_incoming_global_request_id_is_sent_to_cinder(nova):
    """A valid X-OpenStack-Request-ID becomes the global id Cinder sees."""
    global_id = f"req-{uuid.uuid4()}"
    response = nova.create(
        {"size": 1}, headers={**member_headers(), "X-OpenStack-Request-ID": global_id}
    )
    assert response.header("x-openstack-request-id") != global_id
    assert nova.sim.recorded[0].headers["X-OpenStack-Request-ID"] == global_id


def test_malformed_incoming_global_request_id_is_dropped(nova):
    """An id not shaped req-<uuid> is ignored; Cinder sees nova's own request id."""
    response = nova.create(
        {"size": 1}, headers={**member_headers(), "X-OpenStack-Request-ID": "req-nope"}
    )
    request_id = response.header("x-openstack-request-id")
    assert nova.sim.recorded[0].headers["X-OpenStack-Request-ID"] == request_id


def test_request_ids_differ_per_request(nova):
    """Each request gets its own req-<uuid4>."""
    first = nova.create({"size": 1}).header("x-openstack-request-id")
    second = nova.create({"size": 1}).header("x-openstack-request-id")
    assert first != second


def test_volume_is_visible_in_the_simulator(nova):
    """The created volume exists in Cinder afterwards."""
    volume_id = nova.create({"size": 1}).json()["volume"]["id"]
    cinder = NovaClient(nova.sim.url)
    shown = cinder.request(
        "GET",
        f"/v3/a1ce0000000000000000000000000001/volumes/{volume_id}",
        None,
        {"X-Auth-Token": TEST_TOKEN},
    )
    cinder.close()
    assert shown.status == 200
    assert shown.json()["volume"]["id"] == volume_id
