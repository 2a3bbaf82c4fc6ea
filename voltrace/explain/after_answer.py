"""What became of the volume after Nova's answer: cinder-scheduler and cinder-volume.

Nova answers once cinder-api has cast the create; the volume is then scheduled and
built asynchronously. The simulator settles each create on one span (attributes
``cinder.create.*``) and one log line (``create.settled``); real Cinder under OSProfiler
only has ``error=True`` spans and a scheduler rpc with no children for "no valid
backend". A create with Cinder's spans but no settling is reported as stuck.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from voltrace import semconv
from voltrace.explain.model import Advice
from voltrace.traces import Span


class names:  # spelled like voltrace.cinder_sim.async_create, which it mirrors
    """The simulator's names (voltrace.cinder_sim.async_create), copied: explain must not
    import the simulator, which loads OpenStack client libraries. Candidates for semconv."""

    SCHEDULER_SERVICE = "cinder-scheduler"
    VOLUME_SERVICE = "cinder-volume"
    RPC_SPAN = "rpc"
    OSPROFILER_ERROR = "error"
    OSPROFILER_ERROR_EVENT = "log"
    OSPROFILER_ERROR_KIND = "error.kind"
    VOLUME_ID = "cinder.volume_id"
    REQUEST_ID = semconv.CINDER_REQUEST_ID
    HOST = "cinder.host"
    SCHEDULER_RESULT = "cinder.scheduler.result"
    OUTCOME = "cinder.create.outcome"
    FAILURE = "cinder.create.failure"
    CAUSE = "cinder.create.cause"
    ATTEMPTS = "cinder.create.attempts"
    USER_MESSAGE_EVENT = "cinder.user_message"
    MESSAGE_EVENT_ID = "cinder.message.event_id"
    MESSAGE_TEXT = "cinder.message.user_message"
    LOG_MESSAGE_CREATED = "message.created"
    LOG_SETTLED = "create.settled"
    LOG_CREATE_ISSUED = "api.volume_create_issued"
    LOG_BACKEND_SELECTED = "scheduler.backend_selected"


# Real full Cinder's OSProfiler service names, next to the simulator's.
SCHEDULER_SERVICES = (names.SCHEDULER_SERVICE, "cinder-cinder-scheduler")
VOLUME_SERVICES = (names.VOLUME_SERVICE, "cinder-cinder-volume")


@dataclass
class AfterAnswer:
    """The volume's fate once Nova had answered."""

    outcome: str  # available, error, stuck
    failed_service: str | None = None
    failure: str | None = None  # no_valid_backend, driver_error
    cause: str | None = None  # capacity, capabilities, max_attempts_exceeded ...
    attempts: int | None = None
    host: str | None = None
    cinder_request_id: str | None = None
    messages: list[dict[str, str]] = field(default_factory=list)  # event_id, user_message
    advice: Advice | None = None

    def sentence(self, http_status: int | None) -> str:
        answered = f"Nova answered {http_status or '?'}; "
        if self.outcome == "available":
            where = f" on {self.host}" if self.host else ""
            return answered + f"the volume then became available{where}"
        if self.outcome == "stuck":
            where = f" (waiting on {self.failed_service})" if self.failed_service else ""
            return answered + f"the volume is stuck creating{where}"
        what = (self.failure or "error").replace("_", " ")
        cause = f" ({self.cause})" if self.cause else ""
        return answered + f"the volume then failed in {self.failed_service or '?'}: {what}{cause}"

    def to_json(self) -> dict[str, Any]:
        found = asdict(self)
        found["advice"] = None
        found["next_step"] = self.advice.flat() if self.advice else None
        found["commands"] = self.advice.commands if self.advice else []
        return found


def _service_of(span: Span) -> str:
    return span.service or ""


def from_spans(spans: Iterable[Span], volume_id: str | None = None) -> AfterAnswer | None:
    """The after-the-answer part from a trace's spans, or None when Cinder's services are absent."""
    spans = list(spans)
    cinder = [s for s in spans if _service_of(s) in SCHEDULER_SERVICES + VOLUME_SERVICES]
    if volume_id:
        cinder = [s for s in cinder if s.text(names.VOLUME_ID) in (None, volume_id)]
    if not cinder:
        return None
    found = AfterAnswer(outcome="stuck")
    for span in cinder:
        found.cinder_request_id = found.cinder_request_id or span.text(names.REQUEST_ID)
        for event in span.events:
            if event.name == names.USER_MESSAGE_EVENT:
                found.messages.append(
                    {
                        "event_id": str(event.attributes.get(names.MESSAGE_EVENT_ID, "")),
                        "user_message": str(event.attributes.get(names.MESSAGE_TEXT, "")),
                    }
                )
    settling = next((s for s in cinder if s.text(names.OUTCOME)), None)
    if settling is not None:
        found.outcome = settling.text(names.OUTCOME) or "error"
        found.failure = settling.text(names.FAILURE)
        found.cause = settling.text(names.CAUSE)
        found.attempts = settling.number(names.ATTEMPTS)
        found.host = settling.text(names.HOST)
        if found.failure == "no_valid_backend":
            found.failed_service = names.SCHEDULER_SERVICE
        elif found.failure:
            found.failed_service = names.VOLUME_SERVICE
    else:
        _real_osprofiler(spans, cinder, found)
    return explain(found)


