"""The background thread the simulated cinder-scheduler and cinder-volume run on.

One thread runs timed callbacks in due order (a heap keyed by due time, then by
submission order), so a hundred creates in flight cost one thread, a slow backend does not
hold up the creates behind it, and the same submissions always run in the same order.
The number of pending callbacks is bounded; :meth:`Worker.submit` refuses past the bound
instead of letting memory grow. :meth:`Worker.stop` drops what is pending and joins.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable

Callback = Callable[[], None]


class Worker:
    def __init__(
        self,
        *,
        max_pending: int,
        name: str,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.max_pending = max_pending
        self._name = name
        self._on_error = on_error
        self._heap: list[tuple[float, int, Callback]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._running = 0  # callbacks executing right now (0 or 1)
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self, name: str | None = None) -> None:
        with self._changed:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._run, name=name or self._name, daemon=True)
            self._thread.start()

    def submit(self, delay_s: float, callback: Callback) -> bool:
        """Run ``callback`` on the worker after ``delay_s``; False if full or stopped."""
        due = time.monotonic() + max(0.0, delay_s)
        with self._changed:
            if self._stopping or len(self._heap) >= self.max_pending:
                return False
            heapq.heappush(self._heap, (due, next(self._order), callback))
            self._changed.notify_all()
        return True

    @property
    def pending(self) -> int:
        with self._changed:
            return len(self._heap)

    def clear(self) -> None:
        """Drop every pending callback (the one running, if any, finishes)."""
        with self._changed:
            self._heap.clear()
            self._changed.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Until nothing is pending or running; False on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._heap and not self._running, timeout=timeout_s
            )

    def stop(self, timeout_s: float = 5.0) -> None:
        """Drop what is pending, let a running callback finish, join. Idempotent."""
        with self._changed:
            self._stopping = True
            self._heap.clear()
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout_s)

    def _next(self) -> Callback | None:
        """The next due callback, waiting for it; None once stopping."""
        with self._changed:
            while not self._stopping:
                if self._heap:
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        self._running += 1
                        return heapq.heappop(self._heap)[2]
                    self._changed.wait(wait)
                else:
                    self._changed.wait()
            return None

    def _run(self) -> None:
        while (callback := self._next()) is not None:
            try:
                callback()
            except Exception as exc:  # one broken create must not stop the services
                self._report(exc)
            finally:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()

    def _report(self, exc: BaseException) -> None:
        if self._on_error is None:
            return
        # If the error reporter itself fails, nothing is left to tell.
        with contextlib.suppress(Exception):
            self._on_error(exc)
