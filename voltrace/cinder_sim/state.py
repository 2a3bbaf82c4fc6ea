"""Everything the simulated cinder stores: volumes, snapshots, quotas, ids and the clock.

One re-entrant lock (``State.lock``) guards it all. Handlers hold it across a quota check
and the insert that follows, which makes the pair atomic the way cinder's reservation is.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from voltrace.cinder_sim.errors import ApiError
from voltrace.cinder_sim.quotas import Quotas
from voltrace.cinder_sim.user_messages import MessageStore
from voltrace.cinder_sim.validation import is_uuid_like

# No token is ever validated behind keystone mode, so there is no real user behind a
# request; every resource gets this user id (keystone-style 32 hex digits).
SIMULATED_USER_ID = "5e1f0f3b0c0d4c4e9a0b1c2d3e4f5a6b"

# Deterministic mode stamps every resource with this time (naive UTC, as cinder prints it).
DETERMINISTIC_TIME = datetime(2026, 11, 27, 8, 0, 0)
# Namespace for uuid5 ids in deterministic mode (and for volume type ids, always).
ID_NAMESPACE = uuid.UUID("0c1d5e7a-7e2f-4d0b-9b8e-3f6a2c1d4b5e")


@dataclass
class Volume:
    id: str
    project_id: str
    size: int
    availability_zone: str
    volume_type: str
    status: str
    created_at: datetime
    name: str | None
    description: str | None
    metadata: dict[str, str]
    snapshot_id: str | None = None
    source_volid: str | None = None
    bootable: bool = False
    host: str | None = None
    updated_at: datetime | None = None
    user_id: str = SIMULATED_USER_ID
    # Every (status, host) the volume went through, oldest first.
    timeline: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass
class Snapshot:
    id: str
    project_id: str
    volume_id: str
    size: int
    status: str
    progress: str
    created_at: datetime
    name: str | None
    description: str | None
    metadata: dict[str, str]
    updated_at: datetime | None = None


@dataclass
class NewVolume:
    """A volume create that passed every check (see ``plans.py``), ready to insert."""

    size: int
    availability_zone: str
    volume_type: str  # a type name
    name: str | None = None
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    snapshot_id: str | None = None
    source_volid: str | None = None
    bootable: bool = False
    user_id: str = SIMULATED_USER_ID


@dataclass
class NewSnapshot:
    """A snapshot create that passed every check, ready to insert."""

    volume: Volume
    name: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Ids:
    """Ids and timestamps: random/now normally, counter-based/fixed when deterministic."""

    def __init__(self, deterministic: bool) -> None:
        self.deterministic = deterministic
        self._counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def new(self, kind: str) -> str:
        if not self.deterministic:
            return str(uuid.uuid4())
        # One counter per kind, so e.g. a retried request does not shift volume ids.
        with self._lock:
            n = self._counters.get(kind, 0) + 1
            self._counters[kind] = n
        return str(uuid.uuid5(ID_NAMESPACE, f"{kind}-{n}"))

    def now(self) -> datetime:
        if self.deterministic:
            return DETERMINISTIC_TIME
        return datetime.now(UTC).replace(tzinfo=None)

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()


class State:
    """The stored resources. Public methods take ``lock`` themselves."""

    def __init__(
        self,
        *,
        deterministic: bool,
        availability_zones: tuple[str, ...],
        volume_types: tuple[str, ...],
        default_quotas: dict[str, int],
        extra_specs: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.ids = Ids(deterministic)
        self.availability_zones = availability_zones
        # Type ids are uuid5 in every mode, so the same type always has the same id.
        self.volume_types = {
            name: str(uuid.uuid5(ID_NAMESPACE, f"volume-type-{name}")) for name in volume_types
        }
        unknown = sorted(set(extra_specs or {}) - set(self.volume_types))
        if unknown:
            raise ValueError(f"extra specs for unknown volume type(s): {', '.join(unknown)}")
        self._initial_extra_specs = {k: dict(v) for k, v in (extra_specs or {}).items()}
        self._extra_specs = {k: dict(v) for k, v in self._initial_extra_specs.items()}
        self.quotas = Quotas(self.lock, tuple(self.volume_types), default_quotas)
        self.volumes: dict[str, Volume] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.messages = MessageStore()

    def reset(self) -> None:
        """Forget every volume, snapshot, quota and message; restart the id counters."""
        with self.lock:
            self.volumes.clear()
            self.snapshots.clear()
            self.quotas.clear()
            self.messages.clear()
            self._extra_specs = {k: dict(v) for k, v in self._initial_extra_specs.items()}
        self.ids.reset()

    # ---- volume types -----------------------------------------------------------------

    def extra_specs(self, type_name: str) -> dict[str, str]:
        with self.lock:
            return dict(self._extra_specs.get(type_name, {}))

    def set_extra_specs(self, type_name: str, specs: dict[str, str]) -> None:
        """Replace a type's extra specs (``openstack volume type set --property``)."""
        with self.lock:
            if type_name not in self.volume_types:
                raise ValueError(f"unknown volume type {type_name!r}")
            self._extra_specs[type_name] = {str(k): str(v) for k, v in specs.items()}

    # ---- volumes ----------------------------------------------------------------------

    def resolve_type(self, requested: str) -> str:
        """objects.VolumeType.get_by_name_or_id; returns the type name."""
        if is_uuid_like(requested):
            for name, type_id in self.volume_types.items():
                if type_id == requested:
                    return name
            raise ApiError(
                404, f"Volume type {requested} could not be found.", "VolumeTypeNotFound"
            )
        if requested not in self.volume_types:
            raise ApiError(
                404,
                f"Volume type with name {requested} could not be found.",
                "VolumeTypeNotFoundByName",
            )
        return requested

    def insert_volume(self, project_id: str, new: NewVolume) -> Volume:
        volume = Volume(
            id=self.ids.new("volume"),
            project_id=project_id,
            size=new.size,
            availability_zone=new.availability_zone,
            volume_type=new.volume_type,
            status="creating",
            created_at=self.ids.now(),
            name=new.name,
            description=new.description,
            metadata=dict(new.metadata),
            snapshot_id=new.snapshot_id,
            source_volid=new.source_volid,
            bootable=new.bootable,
            user_id=new.user_id,
            timeline=[("creating", None)],
        )
        with self.lock:
            self.volumes[volume.id] = volume
            self.quotas.book(project_id, "volumes", volume.volume_type, volume.size)
        return volume

    def settle_volume(self, volume: Volume, host: str) -> None:
        """Straight to available on ``host`` (a volume made without a create's cast)."""
        self.set_volume_status(volume, "available", host=host)

    def set_volume_status(self, volume: Volume, status: str, *, host: str | None) -> None:
        """What cinder-scheduler and cinder-volume write to the volume's row."""
        with self.lock:
            if (status, host) == (volume.status, volume.host):
                return
            volume.status = status
            volume.host = host
            volume.updated_at = self.ids.now()
            volume.timeline.append((status, host))

    def get_volume(self, project_id: str, volume_id: str) -> Volume:
        with self.lock:
            volume = self.volumes.get(volume_id)
        if volume is None or volume.project_id != project_id:
            raise ApiError(404, f"Volume {volume_id} could not be found.", "VolumeNotFound")
        return volume

    # ---- snapshots --------------------------------------------------------------------

    def insert_snapshot(
        self, project_id: str, new: NewSnapshot, *, snapshot_id: str | None = None
    ) -> Snapshot:
        snapshot = Snapshot(
            id=snapshot_id or self.ids.new("snapshot"),
            project_id=project_id,
            volume_id=new.volume.id,
            size=new.volume.size,
            status="creating",
            progress="0%",
            created_at=self.ids.now(),
            name=new.name,
            description=new.description,
            metadata=dict(new.metadata),
        )
        with self.lock:
            self.snapshots[snapshot.id] = snapshot
            self.quotas.book(project_id, "snapshots", new.volume.volume_type, snapshot.size)
        return snapshot

    def settle_snapshot(self, snapshot: Snapshot, status: str = "available") -> None:
        with self.lock:
            snapshot.status = status
            snapshot.progress = "100%" if status == "available" else snapshot.progress
            snapshot.updated_at = self.ids.now()

    def get_snapshot(self, project_id: str, snapshot_id: str) -> Snapshot:
        with self.lock:
            snapshot = self.snapshots.get(snapshot_id)
        if snapshot is None or snapshot.project_id != project_id:
            raise ApiError(404, f"Snapshot {snapshot_id} could not be found.", "SnapshotNotFound")
        return snapshot
