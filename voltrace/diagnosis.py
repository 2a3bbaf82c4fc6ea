"""Why did this volume create fail, and where did its time go? (``voltrace explain``)

Reads what voltrace (or an OpenTelemetry Collector, or Jaeger) wrote and says,
per create::

    voltrace explain voltrace-demo/traces.jsonl --failed
    voltrace explain jaeger.json --request-id req-3f0c...     # the id from a log or an error
    voltrace explain traces.jsonl --json                      # one object per create
    voltrace explain traces.jsonl --html report.html          # a self-contained waterfall
    voltrace explain --logs logs.jsonl --request-id req-...   # no trace? the logs suffice

For each create: the outcome and HTTP status; the failed stage with its error
type and message and the Nova code that stage mirrors; Cinder's request id;
each stage's duration and share of the total; the critical path and the
slowest hop (traces only); and a next step for the failure class, with the
ids of this request filled in.

A trace and the logs of the same create give the same diagnosis: the server
span's ``voltrace.*`` attributes and the ``request.finished`` log line carry
the same outcome, and the failing stage's span and its ``stage.<name>`` line
carry the same error. What only a trace has (span timings below the stages,
Cinder's side, the number of connection attempts) is left out of a
diagnosis made from logs, and its ``notes`` say so.

Python use::

    from voltrace.diagnosis import diagnose_traces
    from voltrace.traces import read_trace_file

    for d in diagnose_traces(read_trace_file("traces.jsonl").traces):
        print(d.headline())
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from voltrace.semconv import FAILURES
from voltrace.semconv import NOVA_CODE as _STAGE_CODE
from voltrace.traces import Span, Trace, TraceFileError, read_trace_file

# Nova code for failures answered before the pipeline runs (see voltrace.api).
_MIDDLEWARE_CODE = {
    "sizelimit": "oslo_middleware/sizelimit.py:RequestBodySizeLimiter (api-paste.ini: sizelimit)",
    "keystonecontext": "nova/api/auth.py:NovaKeystoneContext (api-paste.ini: keystonecontext)",
    "router": "nova/api/openstack/__init__.py:ProjectMapper (the API router)",
    "wsgi": "nova/api/openstack/__init__.py:FaultWrapper",
}
NOVA_CODE = {**_STAGE_CODE, **_MIDDLEWARE_CODE}

CREATE_ATTRIBUTE = "voltrace.outcome"  # only nova-api's server span of a create has it

# The same facts sit on nova-api's server span and in its request.finished log line:
# (Diagnosis field, span attribute, log field).
_SUMMARY_FIELDS = (
    ("request_id", "openstack.request_id", "request_id"),
    ("global_request_id", "openstack.global_request_id", "global_request_id"),
    ("project_id", "openstack.project_id", "project_id"),
    ("user_id", "openstack.user_id", "user_id"),
    ("volume_id", "voltrace.volume.id", "volume_id"),
    ("failed_stage", "voltrace.failed_stage", "failed_stage"),
    ("failure_class", "voltrace.failure_class", "failure_class"),
    ("cinder_request_id", "cinder.request_id", "cinder_request_id"),
)


def _summary(values: dict[str, Any], source: str) -> dict[str, Any]:
    column = 1 if source == "trace" else 2
    return {row[0]: _none(values.get(row[column])) for row in _SUMMARY_FIELDS}


@dataclass
class StageTiming:
    name: str
    status: str  # ok, skipped, error
    duration_ms: float
    share: float | None  # of the whole request


@dataclass
class Hop:
    """One call from nova-api to Cinder, as its CLIENT span saw it."""

    method: str
    url: str
    target: str  # the callee's service name, or host:port when it never answered
    status: int | str | None  # HTTP status, or the error (e.g. ConnectionError)
    duration_ms: float
    callee_ms: float | None  # the callee's own server span
    share: float | None


@dataclass
class Diagnosis:
    """What one create did and, if it failed, why and what to do."""

    source: str  # "trace" or "logs"
    trace_id: str | None
    request_id: str | None
    global_request_id: str | None = None
    project_id: str | None = None
    user_id: str | None = None
    volume_id: str | None = None
    outcome: str = "unknown"
    http_status: int | None = None
    duration_ms: float | None = None
    failed_stage: str | None = None
    failure_class: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    cinder_request_id: str | None = None
    stages: list[StageTiming] = field(default_factory=list)
    critical_path: list[dict[str, Any]] = field(default_factory=list)
    slowest_hop: Hop | None = None
    # Class-specific facts: quota, endpoint, attempts, snapshot_id, volume_type, cinder_status...
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # What it was made from, for the waterfall (not part of the JSON).
    trace: Trace | None = field(default=None, repr=False, compare=False)
    root: Span | None = field(default=None, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        return self.outcome != "success"

    @property
    def nova_code(self) -> str | None:
        return NOVA_CODE.get(self.failed_stage) if self.failed_stage else None

    @property
    def summary(self) -> str | None:
        failure = FAILURES.get(self.failure_class or "")
        return failure.summary if failure else None

    @property
    def next_step(self) -> str | None:
        return next_step(self) if self.failed else None

    @property
    def hotspot(self) -> dict[str, Any] | None:
        """The span on the critical path with the most time of its own."""
        if not self.critical_path:
            return None
        return max(self.critical_path, key=lambda p: p["self_ms"])

    def headline(self) -> str:
        """One line: what happened, and the fact that matters most."""
        took = f" in {format_ms(self.duration_ms)}" if self.duration_ms is not None else ""
        if not self.failed:
            hop = self.slowest_hop
            if hop is not None:
                share = f" ({hop.share:.0%})" if hop.share is not None else ""
                where = (f"; slowest hop: {hop.method} to {hop.target}, "
                         f"{format_ms(hop.duration_ms)}{share}")
            else:
                where = ""
            volume = f" volume {self.volume_id}" if self.volume_id else ""
            return f"HTTP {self.http_status} created{volume}{took}{where}"
        stage = self.failed_stage or "?"
        return f"HTTP {self.http_status} {self.failure_class} at {stage}{took}: {what(self)}"

    def to_json(self) -> dict[str, Any]:
        hop = self.slowest_hop
        return {
            "trace_id": self.trace_id,
            "request_id": self.request_id,
            "global_request_id": self.global_request_id,
            "outcome": self.outcome,
            "http_status": self.http_status,
            "duration_ms": _round(self.duration_ms),
            "failed_stage": self.failed_stage,
            "failure_class": self.failure_class,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "nova_code": self.nova_code,
            "cinder_request_id": self.cinder_request_id,
            "project_id": self.project_id,
            "user_id": self.user_id,
            "volume_id": self.volume_id,
            "stages": [
                {"name": s.name, "status": s.status, "duration_ms": _round(s.duration_ms),
                 "share": _round(s.share, 4)}
                for s in self.stages
            ],
            "critical_path": self.critical_path,
            "slowest_hop": None if hop is None else {
                "method": hop.method, "url": hop.url, "target": hop.target,
                "status": hop.status, "duration_ms": _round(hop.duration_ms),
                "callee_ms": _round(hop.callee_ms), "share": _round(hop.share, 4),
            },
            "details": self.details,
            "summary": self.summary,
            "next_step": self.next_step,
            "source": self.source,
            "notes": self.notes,
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def format_ms(ms: float | None) -> str:
    if ms is None:
        return "?"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms"


def _none(value: Any) -> Any:
    """voltrace writes "none" or "" where there is nothing; read both as None."""
    return None if value in (None, "", "none") else value


# ---------------------------------------------------------------------------
# Facts read out of error messages: the same text is in the span and the log.
# ---------------------------------------------------------------------------

_QUOTA_MESSAGES = (
    # cinder VolumeSizeExceedsAvailableQuota
    re.compile(r"exceeds allowed (?P<quota>[\w.-]+) quota\. Requested (?P<requested>\d+)G, "
               r"quota is (?P<limit>-?\d+)G and (?P<used>\d+)G has been consumed"),
    # cinder VolumeLimitExceeded
    re.compile(r"Maximum number of volumes allowed \((?P<limit>\d+)\) exceeded "
               r"for quota '(?P<quota>[^']+)'"),
    # cinder VolumeSizeExceedsLimit
    re.compile(r"Requested volume size (?P<requested>\d+)G is larger than maximum allowed "
               r"limit (?P<limit>\d+)G"),
)
_CONNECT_URL = re.compile(r"Unable to establish connection to (?P<url>\S+?):? ")
_CONNECT_REASON = re.compile(r"\[Errno -?\d+\] (?P<reason>[^\"')]+)|(?P<timeout>timed out)")
_SNAPSHOT_ID = re.compile(r"Snapshot (?P<id>\S+) could not be found")
_VOLUME_TYPE = re.compile(r"Volume type (?:with name )?(?P<name>\S+) could not be found")
_CINDER_STATUS = re.compile(r"\(HTTP (?P<status>\d{3})\)")


def message_details(failure_class: str | None, message: str | None) -> dict[str, Any]:
    """What an error message says beyond its class (which quota, which endpoint...)."""
    details: dict[str, Any] = {}
    text = message or ""
    if failure_class == "over_quota":
        for pattern in _QUOTA_MESSAGES:
            match = pattern.search(text)
            if match:
                found = match.groupdict()
                details["quota"] = found.get("quota") or "per_volume_gigabytes"
                details.update({k: int(v) for k, v in found.items()
                                if k != "quota" and v is not None})
                break
    elif failure_class == "cinder_unreachable":
        match = _CONNECT_URL.search(text)
        if match:
            details["endpoint"] = match.group("url")
        reason = _CONNECT_REASON.search(text)
        if reason:
            details["reason"] = (reason.group("reason") or reason.group("timeout")).strip()
    elif failure_class == "snapshot_not_found":
        match = _SNAPSHOT_ID.search(text)
        if match:
            details["snapshot_id"] = match.group("id")
    elif failure_class == "cinder_not_found":
        match = _VOLUME_TYPE.search(text)
        if match:
            details["volume_type"] = match.group("name")
    status = _CINDER_STATUS.search(text)
    if status and failure_class and failure_class.startswith("cinder_"):
        details["cinder_status"] = int(status.group("status"))
    return details


def what(d: Diagnosis) -> str:
    """A few words on this failure, with its own numbers."""
    facts = d.details
    if d.failure_class == "over_quota" and "quota" in facts:
        numbers = []
        if "requested" in facts:
            numbers.append(f"{facts['requested']}G asked")
        if "limit" in facts:
            unit = "" if facts["quota"].startswith("volumes") else "G"
            numbers.append(f"limit {facts['limit']}{unit}")
        if "used" in facts:
            numbers.append(f"{facts['used']}G used")
        extra = f" ({', '.join(numbers)})" if numbers else ""
        return f"Cinder quota '{facts['quota']}' exceeded{extra}"
    if d.failure_class == "cinder_unreachable":
        target = facts.get("endpoint", "cinder-api")
        attempts = f" after {facts['attempts']} attempts" if "attempts" in facts else ""
        reason = f" ({facts['reason']})" if "reason" in facts else ""
        return f"no connection to {target}{attempts}{reason}"
    if d.failure_class == "snapshot_not_found" and "snapshot_id" in facts:
        return f"Cinder has no snapshot {facts['snapshot_id']}"
    if d.failure_class == "cinder_not_found" and "volume_type" in facts:
        return f"Cinder has no volume type '{facts['volume_type']}'"
    if d.failure_class == "cinder_server_error" and "cinder_status" in facts:
        return f"Cinder answered {facts['cinder_status']}"
    if d.failure_class in ("schema_invalid", "cinder_bad_request") and d.error_message:
        return _first_line(d.error_message)
    return d.summary or (_first_line(d.error_message) if d.error_message else "unknown failure")


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def next_step(d: Diagnosis) -> str | None:
    """The SRE's next step for this failure class, with this request's ids filled in."""
    failure = FAILURES.get(d.failure_class or "")
    generic = failure.next_step if failure else "Search nova-api's log for the request id."
    facts = d.details
    project = d.project_id or "PROJECT"
    if d.failure_class == "over_quota":
        quota = facts.get("quota")
        check = f"openstack quota show --volume {project}; cinder quota-usage {project}"
        if quota == "per_volume_gigabytes":
            return (f"One volume may be at most {facts.get('limit', 'N')}G in project "
                    f"{project} (per_volume_gigabytes). Ask for less, or raise it: "
                    f"cinder quota-update --per-volume-gigabytes N {project}. Check: {check}")
        if quota:
            kind, _, volume_type = quota.partition("_")
            option = f"--{kind} N" + (f" --volume-type {volume_type}" if volume_type else "")
            return (f"Project {project} is out of its '{quota}' volume quota. Check it: {check}. "
                    f"Then delete unused volumes, ask for less, or raise it: "
                    f"openstack quota set {option} {project}")
        return f"{generic} (Cinder said: {_first_line(d.error_message or '')})"
    if d.failure_class == "cinder_unreachable":
        endpoint = facts.get("endpoint")
        parts = urlsplit(endpoint) if endpoint else None
        base = f"{parts.scheme}://{parts.netloc}/" if parts and parts.netloc else "the endpoint"
        tried = f"nova-api tried {endpoint}" if endpoint else "nova-api could not reach Cinder"
        if "attempts" in facts:
            retries = facts.get("connect_retries")
            budget = f", [cinder] http_retries={retries}" if retries is not None else ""
            tried += f" {facts['attempts']} times (1 + {facts['attempts'] - 1} retries{budget})"
        elif facts.get("connect_retries") is not None:
            tried += f" with [cinder] http_retries={facts['connect_retries']}"
        reason = f" and got '{facts['reason']}'" if "reason" in facts else ""
        return (f"{tried}{reason}. Check cinder-api is up and registered where nova looks: "
                f"openstack endpoint list --service volumev3; curl -sS {base} "
                f"from the nova-api host.")
    if d.failure_class == "snapshot_not_found" and "snapshot_id" in facts:
        return (f"Check the snapshot exists and belongs to project {project}: "
                f"openstack volume snapshot show {facts['snapshot_id']}")
    if d.failure_class == "policy_denied":
        user = d.user_id or "USER"
        return (f"User {user} lacks a role os_compute_api:os-volumes:create accepts on project "
                f"{project} (member or admin): openstack role assignment list --user {user} "
                f"--project {project} --names")
    if d.failure_class == "cinder_not_found" and "volume_type" in facts:
        return (f"Cinder has no volume type '{facts['volume_type']}': openstack volume type "
                f"list; ask for an existing type, or create it: openstack volume type create "
                f"{facts['volume_type']}")
    if d.failure_class in ("cinder_server_error", "cinder_bad_response") and d.cinder_request_id:
        return (f"Cinder's own log has the traceback under its request id: grep "
                f"{d.cinder_request_id} /var/log/cinder/cinder-api.log (or journalctl -u "
                f"cinder-api | grep {d.cinder_request_id})")
    if d.failure_class in ("schema_invalid", "cinder_bad_request", "cinder_forbidden") \
            and d.error_message:
        return f"{generic} The message: {_first_line(d.error_message, 200)}"
    if d.failure_class == "internal_error" and d.request_id:
        return f"grep {d.request_id} in nova-api's log; this is a bug or a misconfiguration."
    return generic


# ---------------------------------------------------------------------------
# From a trace
# ---------------------------------------------------------------------------


def create_roots(trace: Trace) -> list[Span]:
    """nova-api's server span of every create in the trace (usually one)."""
    return [s for s in trace.spans if s.kind == "server" and CREATE_ATTRIBUTE in s.attributes]


