"""Faults to inject: :class:`Fault` itself, and which ones a request meets.

The rules (how faults combine, what each action does) are in the package docstring;
``app.py`` applies them to a request.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from voltrace.cinder_sim.routes import ROUTES

FAULT_ACTIONS = ("drop", "reset", "garbage", "truncated")


@dataclass
class Fault:
    """A misbehaviour to inject on one route (see the package docstring for semantics)."""

    route: str
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    latency_ms: float = 0
    action: str | None = None
    times: int | None = None

    def __post_init__(self) -> None:
        if self.route not in ROUTES:
            raise ValueError(f"unknown route {self.route!r}; expected one of {ROUTES}")
        if self.action is not None and self.action not in FAULT_ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; expected one of {FAULT_ACTIONS}")
        if self.status is not None:
            self.status = int(self.status)
            if not 100 <= self.status <= 599:
                raise ValueError(f"status must be an HTTP status code, got {self.status!r}")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 (or None for forever)")
        if self.status is None and self.action is None and not self.latency_ms:
            raise ValueError("a fault needs a status, an action or a latency_ms")

    @classmethod
    def parse(cls, text: str) -> Fault:
        """Parse the CLI form ``ROUTE:key=value,key=value``.

        Keys: ``status``, ``latency_ms``, ``action``, ``times``, ``body`` (JSON if it
        parses, else text) and ``headers.NAME``. Example:
        ``volumes.create:status=413,headers.Retry-After=0``.
        """
        route, sep, spec = text.partition(":")
        if not sep or not spec:
            raise ValueError(f"fault {text!r} must look like ROUTE:key=value[,key=value]")
        kwargs: dict[str, Any] = {"route": route.strip()}
        headers: dict[str, str] = {}
        for item in spec.split(","):
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key:
                raise ValueError(f"fault item {item!r} must be key=value")
            if key.startswith("headers."):
                headers[key.removeprefix("headers.")] = value
            elif key in ("status", "times"):
                kwargs[key] = parse_number(key, value, int, "an integer")
            elif key == "latency_ms":
                kwargs[key] = parse_number(key, value, float, "a number of milliseconds")
            elif key == "action":
                kwargs[key] = value
            elif key == "body":
                try:
                    kwargs[key] = json.loads(value)
                except ValueError:
                    kwargs[key] = value
            else:
                raise ValueError(f"unknown fault key {key!r}")
        kwargs["headers"] = headers
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Build from JSON: the dataclass fields, or ``{"spec": "ROUTE:..."}``."""
        if "spec" in data:
            return cls.parse(str(data["spec"]))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict."""
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """The CLI-style spec of this fault, e.g. ``volumes.create:status=500``."""
        parts = []
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.action:
            parts.append(f"action={self.action}")
        if self.latency_ms:
            parts.append(f"latency_ms={self.latency_ms:g}")
        if self.times is not None:
            parts.append(f"times={self.times}")
        parts.extend(f"headers.{k}={v}" for k, v in self.headers.items())
        return f"{self.route}:{','.join(parts)}"


@dataclass(frozen=True)
class Injection:
    """The faults one request met (as they were when it met them), and what they add up to."""

    faults: tuple[Fault, ...] = ()

    @property
    def latency_ms(self) -> float:
        return sum(f.latency_ms for f in self.faults)

    @property
    def decisive(self) -> Fault | None:
        """The first fault with a status or an action: it decides the answer."""
        return next((f for f in self.faults if f.action or f.status is not None), None)

    def describe(self) -> str:
        return ";".join(f.describe() for f in self.faults)


class FaultBook:
    """The active faults, shared by every request thread.

    Faults are kept as private deep copies, so a caller's :class:`Fault` object never
    changes and ``times`` counts down here only.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if not isinstance(fault, Fault):
            raise TypeError(f"expected a Fault, got {type(fault).__name__}")
        with self._lock:
            self._faults.append(copy.deepcopy(fault))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def copies(self) -> list[Fault]:
        """The active faults (copies), with their remaining ``times``."""
        with self._lock:
            return copy.deepcopy(self._faults)

    def take(self, route: str) -> Injection:
        """The faults that apply to a request on ``route``; each one counts one use."""
        taken: list[Fault] = []
        with self._lock:
            for fault in list(self._faults):
                if fault.route != route:
                    continue
                taken.append(copy.copy(fault))  # before the countdown: spans show "times=1"
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
        return Injection(tuple(taken))


def parse_number(key: str, value: str, kind: type, expected: str) -> Any:
    """``kind(value)``, or a ValueError that names the key and what it takes."""
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{key}={value!r}: expected {expected}") from None
