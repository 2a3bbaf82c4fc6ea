"""Test glue for voltrace.instrumentation.nova: instrumented real nova, voltrace serve, traces.

* The venv is ``voltrace.instrumentation.nova_venv``'s (real_nova's nova 34 under the
  nova-34 upper-constraints, plus voltrace ``--no-deps`` and the OpenTelemetry packages).
* ``instrumented_nova(workdir)`` starts that nova with the paste filter first in both
  ``keystone =`` pipelines, writing OTLP JSON traces and JSON logs under ``workdir``; the
  ``instrumented_real_nova`` session fixture is one of them for the whole run (import
  ``instrumented_real_nova_fixture`` to use it).
* ``serving_voltrace(workdir)`` is ``voltrace serve`` in this process, in front of its own
  ``voltrace cinder-sim --deterministic`` process, with the same kind of files.
* ``shape(trace)`` is a trace as the comparisons see it: nova-api's spans as a tree of
  (name, kind, status, key attributes).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.polling import poll
from tests.support.real_nova import SimAdmin, SimProcess, nova_venv, running_real_nova
from voltrace.cinder import CinderSettings
from voltrace.devtools.real_nova import Response, free_port
from voltrace.instrumentation import nova_venv as instrumented_venv
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry, TelemetryConfig
from voltrace.traces import Span, Trace, read_trace_file

REPO = Path(__file__).resolve().parents[2]
EXTRA_INSTALLS = instrumented_venv.extra_installs(REPO)

PROJECT = "abc123"
HEADERS = {
    "X-User-Id": "u-1",
    "X-Project-Id": PROJECT,
    "X-Roles": "member",
    "X-Auth-Token": "tok-nova-instr",
    "Content-Type": "application/json",
}


def venv() -> Path:
    """The instrumented venv: built in CI, a skip with the build command locally."""
    return nova_venv(EXTRA_INSTALLS)


class TelemetryFiles:
    """Where one server's spans and log lines go, read back as voltrace explain reads them."""

    def __init__(self, traces_file: Path, log_file: Path) -> None:
        self.traces_file = traces_file
        self.log_file = log_file

    def traces(self) -> list[Trace]:
        if not self.traces_file.exists() or self.traces_file.stat().st_size == 0:
            return []
        return read_trace_file(self.traces_file).traces

    def trace_of(self, request_id: str, timeout: float = 15.0) -> Trace:
        """The trace of the request answered with ``request_id``, once its SERVER span ended."""

        def found() -> Trace | None:
            for trace in self.traces():
                server = server_span(trace)
                if server is not None and server.attr("openstack.request_id") == request_id:
                    return trace
            return None

        return poll(found, timeout=timeout, what=f"the trace of {request_id}")

    def logs(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line]


class Server(TelemetryFiles):
    """One nova-api (real or voltrace serve), its simulator and its telemetry files."""

    def __init__(self, url: str, sim: SimAdmin, traces_file: Path, log_file: Path) -> None:
        super().__init__(traces_file, log_file)
        self.url = url
        self.sim = sim
        self.nova: Any = None  # the RealNova process, for a real nova
        self.metrics_port: int | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            raw = conn.getresponse()
            return Response(raw.status, raw.getheaders(), raw.read())
        finally:
            conn.close()

    def create(
        self,
        volume: dict[str, Any],
        headers: dict[str, str] | None = None,
        path: str = "/v2.1/os-volumes",
    ) -> Response:
        body = json.dumps({"volume": volume}).encode()
        return self.request("POST", path, body, HEADERS if headers is None else headers)


@contextlib.contextmanager
def instrumented_nova(
    workdir: Path, *, env: dict[str, str] | None = None, conf_extra: str = "", **options: str
) -> Iterator[Server]:
    """Real nova 34 with the paste filter (options as in api-paste.ini), and its simulator."""
    workdir.mkdir(parents=True, exist_ok=True)
    traces_file, log_file = workdir / "traces.jsonl", workdir / "voltrace.log"
    settings = {
        "traces_file": str(traces_file),
        "log_file": str(log_file),
        "span_processor": "simple",
        **options,
    }
    paste = instrumented_venv.instrumented_paste_ini(venv(), workdir, **settings)
    with running_real_nova(
        workdir, paste_ini=paste, extra_installs=EXTRA_INSTALLS, env=env, conf_extra=conf_extra
    ) as service:
        server = Server(service.url, service.sim, traces_file, log_file)
        server.nova = service.nova
        yield server


