"""The stages as plain functions: order, names, Nova references, pure translations."""

from __future__ import annotations

import collections

from voltrace import semconv
from voltrace.stages import STAGES, translate_volume_detail_view


def test_six_stages_in_novas_order():
    """parse, authorize, resolve_snapshot, derive_size, call_cinder, translate."""
    assert [s.name for s in STAGES] == [
        "parse",
        "authorize",
        "resolve_snapshot",
        "derive_size",
        "call_cinder",
        "translate",
    ]


def test_each_stage_names_the_nova_code_it_mirrors():
    """An explicit field (not a docstring), shared with explain through semconv.NOVA_CODE."""
    for stage in STAGES:
        assert stage.nova_code.startswith("nova/"), stage.name
        assert ".py:" in stage.nova_code, stage.name


def _volume(**overrides):
    volume = {
        "id": "v1",
        "status": "creating",
        "size": 1,
        "availability_zone": "nova",
        "created_at": "2026-11-27T08:00:00.000000",
        "attach_status": "detached",
        "attachments": None,
        "display_name": "n",
        "display_description": "d",
        "volume_type_id": "lvm",
        "snapshot_id": None,
        "volume_metadata": {},
    }
    volume.update(overrides)
    return volume


def test_detached_volume_has_one_empty_attachment():
    """Nova answers attachments: [{}] when Cinder has none."""
    assert translate_volume_detail_view(_volume())["attachments"] == [{}]


def test_only_the_first_attachment_is_shown():
    """One element, from the first attachment: ids of the volume, the server, the device."""
    attachments = collections.OrderedDict()
    attachments["srv-1"] = {"attachment_id": "a1", "mountpoint": "/dev/vdb"}
    attachments["srv-2"] = {"attachment_id": "a2", "mountpoint": "/dev/vdc"}
    view = translate_volume_detail_view(_volume(attach_status="attached", attachments=attachments))
    assert view["attachments"] == [
        {"id": "v1", "volumeId": "v1", "serverId": "srv-1", "device": "/dev/vdb"}
    ]


def test_attachment_without_device_has_no_device_key():
    """device is added only when truthy."""
    attachments = collections.OrderedDict(srv={"attachment_id": "a", "mountpoint": None})
    view = translate_volume_detail_view(_volume(attach_status="attached", attachments=attachments))
    assert view["attachments"] == [{"id": "v1", "volumeId": "v1", "serverId": "srv"}]


def test_empty_metadata_becomes_an_empty_object():
    """metadata is {} when Cinder's is empty."""
    assert translate_volume_detail_view(_volume(volume_metadata=None))["metadata"] == {}


def test_stage_names_are_the_vocabularys():
    """The stages are exactly semconv.STAGE_NAMES, so explain and the instrumentor agree."""
    assert tuple(s.name for s in STAGES) == semconv.STAGE_NAMES
    assert all(stage.nova_code == semconv.NOVA_CODE[stage.name] for stage in STAGES)
