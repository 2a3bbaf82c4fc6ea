"""What sits behind the simulated cinder-api: settings, the backend, its faults, the services.

* :class:`BackendSettings` is the simulated ``cinder.conf`` of cinder-scheduler and
  cinder-volume (host, backend, capacity, ``scheduler_max_attempts``,
  ``service_down_time``, ``report_interval``) plus how long each step takes.
* :class:`BackendFault` makes the volume driver misbehave (``driver_error``,
  ``driver_error_no_reschedule``, ``slow_driver``).
* :class:`Services` knows whether cinder-scheduler and cinder-volume are running, and what
  ``os-services`` (their heartbeat in the DB) says about them.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from voltrace import semconv
from voltrace.cinder_sim.faults import parse_number
from voltrace.cinder_sim.state import DETERMINISTIC_TIME

SCHEDULER = semconv.SCHEDULER_SERVICE
VOLUME = semconv.VOLUME_SERVICE
BINARIES = (SCHEDULER, VOLUME)


@dataclass(frozen=True)
class Timing:
    """A duration in seconds: uniform in [low, high], or its midpoint when deterministic."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if self.low < 0 or self.high < self.low:
            raise ValueError(f"a timing needs 0 <= low <= high, got {self.low}-{self.high}")

    @classmethod
    def parse(cls, text: str | float | int | list[float] | tuple[float, ...]) -> Timing:
        """``0.2``, ``"0.1-0.2"`` or ``[0.1, 0.2]``."""
        if isinstance(text, list | tuple):
            low, high = (float(v) for v in text)
            return cls(low, high)
        if isinstance(text, int | float):
            return cls(float(text), float(text))
        low_text, sep, high_text = str(text).strip().partition("-")
        low = float(low_text)
        return cls(low, float(high_text) if sep else low)

    def pick(self, rng: random.Random | None) -> float:
        if rng is None or self.low == self.high:
            return (self.low + self.high) / 2
        return rng.uniform(self.low, self.high)

    def to_json(self) -> list[float]:
        return [self.low, self.high]


_TIMING_FIELDS = ("scheduling_s", "volume_create_s", "driver_s")


