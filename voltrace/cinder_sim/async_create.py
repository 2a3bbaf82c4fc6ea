"""Past the 202: cinder-scheduler and cinder-volume carry a create to ``available`` or ``error``.

cinder-api answers a create with 202 ``creating`` and casts it to cinder-scheduler, which
picks a backend (or finds none) and casts to cinder-volume, whose driver creates the
volume. A driver failure goes back to the scheduler, which retries the same host up to
``scheduler_max_attempts`` in all (RetryFilter is not among cinder 29's default filters).
This module plays both services on one background :class:`~.worker.Worker` thread, with
cinder 29's statuses, ``host`` values, user messages and log events
(``../shared/full-cinder.md`` has what a real cinder 29 does in each case).

Tracing follows OSProfiler's shape in a real cinder 29 (same span names, the method in
attribute ``name``, ``error=True`` and a ``log`` event where the method raised), plus OTel
status ERROR on those same spans and ``cinder.*`` attributes that say what happened::

    POST /v3/{project_id}/volumes   cinder-api        SERVER
      rpc    cinder-scheduler  name=cinder.scheduler.manager.SchedulerManager.create_volume
        rpc  cinder-volume     name=cinder.volume.manager.VolumeManager.create_volume
          drive  cinder-volume name=cinder.volume.drivers.lvm.LVMVolumeDriver.create_volume

Each callee's span is the *child* of the span that was current when the cast was sent,
as OSProfiler makes it (it carries the trace in the RPC context): the API's SERVER span,
then the scheduler's ``rpc``, and after a reschedule the failed ``rpc`` of cinder-volume.
So one create is one trace, read top to bottom, and the same readers work on a real
cinder's OSProfiler spans and on the simulator's. Span links are never used: a link would
make the asynchronous part a separate trace that viewers, ``explain`` and the trace files
keep apart from the request that caused it.

The names below are ``voltrace.semconv``'s (what ``explain``, the follower, the demo and
the metrics read), kept here under the short names this module and its tests use.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode

from voltrace import semconv
from voltrace.cinder_sim import user_messages
from voltrace.cinder_sim.backends import (
    SCHEDULER,
    VOLUME,
    BackendFault,
    BackendFaultBook,
    BackendSettings,
    Services,
)
from voltrace.cinder_sim.state import State, Volume
from voltrace.cinder_sim.worker import Worker

# ---- span names and attributes: voltrace.semconv's, under the names this module used ------

SCHEDULER_SERVICE = SCHEDULER  # service.name of the scheduler's spans and log lines
VOLUME_SERVICE = VOLUME
RPC_SPAN = semconv.RPC_SPAN
DRIVE_SPAN = semconv.DRIVE_SPAN
METHOD = semconv.OSPROFILER_METHOD
OSPROFILER_ERROR = semconv.OSPROFILER_ERROR
OSPROFILER_ERROR_EVENT = semconv.OSPROFILER_ERROR_EVENT
OSPROFILER_ERROR_KIND = semconv.OSPROFILER_ERROR_KIND
OSPROFILER_ERROR_MESSAGE = semconv.OSPROFILER_ERROR_MESSAGE

# The methods OSProfiler names (real cinder's, with the LVM driver cinder's devstack runs).
SCHEDULER_CREATE = "cinder.scheduler.manager.SchedulerManager.create_volume"
VOLUME_CREATE = "cinder.volume.manager.VolumeManager.create_volume"
VOLUME_DRIVER_DELETE = "cinder.volume.manager.VolumeManager.driver_delete_volume"
DRIVER_CREATE = "cinder.volume.drivers.lvm.LVMVolumeDriver.create_volume"
DRIVER_DELETE = "cinder.volume.drivers.lvm.LVMVolumeDriver.delete_volume"

VOLUME_ID = semconv.CINDER_VOLUME_ID
REQUEST_ID = semconv.CINDER_REQUEST_ID  # the create's cinder-api request id
GLOBAL_REQUEST_ID = semconv.GLOBAL_REQUEST_ID  # nova's, when it sent one
PROJECT_ID = semconv.PROJECT_ID
ERROR_TYPE = semconv.ERROR_TYPE  # the cinder exception class
HOST = semconv.CINDER_HOST
CAST_TO = semconv.CINDER_CAST_TO
ATTEMPT = semconv.SCHEDULER_ATTEMPT
MAX_ATTEMPTS = semconv.SCHEDULER_MAX_ATTEMPTS
VOLUME_STATUS = semconv.CINDER_VOLUME_STATUS
SCHEDULER_RESULT = semconv.SCHEDULER_RESULT
SCHEDULER_REASON = semconv.SCHEDULER_REASON
FILTERED_BY = semconv.SCHEDULER_FILTERED_BY
RESCHEDULED = semconv.VOLUME_RESCHEDULED
OUTCOME = semconv.CREATE_OUTCOME
FAILURE = semconv.CREATE_FAILURE
CAUSE = semconv.CREATE_CAUSE
ATTEMPTS = semconv.CREATE_ATTEMPTS
USER_MESSAGE_EVENT = semconv.USER_MESSAGE_EVENT
MESSAGE_ID = semconv.MESSAGE_ID
MESSAGE_EVENT_ID = semconv.MESSAGE_EVENT_ID
MESSAGE_TEXT = semconv.MESSAGE_TEXT
MESSAGE_LEVEL = semconv.MESSAGE_LEVEL

OUTCOMES = semconv.ASYNC_OUTCOMES
FAILURES = semconv.ASYNC_FAILURES
CAUSES = semconv.ASYNC_CAUSES

# ---- log events (structlog, through each service's logger) -----------------------------

LOG_CREATE_ISSUED = semconv.LOG_CREATE_ISSUED
LOG_CAST_DROPPED = semconv.LOG_CAST_DROPPED
LOG_BACKEND_SELECTED = semconv.LOG_BACKEND_SELECTED
LOG_FILTER_REJECTED = semconv.LOG_FILTER_REJECTED
LOG_SERVICE_DOWN = semconv.LOG_SERVICE_DOWN
LOG_PREVIOUS_ATTEMPT = semconv.LOG_PREVIOUS_ATTEMPT
LOG_NO_VALID_BACKEND = semconv.LOG_NO_VALID_BACKEND
LOG_CREATE_STARTED = semconv.LOG_CREATE_STARTED
LOG_DRIVER_FAILED = semconv.LOG_DRIVER_FAILED
LOG_RESCHEDULED = semconv.LOG_RESCHEDULED
LOG_CREATE_FAILED = semconv.LOG_CREATE_FAILED
LOG_CREATED = semconv.LOG_CREATED
LOG_MESSAGE_CREATED = semconv.LOG_MESSAGE_CREATED
LOG_SETTLED = semconv.LOG_SETTLED
LOG_SERVICE_STOPPED = semconv.LOG_SERVICE_STOPPED
LOG_SERVICE_STARTED = semconv.LOG_SERVICE_STARTED

TRACER_NAME = "voltrace.cinder_sim"

# ---- what the driver raises ------------------------------------------------------------


@dataclass(frozen=True)
class DriverError:
    kind: str  # the cinder exception class
    message: str
    reschedulable: bool


def _backend_api_error(data: str) -> DriverError:
    return DriverError(
        "VolumeBackendAPIException",
        f"Bad or unexpected response from the storage volume backend API: {data}",
        reschedulable=True,
    )


def _metadata_update_failure(reason: str) -> DriverError:
    # cinder.exception.MetadataUpdateFailure is one of OnFailureRescheduleTask's
    # no_reschedule_types.
    return DriverError(
        "MetadataUpdateFailure",
        f"Failed to update metadata for volume: {reason}",
        reschedulable=False,
    )


# ---- one create in flight --------------------------------------------------------------


@dataclass
class Cast:
    """What cinder-api's cast carries: the volume and the request's context."""

    volume: Volume
    request_id: str
    global_request_id: str | None
    parent: SpanContext | None  # the span current when the cast was sent
    generation: int
    accepted_at: float = field(default_factory=time.monotonic)
    attempt: int = 1  # the scheduling round
    tries: int = 0  # cinder-volume's create attempts so far
    last_error: str | None = None  # the previous attempt's failure, for the scheduler's log
    last_host: str | None = None
    event_ids: list[str] = field(default_factory=list)

    def log_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "project_id": self.volume.project_id,
            "volume_id": self.volume.id,
        }
        if self.global_request_id:
            fields["global_request_id"] = self.global_request_id
        return fields

    def span_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            VOLUME_ID: self.volume.id,
            REQUEST_ID: self.request_id,
            PROJECT_ID: self.volume.project_id,
        }
        if self.global_request_id:
            attributes[GLOBAL_REQUEST_ID] = self.global_request_id
        return attributes


@dataclass(frozen=True)
class Settled:
    """How a create settled (the create.settled log line and the settling span)."""

    outcome: str
    failed_service: str | None = None
    failure: str | None = None
    cause: str | None = None


class _NullLogger:
    def bind(self, **_: Any) -> _NullLogger:
        return self

    def _drop(self, *_: Any, **__: Any) -> None:
        return None

    debug = info = warning = error = exception = _drop


NULL_LOGGER = _NullLogger()


@dataclass
class ServiceTelemetry:
    """Where one simulated service's spans and log lines go."""

    tracer: trace.Tracer
    logger: Any

    @classmethod
    def disabled(cls) -> ServiceTelemetry:
        return cls(trace.NoOpTracer(), NULL_LOGGER)


