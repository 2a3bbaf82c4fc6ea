"""The wrappers on nova's own functions, and what one create looks like from inside them.

``docs/nova-api.md`` has the map (hook, file:line, what it marks). In short: a create is a
``Resource.__call__`` of ``VolumeController`` routed to ``create``. From its entry to
``context.can`` is **parse**; ``can`` is **authorize**; ``API.get_snapshot`` is
**resolve_snapshot**; from there to ``API.create`` is **derive_size**; ``API.create`` is
**call_cinder**; from there to ``Resource.__call__``'s return is **translate**. The three
wrapped calls are live spans (the requests CLIENT spans nest in them); the three others are
built from the two hooks' timestamps and say so (``voltrace.stage.timing=between_hooks``).

Rules every wrapper here follows:

* nova's own call is made exactly once, outside any guard, and whatever it raises is
  re-raised untouched;
* every line of bookkeeping is guarded: a failure is counted (``OBSERVER_ERRORS``), that
  create's tracking stops, and nova goes on as if nothing were wrapped;
* the first hook that sees an exception owns the failure, with the stage running then; its
  span stays open until ``Resource.__call__`` returns, to carry the status nova answered
  (read from ``start_response``, never predicted).

Hooks that run for every nova request (``Request.*``, ``Resource.__call__``,
``RequestContext.can``) cost one context-variable read or a type check unless the request
is a create.
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from voltrace import semconv
from voltrace.cinder import CinderCall
from voltrace.errors import NovaFault
from voltrace.instrumentation import nova_failures
from voltrace.instrumentation.nova_runtime import RUNTIME, count_failure, guarded
from voltrace.record import RequestRecord
from voltrace.state import StageRecord, StageReport

T = TypeVar("T")

CREATE_POLICY = "os_compute_api:os-volumes:create"
SKIPPED_SNAPSHOT = "no snapshot_id in the request"
# Set in the environ once a create reached VolumeController's Resource (the filter reads it).
ENV_CREATE_SEEN = "voltrace.nova.create_seen"
# A fault body bigger than this is not read for its message (nova's are a few hundred bytes).
_MAX_FAULT_BODY = 65536


_CURRENT: contextvars.ContextVar[CreateTrace | None] = contextvars.ContextVar(
    "voltrace_nova_create", default=None
)


@dataclass
class _Live:
    """A wrapped stage: its span and record, from the wrapped call's entry."""

    span: Span
    record: StageRecord
    started_ns: int
    context_token: contextvars.Token[otel_context.Context] | None = None


@dataclass
class _Failure:
    """The first exception a hook saw (or, for a returned Fault, none), and where."""

    stage: str
    failure_class: str
    cause: BaseException | None
    at_ns: int
    details: dict[str, Any] = field(default_factory=dict)
    live: _Live | None = None  # a wrapped stage's span, kept open for nova's status


def _now() -> int:
    return time.time_ns()


