"""What cinder checks before it reserves quota for a create, in cinder's order.

Each ``plan_*`` turns a raw request body into a ``NewVolume``/``NewSnapshot`` or raises
the :class:`ApiError` cinder 29 would answer with. These run in the ``validate`` step.
"""

from __future__ import annotations

from voltrace.cinder_sim import validation
from voltrace.cinder_sim.errors import ApiError, invalid_input
from voltrace.cinder_sim.state import NewSnapshot, NewVolume, State, Volume
from voltrace.cinder_sim.validation import bool_from_string, is_int_like, parse_json_body


def _strip_names(resource: dict, keys: tuple[str, ...]) -> None:
    # cinder's remove_white_spaces formats strip names and descriptions before use.
    for key in keys:
        if isinstance(resource.get(key), str):
            resource[key] = resource[key].strip()


def plan_volume(state: State, project_id: str, raw_body: bytes) -> NewVolume:
    """Every check cinder 29 makes before reserving quota, in cinder's order."""
    body = parse_json_body(raw_body)
    validation.VOLUME_CREATE.validate(body)
    volume = body["volume"]
    _strip_names(volume, ("name", "description", "display_name", "display_description"))
    name = volume["name"] if "name" in volume else volume.get("display_name")
    if "description" in volume:
        description = volume["description"]
    else:
        description = volume.get("display_description")
    image_ref = volume.get("imageRef", volume.get("image_id"))

    with state.lock:
        volume_type = None
        if volume.get("volume_type"):  # "" and null both mean "the default type"
            volume_type = state.resolve_type(volume["volume_type"])
        snapshot = source = None
        if volume.get("snapshot_id") is not None:
            snapshot = state.get_snapshot(project_id, volume["snapshot_id"])
        if volume.get("source_volid") is not None:
            source = state.get_volume(project_id, volume["source_volid"])
        if volume.get("consistencygroup_id") is not None:
            group_id = volume["consistencygroup_id"]
            raise ApiError(404, f"Group {group_id} could not be found.", "GroupNotFound")
        if image_ref is not None:
            # There is no Glance behind the simulator, so no image can be found.
            raise ApiError(
                400,
                "Invalid image identifier or unable to access requested image.",
                "HTTPBadRequest",
            )
        if volume.get("backup_id"):
            backup_id = volume["backup_id"]
            raise ApiError(404, f"Backup {backup_id} could not be found.", "BackupNotFound")
        source_volume = None
        if snapshot is not None:
            source_volume = state.volumes.get(snapshot.volume_id)
        elif source is not None:
            source_volume = source

        size = volume.get("size")
        if size is None and snapshot is not None:
            size = snapshot.size
        elif size is None and source is not None:
            size = source.size
        if volume.get("multiattach") is not None and bool_from_string(volume["multiattach"]):
            raise ApiError(
                400,
                "multiattach parameter has been removed. The default "
                "behavior is to use multiattach enabled volume types. "
                "Contact your administrator to create a multiattach "
                "enabled volume type and use it to create multiattach "
                "volumes.",
                "HTTPBadRequest",
            )
        # volume/api.py API.create
        if size and (not is_int_like(size) or int(size) <= 0):
            raise invalid_input(
                f"Invalid volume size provided for create request: {size} (size argument "
                "must be an integer (or string representation of an integer) and greater "
                "than zero)."
            )
        # volume/flows/api/create_volume.py ExtractVolumeRequestTask
        if snapshot is not None and source is not None:
            # utils.check_exclusive_options lists every option it was given.
            raise invalid_input("May specify only one of backup, imageRef, snapshot, source volume")
        if snapshot is not None and snapshot.status != "available":
            raise ApiError(
                400,
                "Invalid snapshot: Originating snapshot status must be one of 'available' values",
                "InvalidSnapshot",
            )
        if source is not None and source.status not in ("available", "in-use"):
            raise ApiError(
                400,
                "Invalid volume: Originating source volume status must "
                "be one of 'available, in-use' values",
                "InvalidVolume",
            )
        size = int(size) if is_int_like(size) else size
        if not isinstance(size, int) or size <= 0:
            raise invalid_input(f"Volume size '{size}' must be an integer and greater than 0")
        if source is not None and size < source.size:
            raise invalid_input(
                f"Volume size '{size}'GB cannot be smaller than original volume size  "
                f"{source.size}GB. They must be >= original volume size."
            )
        if snapshot is not None and source is None and size < snapshot.size:
            raise invalid_input(
                f"Volume size '{size}'GB cannot be smaller than the snapshot size "
                f"{snapshot.size}GB. They must be >= original snapshot size."
            )
        availability_zone = _pick_zone(
            state, volume.get("availability_zone"), source_volume, snapshot is not None
        )
        if volume_type is None:
            # _get_volume_type: inherit the source's type, else the default type.
            volume_type = source_volume.volume_type if source_volume is not None else "__DEFAULT__"
    return NewVolume(
        size=size,
        availability_zone=availability_zone,
        volume_type=volume_type,
        name=name,
        description=description,
        metadata=volume.get("metadata") or {},
        snapshot_id=snapshot.id if snapshot else None,
        source_volid=source.id if source else None,
        bootable=source_volume.bootable if source_volume else False,
    )


def _pick_zone(
    state: State, requested: str | None, source_volume: Volume | None, from_snapshot: bool
) -> str:
    """_extract_availability_zones with cinder's default options."""
    zone = requested
    if zone is None and source_volume is not None:
        zone = source_volume.availability_zone
    if zone is None:
        zone = state.availability_zones[0]  # default_availability_zone
    if zone not in state.availability_zones:
        raise ApiError(400, f"Availability zone '{zone}' is invalid.", "InvalidAvailabilityZone")
    # cloned_volume_same_az defaults to True.
    if source_volume is not None and source_volume.availability_zone != zone:
        what = "snapshot" if from_snapshot else "source volume"
        raise invalid_input(f"Volume must be in the same availability zone as the {what}")
    return zone


def plan_snapshot(state: State, project_id: str, raw_body: bytes) -> NewSnapshot:
    """cinder's snapshot create checks: schema, the volume, its host and status."""
    body = parse_json_body(raw_body)
    validation.SNAPSHOT_CREATE.validate(body)
    snapshot = body["snapshot"]
    volume = state.get_volume(project_id, str(snapshot["volume_id"]))
    force = snapshot.get("force")
    force = bool_from_string(force) if force is not None else False
    _strip_names(snapshot, ("name", "description", "display_name"))
    name = snapshot["name"] if "name" in snapshot else snapshot.get("display_name")
    if not volume.host:
        raise ApiError(
            400,
            "Invalid volume: The snapshot cannot be created because "
            "volume has not been scheduled to any host.",
            "InvalidVolume",
        )
    if volume.status == "error":
        raise ApiError(
            400,
            "Invalid volume: The snapshot cannot be created when the volume is in error status.",
            "InvalidVolume",
        )
    valid = ("available", "in-use") if force else ("available",)
    if volume.status not in valid:
        raise ApiError(
            400,
            f"Invalid volume: Volume {volume.id} status must be "
            f"{', '.join(valid)}, but current status is: {volume.status}.",
            "InvalidVolume",
        )
    return NewSnapshot(
        volume=volume,
        name=name,
        description=snapshot.get("description"),
        metadata=snapshot.get("metadata") or {},
    )
