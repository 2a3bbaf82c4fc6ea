"""The follower: creates Nova answered 200, followed until Cinder settles them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tests.conftest import member_headers
from voltrace.api import build_app
from voltrace.cinder import CinderSettings, VolumeAPI
from voltrace.cinder_sim import CinderSimulator
from voltrace.cinder_sim.backends import BackendFault, BackendSettings
from voltrace.client import NovaClient
from voltrace.follow import (
    FOLLOW_SPAN,
    FollowingObserver,
    FollowSettings,
    VolumeFollower,
)
from voltrace.pipeline import Pipeline
from voltrace.policy import VolumePolicy
from voltrace.server import EmbeddedServer
from voltrace.state import StageServices
from voltrace.telemetry import Telemetry
from voltrace.testing import Captured

FAST = FollowSettings(timeout_s=5.0, first_delay_s=0.05, max_delay_s=0.2)


@dataclass
class FollowTelemetry:
    """nova-api's tracer and logger, with metrics read in memory."""

    tracer: Any
    logger: Any
    meter_provider: MeterProvider


@dataclass
class Followed:
    sim: CinderSimulator
    follower: VolumeFollower
    client: NovaClient
    reader: InMemoryMetricReader

    def create(self, **volume: Any) -> str:
        answer = self.client.create_volume({"size": 1, **volume}, headers=member_headers())
        assert answer.status == 200, answer.body
        return str(answer.json()["volume"]["id"])

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def outcome_series(self) -> dict[tuple[str, str], int]:
        """Every outcome series, zeros included."""
        return {
            (p.attributes["outcome"], p.attributes["failure_class"]): p.value
            for p in self.points("voltrace.volume.async_outcomes")
        }

    def outcomes(self) -> dict[tuple[str, str], int]:
        """The outcomes that happened."""
        return {key: value for key, value in self.outcome_series().items() if value}


@pytest.fixture
def start_followed(cinder_telemetry: Telemetry, telemetry: Telemetry) -> Iterator[Any]:
    """A simulator with its async create, and voltrace with a follower, over real HTTP."""
    stops: list[Any] = []

    def start(settings: FollowSettings = FAST, **sim_options: Any) -> Followed:
        sim = CinderSimulator(deterministic=True, telemetry=cinder_telemetry, **sim_options)
        sim.start()
        stops.append(sim.stop)
        volume_api = VolumeAPI(
            CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
        )
        reader = InMemoryMetricReader()
        follower = VolumeFollower(
            volume_api,
            FollowTelemetry(
                telemetry.tracer, telemetry.logger, MeterProvider(metric_readers=[reader])
            ),
            settings,
        )
        stops.append(follower.shutdown)
        pipeline = Pipeline(
            StageServices(policy=VolumePolicy(None), volume_api=volume_api),
            observer=FollowingObserver(telemetry.observer, follower),
        )
        server = EmbeddedServer(telemetry.instrument_wsgi(build_app(pipeline))).start()
        stops.append(server.stop)
        client = NovaClient(server.url)
        stops.append(client.close)
        return Followed(sim, follower, client, reader)

    yield start
    for stop in reversed(stops):
        stop()


def settled_span(captured: Captured, volume_id: str, timeout: float = 10.0) -> Any:
    def found(c: Captured) -> Any:
        return next(
            (
                s
                for s in c.spans
                if s.name == FOLLOW_SPAN and s.attributes.get("voltrace.volume.id") == volume_id
            ),
            None,
        )

    return captured.wait_for(found, timeout)


def test_available_create_is_followed_in_its_own_trace(
    start_followed: Any, captured: Captured
) -> None:
    """An available volume: a follow span, child of the SERVER span, outcome available."""
    followed = start_followed()
    volume_id = followed.create()
    span = settled_span(captured, volume_id)
    server = next(s for s in captured.server_spans() if s.context.trace_id == span.context.trace_id)
    assert span.parent.span_id == server.context.span_id
    assert span.links[0].context.span_id == server.context.span_id
    assert span.attributes["voltrace.volume.outcome"] == "available"
    assert followed.outcomes() == {("available", "none"): 1}
    # The other outcomes' series exist at 0 from the start, so rate() sees their first one.
    assert followed.outcome_series()[("stuck_creating", "stuck_creating")] == 0
    durations = followed.points("voltrace.volume.settle.duration")
    assert [p.attributes["outcome"] for p in durations] == ["available"]
    log = captured.wait_for(
        lambda c: next(
            (
                e
                for e in c.logs
                if e.get("event") == "volume.settled" and e.get("volume_id") == volume_id
            ),
            None,
        )
    )
    assert log["outcome"] == "available" and log["request_id"].startswith("req-")