def diagnose_traces(traces: Iterable[Trace], problems: list[str] | None = None
                    ) -> list[Diagnosis]:
    """A diagnosis per create; traces that hold no create are reported in ``problems``."""
    diagnoses = []
    for trace in traces:
        roots = create_roots(trace)
        if not roots and problems is not None:
            problems.append(_not_a_create(trace))
        diagnoses.extend(diagnose_create(trace, root) for root in roots)
    return sorted(diagnoses, key=lambda d: d.root.start_ns if d.root else 0)


def _not_a_create(trace: Trace) -> str:
    root = trace.roots[0] if trace.roots else trace.spans[0]
    if any("voltrace.stage" in s.attributes for s in trace.spans):
        why = ("it has voltrace's stage spans but not nova-api's server span "
               "(part of the trace was lost: a truncated line, an export that failed?)")
    elif root.parent_id:
        why = (f"its top span '{root.name}' ({root.service}) has a parent that is not in the "
               "file (part of the trace was lost: a truncated line, an export that failed?)")
    else:
        why = f"not a voltrace volume create (root span '{root.name}' of {root.service})"
    return f"trace {trace.trace_id}: skipped: {why}"


def diagnose_create(trace: Trace, root: Span) -> Diagnosis:
    """Everything the spans under one nova-api server span say."""
    a = root.attributes
    total = root.duration_ms
    below = list(trace.descendants(root))
    stage_spans = [s for s in below if "voltrace.stage" in s.attributes]
    d = Diagnosis(
        source="trace",
        trace_id=root.trace_id,
        **_summary(a, "trace"),
        outcome=str(a.get("voltrace.outcome")),
        http_status=_int(a.get("http.response.status_code", a.get("http.status_code"))),
        duration_ms=total,
        stages=[StageTiming(s.name, _stage_status(s), s.duration_ms,
                            s.duration_ms / total if total else None) for s in stage_spans],
        trace=trace,
        root=root,
    )
    failing = next((s for s in stage_spans if s.name == d.failed_stage), None)
    cinder_ids = [_none(s.attr("cinder.request_id")) for s in below if s.kind == "server"]
    d.cinder_request_id = (d.cinder_request_id
                           or (failing and _none(failing.attr("cinder.request_id")))
                           or next((i for i in reversed(cinder_ids) if i), None))
    if failing is not None:
        error = failing.event("exception")
        if error is not None:
            d.error_type = error.attributes.get("exception.type")
            d.error_message = error.attributes.get("exception.message")
        else:
            d.error_message = failing.status_message or None
    d.details = message_details(d.failure_class, d.error_message)
    if failing is not None:
        d.details.update(_trace_details(trace, failing, d.failure_class))
    d.critical_path = _critical_path(trace, root)
    d.slowest_hop = _slowest_hop(trace, below, total)
    return d


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _stage_status(span: Span) -> str:
    if span.status == "error":
        return "error"
    return "skipped" if span.attr("voltrace.stage.skipped") in (True, "true") else "ok"


