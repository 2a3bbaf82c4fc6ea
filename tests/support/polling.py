"""Waiting on another process: poll a condition until a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def poll(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.05,
    detail: Callable[[], Any] | None = None,
) -> Any:
    """Return ``predicate()``'s first truthy result; TimeoutError after ``timeout`` s.

    ``detail`` says what was last seen, for the error (a server's output, a scrape).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            seen = f"; last seen: {detail()!r}" if detail is not None else ""
            raise TimeoutError(f"{what} never held within {timeout:.0f} s{seen}")
        time.sleep(interval)


def eventually(check: Callable[[], None], timeout: float = 5.0, interval: float = 0.2) -> None:
    """Run ``check`` until it passes; its last AssertionError if it never does.

    For checks against a scraper: under load one scrape can time out, and the series
    then look stale for an interval; a real mistake still fails, ``timeout`` s later.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)
