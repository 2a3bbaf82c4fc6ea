"""The complete real Cinder as a test fixture: one broker, one PostgreSQL, stacks on vhosts.

Started once per test run (session scope in the test module):

* ``FullCinderBase``: a rotel collector, a RabbitMQ with a pool of vhosts created at
  boot, and a PostgreSQL server copied from the db-synced template. It hands out stacks,
  each on a vhost and a database of its own (``base.stack()``), so stacks never share
  queues or rows;
* one ``CinderStack`` on it with the OSProfiler bridge on (tracing ``osprofiler`` to the
  collector, ``FAKE_CAPACITY_GB=100``), and ``voltrace serve`` in front of it signing with
  the same key. Tests use fresh project ids, which is enough isolation for them (measured:
  a stack on the shared broker starts in 4-5 s here, 15 s under load, so a stack per test
  would double the file's time). A test that needs other settings asks ``base.stack()``.

A missing prerequisite (RabbitMQ, PostgreSQL 15, the cinder venv) skips locally with the
command that installs it, and fails under ``CI=true``; a failure to start fails everywhere.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import TEST_HMAC_KEY, require
from tests.support.polling import poll
from tests.support.real_cinder import VoltraceServe, create
from voltrace.client import Response
from voltrace.devtools import cinder_stack, postgres, rabbitmq
from voltrace.devtools.cinder_stack import CinderStack, Tracing
from voltrace.devtools.cinder_venv import RealCinderError, default_venv

try:
    from tests.support.rotel import RotelCollector
except ImportError:  # the rotel wheel exists for x86_64 CPython 3.11 only
    RotelCollector = None  # type: ignore[assignment,misc]

VHOSTS = tuple(f"s{n}" for n in range(1, 5))
CAPACITY_GB = 100
#: Statuses a create settles in.
SETTLED = frozenset({"available", "error"})


@dataclass
class FullCinderBase:
    """What stacks share: the collector, the broker and the PostgreSQL server."""

    workdir: Path
    collector: Any
    broker: rabbitmq.RabbitMQ
    pg: postgres.Postgres
    free_vhosts: list[str] = field(default_factory=lambda: list(VHOSTS))

    def stack(self, database_url: str | None = None, **options: Any) -> CinderStack:
        """A started stack on a vhost and (unless given) a database of its own.

        Stop it yourself; a stack that cannot start has stopped itself when this raises.
        """
        if not self.free_vhosts:
            raise RealCinderError(f"all {len(VHOSTS)} vhosts are in use")
        vhost = self.free_vhosts.pop(0)
        database = database_url or self.pg.create_database(vhost)
        options.setdefault(
            "tracing", Tracing("osprofiler", self.collector.http_endpoint, TEST_HMAC_KEY)
        )
        return CinderStack(
            self.workdir / vhost,
            self.broker.transport_url(vhost),
            database,
            venv=default_venv(),
            **options,
        ).start()


@contextmanager
def full_cinder_base(workdir: Path) -> Iterator[FullCinderBase]:
    """Build what is missing (venv, extras, template), then start collector, broker and PG."""
    missing = cinder_stack.missing_prerequisites()
    require(not missing, "the complete Cinder needs " + "; ".join(missing))
    require(RotelCollector is not None, "rotel (x86_64 CPython 3.11 wheel) is not installed")
    try:
        venv = cinder_stack.ensure_full()
    except RealCinderError as exc:
        require(False, f"the complete Cinder cannot be built: {exc}")
        raise  # unreachable: require() skipped or failed
    with ExitStack() as stack:
        collector = stack.enter_context(RotelCollector(workdir))
        broker = rabbitmq.RabbitMQ(workdir / "rabbitmq", vhosts=VHOSTS).launch()
        stack.callback(broker.stop)
        pg = stack.enter_context(postgres.Postgres(cinder_stack.template_dir(venv) / "data"))
        broker.wait_until_ready()
        yield FullCinderBase(workdir, collector, broker, pg)


@dataclass
class FullCinder:
    """One stack, voltrace in front of it, and the collector both export to."""

    base: FullCinderBase
    stack: CinderStack
    nova: VoltraceServe
    started_in_s: float
    log_file: Path  # voltrace serve's JSON logs (--log-format json)

    @property
    def collector(self) -> Any:
        return self.base.collector

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Both services up (a test may have frozen one): the next test starts clean."""
        poll(
            lambda: (
                self.stack.service_states() == {"cinder-scheduler": "up", "cinder-volume": "up"}
            ),
            timeout,
            "cinder-scheduler and cinder-volume to be up",
        )