class CreateTrace:
    """One POST os-volumes inside nova: its pipeline span, stage records and failure.

    Methods named after hooks are called by them; each is guarded by ``_step``: once one
    fails, this create is no longer tracked (``broken``), and ``close`` only ends what is
    open.
    """

    def __init__(self, emitter: Any, environ: dict[str, Any], started_ns: int) -> None:
        self.emitter = emitter
        self.environ = environ
        self.identity = environ.get("nova.context")
        self.records: list[StageRecord] = []
        self.status: int | None = None
        self.stage = "parse"
        self.stage_started_ns = started_ns
        self.dispatched = False
        self.request: Any = None
        self.body: Any = None
        self.snapshot: dict[str, Any] | None = None
        self.volume_id: str | None = None
        self.live: _Live | None = None
        self.failure: _Failure | None = None
        self.broken = False
        self._tokens: (
            tuple[contextvars.Token[otel_context.Context], contextvars.Token[CreateTrace | None]]
            | None
        ) = None
        request_id = getattr(self.identity, "request_id", None) or ""
        self.pipeline_span = emitter.tracer.start_span(
            semconv.PIPELINE_SPAN,
            kind=SpanKind.INTERNAL,
            record_exception=False,
            start_time=started_ns,
            attributes={
                semconv.NOVA_CODE_ATTR: semconv.PIPELINE_NOVA_CODE,
                semconv.REQUEST_ID: request_id,
            },
        )

    # -- entering and leaving the request ------------------------------------------

    def enter(self) -> None:
        span_token = otel_context.attach(trace.set_span_in_context(self.pipeline_span))
        self._tokens = (span_token, _CURRENT.set(self))
        self.environ[ENV_CREATE_SEEN] = True

    def recording(self, start_response: Callable[..., Any]) -> Callable[..., Any]:
        """``start_response`` as given, noting the status nova answers."""

        def start_response_noting_status(*args: Any, **kwargs: Any) -> Any:
            guarded("status", self._note_status, args)
            return start_response(*args, **kwargs)

        return start_response_noting_status

    def _note_status(self, args: tuple[Any, ...]) -> None:
        self.status = int(str(args[0]).split(" ", 1)[0])

    def _step(self, where: str, call: Callable[..., T], *args: Any) -> T | None:
        if self.broken:
            return None
        try:
            return call(*args)
        except Exception as exc:
            self.broken = True
            count_failure(where, exc)
            return None

    # -- failures ----------------------------------------------------------------------

    def _saw(
        self,
        stage: str,
        failure_class: str,
        cause: BaseException | None,
        details: dict[str, Any] | None = None,
        live: _Live | None = None,
    ) -> None:
        if self.failure is None:
            self.failure = _Failure(stage, failure_class, cause, _now(), details or {}, live)

    def parse_raised(self, exc: BaseException) -> None:
        self._step("parse cause", self._parse_raised, exc)

    def _parse_raised(self, exc: BaseException) -> None:
        failure_class = nova_failures.parse_cause(exc)
        if failure_class is not None and self.stage == "parse":
            self._saw("parse", failure_class, exc)

    def dispatch_begins(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._step("dispatch", self._dispatch_begins, args, kwargs)

    def _dispatch_begins(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.dispatched = True
        self.request = kwargs["req"] if "req" in kwargs else args[0]
        self.body = kwargs.get("body")

    def controller_raised(self, exc: BaseException) -> None:
        self._step("controller", self._controller_raised, exc)

    def _controller_raised(self, exc: BaseException) -> None:
        if self.failure is None:
            failure_class, cause = nova_failures.controller_failure(self.stage, exc)
            self._saw(self.stage, failure_class, cause)

    # -- the stages ---------------------------------------------------------------------

    def _volume_spec(self) -> dict[str, Any]:
        return dict(self.body["volume"])

    def _between_hooks(
        self, name: str, started_ns: int, ended_ns: int, report: StageReport
    ) -> None:
        record = StageRecord(
            name, semconv.NOVA_CODE[name], report=report, duration_s=(ended_ns - started_ns) / 1e9
        )
        self.records.append(record)
        span = self.emitter.start(name, record.nova_code, "between_hooks", start_time=started_ns)
        self.emitter.finish(span, record, self.identity, self.volume_id, end_time=ended_ns)

    def _start_live(self, name: str, current: bool) -> _Live:
        started = _now()
        record = StageRecord(name, semconv.NOVA_CODE[name])
        self.records.append(record)
        span = self.emitter.start(name, record.nova_code, "wrapped", start_time=started)
        live = _Live(span, record, started)
        if current:  # the requests CLIENT spans nest under it
            live.context_token = otel_context.attach(trace.set_span_in_context(span))
        self.live = live
        return live

    def _end_live(self, ended_ns: int, report: StageReport | None, next_stage: str) -> None:
        live, self.live = self.live, None
        assert live is not None
        if live.context_token is not None:
            otel_context.detach(live.context_token)
        if report is None:  # it failed: the span waits for nova's status
            return
        live.record.report = report
        live.record.duration_s = (ended_ns - live.started_ns) / 1e9
        self.emitter.finish(
            live.span, live.record, self.identity, self.volume_id, end_time=ended_ns
        )
        self.stage = next_stage
        # After the bookkeeping, so the next stage is not charged for it.
        self.stage_started_ns = _now()

    def _failed_live(self, exc: BaseException, failure_class: str, details: dict[str, Any]) -> None:
        live = self.live
        assert live is not None
        self._saw(live.record.name, failure_class, exc, details, live)
        self._end_live(_now(), None, live.record.name)

    def authorize_begins(self, action: Any) -> bool:
        return bool(self._step("authorize", self._authorize_begins, action))

    def _authorize_begins(self, action: Any) -> bool:
        if action != CREATE_POLICY or self.stage != "parse" or self.failure is not None:
            return False
        ended = _now()
        spec = self._volume_spec()
        self._between_hooks(
            "parse",
            self.stage_started_ns,
            ended,
            StageReport(
                {
                    "api_version": self.request.api_version_request.get_string(),
                    "has_snapshot": "snapshot_id" in spec,
                }
            ),
        )
        self.stage = "authorize"
        self._start_live("authorize", current=False)
        return True

    def authorize_ended(self, exc: BaseException | None) -> None:
        self._step("authorize", self._authorize_ended, exc)

    def _authorize_ended(self, exc: BaseException | None) -> None:
        ended = _now()
        if exc is not None:
            self._failed_live(exc, nova_failures.authorize_failure(exc), {})
            return
        self._end_live(ended, StageReport({"policy.rule": CREATE_POLICY}), "resolve_snapshot")
        if self._volume_spec().get("snapshot_id", None) is None:
            # Nova's controller never calls get_snapshot: the stage is skipped, at this moment.
            now = _now()
            self._between_hooks("resolve_snapshot", now, now, StageReport(skipped=SKIPPED_SNAPSHOT))
            self.stage = "derive_size"
            self.stage_started_ns = _now()

    def _cinder_budget(self) -> dict[str, Any]:
        from nova import conf

        return {semconv.CINDER_CONNECT_RETRIES: conf.CONF.cinder.http_retries}

    def snapshot_begins(self, snapshot_id: Any) -> bool:
        return bool(self._step("resolve_snapshot", self._snapshot_begins, snapshot_id))

    def _snapshot_begins(self, snapshot_id: Any) -> bool:
        if self.stage != "resolve_snapshot" or self.failure is not None:
            return False
        self._start_live("resolve_snapshot", current=True)
        self._snapshot_id = snapshot_id
        return True

    def snapshot_ended(self, snapshot: Any, exc: BaseException | None) -> None:
        self._step("resolve_snapshot", self._snapshot_ended, snapshot, exc)

    def _snapshot_ended(self, snapshot: Any, exc: BaseException | None) -> None:
        ended = _now()
        details = {**self._cinder_budget(), "snapshot.id": self._snapshot_id}
        if exc is not None:
            self._failed_live(exc, nova_failures.snapshot_failure(exc), details)
            return
        self.snapshot = snapshot
        self._end_live(
            ended,
            StageReport({**details, "snapshot.volume_size": snapshot["volume_size"]}),
            "derive_size",
        )

    def cinder_create_begins(self, size: Any) -> bool:
        return bool(self._step("call_cinder", self._cinder_create_begins, size))

    def _cinder_create_begins(self, size: Any) -> bool:
        ended = _now()
        if self.stage != "derive_size" or self.failure is not None:
            return False
        requested = self._volume_spec().get("size", None)
        source = "request"
        if requested is None:
            source = "snapshot" if self.snapshot is not None else "none"
        self._between_hooks(
            "derive_size",
            self.stage_started_ns,
            ended,
            StageReport({"size.source": source, "size.value": repr(size)}),
        )
        self.stage = "call_cinder"
        self._start_live("call_cinder", current=True)
        return True

    def cinder_create_ended(self, volume: Any, exc: BaseException | None) -> None:
        self._step("call_cinder", self._cinder_create_ended, volume, exc)

    def _cinder_create_ended(self, volume: Any, exc: BaseException | None) -> None:
        ended = _now()
        budget = self._cinder_budget()
        if exc is not None:
            self._failed_live(exc, nova_failures.cinder_failure(exc), budget)
            return
        self.volume_id = volume["id"]
        self._end_live(
            ended,
            StageReport({**budget, "volume.id": volume["id"], "volume.status": volume["status"]}),
            "translate",
        )

    def cinder_answered(self, result: Any) -> None:
        self._step("cinder call", self._cinder_answered, result)

    def _cinder_answered(self, result: Any) -> None:
        if self.live is None or self.live.record.name not in ("resolve_snapshot", "call_cinder"):
            return
        response = result[0]  # LegacyJsonAdapter.request answers (response, body)
        request = response.request
        self.live.record.cinder_calls.append(
            CinderCall(
                method=request.method or "",
                url=request.url or "",
                status=response.status_code,
                request_id=response.headers.get("x-openstack-request-id"),
                elapsed_s=response.elapsed.total_seconds(),
            )
        )

    # -- the end --------------------------------------------------------------------------

    def close(self, result: Any, escaped: BaseException | None) -> None:
        """``Resource.__call__`` returned (or raised): end every span, fill the record."""
        ended = _now()
        if escaped is not None:
            # Nothing in nova caught it: FaultWrapper will answer 500.
            self._step("close", self._saw, self.stage, "internal_error", escaped)
        self._step("close", self._finish, result, ended)
        guarded("close", self._end_what_is_open)

    def _finish(self, result: Any, ended: int) -> None:
        status = self.status if self.status is not None else 500
        if self.failure is None and status >= 400:
            # A Fault returned with no exception: the URL's project id (nova checks it in
            # _process_stack before dispatch), or something no hook could see.
            project_mismatch = self.stage == "parse" and not self.dispatched and status == 400
            self._saw(
                self.stage, "project_mismatch" if project_mismatch else "internal_error", None
            )
        # A failure nova recovered from (it answered 2xx anyway) is no failure.
        fault = self._fault(status, result) if self.failure and status >= 400 else None
        if self.failure is not None and fault is not None:
            self._emit_failure(self.failure, fault, ended)
        elif self.stage == "translate":
            self._between_hooks(
                "translate",
                self.stage_started_ns,
                ended,
                StageReport({"volume.id": self.volume_id}),
            )
        record = RequestRecord.of(self.environ)
        record.stages = self.records
        record.volume_id = self.volume_id
        record.cinder_request_id = next(
            (
                call.request_id
                for stage in reversed(self.records)
                for call in reversed(stage.cinder_calls)
                if call.request_id
            ),
            None,
        )
        if fault is not None and self.failure is not None:
            record.refused(self.failure.stage, fault)
            self.pipeline_span.set_attribute(semconv.FAILED_STAGE, self.failure.stage)
            if status >= 500:
                self.pipeline_span.set_status(Status(StatusCode.ERROR, fault.message))

    def _fault(self, status: int, result: Any) -> NovaFault:
        failure = self.failure
        assert failure is not None
        message = _answered_message(result) if status >= 400 else None
        if message is None:
            message = _message_of(failure.cause) or semconv.FAILURES[failure.failure_class].summary
        return NovaFault(
            status, message, failure.failure_class, cause=failure.cause, details=failure.details
        )

    def _emit_failure(self, failure: _Failure, fault: NovaFault, ended: int) -> None:
        if failure.live is not None:
            live = failure.live
            failure.live = None
            live.record.fault = fault
            live.record.duration_s = (failure.at_ns - live.started_ns) / 1e9
            self.emitter.finish(
                live.span, live.record, self.identity, self.volume_id, end_time=failure.at_ns
            )
            return
        # A stage built from timestamps: from its start to the exception (or the answer).
        end = failure.at_ns if failure.cause is not None else ended
        record = StageRecord(
            failure.stage,
            semconv.NOVA_CODE[failure.stage],
            fault=fault,
            duration_s=(end - self.stage_started_ns) / 1e9,
        )
        self.records.append(record)
        span = self.emitter.start(
            failure.stage, record.nova_code, "between_hooks", start_time=self.stage_started_ns
        )
        self.emitter.finish(span, record, self.identity, self.volume_id, end_time=end)

    def _end_what_is_open(self) -> None:
        """Whatever a broken create left open, and the pipeline span; then leave."""
        try:
            for live in (self.live, self.failure.live if self.failure else None):
                if live is not None:
                    if live.context_token is not None:
                        otel_context.detach(live.context_token)
                        live.context_token = None
                    live.span.end()
                    self.emitter.metrics.in_flight.leave(live.record.name)
            self.live = None
            self.pipeline_span.end()
        finally:
            if self._tokens is not None:
                span_token, create_token = self._tokens
                self._tokens = None
                _CURRENT.reset(create_token)
                otel_context.detach(span_token)


def _answered_message(result: Any) -> str | None:
    """The message of the fault body nova answered (``{"badRequest": {"message": ...}}``)."""
    if not isinstance(result, list) or not all(isinstance(part, bytes) for part in result):
        return None  # not a body already in memory: never consume an iterator of nova's
    body = b"".join(result)
    if len(body) > _MAX_FAULT_BODY:
        return None
    try:
        document = json.loads(body)
        inner = next(iter(document.values()))
        message = inner.get("message")
    except (ValueError, AttributeError, StopIteration, TypeError):
        return None
    return message if isinstance(message, str) else None


def _message_of(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    format_message = getattr(exc, "format_message", None)
    return str(format_message()) if callable(format_message) else str(exc)


# ---------------------------------------------------------------------------
# The wrappers (wrapt's signature: wrapped, instance, args, kwargs)
# ---------------------------------------------------------------------------


def _begin_create(resource: Any, args: tuple[Any, ...]) -> tuple[CreateTrace, Any] | None:
    if len(args) < 2 or not isinstance(args[0], dict):
        return None
    environ = args[0]
    controller_class = RUNTIME.volume_controller
    if (
        environ.get("REQUEST_METHOD") != "POST"
        or controller_class is None
        or not isinstance(getattr(resource, "controller", None), controller_class)
    ):
        return None
    routing = environ.get("wsgiorg.routing_args")
    if not routing or routing[1].get("action") != "create":
        return None
    emitter = RUNTIME.emitter()
    if emitter is None:
        return None
    create = CreateTrace(emitter, environ, _now())
    try:
        create.enter()
    except Exception:
        create._end_what_is_open()
        raise
    return create, create.recording(args[1])


def resource_call(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``Resource.__call__``: a create's start and end (parse starts, translate ends)."""
    begun = guarded("request", _begin_create, instance, args)
    if begun is None:
        return wrapped(*args, **kwargs)
    create, start_response = begun
    try:
        result = wrapped(args[0], start_response, *args[2:], **kwargs)
    except BaseException as exc:
        create.close(None, exc)
        raise
    create.close(result, None)
    return result


def parse_step(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``Request.set_api_version_request``, ``Request.get_content_type`` and
    ``Resource._get_request_content``: observe the parse failures nova turns into Faults."""
    create = _CURRENT.get()
    if create is None:
        return wrapped(*args, **kwargs)
    try:
        return wrapped(*args, **kwargs)
    except Exception as exc:
        create.parse_raised(exc)
        raise


def volume_create(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``VolumeController.create`` (its outermost decorator): dispatch reached."""
    create = _CURRENT.get()
    if create is None:
        return wrapped(*args, **kwargs)
    create.dispatch_begins(args, kwargs)
    try:
        return wrapped(*args, **kwargs)
    except Exception as exc:
        create.controller_raised(exc)
        raise


def context_can(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``RequestContext.can``: for the create policy only, parse ends and authorize runs."""
    create = _CURRENT.get()
    if create is None:
        return wrapped(*args, **kwargs)
    action = args[0] if args else kwargs.get("action")
    if not create.authorize_begins(action):
        return wrapped(*args, **kwargs)
    try:
        result = wrapped(*args, **kwargs)
    except Exception as exc:
        create.authorize_ended(exc)
        raise
    create.authorize_ended(None)
    return result


def get_snapshot(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``nova.volume.cinder.API.get_snapshot``: resolve_snapshot."""
    create = _CURRENT.get()
    if create is None:
        return wrapped(*args, **kwargs)
    snapshot_id = args[1] if len(args) > 1 else kwargs.get("snapshot_id")
    if not create.snapshot_begins(snapshot_id):
        return wrapped(*args, **kwargs)
    try:
        snapshot = wrapped(*args, **kwargs)
    except Exception as exc:
        create.snapshot_ended(None, exc)
        raise
    create.snapshot_ended(snapshot, None)
    return snapshot


def cinder_create(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``nova.volume.cinder.API.create``: derive_size ends, call_cinder runs."""
    create = _CURRENT.get()
    if create is None:
        return wrapped(*args, **kwargs)
    size = args[1] if len(args) > 1 else kwargs.get("size")
    if not create.cinder_create_begins(size):
        return wrapped(*args, **kwargs)
    try:
        volume = wrapped(*args, **kwargs)
    except Exception as exc:
        create.cinder_create_ended(None, exc)
        raise
    create.cinder_create_ended(volume, None)
    return volume


def adapter_request(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """keystoneauth's ``LegacyJsonAdapter.request``, which cinderclient's SessionClient calls
    for every Cinder exchange: the response, whatever its status (request id, metrics)."""
    create = _CURRENT.get()
    if create is None:
        return wrapped(*args, **kwargs)
    result = wrapped(*args, **kwargs)
    if type(instance).__module__ == "cinderclient.client":
        create.cinder_answered(result)
    return result


def fault_wrapper_error(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``FaultWrapper._error``: an exception escaped to nova's outermost handler (a 500)."""
    guarded("fault wrapper", _record_escaped, args)
    return wrapped(*args, **kwargs)


def _record_escaped(args: tuple[Any, ...]) -> None:
    inner, req = args[0], args[1]
    record = RequestRecord.of(req.environ)
    if record.failed_stage is None:
        import webob.exc

        record.refused(
            "wsgi",
            NovaFault(
                500, webob.exc.HTTPInternalServerError.explanation, "internal_error", cause=inner
            ),
        )