def test_no_valid_backend_is_classified(start_followed: Any, captured: Captured) -> None:
    """A volume the scheduler cannot place ends error / no_valid_backend with its user message."""
    followed = start_followed()
    followed.sim.configure_backend(capacity_gb=0)
    volume_id = followed.create(size=5)
    span = settled_span(captured, volume_id)
    assert span.attributes["voltrace.volume.outcome"] == "error"
    assert span.attributes["voltrace.volume.failure_class"] == "no_valid_backend"
    assert "VOLUME_VOLUME_001_003" in span.attributes["voltrace.volume.event_ids"]
    assert span.attributes["voltrace.volume.user_message"]
    assert followed.outcomes() == {("error", "no_valid_backend"): 1}


def test_driver_failure_counts_reschedules(start_followed: Any, captured: Captured) -> None:
    """A driver that always fails: error / driver_error after cinder's three attempts."""
    followed = start_followed()
    followed.sim.inject_backend_fault(BackendFault("driver_error"))
    volume_id = followed.create()
    span = settled_span(captured, volume_id)
    assert span.attributes["voltrace.volume.failure_class"] == "driver_error"
    assert span.attributes["voltrace.volume.attempts"] == 3
    assert followed.outcomes() == {("error", "driver_error"): 1}


def test_volume_service_down_times_out_stuck_creating(
    start_followed: Any, captured: Captured
) -> None:
    """With cinder-volume down the volume never settles: stuck_creating at the timeout, and
    os-services (down by then) names the service it waits on and its last heartbeat."""
    followed = start_followed(
        # Down in os-services 2 s after it stops: after the scheduler placed the volume
        # (0.15 s, more on a loaded machine), before the follow gives up (5 s).
        FollowSettings(timeout_s=5.0, first_delay_s=0.05, max_delay_s=0.2),
        backend=BackendSettings(report_interval_s=0.05, service_down_time_s=2.0),
    )
    followed.sim.stop_service("cinder-volume")
    volume_id = followed.create()
    span = settled_span(captured, volume_id)
    assert span.attributes["voltrace.volume.outcome"] == "stuck_creating"
    assert followed.outcomes() == {("stuck_creating", "stuck_creating"): 1}
    # A member's token sees no host: the down cinder-volume is named by os-services.
    assert (
        span.attributes["voltrace.volume.waiting_on"] == "cinder-volume on cinder-sim@lvmdriver-1"
    )
    assert span.attributes["voltrace.volume.down_since"].endswith(" UTC")


def test_full_queue_drops_are_counted(start_followed: Any) -> None:
    """One worker, a queue of one, cinder-volume down: later creates are dropped, and counted."""
    followed = start_followed(
        FollowSettings(timeout_s=2.0, first_delay_s=0.05, max_delay_s=0.2, queue_size=1, workers=1)
    )
    followed.sim.stop_service("cinder-volume")
    for _ in range(4):
        followed.create()
    dropped = followed.points("voltrace.volume.follows_dropped")
    assert dropped and dropped[0].value >= 1
    creating = followed.points("voltrace.volumes.creating")
    assert creating and creating[0].value <= 2


def test_shutdown_is_bounded(start_followed: Any) -> None:
    """Shutdown with follows in flight returns within its bound and empties the gauge."""
    followed = start_followed(
        FollowSettings(timeout_s=60.0, first_delay_s=0.05, max_delay_s=0.2, shutdown_timeout_s=2.0)
    )
    followed.sim.stop_service("cinder-volume")
    for _ in range(3):
        followed.create()
    start = time.monotonic()
    assert followed.follower.shutdown()
    # Bounded by shutdown_timeout_s, not by the 60 s follows (slack for a loaded machine).
    assert time.monotonic() - start < 30.0
    creating = followed.points("voltrace.volumes.creating")
    assert creating[0].value == 0