def _real_osprofiler(spans: list[Span], cinder: list[Span], found: AfterAnswer) -> None:
    """Real Cinder: error=True spans, or a scheduler rpc with no children (no valid backend)."""
    parents = {s.parent_id for s in spans if s.parent_id}
    failed = [s for s in cinder if s.flag(names.OSPROFILER_ERROR)]
    if failed:
        last = failed[-1]
        found.outcome = "error"
        found.failed_service = _service_of(last)
        found.failure = "driver_error" if _service_of(last) in VOLUME_SERVICES else "error"
        event = last.event(names.OSPROFILER_ERROR_EVENT)
        if event is not None:
            found.cause = str(event.attributes.get(names.OSPROFILER_ERROR_KIND) or "") or None
        return
    lonely = [
        s
        for s in cinder
        if _service_of(s) in SCHEDULER_SERVICES
        and s.name == names.RPC_SPAN
        and s.span_id not in parents
    ]
    placed = [s for s in lonely if s.text(names.SCHEDULER_RESULT) == "scheduled"]
    if placed:
        # Scheduled to a host whose cinder-volume never picked the create up.
        found.failed_service = names.VOLUME_SERVICE
        found.host = placed[-1].text(names.HOST)
    elif lonely:
        found.outcome = "error"
        found.failed_service = _service_of(lonely[-1])
        found.failure = "no_valid_backend"
    elif any(_service_of(s) in VOLUME_SERVICES for s in cinder):
        found.outcome = "available"


def from_logs(events: Sequence[dict[str, Any]], request_id: str | None) -> AfterAnswer | None:
    """The same from the simulator's log lines (``create.settled`` and friends)."""
    mine = [
        e
        for e in events
        if e.get("service") in SCHEDULER_SERVICES + VOLUME_SERVICES + ("cinder-api",)
        and request_id is not None
        and request_id in (e.get("request_id"), e.get("global_request_id"))
    ]
    asynchronous = {names.LOG_CREATE_ISSUED, names.LOG_SETTLED}
    if not any(
        e.get("event") in asynchronous or e.get("service") in SCHEDULER_SERVICES + VOLUME_SERVICES
        for e in mine
    ):
        return None  # a Cinder that answers synchronously: nothing happens after the answer
    found = AfterAnswer(outcome="stuck")
    for e in mine:
        found.cinder_request_id = found.cinder_request_id or _text(e.get("request_id"))
        if e.get("event") == names.LOG_MESSAGE_CREATED:
            found.messages.append(
                {
                    "event_id": str(e.get("event_id", "")),
                    "user_message": str(e.get("user_message", "")),
                }
            )
    settled = next((e for e in mine if e.get("event") == names.LOG_SETTLED), None)
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
        selected = [e for e in mine if e.get("event") == names.LOG_BACKEND_SELECTED]
        if selected:
            found.failed_service = names.VOLUME_SERVICE
            found.host = _text(selected[-1].get("host"))
        else:
            # cinder-api cast it and no scheduler picked it up.
            found.failed_service = names.SCHEDULER_SERVICE
    return explain(found)


def _text(value: Any) -> str | None:
    return None if value in (None, "", "none") else str(value)


def explain(found: AfterAnswer) -> AfterAnswer:
    """The next step for this fate."""
    rid = found.cinder_request_id or "REQUEST_ID"
    if found.outcome == "stuck":
        where = found.failed_service or "cinder-scheduler or cinder-volume"
        on = f" on {found.host}" if found.host else ""
        found.advice = Advice(
            f"The create was never settled: {where}{on} is down or not consuming its "
            "queue; find it marked down in the service list.",
            ["openstack volume service list"],
        )
    elif found.failure == "no_valid_backend":
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
        found.advice = Advice(
            f"The driver failed: read the cinder-volume log for {rid} on {host}.",
            [f"grep {rid} /var/log/cinder/cinder-volume.log"],
        )
    return found
