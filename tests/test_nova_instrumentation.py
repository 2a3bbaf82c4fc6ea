"""Real nova 34 with voltrace's instrumentation gives voltrace serve's span tree, for every class.

Each scenario goes, with the same identity headers, to the instrumented real nova
(tests/support/nova_instrumentation.py) and to ``voltrace serve`` in this process, each in
front of its own deterministic simulator process (reset before every scenario, so volume and
Cinder request ids agree). Compared on nova-api's spans: names, kinds, parents, order,
statuses and messages, and the key attributes (``Node``); only how a stage span was made
(``voltrace.stage.timing``) and request ids differ by design, and the exception types listed
in ``EXCEPTION_TYPES`` (voltrace has no exception of its own there).
"""

from __future__ import annotations

import http.client
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from tests.support.nova_instrumentation import (
    HEADERS,
    PROJECT,
    Server,
    _ports,
    first_difference,
    instrumented_nova,
    instrumented_real_nova_fixture,  # noqa: F401  (registers instrumented_real_nova)
    make_snapshot,
    nodes,
    request_id_of,
    serving_voltrace,
    shape,
)
from voltrace import semconv
from voltrace.cinder import CinderSettings

MISSING_SNAPSHOT = "0e5f0fd2-6a1f-4a86-bb5d-0d1e0e5a7c10"
SNAPSHOT = "{snapshot}"  # stands for the scenario's snapshot id in its body


@dataclass(frozen=True)
class Scenario:
    """One create request, the Cinder faults around it, and the answer both must give."""

    name: str
    status: int
    failed_stage: str | None = None
    failure_class: str | None = None
    volume: dict[str, Any] = field(default_factory=lambda: {"size": 1})
    body: bytes | None = None  # raw, instead of volume
    headers: dict[str, str | None] = field(default_factory=dict)  # None removes one
    path: str = "/v2.1/os-volumes"
    method: str = "POST"
    faults: tuple[str, ...] = ()
    snapshot: bool = False
    catalog: str | None = None  # X-Service-Catalog's Cinder: "v3", "v2" or "none"

    def request(
        self, snapshot_id: str | None, sim_url: str
    ) -> tuple[str, str, bytes, dict[str, str]]:
        headers = {k: v for k, v in {**HEADERS, **self.headers}.items() if v is not None}
        if self.catalog is not None:
            headers["X-Service-Catalog"] = json.dumps(catalog(self.catalog, sim_url))
        volume = {k: (snapshot_id if v == SNAPSHOT else v) for k, v in self.volume.items()}
        body = self.body if self.body is not None else json.dumps({"volume": volume}).encode()
        return self.method, self.path, body, headers


def catalog(cinder_version: str, sim_url: str) -> list[dict[str, Any]]:
    """keystonemiddleware's X-Service-Catalog, with Cinder at ``sim_url`` (or without it)."""
    image = {"type": "image", "endpoints": [{"publicURL": "http://glance.invalid"}]}
    if cinder_version == "none":
        return [image]
    url = f"{sim_url}/{cinder_version}/{PROJECT}"
    return [
        image,
        {
            "type": "volumev3",
            "name": "cinderv3",
            "endpoints": [{"region": "RegionOne", "publicURL": url}],
        },
    ]


def cinder(
    name: str, spec: str, status: int, failure_class: str, stage: str = "call_cinder", **kwargs: Any
) -> Scenario:
    return Scenario(name, status, stage, failure_class, faults=(spec,), **kwargs)