def _trace_details(trace: Trace, failing: Span, failure_class: str | None) -> dict[str, Any]:
    """What only the trace knows: attempts, the callee's own error, its status."""
    details: dict[str, Any] = {}
    calls = [s for s in trace.descendants(failing) if s.kind == "client"]
    retries = failing.attr("cinder.connect_retries")
    if retries is not None:
        details["connect_retries"] = int(retries)
    if not calls:
        return details
    last = calls[-1]
    if failure_class == "cinder_unreachable":
        details["attempts"] = len(calls)
        if last.attr("url.full"):
            details["endpoint"] = last.attr("url.full")
    status = _int(last.attr("http.response.status_code"))
    if status is not None:
        details["cinder_status"] = status
    # The callee's step that failed (the simulator's check_quota, a real Cinder's own spans).
    for span in trace.descendants(last):
        error = span.event("exception")
        if span.status == "error" and error is not None:
            details["cinder_error_type"] = error.attributes.get("exception.type")
            quota = span.attr("cinder.quota.resource")
            if quota and failure_class == "over_quota":
                details.setdefault("quota", quota)
    return details


def _critical_path(trace: Trace, root: Span) -> list[dict[str, Any]]:
    """From the server span down, always into the child that took longest.

    ``self_ms`` is the time a span spent outside its children: the largest one
    on the path is where the request's time went.
    """
    path, node = [], root
    while True:
        children = trace.children(node)
        self_ms = max(0.0, node.duration_ms - sum(c.duration_ms for c in children))
        path.append({"service": node.service, "name": span_label(node),
                     "duration_ms": round(node.duration_ms, 3), "self_ms": round(self_ms, 3)})
        if not children:
            return path
        node = max(children, key=lambda s: s.duration_ms)


