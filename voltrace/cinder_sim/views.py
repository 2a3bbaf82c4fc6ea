"""Success bodies, shaped and ordered like cinder's views at microversion 3.0.

cinder/api/v3/views/volumes.py, cinder/api/views/snapshots.py, cinder/api/contrib/* and
cinder/api/views/versions.py. Error bodies are in ``errors.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from voltrace.cinder_sim.state import SIMULATED_USER_ID, Snapshot, Volume

# cinder/api/openstack/api_version_request.py in cinder 29.0.0
MIN_API_VERSION = "3.0"
MAX_API_VERSION = "3.71"
API_VERSION_UPDATED = "2023-08-31T00:00:00Z"

__all__ = ["SIMULATED_USER_ID"]  # re-exported: it used to live here


def fmt_time(value: datetime | None) -> str | None:
    # oslo_serialization.jsonutils prints datetimes with PERFECT_TIME_FORMAT.
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def volume_view(
    vol: Volume, base_url: str, *, show_extensions: bool, admin: bool = False
) -> dict[str, Any]:
    """``legacy_detail`` at microversion 3.0, keys in cinder order.

    A project member (keystone mode) sees the tenant attribute on show; an admin (every
    noauth caller) also sees ``migration_status`` and, on show, the migration and host
    attributes, in the order cinder 29's extensions add them.
    """
    body = {
        "id": vol.id,
        "status": vol.status,
        "size": vol.size,
        "availability_zone": vol.availability_zone,
        "created_at": fmt_time(vol.created_at),
        "updated_at": fmt_time(vol.updated_at),
        "name": vol.name,
        "description": vol.description,
        "volume_type": vol.volume_type,
        "snapshot_id": vol.snapshot_id,
        "source_volid": vol.source_volid,
        "metadata": dict(vol.metadata),
        "links": [
            {"rel": "self", "href": f"{base_url}/v3/{vol.project_id}/volumes/{vol.id}"},
            {"rel": "bookmark", "href": f"{base_url}/{vol.project_id}/volumes/{vol.id}"},
        ],
        "user_id": vol.user_id,
        "bootable": str(vol.bootable).lower(),
        "encrypted": False,
        "replication_status": "disabled",
        "consistencygroup_id": None,
        "multiattach": False,
        "attachments": [],
    }
    if admin:
        body["migration_status"] = None
    if show_extensions:
        # Controller extensions only extend show/detail, never create; a project reader
        # passes the os-vol-tenant-attr policy, the others are admin-only.
        body["os-vol-tenant-attr:tenant_id"] = vol.project_id
        if admin:
            body["os-vol-mig-status-attr:migstat"] = None
            body["os-vol-mig-status-attr:name_id"] = None
            body["os-vol-host-attr:host"] = vol.host
    return {"volume": body}


def snapshot_view(snap: Snapshot, *, show_extensions: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": snap.id,
        "created_at": fmt_time(snap.created_at),
        "updated_at": fmt_time(snap.updated_at),
        "name": snap.name,
        "description": snap.description,
        "volume_id": snap.volume_id,
        "status": snap.status,
        "size": snap.size,
        "metadata": dict(snap.metadata),
    }
    if show_extensions:
        body["os-extended-snapshot-attributes:project_id"] = snap.project_id
        body["os-extended-snapshot-attributes:progress"] = snap.progress
    return {"snapshot": body}


def versions_view(base_url: str) -> dict[str, Any]:
    """cinder/api/versions.py ``_KNOWN_VERSIONS`` through views/versions.py."""
    return {
        "versions": [
            {
                "id": "v3.0",
                "status": "CURRENT",
                "version": MAX_API_VERSION,
                "min_version": MIN_API_VERSION,
                "updated": API_VERSION_UPDATED,
                "links": [
                    {
                        "rel": "describedby",
                        "type": "text/html",
                        "href": "https://docs.openstack.org/",
                    },
                    {"rel": "self", "href": f"{base_url}/v3/"},
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