SCENARIOS = (
    Scenario("plain-create", 200),
    Scenario("from-snapshot", 200, volume={"size": 1, "snapshot_id": SNAPSHOT}, snapshot=True),
    Scenario(
        "request-too-large",
        413,
        "sizelimit",
        "request_too_large",
        body=json.dumps({"volume": {"size": 1, "description": "x" * 120000}}).encode(),
    ),
    Scenario(
        "unauthenticated", 401, "keystonecontext", "unauthenticated", headers={"X-User-Id": None}
    ),
    Scenario(
        "invalid-service-catalog",
        500,
        "keystonecontext",
        "invalid_service_catalog",
        headers={"X-Service-Catalog": "{not json"},
    ),
    Scenario(
        "invalid-microversion",
        400,
        "parse",
        "invalid_microversion",
        headers={"OpenStack-API-Version": "compute 2.x"},
    ),
    Scenario(
        "unsupported-microversion",
        406,
        "parse",
        "unsupported_microversion",
        headers={"OpenStack-API-Version": "compute 3.0"},
    ),
    Scenario(
        "unsupported-media-type",
        415,
        "parse",
        "unsupported_media_type",
        headers={"Content-Type": "text/xml"},
    ),
    Scenario("malformed-body", 400, "parse", "malformed_body", body=b'{"volume": {"size": 1'),
    Scenario("project-mismatch", 400, "parse", "project_mismatch", path="/v2.1/def456/os-volumes"),
    Scenario(
        "microversion-not-found",
        404,
        "parse",
        "microversion_not_found",
        headers={"OpenStack-API-Version": "compute 2.36"},
    ),
    Scenario("schema-invalid", 400, "parse", "schema_invalid", volume={"size": 0}),
    Scenario("policy-denied", 403, "authorize", "policy_denied", headers={"X-Roles": "reader"}),
    Scenario(
        "snapshot-not-found",
        404,
        "resolve_snapshot",
        "snapshot_not_found",
        volume={"size": 1, "snapshot_id": MISSING_SNAPSHOT},
    ),
    cinder(
        "snapshot-forbidden",
        "snapshots.get:status=403",
        403,
        "cinder_forbidden",
        "resolve_snapshot",
        volume={"size": 1, "snapshot_id": SNAPSHOT},
        snapshot=True,
    ),
    cinder(
        "snapshot-cinder-500",
        "snapshots.get:status=500",
        500,
        "cinder_server_error",
        "resolve_snapshot",
        volume={"size": 1, "snapshot_id": SNAPSHOT},
        snapshot=True,
    ),
    cinder("cinder-bad-request", "volumes.create:status=400", 400, "cinder_bad_request"),
    cinder("cinder-forbidden", "volumes.create:status=403", 403, "cinder_forbidden"),
    cinder("over-quota", "volumes.create:status=413", 403, "over_quota"),
    Scenario(
        "unknown-volume-type",
        500,
        "call_cinder",
        "cinder_not_found",
        volume={"size": 1, "volume_type": "gold"},
    ),
    cinder("cinder-unauthorized", "volumes.create:status=401", 500, "cinder_unauthorized"),
    cinder("cinder-500", "volumes.create:status=500", 500, "cinder_server_error"),
    cinder("cinder-unreachable", "volumes.create:action=reset", 500, "cinder_unreachable"),
    cinder("cinder-garbage", "volumes.create:action=garbage", 500, "cinder_bad_response"),
    cinder("lazy-get-404", "volumes.get:status=404", 500, "cinder_not_found"),
    Scenario(
        "no-route", 404, "router", "no_route", method="GET", path="/v2.1/no-such-api", body=b""
    ),
)
# Against servers with no [cinder] endpoint_template: Cinder from the service catalog.
CATALOG_SCENARIOS = (
    Scenario("catalog-create", 200, catalog="v3"),
    Scenario("catalog-not-v3", 500, "call_cinder", "cinder_unsupported_version", catalog="v2"),
    Scenario(
        "catalog-without-cinder", 500, "call_cinder", "cinder_endpoint_not_found", catalog="none"
    ),
)

# scenario -> (voltrace serve's exception type, real nova's) on the failing stage: voltrace
# raises no exception of its own there (a NovaFault, or what it parsed with), so the type and
# message of the exception event differ; the span's status message (nova's answer) does not.
EXCEPTION_TYPES = {
    "invalid-microversion": ("NovaFault", "nova.exception.InvalidAPIVersionString"),
    "unsupported-microversion": ("NovaFault", "nova.exception.InvalidGlobalAPIVersion"),
    "unsupported-media-type": ("NovaFault", "nova.exception.InvalidContentType"),
    "malformed-body": ("json.decoder.JSONDecodeError", "nova.exception.MalformedRequestBody"),
    "microversion-not-found": ("NovaFault", "nova.exception.VersionNotFoundForAPIMethod"),
}


@pytest.fixture(scope="module")
def voltrace_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving_voltrace(tmp_path_factory.mktemp("voltrace-serve")) as server:
        yield server


@dataclass
class Answered:
    status: int
    request_id: str
    tree: list[Any]
    trace: Any


def send(server: Server, scenario: Scenario) -> Answered:
    server.sim.reset()
    snapshot_id = make_snapshot(server.sim, PROJECT) if scenario.snapshot else None
    for spec in scenario.faults:
        server.sim.inject({"spec": spec})
    answer = server.request(*scenario.request(snapshot_id, server.sim.url))
    request_id = request_id_of(answer)
    trace = server.trace_of(request_id)
    return Answered(answer.status, request_id, shape(trace), trace)


def without_known_differences(scenario: Scenario, tree: list[Any], side: int) -> list[Any]:
    """The tree with the exception type that is known to differ replaced by a marker."""
    known = EXCEPTION_TYPES.get(scenario.name)
    head, children = tree
    if known is not None and head.exception is not None and head.exception[0] == known[side]:
        head = replace(head, exception=("(known to differ)", "(known to differ)"))
    return [head, [without_known_differences(scenario, c, side) for c in children]]


