"""What became of the volume after Nova's answer: cinder-scheduler and cinder-volume.

Nova answers once cinder-api has cast the create; the volume is then scheduled and
built asynchronously. The simulator settles each create on one span (attributes
``cinder.create.*``) and one log line (``create.settled``). Real Cinder under OSProfiler
has no such span: its ``rpc create_volume`` rounds say it, parent to child (api
``WSGI_POST`` → scheduler → volume, ``error=True`` where the driver raised, → scheduler
again when rescheduled), and the volume manager's recorded arguments name the host. A
scheduler rpc with nothing under it is "no valid backend" *or* a cinder-volume that has
not run the create: OSProfiler hides the scheduler's result, so that verdict is marked
``certain=False`` and ``--cinder-url`` asks Cinder. A create with Cinder's spans but no
settling is reported as stuck, and so is one cinder-api accepted (the simulator's
``cinder.create.cast_to``, real Cinder's ``WSGI_POST``) that no scheduler span follows.
When neither trace nor logs say, ``from_cinder`` asks Cinder itself.

Every name read here is ``voltrace.semconv``'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from voltrace import semconv
from voltrace.explain.model import Advice
from voltrace.traces import Span

# Said of a trace whose last Cinder span is the scheduler's (see _real_osprofiler).
UNCERTAIN_TRACE_NOTE = (
    "no cinder-volume span followed the scheduler's: no valid backend, or a "
    "cinder-volume that has not run the create (OSProfiler does not record the "
    "scheduler's result); --cinder-url asks Cinder which"
)

SCHEDULER_SERVICES = semconv.SCHEDULER_SERVICES
VOLUME_SERVICES = semconv.VOLUME_SERVICES
CINDER_SERVICES = SCHEDULER_SERVICES + VOLUME_SERVICES


def classify_messages(
    messages: Sequence[dict[str, Any]],
) -> tuple[str, int, str | None, tuple[str, ...]]:
    """Cinder's user messages for one volume: failure class, driver attempts, the newest
    message's text, and the event ids (oldest first)."""
    ordered = sorted(messages, key=lambda m: str(m.get("created_at") or ""))
    event_ids = tuple(str(m.get("event_id", "")) for m in ordered)
    attempts = event_ids.count(semconv.DRIVER_FAILED_EVENT)
    # After the last reschedule cinder-scheduler also says 001_003 ("Exceeded max scheduling
    # attempts"): the driver's failures are the cause, so they win.
    if attempts:
        failure_class = semconv.DRIVER_ERROR
    elif semconv.NO_VALID_BACKEND_EVENT in event_ids:
        failure_class = semconv.NO_VALID_BACKEND
    else:
        failure_class = "unknown"
    user_message = ordered[-1].get("user_message") if ordered else None
    return failure_class, attempts, None if user_message is None else str(user_message), event_ids


@dataclass
class AfterAnswer:
    """The volume's fate once Nova had answered."""

    outcome: str  # available, error, stuck (a service it waits on is down), creating
    failed_service: str | None = None
    failure: str | None = None  # no_valid_backend, driver_error
    cause: str | None = None  # capacity, capabilities, max_attempts_exceeded ...
    attempts: int | None = None
    host: str | None = None
    cinder_request_id: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)  # event_id, user_message
    advice: Advice | None = None
    source: str = "trace"  # trace, logs, cinder
    status: str | None = None  # the volume's status, when Cinder was asked
    down_since: str | None = None  # when the service it waits on last reported (UTC)
    down_for_s: float | None = None
    creating_for_s: float | None = None  # since the volume was created, when still creating
    error_type: str | None = None  # the exception the driver raised (trace or Cinder's logs)
    errors: list[str] = field(default_factory=list)  # each failed attempt's, from Cinder's logs
    evidence: list[str] = field(default_factory=list)  # path:line: the log records that say so
    # False when the trace cannot tell (OSProfiler hides the scheduler's result): then
    # --cinder-url asks Cinder, as for a volume still creating.
    certain: bool = True

    @property
    def host_service(self) -> str | None:
        """cinder-volume's service host (``host@backend``) from ``host@backend#pool``."""
        if self.failed_service not in VOLUME_SERVICES or not self.host:
            return None
        return self.host.split("#", 1)[0]

    def sentence(self, http_status: int | None = None) -> str:
        """One line; ``http_status`` None (Cinder asked alone) leaves Nova's answer out."""
        return _sentence(self, http_status)

    def to_json(self) -> dict[str, Any]:
        found = asdict(self)
        found["advice"] = None
        found["next_step"] = self.advice.flat() if self.advice else None
        found["commands"] = self.advice.commands if self.advice else []
        return found


