"""A diagnosis per create, from voltrace's JSON log lines alone.

The ``request.finished`` line carries what nova-api's SERVER span carries (outcome,
status, failed stage, failure class, ids, every stage's duration), and the failing
stage's ``stage.<name>`` line carries its error. What only a trace has (timings below
the stages, Cinder's side, the POSTs a read timeout repeated) is missing, and the
diagnosis's ``notes`` say so.

Files are streamed: a request's lines are held until its ``request.finished`` line
arrives, then diagnosed and forgotten.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from voltrace import semconv
from voltrace.explain import advice, after_answer
from voltrace.explain.model import Diagnosis, StageTiming, none_if_blank
from voltrace.explain.waterfall import stage_rows
from voltrace.traces.files import loads
from voltrace.traces.model import as_int

# Requests whose request.finished never comes are forgotten past this many.
MAX_OPEN_REQUESTS = 10_000


class LogFileError(Exception):
    """The log file cannot be read at all."""


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _text(value: Any) -> str | None:
    value = none_if_blank(value)
    return None if value is None else str(value)


def is_create_line(finished: dict[str, Any]) -> bool:
    """A request.finished line of a create (not a probe or another route)."""
    kind = finished.get("kind")
    if kind is not None:
        return kind == "create"
    route = str(finished.get("route") or "")
    return route.rstrip("/").endswith("os-volumes") or "failed_stage" in finished


def diagnose_logs(events: Sequence[dict[str, Any]], *, waterfall: bool = False) -> Diagnosis | None:
    """The diagnosis of one request from its log lines (None without a request.finished)."""
    finished = next(
        (e for e in reversed(events) if e.get("event") == semconv.REQUEST_FINISHED), None
    )
    if finished is None:
        return None
    summary: dict[str, Any] = {
        field: _text(finished.get(field)) for _, field in semconv.SUMMARY_FIELDS
    }
    failed_stage = summary["failed_stage"]
    stage_line = next(
        (
            e
            for e in reversed(events)
            if failed_stage and e.get("event") == semconv.stage_event(failed_stage)
        ),
        None,
    )
    total = _float(finished.get("duration_ms"))
    rows = finished.get("stages")
    if not isinstance(rows, list):
        rows = [
            {
                "name": e.get("stage"),
                "status": e.get("outcome"),
                "duration_ms": e.get("duration_ms"),
            }
            for e in events
            if str(e.get("event", "")).startswith("stage.")
        ]
    stages = []
    for row in rows:
        if isinstance(row, dict) and isinstance(row.get("name"), str):
            ms = _float(row.get("duration_ms")) or 0.0
            stages.append(
                StageTiming(row["name"], str(row.get("status")), ms, ms / total if total else None)
            )
    d = Diagnosis(
        source="logs",
        trace_id=_text(finished.get("trace_id")),
        **summary,
        outcome=str(finished.get("outcome", "unknown")),
        http_status=as_int(finished.get("http_status")),
        duration_ms=total,
        started_ns=_started_ns(finished, total),
        stages=stages,
    )
    if failed_stage:
        d.nova_code = semconv.NOVA_CODE.get(failed_stage)
    source = stage_line or finished
    d.error_type = _text(source.get("error_type"))
    d.error_message = _text(source.get("error_message"))
    # request.finished carries Nova's own message, which names what the cause's may not.
    nova_message = _text(finished.get("error_message")) or ""
    d.details = advice.message_details(
        d.failure_class, "\n".join(filter(None, [d.error_message, nova_message]))
    )
    field = (stage_line or {}).get("schema_field") or (stage_line or {}).get("schema.field")
    if isinstance(field, str) and field and d.failure_class == "schema_invalid":
        d.details["field"] = field
    retries = as_int((stage_line or {}).get("cinder_connect_retries"))
    if retries is not None:
        d.details["connect_retries"] = retries
        if d.failure_class == "cinder_unreachable":
            # Nova gives up on a connect failure only once every retry is spent.
            d.details["attempts"] = retries + 1
    d.notes.append(
        "from logs: stage timings only; the critical path and hop timings need the trace"
    )
    if d.failure_class == "cinder_unreachable" and retries is None:
        d.notes.append(
            "from logs: the number of connection attempts is only in the trace "
            "(one CLIENT span per attempt)"
        )
    if waterfall:
        d.waterfall, d.waterfall_ms = stage_rows(d)
    if not d.failed:
        d.after_answer = after_answer.from_logs(events, d.request_id)
    return advice.explain(d)


_CINDER_SERVICES = (
    semconv.CINDER_API_SERVICE,
    *semconv.SCHEDULER_SERVICES,
    *semconv.VOLUME_SERVICES,
)


def _may_settle_later(events: list[dict[str, Any]]) -> bool:
    """A create Nova answered 200 whose settling line has not been read yet."""
    finished = events[-1]  # nova-api's request.finished, just read
    return (
        finished.get("outcome") == "success"
        and is_create_line(finished)
        and not any(e.get("event") == semconv.LOG_SETTLED for e in events)
    )


def _started_ns(finished: dict[str, Any], total: float | None) -> int:
    stamp = finished.get("timestamp")
    if not isinstance(stamp, str):
        return 0
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0
    return int(when.timestamp() * 1e9 - (total or 0) * 1e6)


class LogReader:
    """Creates diagnosed from log files, streamed; problems and skipped requests counted."""

    def __init__(self, paths: Sequence[Path], *, waterfall: bool = False) -> None:
        self.paths = list(paths)
        self.waterfall = waterfall
        self.problems: list[str] = []
        self.other_requests = 0

    def diagnoses(self) -> Iterator[Diagnosis]:
        readable = 0
        fatal: list[str] = []
        for path in self.paths:
            try:
                found = yield from self._file(path)
            except LogFileError as exc:
                fatal.append(str(exc))
                continue
            readable += found
        if not readable and fatal:
            raise LogFileError(fatal[0] if len(fatal) == 1 else "; ".join(fatal))
        self.problems.extend(fatal)

    def _file(self, path: Path) -> Generator[Diagnosis, None, int]:
        """The file's diagnoses; returns 1 if it held any line, else 0."""
        try:
            handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError as exc:
            raise LogFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
        open_requests: dict[str, list[dict[str, Any]]] = {}
        # Creates Nova answered 200, held until Cinder's services log how they settled
        # (their lines come after nova-api's request.finished) or the file ends.
        settling: dict[str, list[dict[str, Any]]] = {}
        lines = bad = 0
        first_bad = ""
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                lines += 1
                try:
                    event = loads(line)
                except ValueError as exc:
                    bad += 1
                    problem = (
                        f"{path}:{number}: not a JSON log line, skipped ({exc}; "
                        "voltrace writes JSON with --log-format json)"
                    )
                    first_bad = first_bad or problem
                    self.problems.append(problem)
                    continue
                if not isinstance(event, dict):
                    bad += 1
                    first_bad = first_bad or f"{path}:{number}: not a JSON object"
                    self.problems.append(f"{path}:{number}: not a JSON object, skipped")
                    continue
                request_id = event.get("request_id")
                if not isinstance(request_id, str) or not request_id:
                    continue
                # Cinder's lines carry cinder's request id, and nova's as the global one.
                nova_id = event.get("global_request_id")
                if event.get("service") in _CINDER_SERVICES and isinstance(nova_id, str):
                    if nova_id in settling:
                        settling[nova_id].append(event)
                        if event.get("event") == semconv.LOG_SETTLED:
                            yield from self._finished(settling.pop(nova_id))
                        continue
                    if nova_id in open_requests:
                        open_requests[nova_id].append(event)
                        continue
                events = open_requests.setdefault(request_id, [])
                events.append(event)
                if event.get("event") == semconv.REQUEST_FINISHED:
                    del open_requests[request_id]
                    if _may_settle_later(events):
                        settling[request_id] = events
                        if len(settling) > MAX_OPEN_REQUESTS:
                            yield from self._finished(settling.pop(next(iter(settling))))
                    else:
                        yield from self._finished(events)
                elif len(open_requests) > MAX_OPEN_REQUESTS:
                    forgotten = next(iter(open_requests))
                    del open_requests[forgotten]
                    self.problems.append(
                        f"request {forgotten}: no request.finished line "
                        f"among the next {MAX_OPEN_REQUESTS} requests, "
                        "skipped"
                    )
        for events in settling.values():  # never settled in this file: stuck, or no async part
            yield from self._finished(events)
        for request_id, events in open_requests.items():
            if any(str(e.get("event", "")).startswith("stage.") for e in events):
                self.problems.append(
                    f"request {request_id}: no request.finished line "
                    "(the log was cut short?), skipped"
                )
        if lines and bad == lines:
            # The per-line problems say the same, once per line: keep the one reason.
            del self.problems[-bad:]
            raise LogFileError(f"{path}: no line is a JSON log line; first: {first_bad}")
        return 1 if lines else 0

    def _finished(self, events: list[dict[str, Any]]) -> Iterator[Diagnosis]:
        # Cinder's lines of a create that settled later come after nova-api's last one.
        finished = next(e for e in reversed(events) if e.get("event") == semconv.REQUEST_FINISHED)
        if not is_create_line(finished):
            self.other_requests += 1
            return
        try:
            d = diagnose_logs(events, waterfall=self.waterfall)
        except Exception as exc:  # a hostile line must never stop the others
            self.problems.append(
                f"request {finished.get('request_id')}: skipped, it could "
                f"not be diagnosed ({type(exc).__name__}: {exc})"
            )
            return
        if d is not None:
            yield d
