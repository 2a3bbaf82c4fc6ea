"""What became of a create, from real Cinder's own logs (oslo.log text).

cinder-api, cinder-scheduler and cinder-volume log through oslo.log, one record per
line in ``logging_context_format_string``, whose first bracketed id is the *global*
request id: the ``X-OpenStack-Request-ID`` nova (and voltrace) sent, so nova's
request id joins nova's create to every line Cinder's services wrote for it, across
the RPC casts. A record continues on the lines below it: a traceback is written line
by line under ``logging_exception_prefix`` (no request ids), and a message may hold
newlines.

These logs say more than a trace (OSProfiler does not record the scheduler's result)
and more than Cinder's API (its user messages name no cause). The cinder 29 records
read here, by the logger that writes them:

========================================  ===========================================
``cinder.volume.manager``                 ``Created volume successfully.``
``cinder.volume.manager``                 a create task ``transitioned into state
                                          'FAILURE'``, with the traceback: one attempt
``cinder.volume.flows.manager...``        ``Volume V: create failed`` (not rescheduled)
``cinder.scheduler.filter_scheduler``     ``Error scheduling V from last vol-service:
                                          HOST``: a failed attempt being rescheduled
``cinder.scheduler.host_manager``         ``volume service is down. (host: H)``
``cinder.scheduler.filters.capacity...``  ``Insufficient free space ... (requested /
                                          avail): R/A``
``cinder.scheduler.base_filter``          ``Filtering removed all hosts ...``: which
                                          filter left no backend
``cinder.scheduler.flows.create_volume``  ``Failed to run task ...ScheduleCreateVolume
                                          Task...: No valid backend was found. WHY``
                                          (``Exceeded max scheduling attempts N``)
``cinder.volume.api`` (in cinder-api)     ``Create volume request issued successfully.``
========================================  ===========================================

With ``debug = false`` (the default) a create that is scheduled and still running
leaves no line in cinder-scheduler's log, so "nothing yet" is never a verdict: the
create is reported stuck with ``certain=False``, and ``--cinder-url`` asks Cinder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from voltrace import semconv
from voltrace.explain.after_answer import UNCERTAIN_TRACE_NOTE, AfterAnswer, explain
from voltrace.explain.model import Diagnosis

#: oslo.log's defaults (oslo_log/_options.py), which cinder does not change.
DEFAULT_CONTEXT_FORMAT = (
    "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s "
    "[%(global_request_id)s %(request_id)s %(user_identity)s] %(instance)s%(message)s"
)
DEFAULT_EXCEPTION_PREFIX = "%(asctime)s.%(msecs)03d %(process)d ERROR %(name)s %(instance)s"

# Creates whose lines are kept at once; past this the oldest is forgotten.
MAX_CREATES = 100_000
# A record's lines kept (a traceback is ~40); longer ones keep their first and last.
MAX_RECORD_LINES = 400
# Characters of a line read (a format's lazy fields must not meet a megabyte-long line).
MAX_LINE_CHARS = 64 * 1024

# What each logging field looks like; a field not named here matches anything, lazily.
_FIELD_PATTERNS = {
    "asctime": r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?",
    "msecs": r"\d{1,3}",
    "process": r"\d+",
    "levelname": r"[A-Z]+",
    "name": r"[\w.-]+",
    "global_request_id": r"\S+",
    "request_id": r"\S+",
    "user_identity": r"[^\]]*?",
    "instance": r"(?:\[instance: [^\]]*\] )?",
    "message": r".*",
    "color": r"(?:\x1b\[[0-9;]*m)?",
}
_FIELD = re.compile(r"%\((\w+)\)[-#0 +]*\d*(?:\.\d+)?[sdifrx]")
# Where any record starts (the default formats, or ISO): ends a record without request ids.
_RECORD_START = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}")


class OsloLogFormatError(ValueError):
    """A logging_context_format_string this reader cannot use."""


def _compile(fmt: str, *, required: Iterable[str] = ()) -> re.Pattern[str]:
    """A %-style logging format as a regular expression, its fields as named groups."""
    parts, seen, end = [], set(), 0
    for match in _FIELD.finditer(fmt):
        parts.append(re.escape(fmt[end : match.start()]).replace(r"\ ", " +"))
        name = match.group(1)
        pattern = _FIELD_PATTERNS.get(name, r".*?")
        if name in seen or name == "color":
            parts.append(f"(?:{pattern})")
        else:
            seen.add(name)
            parts.append(f"(?P<{name}>{pattern})")
        end = match.end()
    parts.append(re.escape(fmt[end:]).replace(r"\ ", " +"))
    missing = [name for name in required if name not in seen]
    if missing:
        raise OsloLogFormatError(
            f"the log format {fmt!r} has no " + " or ".join(f"%({m})s" for m in missing)
        )
    return re.compile("".join(parts))


class OsloLogFormat:
    """The deployment's ``[DEFAULT] logging_context_format_string`` and
    ``logging_exception_prefix`` (oslo.log's defaults unless it changed them)."""

    def __init__(
        self,
        context: str = DEFAULT_CONTEXT_FORMAT,
        exception_prefix: str = DEFAULT_EXCEPTION_PREFIX,
    ) -> None:
        self.context, self.exception_prefix = context, exception_prefix
        self._context = _compile(context, required=("message",))
        if "global_request_id" not in self._context.groupindex:
            raise OsloLogFormatError(
                f"the log format {context!r} has no %(global_request_id)s: its lines "
                "cannot be joined to nova's create"
            )
        self._exception = _compile(exception_prefix)

    def record(self, line: str) -> re.Match[str] | None:
        """The line as the first line of a record with request ids, else None."""
        return self._context.match(line)

    def traceback_line(self, line: str) -> re.Match[str] | None:
        """The line as one under ``logging_exception_prefix`` (a traceback's), else None."""
        return self._exception.match(line)


@dataclass
class OsloRecord:
    """One record: its first line's fields, and the lines that continue it."""

    where: str  # path:line
    logger: str
    level: str
    process: str
    global_request_id: str | None
    request_id: str | None
    message: str
    more: list[str] = field(default_factory=list)  # traceback or message lines, prefix cut

    def traceback_tail(self) -> tuple[str | None, str | None]:
        """(``Type: message`` the traceback ends with, ``file:line in function`` it was
        raised at), from the continuation lines."""
        lines = [line.strip() for line in self.more if line.strip()]
        if not any(line.startswith("Traceback (most recent call last)") for line in lines):
            return None, None
        raised = next((ln for ln in reversed(lines) if not ln.startswith(("File ", "^"))), None)
        frame = next((ln for ln in reversed(lines) if ln.startswith("File ")), None)
        at = None
        if frame is not None:
            found = re.match(r'File "([^"]*)", line (\d+), in (\S+)', frame)
            if found:
                at = f"{Path(found.group(1)).name}:{found.group(2)} in {found.group(3)}"
        return raised, at


def _id(value: str | None) -> str | None:
    return None if value in (None, "", "-", "None") else value


def records(handle: TextIO, path: str, fmt: OsloLogFormat) -> Iterator[OsloRecord]:
    """The records of one oslo.log file with request ids, each with its continuation lines.

    A line is, in turn: a record with request ids (the context format); a line of the
    current record's traceback (the exception prefix, same process and logger); the
    start of a record without request ids (it ends the current one); or a line of the
    current record's message.
    """
    current: OsloRecord | None = None
    for number, raw in enumerate(_lines(handle), start=1):
        line = raw.rstrip("\r\n")
        found = fmt.record(line)
        if found is not None:
            if current is not None:
                yield current
            fields = found.groupdict()
            current = OsloRecord(
                where=f"{path}:{number}",
                logger=fields.get("name") or "",
                level=fields.get("levelname") or "",
                process=fields.get("process") or "",
                global_request_id=_id(fields.get("global_request_id")),
                request_id=_id(fields.get("request_id")),
                message=fields.get("message") or "",
            )
            continue
        if current is None:
            continue
        prefix = fmt.traceback_line(line)
        if prefix is not None:
            fields = prefix.groupdict()
            if fields.get("process", current.process) == current.process and fields.get(
                "name", current.logger
            ) in (current.logger, None):
                _keep(current, line[prefix.end() :])
                continue
        if _RECORD_START.match(line):
            yield current
            current = None
            continue
        _keep(current, line)
    if current is not None:
        yield current


def _lines(handle: TextIO) -> Iterator[str]:
    """The file's lines, each cut at MAX_LINE_CHARS (the rest of a longer one skipped)."""
    while chunk := handle.readline(MAX_LINE_CHARS):
        rest = chunk
        while rest and not rest.endswith("\n"):
            rest = handle.readline(MAX_LINE_CHARS)
        yield chunk


def _keep(record: OsloRecord, line: str) -> None:
    if len(record.more) >= MAX_RECORD_LINES:
        del record.more[MAX_RECORD_LINES // 2]  # keep how it starts and how it ends
    record.more.append(line)


def looks_like_oslo_log(line: str, fmt: OsloLogFormat | None = None) -> bool:
    """The first line of an oslo.log text file (with request ids, or ``[-]`` without)."""
    fmt = fmt or OsloLogFormat()
    if fmt.record(line) is not None:
        return True
    return re.match(_RECORD_START.pattern + r"\S* +\d+ +[A-Z]+ +[\w.-]+ +\[", line) is not None


# The records explain reads (cinder 29's wording), each a compiled pattern.
_CREATED = re.compile(r"Created volume successfully\.")
_TASK_FAILED = re.compile(
    r"Task '[\w.]*CreateVolumeFromSpecTask;volume:create' \(\S+\) transitioned into state "
    r"'FAILURE'"
)
_CREATE_FAILED = re.compile(r"Volume (?P<volume>\S+): create failed")
_BEING_CREATED = re.compile(r"Volume (?P<volume>[0-9a-f-]{36}): being created")
_RESCHEDULED = re.compile(
    r"Error scheduling (?P<volume>\S+) from last vol-service: (?P<host>\S+) :"
)
_SERVICE_DOWN = re.compile(r"volume service is down\. \(host: (?P<host>[^)]+)\)")
_INSUFFICIENT = re.compile(
    r"Insufficient free space for volume creation on host (?P<host>\S+) "
    r"\(requested / avail\): (?P<requested>[\d.]+)/(?P<available>[\d.]+)"
)
_FILTERED = re.compile(
    r"Filtering removed all hosts for the request with volume ID '(?P<volume>[^']+)'\. "
    r"Filter results: (?P<results>.*)"
)
_FILTER_RESULT = re.compile(r"(\w+): \(start: (\d+), end: (\d+)\)")
_NO_VALID_BACKEND = re.compile(
    r"Failed to run task \S*ScheduleCreateVolumeTask\S*: No valid backend was found\. "
    r"(?P<why>.*?)(?::\s*cinder\.exception\.NoValidBackend.*)?$"
)
_MAX_ATTEMPTS = re.compile(r"Exceeded max scheduling attempts (?P<max>\d+)")
_CAST = re.compile(r"Create volume request issued successfully\.")

# The scheduler filter that left no backend, as the simulator and explain name the cause.
_FILTER_CAUSES = {"CapacityFilter": "capacity", "CapabilitiesFilter": "capabilities"}


@dataclass(frozen=True)
class _Attempt:
    """One failed try of the driver: ``Type: message`` and where it was raised."""

    raised: str
    at: str | None  # file:line in function, from the traceback's last frame
    logged_at: str  # the log file's name and line

    @property
    def error_type(self) -> str | None:
        kind = self.raised.split(":", 1)[0]
        return kind if re.fullmatch(r"[\w.]+", kind) else None

    def shown(self) -> str:
        at = f"raised at {self.at}, " if self.at else ""
        return f"{self.raised} ({at}{self.logged_at})"


@dataclass
class _Create:
    """What Cinder's services logged of one create (by nova's request id)."""

    cinder_request_id: str | None = None
    volume_id: str | None = None
    cast: bool = False
    started: bool = False
    created: bool = False
    create_failed: bool = False
    attempts: list[_Attempt] = field(default_factory=list)  # each failed one's exception
    rescheduled_from: list[str] = field(default_factory=list)
    service_down: str | None = None
    filtered_by: str | None = None
    no_valid_backend: str | None = None  # why, as the scheduler said
    evidence: list[str] = field(default_factory=list)  # path:line: the record that says so

    @property
    def is_create(self) -> bool:
        """A record only a create writes was read (a service-down warning alone is not)."""
        return bool(
            self.cast
            or self.started
            or self.created
            or self.create_failed
            or self.attempts
            or self.rescheduled_from
            or self.filtered_by
            or self.no_valid_backend is not None
        )

    def note(self, record: OsloRecord, text: str | None = None) -> None:
        self.evidence.append(f"{record.where}: {text or record.message}")


class CinderLogIndex:
    """Per nova request id, what cinder-api, cinder-scheduler and cinder-volume logged."""

    def __init__(self, fmt: OsloLogFormat | None = None) -> None:
        self.format = fmt or OsloLogFormat()
        self.creates: dict[str, _Create] = {}
        self.problems: list[str] = []
        self.files = 0

    def read(self, path: Path) -> None:
        """Index one log file (problems are noted, never raised)."""
        try:
            handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError as exc:
            self.problems.append(f"cannot read {path}: {exc.strerror or exc}")
            return
        with handle:
            self.files += 1
            for record in records(handle, str(path), self.format):
                if record.global_request_id is not None:
                    self._take(record)

    def _create(self, record: OsloRecord) -> _Create:
        key = record.global_request_id or ""
        create = self.creates.get(key)
        if create is None:
            if len(self.creates) >= MAX_CREATES:
                forgotten = next(iter(self.creates))
                del self.creates[forgotten]
                self.problems.append(
                    f"request {forgotten}: forgotten, more than {MAX_CREATES} creates at once"
                )
            create = self.creates[key] = _Create()
        if record.request_id and record.request_id != key:
            create.cinder_request_id = create.cinder_request_id or record.request_id
        return create

    def _take(self, record: OsloRecord) -> None:
        message, logger = record.message, record.logger
        if logger == "cinder.volume.api" and _CAST.match(message):  # in cinder-api
            self._create(record).cast = True
        elif logger.startswith("cinder.volume"):
            self._volume(record)
        elif logger.startswith("cinder.scheduler"):
            self._scheduler(record)

    def _volume(self, record: OsloRecord) -> None:
        message = record.message
        if _CREATED.match(message):
            create = self._create(record)
            create.created = True
            create.note(record)
        elif _TASK_FAILED.match(message):
            create = self._create(record)
            raised, at = record.traceback_tail()
            where = record.where.rsplit("/", 1)[-1]
            create.attempts.append(_Attempt(raised or "the create task failed", at, where))
        elif found := _BEING_CREATED.match(message):
            create = self._create(record)
            create.started = True
            create.volume_id = create.volume_id or found.group("volume")
        elif found := _CREATE_FAILED.match(message):
            create = self._create(record)
            create.create_failed = True
            create.volume_id = create.volume_id or found.group("volume")
            create.note(record)

    def _scheduler(self, record: OsloRecord) -> None:
        message = record.message
        if found := _RESCHEDULED.match(message):
            create = self._create(record)
            create.rescheduled_from.append(found.group("host"))
            create.note(
                record,
                f"Error scheduling {found.group('volume')} from last vol-service: "
                f"{found.group('host')}",
            )
        elif found := _SERVICE_DOWN.search(message):
            create = self._create(record)
            create.service_down = found.group("host")
            create.note(record)
        elif _INSUFFICIENT.match(message):
            self._create(record).note(record)
        elif found := _FILTERED.match(message):
            create = self._create(record)
            create.volume_id = create.volume_id or found.group("volume")
            for name, start, end in _FILTER_RESULT.findall(found.group("results")):
                if int(start) > 0 and int(end) == 0:
                    create.filtered_by = name
                    break
            create.note(record)
        elif found := _NO_VALID_BACKEND.match(message):
            create = self._create(record)
            create.no_valid_backend = found.group("why").strip() or "No valid backend was found."
            create.note(record, f"No valid backend was found. {create.no_valid_backend}")

    def after_answer(self, request_id: str | None) -> AfterAnswer | None:
        """The fate of nova's create ``request_id``, or None when these logs never name it."""
        create = self.creates.get(request_id or "")
        if create is None or not create.is_create:
            return None
        return explain(_fate(create))

    def request_ids(self) -> list[str]:
        return list(self.creates)


def _fate(create: _Create) -> AfterAnswer:
    found = AfterAnswer(
        outcome="stuck",
        source="logs",
        cinder_request_id=create.cinder_request_id,
        evidence=list(create.evidence),
        errors=[attempt.shown() for attempt in create.attempts],
    )
    if create.attempts:
        found.error_type = create.attempts[-1].error_type
    exceeded = _MAX_ATTEMPTS.search(create.no_valid_backend or "")
    if create.created:
        found.outcome = "available"
    elif exceeded or create.create_failed:
        # The driver failed: rescheduled until the scheduler ran out of attempts, or not
        # rescheduled at all (Volume V: create failed).
        found.outcome = "error"
        found.failed_service = semconv.VOLUME_SERVICE
        found.failure = semconv.DRIVER_ERROR
        found.attempts = max(len(create.attempts), len(create.rescheduled_from)) or (
            int(exceeded.group("max")) if exceeded else 1
        )
        if exceeded:
            found.cause = "max_attempts_exceeded"
    elif create.no_valid_backend is not None:
        found.outcome = "error"
        found.failed_service = semconv.SCHEDULER_SERVICE
        found.failure = semconv.NO_VALID_BACKEND
        if create.service_down:
            found.cause = "volume_service_down"
        else:
            found.cause = _FILTER_CAUSES.get(create.filtered_by or "")
    else:
        # Not settled in these logs: running, queued, or waiting on a service that is down.
        # The scheduler logs nothing when it places a create, so the logs cannot tell which.
        found.certain = False
        if create.started or create.attempts:
            found.failed_service = semconv.VOLUME_SERVICE
    return found


def read_cinder_logs(paths: Iterable[Path], fmt: OsloLogFormat | None = None) -> CinderLogIndex:
    """Cinder's log files, read whole into one index (their problems in ``problems``)."""
    index = CinderLogIndex(fmt)
    for path in paths:
        index.read(path)
    return index


SETTLED = ("available", "error")
FROM_LOGS_NOTE = "what became of the volume: from Cinder's logs"
UNSETTLED_NOTE = (
    "Cinder's logs hold no record that settles it (cinder-scheduler logs nothing when it "
    "places a create): still running, queued, or waiting on a service that is down; "
    "--cinder-url asks Cinder which"
)


def settle(d: Diagnosis, index: CinderLogIndex) -> None:
    """Give ``d`` the fate Cinder's logs hold, unless its trace or logs already settle it.

    A fate the logs cannot settle replaces none (the trace's "stuck at cinder-api" says
    more); one they settle replaces a guess, a stuck one or none.
    """
    if d.failed:
        return
    found = index.after_answer(d.request_id)
    fate = d.after_answer
    if found is None or (fate is not None and fate.certain and fate.outcome in SETTLED):
        return
    if fate is not None and not (found.certain and found.outcome in SETTLED):
        return
    d.notes = [note for note in d.notes if note != UNCERTAIN_TRACE_NOTE]
    d.after_answer = found
    d.notes.append(FROM_LOGS_NOTE if found.certain else UNSETTLED_NOTE)