def _sentence(found: AfterAnswer, http_status: int | None) -> str:
    if found.outcome == "available":
        where = f" on {found.host}" if found.host else ""
        what = f"the volume then became available{where}"
    elif found.outcome == "creating":
        age = f", {_seconds(found.creating_for_s)} after the create" if found.creating_for_s else ""
        what = f"the volume is still creating{age}; no service it needs is down"
    elif found.outcome == "stuck":
        if found.down_since and found.failed_service:
            on = f" on {found.host_service}" if found.host_service else ""
            for_s = f" ({_seconds(found.down_for_s)})" if found.down_for_s is not None else ""
            what = (
                f"the volume is stuck in creating: {found.failed_service}{on} "
                f"down since {found.down_since}{for_s}"
            )
        else:
            on = f" on {found.host_service}" if found.host_service else ""
            where = f" (waiting on {found.failed_service}{on})" if found.failed_service else ""
            what = f"the volume is stuck creating{where}"
    elif found.outcome != "error":  # another status Cinder showed (deleting, ...)
        what = f"the volume is {found.status or found.outcome}"
    else:
        failure = (found.failure or "error").replace("_", " ")
        if found.failure == semconv.DRIVER_ERROR and found.attempts:
            failure += f", {found.attempts} attempt{'s' if found.attempts != 1 else ''}"
        cause = f" ({found.cause})" if found.cause else ""
        what = f"the volume then failed in {found.failed_service or '?'}: {failure}{cause}"
    if http_status is None:  # Cinder asked alone: no answer of Nova's to come "then"
        what = what.replace("the volume then ", "the volume ", 1)
        return what[0].upper() + what[1:]
    return f"Nova answered {http_status}; {what}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def _service_of(span: Span) -> str:
    return span.service or ""


def from_spans(spans: Iterable[Span], volume_id: str | None = None) -> AfterAnswer | None:
    """The after-the-answer part from a trace's spans, or None when Cinder's services are absent."""
    spans = list(spans)
    cinder = [s for s in spans if _service_of(s) in CINDER_SERVICES]
    if volume_id:
        cinder = [s for s in cinder if s.text(semconv.CINDER_VOLUME_ID) in (None, volume_id)]
    if not cinder:
        post = next((s for s in spans if _is_create_post(s)), None)
        if post is not None:
            # Real cinder-api accepted it and no scheduler span followed (yet): the cast
            # waits in cinder-scheduler's queue, or its spans are still on their way.
            return explain(AfterAnswer(outcome="stuck", failed_service=semconv.SCHEDULER_SERVICE))
        cast = next(
            (
                s
                for s in spans
                if s.text(semconv.CINDER_CAST_TO)
                and (volume_id is None or s.text(semconv.CINDER_VOLUME_ID) == volume_id)
            ),
            None,
        )
        if cast is None:
            return None
        # cinder-api cast it, and no scheduler span followed: nobody consumed the cast.
        stuck = AfterAnswer(
            outcome="stuck",
            failed_service=cast.text(semconv.CINDER_CAST_TO),
            cinder_request_id=cast.text(semconv.CINDER_REQUEST_ID) or cast.text(semconv.REQUEST_ID),
        )
        return explain(stuck)
    found = AfterAnswer(outcome="stuck")
    for span in cinder:
        found.cinder_request_id = found.cinder_request_id or span.text(semconv.CINDER_REQUEST_ID)
        for event in span.events:
            if event.name == semconv.USER_MESSAGE_EVENT:
                found.messages.append(
                    {
                        "event_id": str(event.attributes.get(semconv.MESSAGE_EVENT_ID, "")),
                        "user_message": str(event.attributes.get(semconv.MESSAGE_TEXT, "")),
                    }
                )
    settling = next((s for s in cinder if s.text(semconv.CREATE_OUTCOME)), None)
    if settling is not None:
        found.outcome = settling.text(semconv.CREATE_OUTCOME) or "error"
        found.failure = settling.text(semconv.CREATE_FAILURE)
        found.cause = settling.text(semconv.CREATE_CAUSE)
        found.attempts = settling.number(semconv.CREATE_ATTEMPTS)
        found.host = settling.text(semconv.CINDER_HOST)
        if found.failure == semconv.NO_VALID_BACKEND:
            found.failed_service = semconv.SCHEDULER_SERVICE
        elif found.failure:
            found.failed_service = semconv.VOLUME_SERVICE
    else:
        _real_osprofiler(spans, cinder, found)
    return explain(found)


def _rpc(span: Span, services: tuple[str, ...]) -> bool:
    """A manager's ``rpc`` span of ``create_volume`` in one of ``services``."""
    return (
        _service_of(span) in services
        and span.name == semconv.RPC_SPAN
        and str(span.text(semconv.OSPROFILER_METHOD) or "").endswith(".create_volume")
    )


