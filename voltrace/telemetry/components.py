"""Bench-only: which telemetry parts run.

bench/attribution.py adds them one at a time to measure each one's cost. The variable is a
comma-separated subset of ``ALL_COMPONENTS``, or ``none``; unset means all of them, which
is what every user gets. Read once, at import.
"""

from __future__ import annotations

import os
from typing import Any

COMPONENTS_ENV = "VOLTRACE_TELEMETRY_COMPONENTS"
ALL_COMPONENTS = frozenset({"server", "client", "stages", "logs", "metrics"})


def _components() -> frozenset[str]:
    raw = os.environ.get(COMPONENTS_ENV)
    if raw is None:
        return ALL_COMPONENTS
    names = {n.strip().lower() for n in raw.split(",") if n.strip()} - {"none"}
    unknown = names - ALL_COMPONENTS
    if unknown:
        raise ValueError(
            f"{COMPONENTS_ENV}: unknown part(s) {sorted(unknown)}; "
            f"use a subset of {sorted(ALL_COMPONENTS)} or none"
        )
    return frozenset(names)


COMPONENTS = _components()


def components_of(telemetry: Any) -> frozenset[str]:
    """The parts ``telemetry`` emits (all of them unless the bench knob says otherwise)."""
    return frozenset(getattr(telemetry, "components", ALL_COMPONENTS))