@pytest.fixture(scope="module")
def answers(
    instrumented_real_nova: Server, voltrace_serve: Server, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Answered, Answered]]:
    """Every scenario, sent to voltrace serve and to real nova (once per module)."""
    answered = {
        s.name: (send(voltrace_serve, s), send(instrumented_real_nova, s)) for s in SCENARIOS
    }
    workdir = tmp_path_factory.mktemp("catalog")
    # nova.conf's [cinder] endpoint_template, set by real_nova, emptied again.
    with (
        serving_voltrace(
            workdir / "serve", CinderSettings(endpoint_template=None, http_retries=0)
        ) as serve,
        instrumented_nova(workdir / "nova", conf_extra="[cinder]\nendpoint_template =\n") as nova,
    ):
        answered.update({s.name: (send(serve, s), send(nova, s)) for s in CATALOG_SCENARIOS})
    return answered


EVERY_SCENARIO = SCENARIOS + CATALOG_SCENARIOS


@pytest.mark.parametrize("scenario", EVERY_SCENARIO, ids=lambda s: s.name)
def test_real_nova_gives_voltrace_serves_span_tree(
    scenario: Scenario, answers: dict[str, tuple[Answered, Answered]]
) -> None:
    """Same spans, parents, order, kinds, statuses and key attributes as voltrace serve."""
    serve, nova = answers[scenario.name]
    assert (serve.status, nova.status) == (scenario.status, scenario.status)
    got = without_known_differences(scenario, nova.tree, 1)
    want = without_known_differences(scenario, serve.tree, 0)
    assert got == want, first_difference(got, want)


@pytest.mark.parametrize("scenario", EVERY_SCENARIO, ids=lambda s: s.name)
def test_the_failure_is_on_the_server_span_and_its_stage(
    scenario: Scenario, answers: dict[str, tuple[Answered, Answered]]
) -> None:
    """outcome, failed stage and class on SERVER; the failing stage is ERROR with error.type."""
    _, nova = answers[scenario.name]
    server = dict(nova.tree[0].attributes)
    assert server["voltrace.failed_stage"] == (scenario.failed_stage or "none")
    assert server["voltrace.failure_class"] == (scenario.failure_class or "none")
    failing = [
        n
        for n in nodes(nova.tree)
        if n.kind == "internal" and n.status == "error" and n.name in semconv.STAGE_NAMES
    ]
    if scenario.failed_stage in semconv.STAGE_NAMES:
        assert [(n.name, dict(n.attributes)["error.type"]) for n in failing] == [
            (scenario.failed_stage, scenario.failure_class)
        ]
    else:
        assert failing == []


@pytest.mark.parametrize(
    "scenario", [s for s in SCENARIOS if s.name in EXCEPTION_TYPES], ids=lambda s: s.name
)
def test_the_exception_event_names_novas_own_exception(
    scenario: Scenario, answers: dict[str, tuple[Answered, Answered]]
) -> None:
    """Where voltrace has no exception of its own, real nova's trace names nova's."""
    serve, nova = answers[scenario.name]
    stage = scenario.failed_stage
    serve_types = [n.exception[0] for n in nodes(serve.tree) if n.name == stage and n.exception]
    nova_types = [n.exception[0] for n in nodes(nova.tree) if n.name == stage and n.exception]
    assert (serve_types, nova_types) == (
        [EXCEPTION_TYPES[scenario.name][0]],
        [EXCEPTION_TYPES[scenario.name][1]],
    )


def test_stages_with_no_nova_function_are_marked_between_hooks(
    answers: dict[str, tuple[Answered, Answered]],
) -> None:
    """parse, derive_size, translate (and a skipped resolve_snapshot) are built from hooks."""
    _, nova = answers["plain-create"]
    _, from_snapshot = answers["from-snapshot"]
    timing = {
        s.name: s.attr("voltrace.stage.timing")
        for s in nova.trace.spans
        if "voltrace.stage" in s.attributes
    }
    assert timing == {
        "parse": "between_hooks",
        "authorize": "wrapped",
        "resolve_snapshot": "between_hooks",
        "derive_size": "between_hooks",
        "call_cinder": "wrapped",
        "translate": "between_hooks",
    }
    resolve = next(s for s in from_snapshot.trace.spans if s.name == "resolve_snapshot")
    assert resolve.attr("voltrace.stage.timing") == "wrapped"


def test_stage_spans_fit_inside_create_volume_in_order(
    answers: dict[str, tuple[Answered, Answered]],
) -> None:
    """Each stage starts after the previous one ended, all within create_volume."""
    _, nova = answers["from-snapshot"]
    spans = sorted(
        (s for s in nova.trace.spans if "voltrace.stage" in s.attributes), key=lambda s: s.start_ns
    )
    pipeline = next(s for s in nova.trace.spans if s.name == semconv.PIPELINE_SPAN)
    assert [s.name for s in spans] == list(semconv.STAGE_NAMES)
    for before, after in itertools.pairwise(spans):
        assert before.end_ns <= after.start_ns, (before.name, after.name)
    assert pipeline.start_ns <= spans[0].start_ns and spans[-1].end_ns <= pipeline.end_ns


