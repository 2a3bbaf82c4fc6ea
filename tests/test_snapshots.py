"""Creates from a snapshot, and the seed's --size-from-snapshot fallback (spec §1 steps 8-9)."""

from __future__ import annotations

from tests.conftest import member_headers


def test_create_from_snapshot_looks_the_snapshot_up_first(nova):
    """GET snapshot, then POST with its id, then the lazy GET."""
    snapshot = nova.sim.add_snapshot("a1ce0000000000000000000000000001", size=2)
    response = nova.create({"size": 2, "snapshot_id": snapshot["id"]})
    assert response.status == 200
    assert response.json()["volume"]["snapshotId"] == snapshot["id"]
    calls = [(r.method, r.path) for r in nova.sim.recorded]
    assert calls[0] == ("GET", f"/v3/a1ce0000000000000000000000000001/snapshots/{snapshot['id']}")
    assert calls[1] == ("POST", "/v3/a1ce0000000000000000000000000001/volumes")
    assert calls[2][0] == "GET"
    assert nova.sim.recorded[1].json()["volume"]["snapshot_id"] == snapshot["id"]


def test_missing_snapshot_is_404_with_novas_text(nova):
    """Nova's own message, not Cinder's, and no POST follows."""
    response = nova.create({"size": 1, "snapshot_id": "0e5f0fd2-6a1f-4a86-bb5d-0d1e0e5a7c10"})
    assert response.status == 404
    assert response.json() == {
        "itemNotFound": {
            "code": 404,
            "message": "Snapshot 0e5f0fd2-6a1f-4a86-bb5d-0d1e0e5a7c10 could not be found.",
        }
    }
    assert [r.method for r in nova.sim.recorded] == ["GET"]


def test_nova_34_requires_size_even_with_a_snapshot(nova):
    """By default the schema requires size, so the snapshot fallback can never run."""
    snapshot = nova.sim.add_snapshot("a1ce0000000000000000000000000001", size=2)
    response = nova.create({"snapshot_id": snapshot["id"]})
    assert response.status == 400
    assert "'size' is a required property" in response.json()["badRequest"]["message"]


def test_size_from_snapshot_mode_uses_the_snapshots_size(start_nova, sim, captured):
    """With --size-from-snapshot, a missing size becomes the snapshot's volume_size."""
    nova = start_nova(size_from_snapshot=True)
    snapshot = sim.add_snapshot("a1ce0000000000000000000000000001", size=4)
    response = nova.create({"snapshot_id": snapshot["id"]})
    assert response.status == 200
    assert sim.recorded[1].json()["volume"]["size"] == 4
    spans = captured.complete_trace(response.header("x-openstack-request-id"))
    derive = next(s for s in spans if s.name == "derive_size")
    assert derive.attributes["voltrace.size.source"] == "snapshot"


def test_size_from_snapshot_mode_still_prefers_the_requested_size(start_nova, sim):
    """An explicit size wins over the snapshot's."""
    nova = start_nova(size_from_snapshot=True)
    snapshot = sim.add_snapshot("a1ce0000000000000000000000000001", size=4)
    nova.create({"size": 6, "snapshot_id": snapshot["id"]})
    assert sim.recorded[1].json()["volume"]["size"] == 6


def test_size_from_snapshot_mode_without_anything_sends_null(start_nova, sim):
    """No size and no snapshot: Nova sends null and Cinder's 400 comes back (seed code)."""
    nova = start_nova(size_from_snapshot=True)
    response = nova.create({"display_name": "x"}, headers=member_headers())
    assert sim.recorded[0].json()["volume"]["size"] is None
    assert response.status == 400
    assert response.json()["badRequest"]["message"].startswith("Invalid input received: ")
