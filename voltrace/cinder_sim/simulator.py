""":class:`CinderSimulator`: the public handle on one simulated Cinder.

It owns the socket (bound in ``__init__``), the serving thread, the store, the active
faults, the recorded requests and the simulated cinder-scheduler and cinder-volume
(``async_create.py``); the work per request is in ``app.py``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from voltrace.cinder_sim.admin import admin
from voltrace.cinder_sim.app import ApiSettings, CinderApp
from voltrace.cinder_sim.async_create import (
    NULL_LOGGER,
    SCHEDULER_SERVICE,
    TRACER_NAME,
    VOLUME_SERVICE,
    AsyncBackend,
    ServiceTelemetry,
)
from voltrace.cinder_sim.backends import BackendFault, BackendSettings
from voltrace.cinder_sim.faults import Fault, FaultBook
from voltrace.cinder_sim.messages import RecordedRequest
from voltrace.cinder_sim.server import HTTPServer
from voltrace.cinder_sim.state import NewSnapshot, NewVolume, State
from voltrace.cinder_sim.tracing import Tracing
from voltrace.cinder_sim.user_messages import message_view
from voltrace.cinder_sim.views import snapshot_view

if TYPE_CHECKING:
    from voltrace.telemetry import Telemetry


class CinderSimulator:
    """A Cinder v3 API on a real socket; see the package docstring for what it serves.

    ``telemetry`` (a :class:`voltrace.telemetry.Telemetry` for ``cinder-api``) traces and
    logs the API and, through two siblings of it, ``cinder-scheduler`` and
    ``cinder-volume``. ``tracer_provider`` alone traces the API only, as before.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        deterministic: bool = False,
        tracer_provider: trace.TracerProvider | None = None,
        telemetry: Telemetry | None = None,
        availability_zones: tuple[str, ...] = ("nova",),
        volume_types: tuple[str, ...] = ("__DEFAULT__", "lvmdriver-1"),
        volume_type_extra_specs: Mapping[str, Mapping[str, str]] | None = None,
        default_quotas: dict[str, int] | None = None,
        faults: Iterable[Fault] = (),
        backend: BackendSettings | None = None,
        backend_faults: Iterable[BackendFault] = (),
        services_down: Iterable[str] = (),
        auth_strategy: str = "keystone",
        project_id_regex: str | None = None,
    ) -> None:
        if not availability_zones:
            raise ValueError("at least one availability zone is needed")
        if "__DEFAULT__" not in volume_types:
            # cinder refuses to create untyped volumes without its default type.
            volume_types = ("__DEFAULT__", *volume_types)
        api_settings = ApiSettings(
            auth_strategy=auth_strategy,
            **({"project_id_regex": project_id_regex} if project_id_regex is not None else {}),
        )
        self.deterministic = deterministic
        self._state = State(
            deterministic=deterministic,
            availability_zones=tuple(availability_zones),
            volume_types=tuple(volume_types),
            default_quotas=dict(default_quotas or {}),
            extra_specs={k: dict(v) for k, v in (volume_type_extra_specs or {}).items()},
        )
        self._faults = FaultBook()
        for fault in faults:
            self._faults.add(fault)

        self._telemetry = telemetry
        self._siblings: list[Telemetry] = []
        api_logger: Any = NULL_LOGGER
        scheduler = volume = ServiceTelemetry.disabled()
        if telemetry is not None:
            tracer_provider = telemetry.tracer_provider if telemetry.enabled else None
            api_logger = telemetry.logger
            scheduler = self._sibling_telemetry(telemetry, SCHEDULER_SERVICE)
            volume = self._sibling_telemetry(telemetry, VOLUME_SERVICE)

        self._backend = AsyncBackend(
            self._state,
            backend or BackendSettings(),
            deterministic=deterministic,
            scheduler=scheduler,
            volume=volume,
            api_logger=api_logger,
        )
        for backend_fault in backend_faults:
            self._backend.inject(backend_fault)
        # Stopped long enough ago that os-services (and the scheduler) already see it down.
        self._services_down = tuple(services_down)
        self._stop_services_as_configured()

        self._app = CinderApp(
            self._state,
            self._faults,
            Tracing(tracer_provider),
            self._backend,
            settings=api_settings,
            logger=api_logger,
        )
        self._lock = threading.Lock()  # guards recorded and the lifecycle
        self.recorded: list[RecordedRequest] = []
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False

        # Bind now, so url and endpoint_template are known before start().
        self._server = HTTPServer(
            (host, port),
            handle=self._app.handle,
            record=self._record,
            admin=functools.partial(admin, self),
        )
        address, bound_port = self._server.server_address[:2]
        bound_host = address.decode() if isinstance(address, bytes) else str(address)
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.host = bound_host
        self.port = int(bound_port)
        self.url = f"http://{shown_host}:{self.port}"
        self.endpoint_template = self.url + "/v3/%(project_id)s"

    def _sibling_telemetry(self, telemetry: Telemetry, service: str) -> ServiceTelemetry:
        sibling = telemetry.sibling(service)
        self._siblings.append(sibling)
        tracer: trace.Tracer = (
            sibling.tracer_provider.get_tracer(TRACER_NAME)
            if sibling.enabled
            else trace.NoOpTracer()
        )
        return ServiceTelemetry(tracer, sibling.logger)

    def _stop_services_as_configured(self) -> None:
        settings = self._backend.settings
        long_ago = settings.service_down_time_s + settings.report_interval_s
        for binary in self._services_down:
            self._backend.stop_service(binary, down_for_s=long_ago)

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> CinderSimulator:
        """Serve in a daemon thread; returns self. Calling it twice is harmless."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("a stopped CinderSimulator cannot be restarted")
            if self._thread is None:
                self._serving = True
                self._backend.start(f"cinder-sim:{self.port}:services")
                self._thread = threading.Thread(
                    target=self._server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"cinder-sim:{self.port}",
                    daemon=True,
                )
                self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` is called from another one."""
        with self._lock:
            if self._stopped or self._serving:
                raise RuntimeError("the simulator is already serving or was stopped")
            self._serving = True
            self._backend.start(f"cinder-sim:{self.port}:services")
        self._server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        """Stop serving and the services, drop keep-alive connections, flush. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            serving = self._serving
        if serving:
            self._server.shutdown()  # only safe once serve_forever has been entered
        self._server.close_connections()
        self._server.server_close()
        self._backend.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sibling in self._siblings:
            sibling.shutdown()

    def __enter__(self) -> CinderSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- recorded requests and faults -------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.recorded.append(request)

    def recorded_requests(self) -> list[RecordedRequest]:
        """A copy of the recorded requests, safe to read while requests arrive."""
        with self._lock:
            return list(self.recorded)

    def clear_recorded(self) -> None:
        """Forget the recorded requests (the list object stays the same)."""
        with self._lock:
            self.recorded.clear()

    def inject(self, fault: Fault) -> None:
        """Add a fault at runtime. A copy is kept, so ``times`` counts down privately."""
        self._faults.add(fault)

    def clear_faults(self) -> None:
        """Remove every fault."""
        self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        """The active faults (copies), with their remaining ``times``."""
        return self._faults.copies()

    def reset(self) -> None:
        """Back to how it started: no volumes, snapshots, quotas, messages, recorded requests
        or faults; ids restart; creates in flight are abandoned; the backend's settings and
        services are as configured."""
        self._backend.reset()
        self._stop_services_as_configured()
        self._state.reset()
        self.clear_recorded()
        self._faults.clear()

    # ---- behind the API: cinder-scheduler and cinder-volume ------------------------------

    @property
    def backend_settings(self) -> BackendSettings:
        return self._backend.settings

    def configure_backend(self, **changes: Any) -> BackendSettings:
        """Change backend settings at runtime, e.g. ``capacity_gb=100, scheduling_s=0.01``."""
        return self._backend.configure(changes)

    def inject_backend_fault(self, fault: BackendFault) -> None:
        self._backend.inject(fault)

    def clear_backend_faults(self) -> None:
        self._backend.faults.clear()

    @property
    def backend_faults(self) -> list[BackendFault]:
        return self._backend.faults.copies()

    def stop_service(self, binary: str, *, down_for_s: float = 0.0) -> None:
        """Stop ``cinder-scheduler`` or ``cinder-volume``; casts to it wait in its queue.

        os-services says ``down`` once ``service_down_time_s`` has passed since its last
        heartbeat (``down_for_s`` backdates the stop).
        """
        self._backend.stop_service(binary, down_for_s=down_for_s)

    def start_service(self, binary: str, *, purge: bool = False) -> None:
        """Start it again: it consumes what waited in its queue (``purge``: drops it, and
        the creates that waited stay ``creating``)."""
        self._backend.start_service(binary, purge=purge)

    def set_volume_type_extra_specs(self, type_name: str, specs: Mapping[str, str]) -> None:
        self._state.set_extra_specs(type_name, dict(specs))

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Until the services have nothing left to do (casts held by a stopped service
        do not count); False on timeout."""
        return self._backend.wait_idle(timeout_s)

    def backend_state(self) -> dict[str, Any]:
        """Settings, driver faults, services and free capacity (what ``/__sim__/backend``
        shows)."""
        return {
            "settings": self._backend.settings.to_dict(),
            "faults": [f.to_dict() for f in self._backend.faults.copies()],
            "services": self._backend.services.snapshot(),
            "free_capacity_gb": self._backend.free_capacity_gb(),
        }

    def volume_timeline(self, volume_id: str) -> list[tuple[str, str | None]]:
        """Every (status, host) a volume went through, oldest first."""
        with self._state.lock:
            return list(self._state.volumes[volume_id].timeline)

    def volume_story(self, volume_id: str) -> dict[str, Any]:
        """A volume's status, host, timeline and user messages (oldest first)."""
        with self._state.lock:
            volume = self._state.volumes[volume_id]
            story: dict[str, Any] = {
                "id": volume.id,
                "status": volume.status,
                "host": volume.host,
                "timeline": [list(step) for step in volume.timeline],
            }
            project = volume.project_id
        story["messages"] = [
            message_view(m, self.url, project) for m in self._state.messages.for_resource(volume_id)
        ]
        return story

    def add_snapshot(
        self,
        project_id: str,
        *,
        size: int = 1,
        status: str = "available",
        snapshot_id: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Create a backing volume and a snapshot of it directly (no quota, no HTTP).

        Returns the snapshot as ``GET /v3/{p}/snapshots/{id}`` shows it.
        """
        if size < 1:
            raise ValueError("size must be >= 1")
        state = self._state
        with state.lock:
            new_volume = NewVolume(
                size=size,
                availability_zone=state.availability_zones[0],
                volume_type="__DEFAULT__",
            )
            volume = state.insert_volume(project_id, new_volume)
            state.settle_volume(volume, self._backend.settings.pool_host)
            new_snapshot = NewSnapshot(volume=volume, name=name)
            snapshot = state.insert_snapshot(project_id, new_snapshot, snapshot_id=snapshot_id)
            state.settle_snapshot(snapshot, status=status)
            return snapshot_view(snapshot, show_extensions=True)["snapshot"]
