"""Following a create past Nova's 200, until Cinder settles the volume (opt-in).

Nova answers ``POST /os-volumes`` with ``status: creating`` and never looks again, so
voltrace does not either unless ``voltrace serve --follow-volumes`` asks it to. Then, after
every create Nova answered 200, a bounded background worker polls
``GET /v3/{project}/volumes/{id}`` through the same keystoneauth session and cinderclient
path as the create (the *user's* token), with a backoff, until the volume is ``available``
or ``error`` or ``timeout_s`` passes. On ``error`` it reads the user messages
(``GET /v3/{p}/messages?resource_uuid=`` at microversion 3.5) and classifies the failure by
Cinder's event ids.

The token is the user's, borrowed: it can expire before a slow volume settles. Cinder then
answers 401 and the follower stops with outcome ``unknown`` (failure_class
``token_expired``), counted like every other outcome; it never asks Keystone for a new one.

Bounded: a queue of ``queue_size`` follows (a full queue drops the follow and counts it in
``voltrace.volume.follows_dropped``), ``workers`` threads, and ``shutdown`` returns within
``shutdown_timeout_s`` (follows still running are abandoned, their gauge restored).

The ``follow_volume`` span is put in the create's own trace, its parent the SERVER span,
and it also links to it. OTel allows a child that starts after its parent ended, and a
single trace lets Jaeger show the answer and the outcome in one waterfall; the link keeps
the relation explicit for backends that sort children by time or drop late children.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cinderclient import exceptions as cinder_exception
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from voltrace import semconv
from voltrace.cinder import VolumeAPI
from voltrace.explain import from_cinder
from voltrace.explain.after_answer import classify_messages
from voltrace.identity import NovaRequestContext
from voltrace.pipeline import PipelineObserver
from voltrace.state import CreateState

# voltrace.semconv's names, under the short names this module and its tests use.
FOLLOW_SPAN = semconv.FOLLOW_SPAN
SETTLED_EVENT = semconv.FOLLOW_SETTLED_EVENT
SETTLE_DURATION = semconv.FOLLOW_SETTLE_DURATION
# Seconds, from 100 ms to 30 min: a loopback settle takes 0.2-1.5 s, a real backend seconds
# to minutes, and --follow-timeout (default 300 s) bounds stuck_creating.
SETTLE_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
INITIAL_OUTCOME_SERIES = (
    ("available", "none"),
    ("error", "no_valid_backend"),
    ("error", "driver_error"),
    ("error", "unknown"),
    ("stuck_creating", "stuck_creating"),
)
ASYNC_OUTCOMES = semconv.FOLLOW_ASYNC_OUTCOMES
CREATING = semconv.FOLLOW_CREATING
FOLLOWS_DROPPED = semconv.FOLLOWS_DROPPED
ATTR_VOLUME_ID = semconv.VOLUME_ID
ATTR_STATUS = semconv.FOLLOW_STATUS
ATTR_OUTCOME = semconv.FOLLOW_OUTCOME
ATTR_FAILURE_CLASS = semconv.FOLLOW_FAILURE_CLASS
ATTR_ATTEMPTS = semconv.FOLLOW_ATTEMPTS
ATTR_USER_MESSAGE = semconv.FOLLOW_USER_MESSAGE
ATTR_EVENT_IDS = semconv.FOLLOW_EVENT_IDS

NO_VALID_BACKEND_EVENT = semconv.NO_VALID_BACKEND_EVENT
DRIVER_FAILED_EVENT = semconv.DRIVER_FAILED_EVENT
MESSAGES_MICROVERSION = semconv.MESSAGES_MICROVERSION


@dataclass(frozen=True)
class FollowSettings:
    timeout_s: float = 300.0
    first_delay_s: float = 0.2
    max_delay_s: float = 5.0
    queue_size: int = 256
    workers: int = 4
    shutdown_timeout_s: float = 5.0


@dataclass
class FollowJob:
    """One create to follow: who asked, which volume, and where its trace is."""

    identity: NovaRequestContext
    volume_id: str
    cinder_request_id: str | None
    server_span: trace.SpanContext
    answered_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Settled:
    status: str | None
    outcome: str  # available | error | stuck_creating | unknown
    failure_class: str  # none | no_valid_backend | driver_error | token_expired | unknown
    attempts: int = 0
    user_message: str | None = None
    event_ids: tuple[str, ...] = ()
    # stuck_creating: the service os-services shows down that the create waits on.
    waiting_on: str | None = None
    down_since: str | None = None


def classify(messages: list[dict[str, Any]]) -> tuple[str, int, str | None, tuple[str, ...]]:
    """failure_class, driver attempts, newest user message, event ids (oldest first)."""
    return classify_messages(messages)


class VolumeFollower:
    """A bounded pool of workers that follow creates until their volumes settle."""

    def __init__(
        self, volume_api: VolumeAPI, telemetry: Any, settings: FollowSettings | None = None
    ) -> None:
        self.volume_api = volume_api
        self.settings = settings or FollowSettings()
        self.tracer = telemetry.tracer
        self.logger = telemetry.logger
        meter = telemetry.meter_provider.get_meter("voltrace.follow")
        self.settle_duration = meter.create_histogram(
            SETTLE_DURATION,
            unit="s",
            description="From the create's 200 to the volume settling, by outcome",
            explicit_bucket_boundaries_advisory=SETTLE_BUCKETS_S,
        )
        self.outcomes = meter.create_counter(
            ASYNC_OUTCOMES, description="Followed creates by outcome and failure class"
        )
        self.creating = meter.create_up_down_counter(
            CREATING, description="Followed volumes still creating"
        )
        self.dropped = meter.create_counter(
            FOLLOWS_DROPPED, description="Creates not followed: the follow queue was full"
        )
        self._queue: queue.Queue[FollowJob | None] = queue.Queue(self.settings.queue_size)
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"voltrace-follow-{n}", daemon=True)
            for n in range(self.settings.workers)
        ]
        # Every outcome series exists from the start, at 0: rate() cannot see a counter
        # series' first increment, so a process's first stuck or failed volume would be lost.
        for outcome, failure_class in INITIAL_OUTCOME_SERIES:
            self.outcomes.add(0, {"outcome": outcome, "failure_class": failure_class})
        for thread in self._threads:
            thread.start()

    def submit(self, job: FollowJob) -> bool:
        """Queue a follow; False (and counted) when the queue is full or shutting down."""
        if self._stopping.is_set():
            self.dropped.add(1)
            return False
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped.add(1)
            return False
        self.creating.add(1)
        return True

    def shutdown(self) -> bool:
        """Stop within shutdown_timeout_s; True when every worker finished."""
        self._stopping.set()
        while True:  # queued follows will never run: take them off the gauge
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self.creating.add(-1)
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if job is None:
                return
            try:
                self._follow(job)
            except Exception as exc:  # a follower bug must not kill the worker
                self.logger.warning(
                    "volume.follow_failed", error=repr(exc), volume_id=job.volume_id
                )
            finally:
                self.creating.add(-1)

    def _follow(self, job: FollowJob) -> None:
        parent = trace.set_span_in_context(trace.NonRecordingSpan(job.server_span))
        with self.tracer.start_as_current_span(
            FOLLOW_SPAN,
            context=parent,
            kind=SpanKind.INTERNAL,
            links=[Link(job.server_span)],
            record_exception=False,
            attributes={ATTR_VOLUME_ID: job.volume_id},
        ) as span:
            settled, polls = self._poll(job)
            duration_s = time.monotonic() - job.answered_at
            span.set_attributes(
                {
                    ATTR_STATUS: settled.status or "",
                    ATTR_OUTCOME: settled.outcome,
                    ATTR_FAILURE_CLASS: settled.failure_class,
                    ATTR_ATTEMPTS: settled.attempts,
                    ATTR_EVENT_IDS: list(settled.event_ids),
                    semconv.FOLLOW_POLLS: polls,
                }
            )
            if settled.user_message:
                span.set_attribute(ATTR_USER_MESSAGE, settled.user_message)
            if settled.waiting_on:
                span.set_attribute(semconv.FOLLOW_WAITING_ON, settled.waiting_on)
                span.set_attribute(semconv.FOLLOW_DOWN_SINCE, settled.down_since or "")
            if settled.outcome != "available":
                span.set_status(Status(StatusCode.ERROR, settled.failure_class))
            # Inside the span, so both measurements carry an exemplar linking to this trace.
            self.settle_duration.record(duration_s, {"outcome": settled.outcome})
            self.outcomes.add(
                1, {"outcome": settled.outcome, "failure_class": settled.failure_class}
            )
        self.logger.info(
            SETTLED_EVENT,
            request_id=job.identity.request_id,
            global_request_id=job.identity.global_id,
            cinder_request_id=job.cinder_request_id,
            volume_id=job.volume_id,
            outcome=settled.outcome,
            failure_class=settled.failure_class,
            attempts=settled.attempts,
            duration_ms=round(duration_s * 1000, 1),
            event_ids=list(settled.event_ids),
            user_message=settled.user_message,
            waiting_on=settled.waiting_on,
            down_since=settled.down_since,
        )

    def _poll(self, job: FollowJob) -> tuple[Settled, int]:
        deadline = job.answered_at + self.settings.timeout_s
        delay = self.settings.first_delay_s
        status: str | None = None
        volume: dict[str, Any] = {}
        polls = 0
        while True:
            try:
                client = self.volume_api.client(job.identity)
                polls += 1
                found = client.volumes.get(job.volume_id)
                status, volume = found.status, found.to_dict()
            except cinder_exception.Unauthorized:
                return Settled(status, "unknown", "token_expired"), polls
            except Exception:  # Cinder unreachable for a moment: keep trying until the deadline
                pass
            if status == "available":
                return Settled(status, "available", "none"), polls
            if status == "error":
                return self._error(job, client), polls + 1
            if status not in (None, "creating"):
                return Settled(status, "unknown", "unknown"), polls
            wait = min(delay, deadline - time.monotonic())
            if wait <= 0:
                if status == "creating":
                    return self._stuck(job, client, volume), polls + 1
                return Settled(status, "unknown", "unknown"), polls
            if self._stopping.wait(wait):
                return Settled(status, "unknown", "shutdown"), polls
            delay = min(delay * 2, self.settings.max_delay_s)

    def _stuck(self, job: FollowJob, client: Any, volume: dict[str, Any]) -> Settled:
        """Still creating at the timeout: which service, down in os-services, it waits on."""
        waiting_on = down_since = None
        try:
            _, body = client.client.get("/os-services", microversion=semconv.SERVICES_MICROVERSION)
            services = [s for s in body.get("services", []) if isinstance(s, dict)]
            found = from_cinder.diagnose(volume, [], services)
            if found.outcome == "stuck":
                waiting_on = found.failed_service
                if found.host_service:
                    waiting_on = f"{waiting_on} on {found.host_service}"
                down_since = found.down_since
        except Exception as exc:  # admin-only in cinder's policy: the outcome stands without it
            self.logger.info("volume.services_unreadable", volume_id=job.volume_id, error=repr(exc))
        return Settled(
            "creating",
            "stuck_creating",
            "stuck_creating",
            waiting_on=waiting_on,
            down_since=down_since,
        )

    def _error(self, job: FollowJob, client: Any) -> Settled:
        # The create's 3.0 client; only this one call asks for the messages API's microversion.
        try:
            _, body = client.client.get(
                f"/messages?resource_uuid={job.volume_id}", microversion=MESSAGES_MICROVERSION
            )
        except cinder_exception.Unauthorized:
            return Settled("error", "error", "token_expired")
        except Exception as exc:  # the outcome is known; only the reason is not
            self.logger.warning(
                "volume.messages_unreadable", volume_id=job.volume_id, error=repr(exc)
            )
            return Settled("error", "error", "unknown")
        failure_class, attempts, user_message, event_ids = classify(body.get("messages", []))
        return Settled("error", "error", failure_class, attempts, user_message, event_ids)


class FollowingObserver:
    """Wraps the pipeline's observer: after a create answered 200, hand it to the follower."""

    def __init__(self, inner: PipelineObserver, follower: VolumeFollower) -> None:
        self.inner = inner
        self.follower = follower

    @contextmanager
    def request(self, state: CreateState) -> Iterator[None]:
        # Read before the inner observer opens its pipeline span: this is the SERVER span.
        server_span = trace.get_current_span().get_span_context()
        with self.inner.request(state):
            yield
        if state.fault is None and state.volume_id:
            self.follower.submit(
                FollowJob(
                    identity=state.request.identity,
                    volume_id=state.volume_id,
                    cinder_request_id=state.cinder_request_id,
                    server_span=server_span,
                )
            )

    def stage(self, *args: Any) -> Any:
        return self.inner.stage(*args)
