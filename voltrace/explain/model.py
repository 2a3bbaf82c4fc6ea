"""What ``explain`` says about one create: the ``Diagnosis`` and its parts.

A diagnosis is plain data: made from a trace (``from_trace``) or from logs
(``from_logs``), given its advice (``advice``), then printed (``render``), summed up
(``summary``) or drawn (``waterfall``, ``html``). It holds no spans: what the drawings
need from the trace is kept as waterfall rows, so a diagnosis outlives its trace and
a big file never stays in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voltrace.semconv import FAILURES
from voltrace.terminal import WaterfallRow, format_ms

if TYPE_CHECKING:
    from voltrace.explain.after_answer import AfterAnswer


@dataclass
class StageTiming:
    name: str
    status: str  # ok, skipped, error
    duration_ms: float
    share: float | None  # of the whole request


@dataclass
class Hop:
    """One call from nova-api to Cinder, as its CLIENT span saw it."""

    method: str
    url: str
    target: str  # the callee's service name, or host:port when it never answered
    status: int | str | None  # HTTP status, or the error (e.g. ConnectionError)
    duration_ms: float
    callee_ms: float | None  # the callee's own server span
    share: float | None


@dataclass
class TimeShare:
    """One part of the request's time, named for what it was (``timing``)."""

    what: str  # e.g. "inside cinder-api", "retry backoff between connection attempts"
    ms: float
    share: float | None


@dataclass
class Advice:
    """The next step: what to do, and the commands to run (each whole, to copy)."""

    text: str
    commands: list[str] = field(default_factory=list)

    def flat(self) -> str:
        """The text with its commands, as one line of prose."""
        if not self.commands:
            return self.text
        return f"{self.text} " + "; ".join(self.commands)


@dataclass
class Diagnosis:
    """What one create did and, if it failed, why and what to do."""

    source: str  # "trace" or "logs"
    trace_id: str | None
    request_id: str | None
    global_request_id: str | None = None
    project_id: str | None = None
    user_id: str | None = None
    volume_id: str | None = None
    outcome: str = "unknown"
    http_status: int | None = None
    duration_ms: float | None = None
    started_ns: int = 0  # when the create began (for ordering), 0 when unknown
    failed_stage: str | None = None
    failure_class: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    nova_code: str | None = None  # of the failed stage
    cinder_request_id: str | None = None
    stages: list[StageTiming] = field(default_factory=list)
    critical_path: list[dict[str, Any]] = field(default_factory=list)
    slowest_hop: Hop | None = None
    time_spent: list[TimeShare] = field(default_factory=list)
    # Class-specific facts: quota, endpoint, attempts, snapshot_id, volume_type, field...
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    description: str | None = None  # a few words on this failure, with its own numbers
    advice: Advice | None = None
    link: str | None = None  # the trace in a viewer (--jaeger-url)
    after_answer: AfterAnswer | None = None  # the volume's fate in Cinder after Nova's answer
    # The waterfall, when one was asked for (not part of the JSON).
    waterfall: list[WaterfallRow] = field(default_factory=list, repr=False, compare=False)
    waterfall_ms: float | None = field(default=None, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        return self.outcome != "success"

    @property
    def summary(self) -> str | None:
        failure = FAILURES.get(self.failure_class or "")
        return failure.summary if failure else None

    @property
    def next_step(self) -> str | None:
        return self.advice.flat() if self.advice is not None else None

    @property
    def hotspot(self) -> dict[str, Any] | None:
        """The span on the critical path with the most time of its own."""
        if not self.critical_path:
            return None
        return max(self.critical_path, key=lambda p: p["self_ms"])

    def headline(self) -> str:
        """One line: what happened, and the fact that matters most."""
        took = f" in {format_ms(self.duration_ms)}" if self.duration_ms is not None else ""
        if not self.failed:
            hop = self.slowest_hop
            where = ""
            if hop is not None:
                share = f" ({hop.share:.0%})" if hop.share is not None else ""
                where = (
                    f"; slowest hop: {hop.method} to {hop.target}, "
                    f"{format_ms(hop.duration_ms)}{share}"
                )
            volume = f" volume {self.volume_id}" if self.volume_id else ""
            return f"HTTP {self.http_status} created{volume}{took}{where}"
        stage = self.failed_stage or "?"
        what = self.description or self.summary or "unknown failure"
        return f"HTTP {self.http_status} {self.failure_class} at {stage}{took}: {what}"

    def to_json(self) -> dict[str, Any]:
        hop = self.slowest_hop
        return {
            "trace_id": self.trace_id,
            "request_id": self.request_id,
            "global_request_id": self.global_request_id,
            "outcome": self.outcome,
            "http_status": self.http_status,
            "duration_ms": _round(self.duration_ms),
            "failed_stage": self.failed_stage,
            "failure_class": self.failure_class,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "nova_code": self.nova_code,
            "cinder_request_id": self.cinder_request_id,
            "project_id": self.project_id,
            "user_id": self.user_id,
            "volume_id": self.volume_id,
            "stages": [
                {
                    "name": s.name,
                    "status": s.status,
                    "duration_ms": _round(s.duration_ms),
                    "share": _round(s.share, 4),
                }
                for s in self.stages
            ],
            "critical_path": self.critical_path,
            "slowest_hop": None
            if hop is None
            else {
                "method": hop.method,
                "url": hop.url,
                "target": hop.target,
                "status": hop.status,
                "duration_ms": _round(hop.duration_ms),
                "callee_ms": _round(hop.callee_ms),
                "share": _round(hop.share, 4),
            },
            "time_spent": [
                {"what": t.what, "duration_ms": _round(t.ms), "share": _round(t.share, 4)}
                for t in self.time_spent
            ],
            "details": self.details,
            "summary": self.summary,
            "description": self.description if self.failed else None,
            "next_step": self.next_step,
            "commands": self.advice.commands if self.advice is not None else [],
            "link": self.link,
            "source": self.source,
            "notes": self.notes,
            "after_answer": None
            if self.after_answer is None
            else {
                "verdict": self.after_answer.sentence(self.http_status),
                **self.after_answer.to_json(),
            },
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def none_if_blank(value: Any) -> Any:
    """voltrace writes "none" or "" where there is nothing; read both as None."""
    return None if value in (None, "", "none") else value