@dataclass
class BackendSettings:
    """The simulated cinder.conf behind the API, and the time each step takes.

    Defaults are cinder 29's, and the timings are those measured on a real cinder 29 with
    its fake driver (``../shared/full-cinder.md``): scheduling 0.1-0.2 s, cinder-volume's
    create 0.2-0.3 s, of which the driver itself takes next to nothing.
    """

    host: str = "cinder-sim"  # [DEFAULT] host
    backend: str = "lvmdriver-1"  # the enabled_backends section
    pool: str = "lvmdriver-1"
    volume_backend_name: str = "lvmdriver-1"
    capacity_gb: float | None = None  # None: the pool reports "infinite"
    scheduler_max_attempts: int = 3
    service_down_time_s: float = 60.0
    report_interval_s: float = 10.0
    # Bounds os-services at >= 3.49, an RPC call to the scheduler.
    rpc_response_timeout_s: float = 60.0
    scheduling_s: Timing = field(default_factory=lambda: Timing(0.1, 0.2))
    volume_create_s: Timing = field(default_factory=lambda: Timing(0.2, 0.3))
    driver_s: Timing = field(default_factory=lambda: Timing(0.0, 0.0))
    max_in_flight: int = 10000  # creates between the API's cast and their outcome

    def __post_init__(self) -> None:
        for name in _TIMING_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, Timing):
                setattr(self, name, Timing.parse(value))
        if self.scheduler_max_attempts < 1:
            # cinder's FilterScheduler refuses it too (InvalidParameterValue).
            raise ValueError("scheduler_max_attempts must be >= 1")
        if self.capacity_gb is not None and self.capacity_gb < 0:
            raise ValueError("capacity_gb must be >= 0 (or None for infinite)")
        for name in ("service_down_time_s", "report_interval_s", "rpc_response_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")

    @property
    def volume_service_host(self) -> str:
        return f"{self.host}@{self.backend}"

    @property
    def pool_host(self) -> str:
        """What a volume's ``host`` becomes once scheduled: ``host@backend#pool``."""
        return f"{self.host}@{self.backend}#{self.pool}"

    def capabilities(self, free_gb: float | None) -> dict[str, Any]:
        """The pool's stats as the scheduler sees them (LVM-like)."""
        capacity: Any = "infinite" if self.capacity_gb is None else self.capacity_gb
        return {
            "volume_backend_name": self.volume_backend_name,
            "vendor_name": "Open Source",
            "driver_version": "3.0.0",
            "storage_protocol": "iSCSI",
            "total_capacity_gb": capacity,
            "free_capacity_gb": "infinite" if free_gb is None else free_gb,
            "reserved_percentage": 0,
            "thin_provisioning_support": False,
            "thick_provisioning_support": True,
            "multiattach": True,
            "backend_state": "up",
        }

    def updated(self, changes: dict[str, Any]) -> BackendSettings:
        """A copy with ``changes`` applied (unknown keys are an error)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown backend setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {
            name: Timing.parse(value) if name in _TIMING_FIELDS else value
            for name, value in changes.items()
        }
        return dataclasses.replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in _TIMING_FIELDS:
            data[name] = getattr(self, name).to_json()
        return data


# ---- driver faults ----------------------------------------------------------------------

BACKEND_FAULT_KINDS = ("driver_error", "driver_error_no_reschedule", "slow_driver")


@dataclass
class BackendFault:
    """The volume driver misbehaves on its next ``times`` create calls (None: every one).

    * ``driver_error``: ``create_volume`` raises VolumeBackendAPIException, which cinder
      reschedules (on the same host, up to ``scheduler_max_attempts`` in all);
    * ``driver_error_no_reschedule``: it raises MetadataUpdateFailure, one of cinder's
      ``no_reschedule_types``: the volume goes straight to ``error``;
    * ``slow_driver``: ``create_volume`` takes ``delay_s`` longer (a slow backend).

    The same outcomes, per volume, come from a create's metadata, like the fault-injecting
    driver of ``../shared/full-cinder.md``: ``fault=noresched``, any other ``fault`` value,
    and ``sleep_s=<seconds>``.
    """

    kind: str
    times: int | None = None
    delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in BACKEND_FAULT_KINDS:
            raise ValueError(
                f"unknown backend fault {self.kind!r}; expected one of {BACKEND_FAULT_KINDS}"
            )
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for forever)")
        if self.delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        if self.kind == "slow_driver" and not self.delay_s:
            raise ValueError("a slow_driver fault needs delay_s > 0")

    @classmethod
    def parse(cls, text: str) -> BackendFault:
        """The CLI form ``KIND[:times=N,delay_s=S]``, e.g. ``slow_driver:delay_s=8``."""
        kind, _, spec = text.partition(":")
        kwargs: dict[str, Any] = {"kind": kind.strip()}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"backend fault item {item!r} must be key=value")
            if key == "times":
                kwargs["times"] = parse_number(key, value, int, "an integer")
            elif key == "delay_s":
                kwargs["delay_s"] = parse_number(key, value, float, "a number of seconds")
            else:
                raise ValueError(f"unknown backend fault key {key!r}")
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackendFault:
        if "spec" in data:
            return cls.parse(str(data["spec"]))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown backend fault field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BackendFaultBook:
    """The active driver faults; each driver create call counts one use of each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[BackendFault] = []

    def add(self, fault: BackendFault) -> None:
        if not isinstance(fault, BackendFault):
            raise TypeError(f"expected a BackendFault, got {type(fault).__name__}")
        with self._lock:
            self._faults.append(copy.deepcopy(fault))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def copies(self) -> list[BackendFault]:
        with self._lock:
            return copy.deepcopy(self._faults)

    def take(self) -> list[BackendFault]:
        taken: list[BackendFault] = []
        with self._lock:
            for fault in list(self._faults):
                taken.append(copy.copy(fault))
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
        return taken