def span_label(span: Span) -> str:
    """A span's name, plus the path for HTTP client spans (named just 'POST')."""
    url = span.attr("url.full")
    if span.kind == "client" and url:
        return f"{span.name} {urlsplit(str(url)).path}"
    return span.name


def _slowest_hop(trace: Trace, below: Sequence[Span], total: float) -> Hop | None:
    calls = [s for s in below if s.kind == "client"]
    if not calls:
        return None
    slowest = max(calls, key=lambda s: s.duration_ms)
    callee = next((c for c in trace.children(slowest) if c.kind == "server"), None)
    address = slowest.attr("server.address")
    port = slowest.attr("server.port")
    target = callee.service if callee else (f"{address}:{port}" if address else "?")
    status = _int(slowest.attr("http.response.status_code")) or slowest.attr("error.type")
    return Hop(
        method=str(slowest.attr("http.request.method", slowest.name)),
        url=str(slowest.attr("url.full", "")),
        target=target,
        status=status,
        duration_ms=slowest.duration_ms,
        callee_ms=callee.duration_ms if callee else None,
        share=slowest.duration_ms / total if total else None,
    )


# ---------------------------------------------------------------------------
# From voltrace's JSON logs
# ---------------------------------------------------------------------------


class LogFileError(Exception):
    """The log file cannot be read at all."""