@contextmanager
def full_cinder(workdir: Path) -> Iterator[FullCinder]:
    """The session's complete Cinder with the OSProfiler bridge, and voltrace in front."""
    started = time.monotonic()
    log_file = workdir / "voltrace.jsonl"
    with full_cinder_base(workdir) as base:
        stack = base.stack(capacity_gb=CAPACITY_GB)
        try:
            nova = VoltraceServe(
                workdir,
                stack.endpoint_template,
                {
                    "VOLTRACE_OSPROFILER_HMAC_KEY": TEST_HMAC_KEY,
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_EXPORTER_OTLP_ENDPOINT": base.collector.http_endpoint,
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                    "OTEL_BSP_SCHEDULE_DELAY": "50",
                },
                "--log-file",
                str(log_file),
                "--log-format",
                "json",
            )
            try:
                nova.wait_until_serving(timeout=60)
                yield FullCinder(base, stack, nova, time.monotonic() - started, log_file)
            finally:
                nova.stop()
        finally:
            stack.stop()


# -- one create, followed until it settles -----------------------------------------------


@dataclass
class Created:
    """A create sent through voltrace, and what Cinder made of it."""

    response: Response
    project: str
    request_id: str  # voltrace's, which Cinder logs as the global request id
    cinder_request_id: str  # cinder-api's own id for the POST: the user messages carry it
    volume_id: str
    statuses: list[str]  # distinct statuses in the order seen, from Nova's answer on

    @property
    def status(self) -> str:
        return self.statuses[-1]


def create_through_nova(
    full: FullCinder, volume: dict[str, Any], project: str | None = None
) -> Created:
    """POST /v2.1/os-volumes to voltrace (a fresh project unless given); Nova answers 200."""
    project = project or uuid.uuid4().hex
    response = create(full.nova.url, project, volume)
    assert response.status == 200, response.body
    request_id = response.header("x-openstack-request-id")
    body = response.json()["volume"]
    return Created(
        response,
        project,
        request_id,
        post_request_id(full.stack, request_id),
        body["id"],
        [body["status"]],
    )


def post_request_id(stack: CinderStack, global_request_id: str) -> str:
    """The req id cinder-api logged its ``POST …/volumes`` under, with voltrace's as global."""
    line = re.compile(
        rf"\[{re.escape(global_request_id)} (req-[0-9a-f-]{{36}}) [^\]]*\] "
        r"POST http://\S+/volumes$",
        re.MULTILINE,
    )
    found = poll(
        lambda: line.search(stack.log_path("cinder-api").read_text()),
        10,
        f"cinder-api.log to show the POST of {global_request_id}",
    )
    return str(found.group(1))


def follow(
    stack: CinderStack, created: Created, until: frozenset[str] = SETTLED, timeout: float = 30.0
) -> dict:
    """Poll the volume until its status is in ``until``; every status seen lands in
    ``created.statuses``. Returns the volume as Cinder last showed it."""

    def settled() -> dict | None:
        volume = stack.get_volume(created.project, created.volume_id)
        if volume["status"] != created.statuses[-1]:
            created.statuses.append(volume["status"])
        return volume if volume["status"] in until else None

    return dict(
        poll(
            settled, timeout, f"volume {created.volume_id} to be one of {set(until)}", interval=0.03
        )
    )


def host(volume: dict) -> str | None:
    """Where the scheduler placed it (admin-only attribute; None until scheduled)."""
    return volume.get("os-vol-host-attr:host")


# -- the collector's spans as a file explain reads -------------------------------------------


def _any_value(value: Any) -> dict[str, Any]:
    """A JSON value of the collector's output as an OTLP JSON ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": _key_values(value)}}
    return {"stringValue": "" if value is None else str(value)}


def _key_values(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in attributes.items()]


def otlp_json_line(span: dict[str, Any]) -> str:
    """One span of the collector's output (tests/support/rotel_processor.py) as an OTLP JSON
    ``ExportTraceServiceRequest`` line, the format of ``voltrace serve --traces-file`` and
    of an OpenTelemetry Collector's file exporter. Times are 0 when the processor does not
    write them (``start_time_unix_nano``...): explain's verdicts come from the tree."""
    raw = {
        "traceId": span["trace_id"],
        "spanId": span["span_id"],
        "parentSpanId": span["parent_span_id"],
        "name": span["name"],
        "kind": span["kind"],
        "startTimeUnixNano": str(span.get("start_time_unix_nano", 0)),
        "endTimeUnixNano": str(span.get("end_time_unix_nano", 0)),
        "attributes": _key_values(span["attributes"]),
        "events": [
            {
                "name": e["name"],
                "timeUnixNano": str(e.get("time_unix_nano", 0)),
                "attributes": _key_values(e["attributes"]),
            }
            for e in span.get("events", [])
        ],
        "status": {"code": span["status_code"], "message": span["status_message"]},
    }
    resource = {"attributes": _key_values(span["resource"])}
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [raw]}]}]})


def write_trace(spans: list[dict[str, Any]], path: Path) -> Path:
    """``spans`` (the collector's, of one trace) as an OTLP JSON lines file at ``path``."""
    path.write_text("".join(otlp_json_line(s) + "\n" for s in spans))
    return path