# ---- services and their heartbeats ------------------------------------------------------


@dataclass
class Service:
    """One cinder service process: running or not, and when it last wrote its heartbeat."""

    binary: str
    host: str
    zone: str
    started_at: float  # time.monotonic()
    stopped_at: float | None = None

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def last_heartbeat(self, now: float, report_interval_s: float) -> float:
        """Heartbeats land every report_interval from the start, until it stops."""
        until = now if self.stopped_at is None else min(now, self.stopped_at)
        beats = int(max(0.0, until - self.started_at) // report_interval_s)
        return self.started_at + beats * report_interval_s


class Services:
    """cinder-scheduler and cinder-volume: running or stopped, up or down in the DB."""

    def __init__(self, settings: BackendSettings, zone: str, *, deterministic: bool) -> None:
        self._lock = threading.Lock()
        self._deterministic = deterministic
        # Heartbeats are kept in monotonic time; this pair turns one into a wall-clock time.
        self._anchor_mono = time.monotonic()
        self._anchor_utc = datetime.now(UTC).replace(tzinfo=None)
        self.settings = settings
        self.zone = zone
        self._services: dict[str, Service] = {}
        self.restore_all()

    def restore_all(self) -> None:
        """Every service running, as if just started (what reset() leaves)."""
        now = time.monotonic()
        with self._lock:
            self._services = {
                SCHEDULER: Service(SCHEDULER, self.settings.host, self.zone, now),
                VOLUME: Service(VOLUME, self.settings.volume_service_host, self.zone, now),
            }

    def rehost(self, settings: BackendSettings) -> None:
        """New settings (e.g. another host name): keep each service's running state."""
        with self._lock:
            self.settings = settings
            self._services[SCHEDULER].host = settings.host
            self._services[VOLUME].host = settings.volume_service_host

    def get(self, binary: str) -> Service:
        with self._lock:
            return copy.copy(self._services[_known(binary)])

    def running(self, binary: str) -> bool:
        return self.get(binary).running

    def stop(self, binary: str, *, down_for_s: float = 0.0) -> bool:
        """Stop a service (as SIGSTOP/SIGKILL would), ``down_for_s`` seconds ago.

        Returns False if it was already stopped.
        """
        with self._lock:
            service = self._services[_known(binary)]
            if not service.running:
                return False
            now = time.monotonic()
            service.stopped_at = now - max(0.0, down_for_s)
            service.started_at = min(service.started_at, service.stopped_at)
            return True

    def start(self, binary: str) -> bool:
        """Start a stopped service: it heartbeats at once. False if it was running."""
        with self._lock:
            service = self._services[_known(binary)]
            if service.running:
                return False
            service.started_at = time.monotonic()
            service.stopped_at = None
            return True

    def is_up(self, binary: str) -> bool:
        """cinder's ``service_is_up``: the last heartbeat is within service_down_time."""
        now = time.monotonic()
        service = self.get(binary)
        heartbeat = service.last_heartbeat(now, self.settings.report_interval_s)
        return abs(now - heartbeat) <= self.settings.service_down_time_s

    def updated_at(self, binary: str) -> datetime:
        """The heartbeat's wall-clock time, naive UTC as cinder stores it."""
        if self._deterministic:
            return DETERMINISTIC_TIME
        service = self.get(binary)
        heartbeat = service.last_heartbeat(time.monotonic(), self.settings.report_interval_s)
        return self._anchor_utc + timedelta(seconds=heartbeat - self._anchor_mono)

    def snapshot(self) -> list[dict[str, Any]]:
        """For the admin API: each service's running state and what the DB says."""
        return [
            {
                "binary": binary,
                "host": self.get(binary).host,
                "running": self.running(binary),
                "state": "up" if self.is_up(binary) else "down",
            }
            for binary in BINARIES
        ]


def _known(binary: str) -> str:
    if binary not in BINARIES:
        raise ValueError(f"unknown service {binary!r}; expected one of {BINARIES}")
    return binary
