"""What the hooks share with the instrumentor: the telemetry to emit with, and the guard.

Kept apart from ``nova_hooks`` so that instrumenting (under ``opentelemetry-instrument``, at
interpreter start) imports nothing of OpenStack's: the hooks module is imported when nova's
own modules are, by the post-import hooks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def guarded(where: str, call: Callable[..., T], *args: Any) -> T | None:
    """``call(*args)``, or None when it fails: counted, never raised into nova."""
    try:
        return call(*args)
    except Exception as exc:
        count_failure(where, exc)
        return None


def count_failure(where: str, exc: BaseException) -> None:
    """voltrace's count of telemetry failures (imported only when there is one to count)."""
    from voltrace.pipeline import OBSERVER_ERRORS

    OBSERVER_ERRORS.record(f"nova {where}", exc)


class Runtime:
    """What the hooks need: the telemetry to emit with, and nova's controller class.

    ``telemetry_source`` returns the current process's telemetry (or None: emit nothing);
    the paste filter's builds it after fork, on the first request of each process.
    """

    def __init__(self) -> None:
        self.telemetry_source: Callable[[], Any] | None = None
        self.volume_controller: type | None = None
        self._lock = threading.Lock()
        self._emitters: tuple[Any, Any] | None = None  # (telemetry, StageEmitter)

    def emitter(self) -> Any:
        source = self.telemetry_source
        telemetry = source() if source is not None else None
        if telemetry is None:
            return None
        cached = self._emitters
        if cached is not None and cached[0] is telemetry:
            return cached[1]
        from voltrace.telemetry.observer import StageEmitter

        with self._lock:
            emitter = StageEmitter(telemetry)
            self._emitters = (telemetry, emitter)
        return emitter


RUNTIME = Runtime()
RUNTIME = Runtime()