def _binary(span: Span) -> str:
    """The service's binary (``cinder-scheduler``), also for OSProfiler's ``cinder-cinder-…``."""
    service = _service_of(span)
    if service in SCHEDULER_SERVICES:
        return semconv.SCHEDULER_SERVICE
    if service in VOLUME_SERVICES:
        return semconv.VOLUME_SERVICE
    return service


# OSProfiler records each traced method's arguments as text (``kwargs``); the volume
# manager's holds the Volume object, whose repr names the host the scheduler chose.
_VOLUME_HOST = re.compile(r"(?<![\w'])host='([^']+)'")


def _host(span: Span) -> str | None:
    found = span.text(semconv.CINDER_HOST)
    if found:
        return found
    match = _VOLUME_HOST.search(str(span.text(semconv.OSPROFILER_KWARGS) or ""))
    return match.group(1) if match else None


def _is_create_post(span: Span) -> bool:
    """Real cinder-api's OSProfiler span of ``POST /v3/{p}/volumes`` (it casts the create)."""
    return (
        span.kind == "server"
        and str(span.text(semconv.OSPROFILER_HTTP_METHOD) or "").upper() == "POST"
        and str(span.text(semconv.OSPROFILER_HTTP_PATH) or "").rstrip("/").endswith("/volumes")
    )


def _deepest(rounds: list[Span], by_id: dict[str, Span]) -> Span:
    """The last of nested rounds: the one no other round is under (spans may lack times)."""
    above: set[str] = set()
    for span in rounds:
        seen: set[str] = set()
        parent = by_id.get(span.parent_id or "")
        while parent is not None and parent.span_id not in seen:
            seen.add(parent.span_id)
            above.add(parent.span_id)
            parent = by_id.get(parent.parent_id or "")
    return next((s for s in reversed(rounds) if s.span_id not in above), rounds[-1])


def _error_kind(span: Span) -> str | None:
    """The exception class OSProfiler's ``log`` event names on a span that raised."""
    event = span.event(semconv.OSPROFILER_ERROR_EVENT)
    kind = event.attributes.get(semconv.OSPROFILER_ERROR_KIND) if event is not None else None
    return str(kind) if kind else None


def _real_osprofiler(spans: list[Span], cinder: list[Span], found: AfterAnswer) -> None:
    """Real Cinder under OSProfiler: the rounds of ``rpc create_volume``, parent to child.

    api ``WSGI_POST`` → scheduler ``rpc`` → volume ``rpc`` (``error=True`` when the driver
    failed) → a scheduler ``rpc`` again when the failure was rescheduled. The scheduler's
    span says nothing of its result (OSProfiler hides results), so a scheduler ``rpc`` with
    no child is a guess: no valid backend, or a cinder-volume that has not run the create
    (yet); ``certain`` is False then, and ``--cinder-url`` asks Cinder.
    """
    parents = {s.parent_id for s in spans if s.parent_id}
    by_id = {s.span_id: s for s in spans}
    schedulers = [s for s in cinder if _rpc(s, SCHEDULER_SERVICES)]
    rounds = [s for s in cinder if _rpc(s, VOLUME_SERVICES)]
    failed_rounds = [s for s in rounds if s.flag(semconv.OSPROFILER_ERROR)]
    succeeded = [s for s in rounds if not s.flag(semconv.OSPROFILER_ERROR)]
    lonely = [s for s in schedulers if s.span_id not in parents]
    if succeeded:
        found.outcome = "available"
        found.host = _host(succeeded[-1])
        return
    if failed_rounds:
        found.outcome = "error"
        found.failed_service = semconv.VOLUME_SERVICE
        found.failure = semconv.DRIVER_ERROR
        found.attempts = len(failed_rounds)
        last = _deepest(failed_rounds, by_id)
        found.error_type = _error_kind(last)
        # Rescheduled: the failed round cast the create back to the scheduler, which gave up.
        if any(by_id.get(s.parent_id or "") in failed_rounds for s in lonely):
            found.cause = "max_attempts_exceeded"
        else:
            found.host = _host(last)  # not rescheduled: the volume stays on its host
        return
    failed = [s for s in cinder if s.flag(semconv.OSPROFILER_ERROR)]
    if failed:
        last = failed[-1]
        found.outcome = "error"
        found.failed_service = _binary(last)
        found.failure = "error"
        found.error_type = _error_kind(last)
        return
    placed = [s for s in lonely if s.text(semconv.SCHEDULER_RESULT) == "scheduled"]
    if placed:
        # Scheduled to a host whose cinder-volume never picked the create up.
        found.failed_service = semconv.VOLUME_SERVICE
        found.host = placed[-1].text(semconv.CINDER_HOST)
    elif lonely:
        found.outcome = "error"
        found.failed_service = semconv.SCHEDULER_SERVICE
        found.failure = semconv.NO_VALID_BACKEND
        # The simulator says so (cinder.scheduler.result); OSProfiler's span cannot.
        found.certain = lonely[-1].text(semconv.SCHEDULER_RESULT) == "no_valid_backend"
    elif any(_service_of(s) in VOLUME_SERVICES for s in cinder):
        found.outcome = "available"