LOG_VALUES = (
    "event",
    "kind",
    "stage",
    "outcome",
    "http_status",
    "failed_stage",
    "failure_class",
    "volume_id",
    "cinder_request_id",
    "route",
    "project_id",
    "user_id",
    "skip_reason",
    "cinder_connect_retries",
)


ERROR_VALUES = ("error_type", "error_message")


def comparable(lines: list[dict[str, Any]], scenario: Scenario) -> list[tuple[Any, ...]]:
    """A request's log lines: which fields each has, and the values that must agree."""
    keys = LOG_VALUES if scenario.name in EXCEPTION_TYPES else LOG_VALUES + ERROR_VALUES
    return [
        (
            sorted(set(e) - {"timestamp"}),
            [(k, _ports(e.get(k))) for k in keys],
            [(r["name"], r["status"]) for r in e.get("stages", [])],
        )
        for e in lines
    ]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_stage_and_request_log_lines_are_voltrace_serves(
    scenario: Scenario,
    instrumented_real_nova: Server,
    voltrace_serve: Server,
    answers: dict[str, tuple[Answered, Answered]],
) -> None:
    """stage.<name> per stage and one request.finished, the same fields and values."""
    serve, nova = answers[scenario.name]
    serve_lines = [e for e in voltrace_serve.logs() if e.get("request_id") == serve.request_id]
    nova_lines = [
        e for e in instrumented_real_nova.logs() if e.get("request_id") == nova.request_id
    ]
    assert comparable(nova_lines, scenario) == comparable(serve_lines, scenario)


def scrape(port: int) -> dict[str, list[Any]]:
    """Prometheus /metrics of the instrumented nova, as prometheus_client reads it."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_real_novas_metrics_are_voltraces(
    instrumented_real_nova: Server, answers: dict[str, tuple[Answered, Answered]]
) -> None:
    """voltrace_creates_total, stage and Cinder durations, with voltrace's labels."""
    assert instrumented_real_nova.metrics_port is not None
    metrics = scrape(instrumented_real_nova.metrics_port)
    creates = {
        (s.labels["failed_stage"], s.labels["failure_class"])
        for s in metrics["voltrace_creates"]
        if s.name.endswith("_total")
    }
    expected = {
        (s.failed_stage or "none", s.failure_class or "none")
        for s in SCENARIOS
        if s.name != "no-route"
    }
    assert expected <= creates
    stages = {
        (s.labels["stage"], s.labels["outcome"])
        for s in metrics["voltrace_stage_duration_seconds"]
        if s.name.endswith("_count")
    }
    assert {
        ("call_cinder", "ok"),
        ("resolve_snapshot", "skipped"),
        ("parse", "error"),
        ("authorize", "error"),
        ("translate", "ok"),
    } <= stages
    routes = {
        s.labels["http_route"]
        for s in metrics["voltrace_cinder_request_duration_seconds"]
        if s.name.endswith("_count")
    }
    assert {
        "/v3/{project_id}/volumes",
        "/v3/{project_id}/volumes/{volume_id}",
        "/v3/{project_id}/snapshots/{snapshot_id}",
    } <= routes


def explain(*args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "voltrace", "explain", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def explained(
    instrumented_real_nova: Server, answers: dict[str, tuple[Answered, Answered]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """`voltrace explain --json` on real nova's traces file, and on its logs alone."""
    from_traces = explain(str(instrumented_real_nova.traces_file))
    from_logs = explain("--logs", str(instrumented_real_nova.log_file))
    return {
        "trace": {d["request_id"]: d for d in from_traces},
        "logs": {d["request_id"]: d for d in from_logs},
    }


@pytest.mark.parametrize("source", ["trace", "logs"])
@pytest.mark.parametrize(
    "scenario", [s for s in SCENARIOS if s.name != "no-route"], ids=lambda s: s.name
)
def test_explain_diagnoses_real_novas_files(
    scenario: Scenario,
    source: str,
    answers: dict[str, tuple[Answered, Answered]],
    explained: dict[str, dict[str, dict[str, Any]]],
) -> None:
    """Outcome, status, failed stage, class and nova's exception type, from either file."""
    _, nova = answers[scenario.name]
    d = explained[source][nova.request_id]
    assert (d["http_status"], d["failed_stage"], d["failure_class"]) == (
        scenario.status,
        scenario.failed_stage,
        scenario.failure_class,
    )
    if scenario.name in EXCEPTION_TYPES:
        assert d["error_type"] == EXCEPTION_TYPES[scenario.name][1]