def read_log_file(path: str | Path) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """voltrace's JSON log lines, grouped per request id in order of first appearance."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise LogFileError(f"cannot read {path}: {exc.strerror or exc}") from exc
    groups: dict[str, list[dict[str, Any]]] = {}
    problems: list[str] = []
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    for number, line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{number}: not a JSON log line, skipped ({exc.msg}; "
                            "voltrace writes JSON with --log-format json)")
            continue
        if not isinstance(event, dict):
            problems.append(f"{path}:{number}: not a JSON object, skipped")
            continue
        request_id = event.get("request_id")
        if request_id:
            groups.setdefault(str(request_id), []).append(event)
    if lines and not groups and len(problems) == len(lines):
        raise LogFileError(f"{path}: no line is a JSON log line; first: {problems[0]}")
    return list(groups.values()), problems


def diagnose_logs(events: Sequence[dict[str, Any]]) -> Diagnosis | None:
    """The diagnosis of one request from its log lines (None without a request.finished)."""
    finished = next((e for e in reversed(events) if e.get("event") == "request.finished"), None)
    if finished is None:
        return None
    summary = _summary(finished, "logs")
    failed_stage = summary["failed_stage"]
    stage_line = next((e for e in reversed(events)
                       if failed_stage and e.get("event") == f"stage.{failed_stage}"), None)
    total = finished.get("duration_ms")
    stage_rows = finished.get("stages") or [
        {"name": e["stage"], "status": e.get("outcome"), "duration_ms": e.get("duration_ms")}
        for e in events if str(e.get("event", "")).startswith("stage.") and "stage" in e
    ]
    d = Diagnosis(
        source="logs",
        trace_id=_none(finished.get("trace_id")),
        **summary,
        outcome=str(finished.get("outcome", "unknown")),
        http_status=_int(finished.get("http_status")),
        duration_ms=float(total) if total is not None else None,
        stages=[StageTiming(str(row["name"]), str(row.get("status")),
                            float(row.get("duration_ms") or 0.0),
                            float(row.get("duration_ms") or 0.0) / total if total else None)
                for row in stage_rows],
    )
    source = stage_line or finished
    d.error_type = _none(source.get("error_type"))
    d.error_message = _none(source.get("error_message"))
    d.details = message_details(d.failure_class, d.error_message)
    retries = (stage_line or {}).get("cinder_connect_retries")
    if retries is not None:
        d.details["connect_retries"] = int(retries)
        if d.failure_class == "cinder_unreachable":
            # Nova gives up on a connect failure only once every retry is spent.
            d.details["attempts"] = int(retries) + 1
    d.notes.append("from logs: stage timings only; the critical path and hop timings need "
                   "the trace")
    if d.failure_class == "cinder_unreachable" and retries is None:
        d.notes.append("from logs: the number of connection attempts is only in the trace "
                       "(one CLIENT span per attempt)")
    return d


def diagnose_log_groups(groups: Iterable[Sequence[dict[str, Any]]],
                        problems: list[str] | None = None) -> list[Diagnosis]:
    diagnoses = []
    for events in groups:
        d = diagnose_logs(events)
        if d is not None:
            diagnoses.append(d)
        elif problems is not None:
            problems.append(f"request {events[0].get('request_id')}: no request.finished line "
                            "(the log was cut short?), skipped")
    return diagnoses


# ---------------------------------------------------------------------------
# Choosing and printing
# ---------------------------------------------------------------------------


def select(diagnoses: Iterable[Diagnosis], *, trace_ids: Sequence[str] = (),
           request_ids: Sequence[str] = (), failed: bool = False) -> list[Diagnosis]:
    """Keep creates matching any trace id (or a prefix of 8+ digits), any request id
    (nova's, the global one or Cinder's), and, with ``failed``, only failures."""
    wanted_traces = [t.strip().lower() for t in trace_ids]
    chosen = []
    for d in diagnoses:
        trace_id = d.trace_id or ""
        if wanted_traces and not any(trace_id == t or (len(t) >= 8 and trace_id.startswith(t))
                                     for t in wanted_traces):
            continue
        ids = {d.request_id, d.global_request_id, d.cinder_request_id}
        if request_ids and ids.isdisjoint(request_ids):
            continue
        if failed and not d.failed:
            continue
        chosen.append(d)
    return chosen


def merge(from_traces: list[Diagnosis], from_logs: list[Diagnosis]) -> list[Diagnosis]:
    """Traces first; the logs fill in creates whose trace is missing (sampled out, lost)."""
    seen = {d.request_id for d in from_traces}
    extra = [d for d in from_logs if d.request_id not in seen]
    for d in extra:
        d.notes.append("no trace of this request in the trace file; diagnosed from the logs")
    return from_traces + extra


class Style:
    """ANSI colours, or nothing."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, *codes: str) -> str:
        if not self.color or not codes:
            return text
        return f"\033[{';'.join(codes)}m{text}\033[0m"


