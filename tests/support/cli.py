"""Starting voltrace's own commands as a user would: ``python -m voltrace ...``."""

from __future__ import annotations

import sys


def voltrace_command(*args: str) -> list[str]:
    """The command line of ``voltrace ARGS...`` with this interpreter (no PATH needed)."""
    return [sys.executable, "-m", "voltrace", *args]