def from_logs(events: Sequence[dict[str, Any]], request_id: str | None) -> AfterAnswer | None:
    """The same from the simulator's log lines (``create.settled`` and friends)."""
    mine = [
        e
        for e in events
        if e.get("service") in (*CINDER_SERVICES, semconv.CINDER_API_SERVICE)
        and request_id is not None
        and request_id in (e.get("request_id"), e.get("global_request_id"))
    ]
    asynchronous = {semconv.LOG_CREATE_ISSUED, semconv.LOG_SETTLED}
    if not any(e.get("event") in asynchronous or e.get("service") in CINDER_SERVICES for e in mine):
        return None  # a Cinder that answers synchronously: nothing happens after the answer
    found = AfterAnswer(outcome="stuck", source="logs")
    for e in mine:
        found.cinder_request_id = found.cinder_request_id or _text(e.get("request_id"))
        if e.get("event") == semconv.LOG_MESSAGE_CREATED:
            found.messages.append(
                {
                    "event_id": str(e.get("event_id", "")),
                    "user_message": str(e.get("user_message", "")),
                }
            )
    settled = next((e for e in mine if e.get("event") == semconv.LOG_SETTLED), None)
    if settled is not None:
        found.outcome = _text(settled.get("outcome")) or "error"
        found.failed_service = _text(settled.get("failed_service"))
        found.failure = _text(settled.get("failure"))
        found.cause = _text(settled.get("cause"))
        attempts = settled.get("attempts")
        found.attempts = attempts if isinstance(attempts, int) else None
        found.host = _text(settled.get("host"))
        if found.outcome == "available":
            found.failed_service = None
    else:
        selected = [e for e in mine if e.get("event") == semconv.LOG_BACKEND_SELECTED]
        if selected:
            found.failed_service = semconv.VOLUME_SERVICE
            found.host = _text(selected[-1].get("host"))
        else:
            # cinder-api cast it and no scheduler picked it up.
            found.failed_service = semconv.SCHEDULER_SERVICE
    return explain(found)


def _text(value: Any) -> str | None:
    return None if value in (None, "", "none") else str(value)


def explain(found: AfterAnswer) -> AfterAnswer:
    """The next step for this fate."""
    rid = found.cinder_request_id or "REQUEST_ID"
    if found.failure == semconv.DRIVER_ERROR:
        # The driver failed in cinder-volume, even when the scheduler then gave up
        # rescheduling it ("Exceeded max scheduling attempts"): name where it failed.
        found.failed_service = semconv.VOLUME_SERVICE
    if found.outcome == "stuck":
        where = found.failed_service or "cinder-scheduler or cinder-volume"
        on = f" on {found.host_service or found.host}" if (found.host_service or found.host) else ""
        if found.down_since:
            text = (
                f"{where}{on} stopped reporting at {found.down_since}: start it again (or "
                "find why it hangs); the create waits in its queue and runs once it is back."
            )
        else:
            text = (
                f"The create was never settled: {where}{on} is down or not consuming its "
                "queue; find it marked down in the service list."
            )
        found.advice = Advice(text, ["openstack volume service list"])
    elif found.outcome == "creating":
        found.advice = Advice(
            "Still in progress with every service up: a slow backend, or a cast waiting "
            "in a busy queue; follow it (--follow) and read cinder-volume's log for "
            f"{rid}.",
            ["openstack volume service list", f"grep {rid} /var/log/cinder/cinder-volume.log"],
        )
    elif found.failure == semconv.NO_VALID_BACKEND:
        found.advice = Advice(
            "No backend could take the volume: check free capacity, the type's extra "
            "specs against the backends' capabilities, and that cinder-volume is up.",
            [
                "cinder get-pools --detail",
                "openstack volume type show TYPE",
                "openstack volume service list",
            ],
        )
    elif found.outcome == "error":
        host = found.host or "the volume host"
        if found.errors and found.error_type:
            # Cinder's logs named the exception: point at the driver, not at a search.
            text = (
                f"The driver raised {found.error_type.rsplit('.', 1)[-1]} (each attempt "
                f"above, with where it was raised): fix the backend; the tracebacks are in "
                f"the cinder-volume log for {rid}."
            )
        else:
            text = f"The driver failed: read the cinder-volume log for {rid} on {host}."
        found.advice = Advice(text, [f"grep {rid} /var/log/cinder/cinder-volume.log"])
    return found
