""":class:`CinderSimulator`: the public handle on one simulated cinder-api.

It owns the socket (bound in ``__init__``), the serving thread, the store, the active
faults and the list of recorded requests; the work per request is in ``app.py``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace

from voltrace.cinder_sim.app import CinderApp
from voltrace.cinder_sim.faults import Fault, FaultBook
from voltrace.cinder_sim.messages import RecordedRequest
from voltrace.cinder_sim.server import HTTPServer
from voltrace.cinder_sim.state import NewSnapshot, NewVolume, State
from voltrace.cinder_sim.tracing import Tracing
from voltrace.cinder_sim.views import snapshot_view


class CinderSimulator:
    """A Cinder v3 API on a real socket; see the package docstring for what it serves."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        deterministic: bool = False,
        tracer_provider: trace.TracerProvider | None = None,
        availability_zones: tuple[str, ...] = ("nova",),
        volume_types: tuple[str, ...] = ("__DEFAULT__", "lvmdriver-1"),
        default_quotas: dict[str, int] | None = None,
        faults: Iterable[Fault] = (),
    ) -> None:
        if not availability_zones:
            raise ValueError("at least one availability zone is needed")
        if "__DEFAULT__" not in volume_types:
            # cinder refuses to create untyped volumes without its default type.
            volume_types = ("__DEFAULT__", *volume_types)
        self.deterministic = deterministic
        self._state = State(
            deterministic=deterministic,
            availability_zones=tuple(availability_zones),
            volume_types=tuple(volume_types),
            default_quotas=dict(default_quotas or {}),
        )
        self._faults = FaultBook()
        for fault in faults:
            self._faults.add(fault)
        self._app = CinderApp(self._state, self._faults, Tracing(tracer_provider))
        self._lock = threading.Lock()  # guards recorded, _connections and the lifecycle
        self.recorded: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False

        # Bind now, so url and endpoint_template are known before start().
        self._server = HTTPServer((host, port), self)
        bound_host, bound_port = self._server.server_address[:2]
        shown_host = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self.host = str(bound_host)
        self.port = int(bound_port)
        self.url = f"http://{shown_host}:{self.port}"
        self.endpoint_template = self.url + "/v3/%(project_id)s"

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> CinderSimulator:
        """Serve in a daemon thread; returns self. Calling it twice is harmless."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("a stopped CinderSimulator cannot be restarted")
            if self._thread is None:
                self._serving = True
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
        self._server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections, close the socket. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            serving = self._serving
        if serving:
            self._server.shutdown()  # only safe once serve_forever has been entered
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> CinderSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- recorded requests and faults -------------------------------------------------

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
        """Drop volumes, snapshots, quotas, recorded requests and faults; restart ids."""
        self._state.reset()
        self.clear_recorded()
        self._faults.clear()

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
            state.settle_volume(volume)
            new_snapshot = NewSnapshot(volume=volume, name=name)
            snapshot = state.insert_snapshot(project_id, new_snapshot, snapshot_id=snapshot_id)
            state.settle_snapshot(snapshot, status=status)
            return snapshot_view(snapshot, show_extensions=True)["snapshot"]

    # ---- used by server.py --------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.recorded.append(request)

    def _recorded_copy(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.recorded)

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