@pytest.fixture(scope="session", name="instrumented_real_nova")
def instrumented_real_nova_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One instrumented real nova-api 34 for the whole run, before its own simulator, with
    Prometheus /metrics on ``server.metrics_port``."""
    metrics_port = free_port()
    with instrumented_nova(
        tmp_path_factory.mktemp("instrumented-nova"), metrics_port=str(metrics_port)
    ) as server:
        server.metrics_port = metrics_port
        yield server


@contextlib.contextmanager
def serving_voltrace(workdir: Path, cinder: CinderSettings | None = None) -> Iterator[Server]:
    """``voltrace serve`` in this process, before its own deterministic simulator process."""
    workdir.mkdir(parents=True, exist_ok=True)
    traces_file, log_file = workdir / "traces.jsonl", workdir / "voltrace.log"
    sim = SimProcess(workdir)
    telemetry = Telemetry.create(
        TelemetryConfig(
            service_name="nova-api",
            use_env_service_name=False,
            traces_file=str(traces_file),
            log_file=str(log_file),
            log_format="json",
            span_processor="simple",
        )
    )
    try:
        settings = cinder or CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
        server = EmbeddedServer(build_service(ServeConfig(cinder=settings), telemetry)).start()
        try:
            yield Server(server.url, sim, traces_file, log_file)
        finally:
            server.stop()
    finally:
        telemetry.shutdown()
        sim.stop()


# ---------------------------------------------------------------------------
# Traces as the comparisons see them
# ---------------------------------------------------------------------------


def server_span(trace: Trace, service: str = "nova-api") -> Span | None:
    return next((s for s in trace.spans if s.kind == "server" and s.service == service), None)


def request_id_of(answer: Response) -> str:
    return {k.lower(): v for k, v in answer.headers}["x-openstack-request-id"]


SERVER_KEYS = (
    "voltrace.request.kind",
    "voltrace.outcome",
    "voltrace.failed_stage",
    "voltrace.failure_class",
    "http.response.status_code",
    "http.route",
    "voltrace.volume.id",
    "cinder.request_id",
    "openstack.project_id",
    "openstack.user_id",
)
CLIENT_KEYS = ("http.request.method", "http.response.status_code", "error.type")
# Different by design: how the span was made (run / wrapped / between_hooks), and ids.
NOT_COMPARED = ("voltrace.stage.timing", "openstack.request_id")


@dataclass(frozen=True)
class Node:
    """One span as compared: what it is, how it ended, what it says."""

    name: str
    kind: str
    status: str
    status_message: str
    attributes: tuple[tuple[str, Any], ...]
    exception: tuple[str, str] | None  # (type, message) of its exception event


def node(span: Span) -> Node:
    if span.kind == "server":
        keys: Sequence[str] = SERVER_KEYS
    elif span.kind == "client":
        keys = CLIENT_KEYS
    else:
        keys = sorted(k for k in span.attributes if k not in NOT_COMPARED)
    attributes = [(k, span.attributes[k]) for k in keys if k in span.attributes]
    if span.kind == "client":
        attributes.append(("url.path", urlsplit(str(span.attr("url.full", ""))).path))
    event = span.event("exception")
    exception = (
        None
        if event is None
        else (
            str(event.attributes.get("exception.type")),
            _ports(event.attributes.get("exception.message")),
        )
    )
    return Node(
        span.name, span.kind, span.status, _ports(span.status_message), tuple(attributes), exception
    )


def _ports(text: Any) -> str:
    """Each side has its own simulator: its port is the one thing its messages may differ in."""
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", str(text))


def shape(trace: Trace, service: str = "nova-api") -> list[Any]:
    """``[node, [children...]]`` from the SERVER span down, ``service``'s spans only."""
    root = server_span(trace, service)
    assert root is not None, "no SERVER span"

    def walk(span: Span) -> list[Any]:
        children = [c for c in trace.children(span) if c.service == service]
        return [node(span), [walk(c) for c in children]]

    return walk(root)


def nodes(tree: list[Any]) -> Iterator[Node]:
    yield tree[0]
    for child in tree[1]:
        yield from nodes(child)


# ---------------------------------------------------------------------------
# The simulators' state
# ---------------------------------------------------------------------------


def sim_call(
    sim: SimAdmin,
    method: str,
    path: str,
    payload: dict[str, Any] | None = None,
    project: str = PROJECT,
) -> dict[str, Any]:
    """One Cinder API call to a simulator, as a user would make it."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=30)
    try:
        conn.request(
            method,
            f"/v3/{project}{path}",
            None if payload is None else json.dumps(payload).encode(),
            {"Content-Type": "application/json", "X-Auth-Token": "setup"},
        )
        raw = conn.getresponse()
        body = raw.read()
        assert raw.status in (200, 202), body
        return dict(json.loads(body))
    finally:
        conn.close()


def allow_volumes(sim: SimAdmin, count: int, project: str = PROJECT) -> None:
    """Raise the project's volume quota (the simulator's default is cinder's 10)."""
    sim_call(
        sim,
        "PUT",
        f"/os-quota-sets/{project}",
        {"quota_set": {"volumes": count, "gigabytes": count * 10}},
        project,
    )


def make_snapshot(sim: SimAdmin, project: str = PROJECT, size: int = 1) -> str:
    """A snapshot in the simulator, made through its Cinder API, then its requests forgotten.

    Exactly two Cinder API calls, whatever the timing: the wait for the volume reads the
    admin API, which takes no Cinder request id. So two simulators reset and given the same
    requests hand out the same request ids afterwards (the answers test compares them)."""
    volume = sim_call(sim, "POST", "/volumes", {"volume": {"size": size}}, project)["volume"]
    poll(
        lambda: sim.admin("GET", f"/__sim__/volumes/{volume['id']}")[1]["status"] == "available",
        timeout=30,
        what=f"volume {volume['id']} available",
    )
    snapshot = sim_call(
        sim, "POST", "/snapshots", {"snapshot": {"volume_id": volume["id"]}}, project
    )["snapshot"]
    sim.clear_requests()
    return str(snapshot["id"])


def pip(python: Path, *args: str) -> str:
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    ).stdout


def first_difference(got: list[Any], want: list[Any], path: str = "") -> str | None:
    """Where two shapes first differ, both nodes in full (for an assertion message)."""
    here = f"{path}/{want[0].name}"
    if got[0] != want[0]:
        return f"at {here}:\n  real nova:      {got[0]}\n  voltrace serve: {want[0]}"
    if [c[0].name for c in got[1]] != [c[0].name for c in want[1]]:
        return (
            f"children of {here}: real nova {[c[0].name for c in got[1]]}, "
            f"voltrace serve {[c[0].name for c in want[1]]}"
        )
    for mine, theirs in zip(got[1], want[1], strict=True):
        found = first_difference(mine, theirs, here)
        if found:
            return found
    return None