def format_text(d: Diagnosis, *, width: int = 100, style: Style | None = None) -> str:
    """The human-readable diagnosis of one create."""
    style = style or Style(False)
    label_width = 16
    wrap_width = max(40, width - label_width)
    lines: list[str] = []

    def row(label: str, value: str) -> None:
        wrapped = textwrap.wrap(value, wrap_width, break_on_hyphens=False,
                                break_long_words=False) or [""]
        lines.append(f"  {label:<{label_width - 2}}{wrapped[0]}")
        lines.extend(" " * label_width + more for more in wrapped[1:])

    mark = style("FAILED", "1", "31") if d.failed else style("OK", "1", "32")
    lines.append(f"{mark} {d.request_id or '(no request id)'}  trace {d.trace_id or '?'}"
                 + style(f"  (from the {d.source})", "2"))
    took = f", {format_ms(d.duration_ms)}" if d.duration_ms is not None else ""
    row("outcome", f"{d.outcome}, HTTP {d.http_status}{took}")
    if d.failed:
        row("failed stage", f"{d.failed_stage}: {d.failure_class} ({what(d)})")
        if d.error_type or d.error_message:
            row("error", f"{d.error_type or '?'}: {_first_line(d.error_message or '', 300)}")
        if d.nova_code:
            row("nova code", d.nova_code)
    elif d.volume_id:
        row("volume", d.volume_id)
    row("cinder req", d.cinder_request_id or "none (Cinder never answered)")
    if d.stages:
        for i, s in enumerate(d.stages):
            share = f"{s.share:6.1%}" if s.share is not None else ""
            status = style(f"{s.status:<8}", "31") if s.status == "error" else f"{s.status:<8}"
            row("stages" if i == 0 else "",
                f"{s.name:<17}{status}{format_ms(s.duration_ms):>10} {share}")
    if d.critical_path:
        row("critical path", " > ".join(
            f"{p['name']} ({p['service']}) {format_ms(p['duration_ms'])}"
            for p in d.critical_path))
    hotspot = d.hotspot
    if hotspot is not None and d.duration_ms:
        row("time went to", f"{hotspot['name']} ({hotspot['service']}): "
                            f"{format_ms(hotspot['self_ms'])} of its own, "
                            f"{hotspot['self_ms'] / d.duration_ms:.0%} of the request")
    if d.slowest_hop is not None:
        hop = d.slowest_hop
        share = f" ({hop.share:.0%} of the request)" if hop.share is not None else ""
        inside = (f"; {format_ms(hop.callee_ms)} inside {hop.target}"
                  if hop.callee_ms is not None else "")
        row("slowest hop", f"{hop.method} {hop.url} -> {hop.target}: "
                           f"{format_ms(hop.duration_ms)}{share}, {hop.status}{inside}")
    elif d.source == "trace":
        row("slowest hop", "none: the create never called Cinder")
    if d.next_step:
        row("next step", style(d.next_step, "1"))
    for note in d.notes:
        row("note", style(note, "2"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Diagnose volume creates from an OTLP JSON-lines file (voltrace's "
                          "--traces-file, an OpenTelemetry Collector's file exporter), a Jaeger "
                          "JSON file, or voltrace's JSON logs.")
    parser.add_argument("path", nargs="?", metavar="PATH",
                        help="OTLP JSON lines or Jaeger JSON with the traces")
    parser.add_argument("--logs", metavar="FILE",
                        help="voltrace's JSON logs: diagnose from them alone, or fill in "
                             "creates whose trace PATH lacks")
    pick = parser.add_argument_group("which creates (default: all)")
    pick.add_argument("--trace-id", metavar="ID", action="append", default=[],
                      help="a trace id, or a prefix of 8+ digits (repeatable)")
    pick.add_argument("--request-id", metavar="REQ", action="append", default=[],
                      help="the req-... id from a log line or an error answer: nova's, the "
                           "global one, or Cinder's (repeatable)")
    pick.add_argument("--failed", action="store_true", help="only creates that failed")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object per create, a line each")
    out.add_argument("--html", metavar="OUT", help="also write a self-contained HTML waterfall")
    out.add_argument("--no-color", action="store_true", help="no ANSI colours (also NO_COLOR)")


def use_color(stream: Any, no_color: bool) -> bool:
    return (not no_color and "NO_COLOR" not in os.environ
            and getattr(stream, "isatty", lambda: False)())


Command = Callable[[argparse.Namespace], int]


def stops_quietly_when_stdout_closes(command: Command) -> Command:
    """``voltrace ... | head``: when the reader goes away, exit 1 without a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except BrokenPipeError:
            # Python's docs: point stdout at devnull, so the flush at exit cannot fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1

    return run


@stops_quietly_when_stdout_closes
def run_cli(args: argparse.Namespace) -> int:
    """``voltrace explain``: 0 with creates shown, 1 when none matched, 2 on unreadable input."""
    if not args.path and not args.logs:
        print("voltrace explain: give a trace file (PATH), --logs FILE, or both",
              file=sys.stderr)
        return 2
    problems: list[str] = []
    from_traces: list[Diagnosis] = []
    from_logs: list[Diagnosis] = []
    try:
        if args.path:
            loaded = read_trace_file(args.path)
            problems.extend(loaded.problems)
            from_traces = diagnose_traces(loaded.traces, problems)
        if args.logs:
            groups, log_problems = read_log_file(args.logs)
            problems.extend(log_problems)
            from_logs = diagnose_log_groups(groups, problems)
    except (TraceFileError, LogFileError) as exc:
        print(f"voltrace explain: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"voltrace explain: warning: {problem}", file=sys.stderr)
    every = merge(from_traces, from_logs) if args.path else from_logs
    chosen = select(every, trace_ids=args.trace_id, request_ids=args.request_id,
                    failed=args.failed)
    if not chosen:
        print(_nothing_found(args, len(every)), file=sys.stderr)
        return 1
    if args.json:
        for d in chosen:
            print(json.dumps(d.to_json(), separators=(",", ":")))
    else:
        width = shutil.get_terminal_size((100, 24)).columns
        style = Style(use_color(sys.stdout, args.no_color))
        print("\n\n".join(format_text(d, width=width, style=style) for d in chosen))
        failed = sum(d.failed for d in chosen)
        print(f"\n{len(chosen)} create(s), {failed} failed, of {len(every)} in the input.")
    if args.html:
        from voltrace.waterfall import write_html

        write_html(args.html, chosen, title=f"voltrace explain {args.path or args.logs}")
        print(f"voltrace explain: wrote {args.html}", file=sys.stderr)
    return 0


def _nothing_found(args: argparse.Namespace, total: int) -> str:
    source = args.path or args.logs
    if total == 0:
        return f"voltrace explain: no volume create in {source}"
    wanted = [*(f"--trace-id {t}" for t in args.trace_id),
              *(f"--request-id {r}" for r in args.request_id)]
    if args.failed:
        wanted.append("--failed")
    return (f"voltrace explain: none of the {total} create(s) in {source} matches "
            f"{' '.join(wanted)}")
