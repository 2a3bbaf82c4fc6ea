"""Quotas: limits per project, usage, and the over-quota answers cinder gives.

Usage is booked when a volume or snapshot is inserted and never released (nothing is
ever deleted). The lock is the store's (``State.lock``), shared so that a quota check
and the insert after it can be one critical section.
"""

from __future__ import annotations

import threading
from typing import Any

from voltrace.cinder_sim.errors import ApiError, invalid_input, quota_error
from voltrace.cinder_sim.schemas import DB_MAX_INT

# cinder/quota.py defaults (quota_volumes, per_volume_size_limit, ...), in the order
# cinder lists them in a quota set. Per-volume-type quotas (-1) follow, then "groups".
_BASE_QUOTA_DEFAULTS = {
    "volumes": 10,
    "per_volume_gigabytes": -1,
    "snapshots": 10,
    "gigabytes": 1000,
    "backups": 10,
    "backup_gigabytes": 1000,
}
_GROUP_QUOTA_DEFAULTS = {"groups": 10}
# Keys a quota_set body may carry that are not quotas (cinder ignores them).
_IGNORED_KEYS = ("tenant_id", "id")


def _deltas(kind: str, volume_type: str, size: int) -> dict[str, int]:
    """What one new volume or snapshot of ``size`` GB adds to each quota resource.

    Snapshots count against gigabytes too (no_snapshot_gb_quota is False).
    """
    return {
        kind: 1,
        "gigabytes": size,
        f"{kind}_{volume_type}": 1,
        f"gigabytes_{volume_type}": size,
    }


class Quotas:
    """Per-project limits (defaults + overrides set through the API) and usage."""

    def __init__(
        self, lock: threading.RLock, volume_types: tuple[str, ...], overrides: dict[str, int]
    ) -> None:
        self._lock = lock
        self.defaults = self._full_defaults(volume_types, overrides)
        self._limits: dict[str, dict[str, int]] = {}  # project -> resource -> limit set
        self._usage: dict[str, dict[str, int]] = {}  # project -> resource -> in_use

    @staticmethod
    def _full_defaults(volume_types: tuple[str, ...], overrides: dict[str, int]) -> dict[str, int]:
        defaults = dict(_BASE_QUOTA_DEFAULTS)
        for name in volume_types:
            for part in ("volumes", "gigabytes", "snapshots"):
                defaults[f"{part}_{name}"] = -1
        defaults.update(_GROUP_QUOTA_DEFAULTS)
        unknown = sorted(set(overrides) - set(defaults))
        if unknown:
            raise ValueError(f"unknown quota resource(s): {', '.join(unknown)}")
        defaults.update({k: int(v) for k, v in overrides.items()})
        return defaults

    def clear(self) -> None:
        with self._lock:
            self._limits.clear()
            self._usage.clear()

    def limits(self, project_id: str) -> dict[str, int]:
        with self._lock:
            return {**self.defaults, **self._limits.get(project_id, {})}

    def usage(self, project_id: str) -> dict[str, int]:
        """in_use per quota resource (nothing is ever deleted, so it only grows)."""
        with self._lock:
            return dict(self._usage.get(project_id, {}))

    def book(self, project_id: str, kind: str, volume_type: str, size: int) -> None:
        """Count a new volume or snapshot (``kind``) against its project's usage."""
        with self._lock:
            used = self._usage.setdefault(project_id, {})
            for name, delta in _deltas(kind, volume_type, size).items():
                used[name] = used.get(name, 0) + delta

    # ---- checks before a create -------------------------------------------------------

    def check_volume(self, project_id: str, size: int, volume_type: str) -> None:
        """QuotaReserveTask: per_volume_gigabytes, then volumes/gigabytes (+ per type)."""
        limits = self.limits(project_id)
        per_volume = limits["per_volume_gigabytes"]
        if per_volume >= 0 and size > per_volume:
            raise quota_error(
                "VolumeSizeExceedsLimit",
                f"Requested volume size {size}G is larger than maximum allowed limit "
                f"{per_volume}G.",
                "per_volume_gigabytes",
            )
        self._reserve(project_id, limits, "volumes", volume_type, size)

    def check_snapshot(self, project_id: str, volume_type: str, size: int) -> None:
        self._reserve(project_id, self.limits(project_id), "snapshots", volume_type, size)

    def _reserve(
        self, project_id: str, limits: dict[str, int], kind: str, volume_type: str, size: int
    ) -> None:
        """db.quota_reserve + quota_utils.process_reserve_over_quota, minus the bookkeeping
        (``book`` counts usage when the resource is inserted)."""
        usage = self.usage(project_id)
        overs = sorted(
            name
            for name, delta in _deltas(kind, volume_type, size).items()
            if limits.get(name, -1) >= 0 and limits[name] < delta + usage.get(name, 0)
        )
        # The first over in sorted order decides the message, as in cinder.
        for over in overs:
            if "gigabytes" in over:
                raise quota_error(
                    "VolumeSizeExceedsAvailableQuota",
                    f"Requested volume or snapshot exceeds allowed {over} quota. Requested "
                    f"{size}G, quota is {limits[over]}G and {usage.get(over, 0)}G has been "
                    "consumed.",
                    over,
                )
            if kind in over and kind == "snapshots":
                raise quota_error(
                    "SnapshotLimitExceeded",
                    f"Maximum number of snapshots allowed ({limits[over]}) exceeded",
                    over,
                )
            if kind in over:
                raise quota_error(
                    "VolumeLimitExceeded",
                    f"Maximum number of volumes allowed ({limits[over]}) exceeded for quota "
                    f"'{over}'.",
                    over,
                )

    # ---- quota sets (the os-quota-sets API) -------------------------------------------

    def quota_set(self, project_id: str, *, usage: bool) -> dict[str, Any]:
        limits = self.limits(project_id)
        if not usage:
            return limits
        used = self.usage(project_id)
        return {
            name: {"limit": limit, "in_use": used.get(name, 0), "reserved": 0}
            for name, limit in limits.items()
        }

    def default_quota_set(self) -> dict[str, Any]:
        return dict(self.defaults)

    def check_changes(self, quota_set: dict[str, Any]) -> dict[str, int]:
        """cinder's ``quota_set`` format check: known keys, integers >= -1."""
        bad = [key for key in quota_set if key not in self.defaults and key not in _IGNORED_KEYS]
        changes: dict[str, int] = {}
        for key, value in quota_set.items():
            if key in bad or key in _IGNORED_KEYS:
                continue
            try:
                number = int(str(value))
            except ValueError:
                raise ApiError(400, f"{key} must be an integer", "HTTPBadRequest") from None
            if number < -1:
                raise ApiError(400, f"{key} must be >= -1", "HTTPBadRequest")
            if number > DB_MAX_INT:
                raise ApiError(400, f"{key} must be <= {DB_MAX_INT}", "HTTPBadRequest")
            changes[key] = number
        if bad:
            raise invalid_input(f"Bad key(s) in quota set: {', '.join(bad)}")
        return changes

    def update(self, project_id: str, changes: dict[str, int]) -> None:
        with self._lock:
            used = self.usage(project_id)
            for key, value in changes.items():
                in_use = used.get(key, 0)
                if key != "per_volume_gigabytes" and value != -1 and value < in_use:
                    raise ApiError(
                        400,
                        f"Quota {key} limit must be equal or greater than existing resources. "
                        f"Current usage is {in_use} and the requested limit is {value}.",
                        "HTTPBadRequest",
                    )
            self._limits.setdefault(project_id, {}).update(changes)
