"""RED metrics for volume creates: rate, errors and duration, per stage.

Names follow OpenTelemetry's conventions; through the Prometheus exporter they
become e.g. ``voltrace_stage_duration_seconds_bucket`` and
``voltrace_creates_total``. Labels carry no ids, so cardinality stays bounded:
stage (6 + 3), outcome (3), status (a dozen), failure class (~25).
"""

from __future__ import annotations

import re
from typing import Any

# Seconds, from 1 ms to 60 s: loopback creates sit in the first buckets,
# connect retries (0.5 + 1 + 2 s) and slow Cinders in the last ones.
DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                      1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_CINDER_ROUTE = re.compile(
    r"/v3/[^/]+/(?P<collection>volumes|snapshots|os-quota-sets)(?P<item>/[^/?]+)?"
)
_ITEM_NAMES = {"volumes": "{volume_id}", "snapshots": "{snapshot_id}",
               "os-quota-sets": "{project_id}"}


def cinder_route(url: str) -> str:
    """Cinder's route template for a URL: no ids, so a bounded label."""
    match = _CINDER_ROUTE.search(url)
    if match is None:
        return "other"
    route = f"/v3/{{project_id}}/{match.group('collection')}"
    if match.group("item"):
        route += "/" + _ITEM_NAMES[match.group("collection")]
    return route


class VolumeMetrics:
    """The instruments, and one method per thing worth counting."""

    def __init__(self, meter: Any) -> None:
        self.stage_duration = meter.create_histogram(
            "voltrace.stage.duration", unit="s",
            description="Duration of one pipeline stage of a volume create",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self.create_duration = meter.create_histogram(
            "voltrace.create.duration", unit="s",
            description="Duration of a whole POST /v2.1/os-volumes as nova-api served it",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self.creates = meter.create_counter(
            "voltrace.creates", unit="{create}",
            description="Volume creates answered, by outcome, HTTP status and failed stage",
        )
        self.cinder_duration = meter.create_histogram(
            "voltrace.cinder.request.duration", unit="s",
            description="Duration of nova-api's HTTP calls to cinder-api",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self.dropped = meter.create_counter(
            "voltrace.telemetry.spans.dropped", unit="{span}",
            description="Spans an exporter failed to deliver",
        )

    def stage(self, stage: str, status: str, duration_s: float) -> None:
        self.stage_duration.record(duration_s, {"stage": stage, "outcome": status})

    def create(self, outcome: str, http_status: int, failed_stage: str | None,
               failure_class: str | None, duration_s: float) -> None:
        self.creates.add(1, {
            "outcome": outcome,
            "http_status": str(http_status),
            "failed_stage": failed_stage or "none",
            "failure_class": failure_class or "none",
        })
        self.create_duration.record(duration_s, {"outcome": outcome})

    def cinder_call(self, method: str, url: str, status: int | str, duration_s: float) -> None:
        self.cinder_duration.record(duration_s, {
            "http_request_method": method,
            "http_route": cinder_route(url),
            "http_response_status_code": str(status),
        })

    def spans_dropped(self, count: int, exporter: str, reason: str) -> None:
        self.dropped.add(count, {"exporter": exporter, "reason": reason})