class AsyncBackend:
    """cinder-scheduler and cinder-volume behind the simulated cinder-api.

    Thread safety: casts, settings, faults and service changes may come from any thread;
    the creates themselves only ever run on the worker thread.
    """

    def __init__(
        self,
        state: State,
        settings: BackendSettings,
        *,
        deterministic: bool,
        scheduler: ServiceTelemetry,
        volume: ServiceTelemetry,
        api_logger: Any = NULL_LOGGER,
    ) -> None:
        self._state = state
        self._initial = settings
        self._settings = settings
        self._rng = None if deterministic else random.Random()  # timings only: not secret
        self._scheduler = scheduler
        self._volume = volume
        self._api_logger = api_logger
        self.faults = BackendFaultBook()
        self.services = Services(settings, state.availability_zones[0], deterministic=deterministic)
        self._lock = threading.Lock()  # guards everything below
        self._held: dict[str, deque[Callable[[], None]]] = {SCHEDULER: deque(), VOLUME: deque()}
        self._in_flight = 0
        self._allocated_gb = 0.0
        self._generation = 0  # bumped by reset(): work from before it is abandoned
        self._worker = Worker(
            max_pending=settings.max_in_flight + 64,
            name="cinder-sim:services",
            on_error=self._worker_error,
        )

    @property
    def traced(self) -> bool:
        """Whether cinder-scheduler's spans are recorded (the simulator has telemetry)."""
        return not isinstance(self._scheduler.tracer, trace.NoOpTracer)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, thread_name: str | None = None) -> None:
        self._worker.start(thread_name)

    def stop(self) -> None:
        self._worker.stop()

    def reset(self) -> None:
        """Abandon every create in flight; services up; settings and faults as configured."""
        with self._lock:
            self._generation += 1
            for queue in self._held.values():
                queue.clear()
            self._in_flight = 0
            self._allocated_gb = 0.0
            self._settings = self._initial
        self._worker.clear()
        self.faults.clear()
        self.services.rehost(self._initial)
        self.services.restore_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Until no callback is pending or running (held casts do not count)."""
        return self._worker.wait_idle(timeout_s)

    # ---- configuration ------------------------------------------------------------------

    @property
    def settings(self) -> BackendSettings:
        with self._lock:
            return self._settings

    def configure(self, changes: dict[str, Any]) -> BackendSettings:
        """Change settings at runtime (timings, capacity, max attempts, ...)."""
        with self._lock:
            self._settings = self._settings.updated(changes)
            settings = self._settings
        self.services.rehost(settings)
        return settings

    def inject(self, fault: BackendFault) -> None:
        self.faults.add(fault)

    def stop_service(self, binary: str, *, down_for_s: float = 0.0) -> None:
        """The service stops consuming (as SIGSTOP or a crash would); casts wait for it."""
        if self.services.stop(binary, down_for_s=down_for_s):
            self._service_logger(binary).warning(
                LOG_SERVICE_STOPPED, binary=binary, host=self.services.get(binary).host
            )

    def start_service(self, binary: str, *, purge: bool = False) -> None:
        """The service runs again and consumes what waited in its queue, in order.

        ``purge``: its queue is emptied first (``rabbitmqctl purge_queue``), so the creates
        that waited stay ``creating`` for good; the demo uses it to leave a stuck create
        stuck, its trace finished, while the next scenario finds every service up.
        """
        if not self.services.start(binary):
            return
        self._service_logger(binary).info(
            LOG_SERVICE_STARTED, binary=binary, host=self.services.get(binary).host
        )
        with self._lock:
            waiting = list(self._held[binary])
            self._held[binary].clear()
            if purge:
                self._in_flight = max(0, self._in_flight - len(waiting))
        for delivery in [] if purge else waiting:
            self._worker.submit(0.0, delivery)

    def free_capacity_gb(self) -> float | None:
        capacity = self.settings.capacity_gb
        if capacity is None:
            return None
        with self._lock:
            return max(0.0, capacity - self._allocated_gb)

    # ---- cinder-api's cast ------------------------------------------------------------------

    def cast_create(
        self,
        volume: Volume,
        request_id: str,
        global_request_id: str | None,
        parent: SpanContext | None,
    ) -> None:
        """cinder-api's ``scheduler_rpcapi.create_volume`` cast (fire and forget)."""
        with self._lock:
            generation = self._generation
            accepted = self._in_flight < self._settings.max_in_flight
            if accepted:
                self._in_flight += 1
        cast = Cast(volume, request_id, global_request_id, parent, generation)
        if not accepted:
            # The volume stays "creating", as it does when a cast is lost for real.
            self._api_logger.error(LOG_CAST_DROPPED, reason="max_in_flight", **cast.log_fields())
            return
        self._api_logger.info(LOG_CREATE_ISSUED, **cast.log_fields())
        self._deliver(SCHEDULER, cast, lambda: self._schedule(cast))

    def _deliver(self, binary: str, cast: Cast, delivery: Callable[[], None]) -> None:
        """Into the service's queue: consumed now if it runs, else when it starts again."""
        with self._lock:
            if cast.generation != self._generation:
                return
            if not self.services.running(binary):
                self._held[binary].append(delivery)
                return
        if not self._worker.submit(0.0, delivery):
            self._api_logger.error(LOG_CAST_DROPPED, reason="worker_full", **cast.log_fields())

    def _later(self, cast: Cast, delay_s: float, step: Callable[[], None]) -> None:
        def guarded() -> None:
            if self._current(cast):
                step()

        self._worker.submit(delay_s, guarded)

    def _current(self, cast: Cast) -> bool:
        with self._lock:
            return cast.generation == self._generation

    # ---- cinder-scheduler -------------------------------------------------------------------

    def _schedule(self, cast: Cast) -> None:
        if not self._current(cast):
            return
        settings = self.settings
        span = self._start_span(
            self._scheduler.tracer,
            RPC_SPAN,
            cast.parent,
            {
                METHOD: SCHEDULER_CREATE,
                **cast.span_attributes(),
                ATTEMPT: cast.attempt,
                MAX_ATTEMPTS: settings.scheduler_max_attempts,
            },
        )
        self._later(cast, settings.scheduling_s.pick(self._rng), lambda: self._decide(cast, span))

    def _decide(self, cast: Cast, span: Span) -> None:
        """FilterScheduler.schedule_create_volume, then the cast on to cinder-volume."""
        settings = self.settings
        log = self._scheduler.logger.bind(**cast.log_fields())
        if cast.attempt > 1 and cast.last_error:
            log.error(
                LOG_PREVIOUS_ATTEMPT,
                attempt=cast.attempt,
                last_host=cast.last_host,
                error=cast.last_error,
            )
        cause, reason = self._no_backend_reason(cast, settings, log)
        if cause is not None:
            self._no_valid_backend(cast, span, cause, reason or "", log)
            return
        host = settings.pool_host
        with self._lock:
            self._allocated_gb += cast.volume.size
        self._set_volume(cast.volume, "creating", host=host)
        span.set_attributes({HOST: host, SCHEDULER_RESULT: "scheduled"})
        log.info(LOG_BACKEND_SELECTED, host=host, attempt=cast.attempt)
        cast.parent = span.get_span_context()
        self._deliver(VOLUME, cast, lambda: self._create_on_backend(cast))
        span.set_attribute(VOLUME_STATUS, "creating")
        span.end()

    def _no_backend_reason(
        self, cast: Cast, settings: BackendSettings, log: Any
    ) -> tuple[str | None, str | None]:
        """(cause, reason) when no backend can take the volume; (None, None) otherwise."""
        volume = cast.volume
        retry_enabled = settings.scheduler_max_attempts > 1
        if retry_enabled and cast.attempt > settings.scheduler_max_attempts:
            return (
                "max_attempts_exceeded",
                f"Exceeded max scheduling attempts {settings.scheduler_max_attempts} "
                f"for resource {volume.id}",
            )
        if not self.services.is_up(VOLUME):
            log.warning(LOG_SERVICE_DOWN, host=settings.volume_service_host)
            return "volume_service_down", "No weighed backends available"
        free = self.free_capacity_gb()
        if free is not None and volume.size > free:
            log.warning(
                LOG_FILTER_REJECTED,
                filter="CapacityFilter",
                host=settings.pool_host,
                requested_gb=volume.size,
                available_gb=free,
            )
            return "capacity", "No weighed backends available"
        specs = self._state.extra_specs(volume.volume_type)
        mismatch = _capabilities_mismatch(specs, settings.capabilities(free))
        if mismatch is not None:
            key, wanted, reported = mismatch
            log.warning(
                LOG_FILTER_REJECTED,
                filter="CapabilitiesFilter",
                host=settings.pool_host,
                extra_spec=f"{key}={wanted}",
                capability=reported,
                volume_type=volume.volume_type,
            )
            return "capabilities", "No weighed backends available"
        return None, None

    def _no_valid_backend(self, cast: Cast, span: Span, cause: str, reason: str, log: Any) -> None:
        """ScheduleCreateVolumeTask: message 001_003, volume error; NoValidBackend not raised."""
        filtered_by = {"capacity": "CapacityFilter", "capabilities": "CapabilitiesFilter"}
        span.set_attributes({SCHEDULER_RESULT: "no_valid_backend", SCHEDULER_REASON: reason})
        if cause in filtered_by:
            span.set_attribute(FILTERED_BY, filtered_by[cause])
        self._message(
            cast,
            span,
            self._scheduler.logger,
            user_messages.SCHEDULE_ALLOCATE_VOLUME,
            user_messages.NO_BACKEND_AVAILABLE,
        )
        self._set_volume(cast.volume, "error")
        log.error(
            LOG_NO_VALID_BACKEND,
            reason=f"No valid backend was found. {reason}",
            cause=cause,
            attempt=cast.attempt,
        )
        rescheduled_out = cause == "max_attempts_exceeded"
        outcome = Settled(
            "error",
            failed_service=SCHEDULER_SERVICE,
            failure="driver_error" if rescheduled_out else "no_valid_backend",
            cause=cause,
        )
        self._settle(cast, span, self._scheduler.logger, outcome, host=None)
        span.end()

    # ---- cinder-volume ------------------------------------------------------------------------

    def _create_on_backend(self, cast: Cast) -> None:
        if not self._current(cast):
            return
        settings = self.settings
        host = settings.pool_host
        cast.tries += 1
        span = self._start_span(
            self._volume.tracer,
            RPC_SPAN,
            cast.parent,
            {METHOD: VOLUME_CREATE, **cast.span_attributes(), HOST: host, ATTEMPT: cast.attempt},
        )
        self._volume.logger.info(
            LOG_CREATE_STARTED, host=host, attempt=cast.attempt, **cast.log_fields()
        )
        # About half of cinder-volume's time goes before the driver call (taskflow, DB).
        before, after = _halves(settings.volume_create_s.pick(self._rng))
        self._later(cast, before, lambda: self._call_driver(cast, span, after))

    def _call_driver(self, cast: Cast, rpc: Span, after_s: float) -> None:
        error, delay_s = self._driver_behaviour(cast.volume)
        drive = self._start_span(
            self._volume.tracer,
            DRIVE_SPAN,
            rpc.get_span_context(),
            {METHOD: DRIVER_CREATE, VOLUME_ID: cast.volume.id},
        )
        self._later(cast, delay_s, lambda: self._driver_returned(cast, rpc, drive, error, after_s))

    def _driver_behaviour(self, volume: Volume) -> tuple[DriverError | None, float]:
        """What this driver call does: the faults met and the volume's own metadata knobs."""
        delay_s = self.settings.driver_s.pick(self._rng)
        error: DriverError | None = None
        for fault in self.faults.take():
            if fault.kind == "slow_driver":
                delay_s += fault.delay_s
            elif error is None and fault.kind == "driver_error":
                error = _backend_api_error("injected driver_error")
            elif error is None and fault.kind == "driver_error_no_reschedule":
                error = _metadata_update_failure("injected driver_error_no_reschedule")
        # The knobs of full-cinder.md's FaultyFakeDriver, so one request behaves alike here
        # and on a real cinder with that driver.
        metadata = volume.metadata or {}
        sleep = metadata.get("sleep_s")
        if sleep is not None:
            with contextlib.suppress(ValueError):  # as the real driver's float() would fail
                delay_s += max(0.0, float(sleep))
        fault_value = metadata.get("fault")
        if error is None and fault_value == "noresched":
            error = _metadata_update_failure("fault=noresched")
        elif error is None and fault_value:
            error = _backend_api_error(f"fault={fault_value}")
        return error, delay_s

    def _driver_returned(
        self, cast: Cast, rpc: Span, drive: Span, error: DriverError | None, after_s: float
    ) -> None:
        if error is None:
            drive.end()
            self._later(cast, after_s, lambda: self._created(cast, rpc))
            return
        _osprofiler_error(drive, error)
        drive.end()
        self._driver_failed(cast, rpc, error)

    def _created(self, cast: Cast, rpc: Span) -> None:
        host = self.settings.pool_host
        self._set_volume(cast.volume, "available", host=host)
        rpc.set_attribute(VOLUME_STATUS, "available")
        self._volume.logger.info(LOG_CREATED, host=host, attempt=cast.attempt, **cast.log_fields())
        self._settle(cast, rpc, self._volume.logger, Settled("available"), host=host)
        rpc.end()

    def _driver_failed(self, cast: Cast, rpc: Span, error: DriverError) -> None:
        """_create_raw_volume's message 008_012, then OnFailureRescheduleTask.revert."""
        settings = self.settings
        host = settings.pool_host
        log = self._volume.logger.bind(**cast.log_fields())
        self._message(
            cast,
            rpc,
            self._volume.logger,
            user_messages.CREATE_VOLUME_FROM_BACKEND,
            user_messages.DRIVER_FAILED_CREATE,
        )
        # do_reschedule is False when the scheduler sent no retry info (max attempts 1).
        reschedule = error.reschedulable and settings.scheduler_max_attempts > 1
        log.error(
            LOG_DRIVER_FAILED,
            host=host,
            attempt=cast.attempt,
            error_type=error.kind,
            error=error.message,
            rescheduled=reschedule,
        )
        with self._lock:
            self._allocated_gb = max(0.0, self._allocated_gb - cast.volume.size)
        rpc.set_attribute(RESCHEDULED, reschedule)
        if reschedule:
            self._reschedule(cast, rpc, error, host, log)
        else:
            self._set_volume(cast.volume, "error", host=host)
            rpc.set_attribute(VOLUME_STATUS, "error")
            log.error(LOG_CREATE_FAILED, host=host, attempt=cast.attempt)
            cause = "not_reschedulable" if not error.reschedulable else "reschedule_disabled"
            outcome = Settled(
                "error", failed_service=VOLUME_SERVICE, failure="driver_error", cause=cause
            )
            self._settle(cast, rpc, self._volume.logger, outcome, host=host)
        _osprofiler_error(rpc, error)
        rpc.end()

    def _reschedule(self, cast: Cast, rpc: Span, error: DriverError, host: str, log: Any) -> None:
        """_pre_reschedule (host reset), the cast back to the scheduler, _post_reschedule."""
        self._set_volume(cast.volume, "creating", host=None)
        rpc.set_attribute(VOLUME_STATUS, "creating")
        log.warning(
            LOG_RESCHEDULED,
            host=host,
            attempt=cast.attempt,
            max_attempts=self.settings.scheduler_max_attempts,
        )
        cast.attempt += 1
        cast.last_error = f"{error.kind}: {error.message}"
        cast.last_host = host
        cast.parent = rpc.get_span_context()
        self._deliver(SCHEDULER, cast, lambda: self._schedule(cast))
        # The driver may have left something on the backend: driver_delete_volume.
        delete = self._start_span(
            self._volume.tracer,
            RPC_SPAN,
            rpc.get_span_context(),
            {METHOD: VOLUME_DRIVER_DELETE, VOLUME_ID: cast.volume.id},
        )
        driver_delete = self._start_span(
            self._volume.tracer,
            DRIVE_SPAN,
            delete.get_span_context(),
            {METHOD: DRIVER_DELETE, VOLUME_ID: cast.volume.id},
        )
        driver_delete.end()
        delete.end()

    # ---- shared steps ---------------------------------------------------------------------

    def _message(
        self,
        cast: Cast,
        span: Span,
        logger: Any,
        action: tuple[str, str],
        detail: tuple[str, str],
    ) -> None:
        """message_api.create: project, the create's request id, the volume."""
        state = self._state
        if not self._current(cast):
            return
        message = user_messages.UserMessage(
            id=state.ids.new("message"),
            project_id=cast.volume.project_id,
            request_id=cast.request_id,
            resource_uuid=cast.volume.id,
            action=action,
            detail=detail,
            created_at=state.ids.now(),
        )
        state.messages.add(message)
        cast.event_ids.append(message.event_id)
        span.add_event(
            USER_MESSAGE_EVENT,
            {
                MESSAGE_ID: message.id,
                MESSAGE_EVENT_ID: message.event_id,
                MESSAGE_TEXT: message.user_message,
                MESSAGE_LEVEL: message.message_level,
            },
        )
        logger.info(
            LOG_MESSAGE_CREATED,
            message_id=message.id,
            event_id=message.event_id,
            user_message=message.user_message,
            message_level=message.message_level,
            resource_uuid=message.resource_uuid,
            **cast.log_fields(),
        )

    def _settle(
        self, cast: Cast, span: Span, logger: Any, outcome: Settled, host: str | None
    ) -> None:
        with self._lock:
            if cast.generation == self._generation:
                self._in_flight = max(0, self._in_flight - 1)
        span.set_attributes({OUTCOME: outcome.outcome, ATTEMPTS: cast.tries})
        if outcome.failure:
            span.set_attributes({FAILURE: outcome.failure, CAUSE: outcome.cause or ""})
        fields: dict[str, Any] = {
            "outcome": outcome.outcome,
            "attempts": cast.tries,
            "host": host,
            "duration_ms": round((time.monotonic() - cast.accepted_at) * 1000, 1),
            "event_ids": list(cast.event_ids),
        }
        if outcome.failure:
            fields.update(
                failed_service=outcome.failed_service, failure=outcome.failure, cause=outcome.cause
            )
        log = logger.error if outcome.outcome == "error" else logger.info
        log(LOG_SETTLED, **fields, **cast.log_fields())

    def _set_volume(self, volume: Volume, status: str, *, host: str | None = None) -> None:
        self._state.set_volume_status(volume, status, host=host)

    @staticmethod
    def _start_span(
        tracer: trace.Tracer,
        name: str,
        parent: SpanContext | None,
        attributes: dict[str, Any],
    ) -> Span:
        context = None
        if parent is not None and parent.is_valid:
            context = trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())
        return tracer.start_span(
            name, context=context, kind=SpanKind.INTERNAL, attributes=attributes
        )

    def _service_logger(self, binary: str) -> Any:
        return self._scheduler.logger if binary == SCHEDULER else self._volume.logger

    def _worker_error(self, exc: BaseException) -> None:
        self._scheduler.logger.error(
            "worker.callback_failed", error_type=type(exc).__name__, error=str(exc)
        )


