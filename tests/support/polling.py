"""Waiting on another process: poll a condition until a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from typing import Any


def poll(
    predicate: Any, timeout: float = 30.0, what: str = "condition", interval: float = 0.05
) -> Any:
    """Return ``predicate()``'s first truthy result; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"{what} never held within {timeout:.0f} s")
