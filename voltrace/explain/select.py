"""Which creates to show: by trace id, request id, failure; traces first, logs fill in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from voltrace.explain.model import Diagnosis


@dataclass(frozen=True)
class Selection:
    """What ``--trace-id``, ``--request-id`` and ``--failed`` asked for."""

    trace_ids: Sequence[str] = ()
    request_ids: Sequence[str] = ()
    failed: bool = False

    def matches(self, d: Diagnosis) -> bool:
        """Any trace id (or a prefix of 8+ digits), any request id (nova's, the global one
        or Cinder's), and, with ``failed``, only failures."""
        trace_id = d.trace_id or ""
        wanted = [t.strip().lower() for t in self.trace_ids]
        if wanted and not any(
            trace_id == t or (len(t) >= 8 and trace_id.startswith(t)) for t in wanted
        ):
            return False
        ids = {d.request_id, d.global_request_id, d.cinder_request_id}
        if self.request_ids and ids.isdisjoint(self.request_ids):
            return False
        return not (self.failed and not d.failed)

    def describe(self) -> str:
        wanted = [
            *(f"--trace-id {t}" for t in self.trace_ids),
            *(f"--request-id {r}" for r in self.request_ids),
        ]
        if self.failed:
            wanted.append("--failed")
        return " ".join(wanted)


def select(
    diagnoses: Iterable[Diagnosis],
    *,
    trace_ids: Sequence[str] = (),
    request_ids: Sequence[str] = (),
    failed: bool = False,
) -> list[Diagnosis]:
    selection = Selection(trace_ids, request_ids, failed)
    return [d for d in diagnoses if selection.matches(d)]


def merge(from_traces: list[Diagnosis], from_logs: list[Diagnosis]) -> list[Diagnosis]:
    """Traces first; the logs fill in creates whose trace is missing (sampled out, lost)."""
    seen = {d.request_id for d in from_traces}
    extra = [d for d in from_logs if d.request_id not in seen]
    for d in extra:
        d.notes.append("no trace of this request in the trace files; diagnosed from the logs")
    return sorted(from_traces + extra, key=lambda d: d.started_ns)