def _osprofiler_error(span: Span, error: DriverError) -> None:
    """What OSProfiler records where a traced method raised, plus OTel's status."""
    span.set_attributes({OSPROFILER_ERROR: True, ERROR_TYPE: error.kind})
    span.add_event(
        OSPROFILER_ERROR_EVENT,
        {OSPROFILER_ERROR_KIND: error.kind, OSPROFILER_ERROR_MESSAGE: error.message},
    )
    span.set_status(Status(StatusCode.ERROR, f"{error.kind}: {error.message}"))


def _halves(total_s: float) -> tuple[float, float]:
    return total_s / 2, total_s - total_s / 2


# ---- CapabilitiesFilter ------------------------------------------------------------------


def _capabilities_mismatch(
    specs: dict[str, str], capabilities: dict[str, Any]
) -> tuple[str, str, Any] | None:
    """The first extra spec the backend does not satisfy: (key, wanted, reported), or None.

    cinder's CapabilitiesFilter: keys scoped other than ``capabilities:`` are not for it;
    a capability the backend does not report fails; values match as in
    ``cinder/scheduler/filters/extra_specs_ops.py`` (the common operators).
    """
    for raw_key, wanted in specs.items():
        scope, sep, rest = raw_key.partition(":")
        if sep and scope != "capabilities":
            continue
        key = rest if sep else raw_key
        reported = capabilities.get(key)
        if reported is None or not _spec_matches(reported, str(wanted)):
            return raw_key, str(wanted), reported
    return None


def _spec_matches(reported: Any, wanted: str) -> bool:
    words = wanted.split()
    if len(words) >= 2 and words[0] == "<is>":
        return str(reported).lower() == words[1].lower()
    if len(words) >= 2 and words[0] == "<in>":
        return words[1] in str(reported)
    if len(words) >= 2 and words[0] == "<or>":
        return str(reported) in words[1::2]
    if len(words) == 2 and words[0] in ("=", ">=", "<=", "!=", "s=="):
        try:
            number, limit = float(reported), float(words[1])
        except ValueError:
            return words[0] == "s==" and str(reported) == words[1]
        checks = {
            "=": number >= limit,  # cinder's "=" means "at least"
            ">=": number >= limit,
            "<=": number <= limit,
            "!=": number != limit,
            "s==": str(reported) == words[1],
        }
        return checks[words[0]]
    return str(reported) == wanted
