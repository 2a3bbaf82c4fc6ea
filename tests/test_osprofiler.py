"""The OSProfiler bridge: signed headers, and Cinder's own span inside voltrace's trace (issue 6).

The header format is checked against osprofiler's own code (run inside the
cinder venv, never imported here) and end to end: a real cinder-api with
``[profiler]`` on and voltrace both export OTLP to one real collector (rotel),
and Cinder's ``WSGI_*`` spans must hang under voltrace's CLIENT spans.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import INVALID_SPAN, SpanKind

from tests.conftest import TEST_HMAC_KEY, require
from tests.support.real_cinder import VoltraceServe, create, running_cinder
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator
from voltrace.client import NovaClient, identity_headers
from voltrace.devtools.real_cinder import Profiler, RealCinder
from voltrace.osprofiler import X_TRACE_HMAC, X_TRACE_INFO, request_hook, signed_headers
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry, TelemetryConfig
from voltrace.testing import capture

try:
    from tests.support.rotel import RotelCollector
except ImportError:  # the rotel wheel exists for x86_64 CPython 3.11 only
    RotelCollector = None  # type: ignore[assignment,misc]

KIND = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
# osprofiler's OTLP driver names the service "<project>-<service>" (cinder, osapi_volume).
CINDER_SERVICE = "cinder-osapi_volume"

EDGE_IDS = [
    ((1 << 128) - 1, (1 << 64) - 1),
    (1 << 127, 1 << 63),
    ((1 << 64) + 1, 2),
    (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331),  # the W3C spec's example
]


def decode(headers: dict[str, str], key: str = TEST_HMAC_KEY) -> dict[str, str]:
    """Check X-Trace-HMAC the way osprofiler does, then decode X-Trace-Info."""
    info = headers[X_TRACE_INFO]
    expected = hmac.new(key.encode(), info.encode(), hashlib.sha1).hexdigest()
    assert hmac.compare_digest(headers[X_TRACE_HMAC], expected)
    return json.loads(base64.urlsafe_b64decode(info))


# -- the header format ---------------------------------------------------------------------


@pytest.mark.parametrize(("trace_id", "span_id"), EDGE_IDS)
def test_headers_carry_the_otel_ids_as_uuids(trace_id, span_id):
    """X-Trace-Info is base64url JSON of exactly base_id/parent_id, HMAC-SHA1 hex over it."""
    headers = signed_headers(trace_id, span_id, TEST_HMAC_KEY)
    assert set(headers) == {"X-Trace-Info", "X-Trace-HMAC"}
    info = decode(headers)
    assert list(info) == ["base_id", "parent_id"]
    assert uuid.UUID(info["base_id"]).int == trace_id
    assert uuid.UUID(info["parent_id"]).int == span_id
    assert info["base_id"] == str(uuid.UUID(int=trace_id))  # the canonical 8-4-4-4-12 form
    assert TEST_HMAC_KEY not in json.dumps(headers)


def test_wrong_key_does_not_verify():
    """The HMAC depends on the key: a Cinder with another key must reject the headers."""
    headers = signed_headers(*EDGE_IDS[3], TEST_HMAC_KEY)
    with pytest.raises(AssertionError):
        decode(headers, key="another-key")


def test_osprofiler_itself_accepts_the_headers_and_maps_back_the_ids(tmp_path):
    """osprofiler 4.4's signed_pack makes the same bytes, signed_unpack and the WSGI check
    accept them, and its OTLP driver's id mapping gives back our trace and span ids."""
    from voltrace.devtools.real_cinder import RealCinderError, ensure_venv

    try:
        venv = ensure_venv()
    except RealCinderError as exc:
        require(False, f"cinder venv (which holds osprofiler) cannot be built: {exc}")
        raise
    ids = [*EDGE_IDS, *((uuid.uuid4().int, uuid.uuid4().int >> 64) for _ in range(20))]
    cases = [
        {"trace_id": t, "span_id": s, "headers": signed_headers(t, s, TEST_HMAC_KEY)}
        for t, s in ids
    ]
    script = """
import json, sys
from osprofiler import _utils, web
key = sys.argv[1]
out = []
for case in json.load(sys.stdin):
    h = case["headers"]
    info = _utils.signed_unpack(h["X-Trace-Info"], h["X-Trace-HMAC"], [key])
    wrong = _utils.signed_unpack(h["X-Trace-Info"], h["X-Trace-HMAC"], ["not-" + key])
    packed, mac = _utils.signed_pack(
        {"base_id": info["base_id"], "parent_id": info["parent_id"]}, key)
    out.append({
        "valid": web.WsgiMiddleware(None)._trace_is_valid(info),
        "wrong_key_rejected": wrong is None,
        "same_bytes": [packed.decode(), mac] == [h["X-Trace-Info"], h["X-Trace-HMAC"]],
        "trace_id": _utils.uuid_to_int128(info["base_id"]),
        "parent_span_id": _utils.shorten_id(info["parent_id"]),
    })
json.dump(out, sys.stdout)
"""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script, TEST_HMAC_KEY],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"PATH": os.environ.get("PATH", "")},
    )
    answers = json.loads(result.stdout)
    assert answers == [
        {
            "valid": True,
            "wrong_key_rejected": True,
            "same_bytes": True,
            "trace_id": case["trace_id"],
            "parent_span_id": case["span_id"],
        }
        for case in cases
    ]


# -- the hook ------------------------------------------------------------------------------


def prepared() -> requests.PreparedRequest:
    return requests.Request("POST", "http://127.0.0.1:9/v3/p/volumes", json={}).prepare()


def test_hook_signs_with_the_client_spans_own_ids():
    """base_id = the span's trace id, parent_id = the span's own id (not its parent's)."""
    tracer = TracerProvider().get_tracer("test")
    hook = request_hook(TEST_HMAC_KEY)
    with (
        tracer.start_as_current_span("call_cinder") as stage,
        tracer.start_as_current_span("POST", kind=SpanKind.CLIENT) as client,
    ):
        request = prepared()
        hook(client, request)
    info = decode(dict(request.headers))
    context = client.get_span_context()
    assert (uuid.UUID(info["base_id"]).int, uuid.UUID(info["parent_id"]).int) == (
        context.trace_id,
        context.span_id,
    )
    assert context.span_id != stage.get_span_context().span_id


@pytest.mark.parametrize(
    "span",
    [
        pytest.param(
            TracerProvider(sampler=ALWAYS_OFF).get_tracer("t").start_span("POST"), id="unsampled"
        ),
        pytest.param(INVALID_SPAN, id="no-trace"),
    ],
)
def test_hook_sends_nothing_for_untraced_requests(span):
    """Cinder profiles only what voltrace records: no headers without a sampled span."""
    request = prepared()
    request_hook(TEST_HMAC_KEY)(span, request)
    assert X_TRACE_INFO not in request.headers and X_TRACE_HMAC not in request.headers


def test_hook_hides_the_key_and_refuses_an_empty_one():
    """repr() never shows the key; an empty key is a configuration error, not a no-op."""
    hook = request_hook(TEST_HMAC_KEY)
    assert TEST_HMAC_KEY not in repr(hook) and TEST_HMAC_KEY not in repr([hook])
    assert TEST_HMAC_KEY not in repr(TelemetryConfig(request_hooks=[hook]))
    assert TEST_HMAC_KEY not in repr(Profiler(TEST_HMAC_KEY, "http://127.0.0.1:1"))
    with pytest.raises(ValueError, match="must not be empty"):
        request_hook("")


def test_concurrent_creates_each_carry_their_own_client_span(tmp_path):
    """32 creates on 8 threads: every Cinder request's OSProfiler ids equal its own W3C
    traceparent, all distinct; the key is in no log line, span or export."""
    log_file, traces_file = tmp_path / "logs.jsonl", tmp_path / "traces.jsonl"
    telemetry = Telemetry.create(
        TelemetryConfig(
            service_name="nova-api",
            use_env_service_name=False,
            log_file=str(log_file),
            log_format="json",
            traces_file=str(traces_file),
            request_hooks=[request_hook(TEST_HMAC_KEY)],
        )
    )
    sim = CinderSimulator(deterministic=False).start()
    server = EmbeddedServer(
        build_service(
            ServeConfig(
                cinder=CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
            ),
            telemetry,
        )
    ).start()

    def one(index: int) -> int:
        client = NovaClient(server.url)
        try:
            return client.create_volume(
                {"size": 1},
                headers=identity_headers(project_id=f"{index % 4:032x}", token=f"tok-{index}"),
            ).status
        finally:
            client.close()

    try:
        with capture() as captured, ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(32))) == [200] * 32
            captured.wait_for(lambda c: len(c.server_spans()) >= 32)
    finally:
        server.stop()
        sim.stop()
        telemetry.shutdown()

    assert len(sim.recorded) == 64  # POST + lazy GET each
    seen = set()
    for recorded in sim.recorded:
        headers = {k.lower(): v for k, v in recorded.headers.items()}
        info = decode(
            {X_TRACE_INFO: headers["x-trace-info"], X_TRACE_HMAC: headers["x-trace-hmac"]}
        )
        _, trace_hex, span_hex, _ = headers["traceparent"].split("-")
        ids = (uuid.UUID(info["base_id"]).int, uuid.UUID(info["parent_id"]).int)
        assert ids == (int(trace_hex, 16), int(span_hex, 16))
        seen.add(ids)
    assert len(seen) == 64
    client_spans = {
        (s.context.trace_id, s.context.span_id) for s in captured.spans if s.kind is SpanKind.CLIENT
    }
    assert seen == client_spans
    for span in captured.spans:
        assert TEST_HMAC_KEY not in repr(dict(span.attributes or {}))
        assert all(TEST_HMAC_KEY not in repr(dict(e.attributes or {})) for e in span.events)
    assert all(TEST_HMAC_KEY not in json.dumps(event, default=str) for event in captured.logs)
    assert TEST_HMAC_KEY not in log_file.read_text() + traces_file.read_text()


# -- end to end: a real cinder-api with [profiler] on, one real collector ---------------------


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """rotel-agent: receives both voltrace's and cinder's OTLP."""
    require(RotelCollector is not None, "rotel (x86_64 CPython 3.11 wheel) is not installed")
    with RotelCollector(tmp_path_factory.mktemp("rotel")) as running:
        yield running


@pytest.fixture(scope="module")
def profiled_cinder(
    collector: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealCinder]:
    """cinder-api with [profiler] enabled, hmac_keys = the test key, OTLP to the collector."""
    profiler = Profiler(TEST_HMAC_KEY, collector.http_endpoint)
    with running_cinder(tmp_path_factory.mktemp("profiled-cinder"), profiler) as running:
        yield running


def tree(spans: list[dict], root: dict) -> list:
    """``[(service, kind, name), [subtrees]]`` with subtrees sorted (rotel gives no start times)."""
    children = [tree(spans, s) for s in spans if s["parent_span_id"] == root["span_id"]]
    return [
        (root["resource"].get("service.name"), KIND[root["kind"]], root["name"]),
        sorted(children, key=repr),
    ]


def normalized(node: list) -> list:
    """An expected tree, its subtrees sorted as ``tree`` sorts them."""
    return [node[0], sorted((normalized(child) for child in node[1]), key=repr)]


def test_cinder_span_lands_under_voltraces_client_span(profiled_cinder, collector, tmp_path):
    """`voltrace serve` with VOLTRACE_OSPROFILER_HMAC_KEY: one trace, nova-api → cinder-api
    (real), each WSGI_* span parented on the CLIENT span that sent the request."""
    project = uuid.uuid4().hex
    snapshot = profiled_cinder.available_snapshot(project, size=1)  # unsigned: not traced
    log_file, traces_file = tmp_path / "voltrace.jsonl", tmp_path / "traces.jsonl"
    serve = VoltraceServe(
        tmp_path,
        profiled_cinder.endpoint_template,
        {
            "VOLTRACE_OSPROFILER_HMAC_KEY": TEST_HMAC_KEY,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.http_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        },
        "--log-file",
        str(log_file),
        "--log-format",
        "json",
        "--traces-file",
        str(traces_file),
    )
    try:
        serve.wait_until_serving()
        response = create(serve.url, project, {"size": 1, "snapshot_id": snapshot["id"]})
        assert response.status == 200, response.body
        volume_id = response.json()["volume"]["id"]
        request_id = response.header("x-openstack-request-id")

        def server_of(spans: list[dict]) -> dict | None:
            return next(
                (
                    s
                    for s in spans
                    if s["kind"] == 2 and s["attributes"].get("openstack.request_id") == request_id
                ),
                None,
            )

        def joined(spans: list[dict]) -> bool:
            root = server_of(spans)
            return (
                root is not None
                and sum(
                    1
                    for s in spans
                    if s["trace_id"] == root["trace_id"]
                    and s["resource"].get("service.name") == CINDER_SERVICE
                )
                == 3
            )

        spans = collector.wait_for_spans(joined)
    finally:
        serve.stop()

    root = server_of(spans)
    assert root is not None
    in_trace = [s for s in spans if s["trace_id"] == root["trace_id"]]
    assert [s for s in in_trace if not s["parent_span_id"]] == [root]
    nova, cinder = "nova-api", CINDER_SERVICE
    assert tree(in_trace, root) == normalized(
        [
            (nova, "SERVER", "POST /v2.1/os-volumes"),
            [
                [
                    (nova, "INTERNAL", "create_volume"),
                    [
                        [(nova, "INTERNAL", "parse"), []],
                        [(nova, "INTERNAL", "authorize"), []],
                        [
                            (nova, "INTERNAL", "resolve_snapshot"),
                            [
                                [
                                    (nova, "CLIENT", "GET"),
                                    [
                                        [
                                            (
                                                cinder,
                                                "SERVER",
                                                f"WSGI_GET_/v3/{project}/snapshots/{snapshot['id']}",
                                            ),
                                            [],
                                        ]
                                    ],
                                ]
                            ],
                        ],
                        [(nova, "INTERNAL", "derive_size"), []],
                        [
                            (nova, "INTERNAL", "call_cinder"),
                            [
                                [
                                    (nova, "CLIENT", "POST"),
                                    [[(cinder, "SERVER", f"WSGI_POST_/v3/{project}/volumes"), []]],
                                ],
                                [
                                    (nova, "CLIENT", "GET"),
                                    [
                                        [
                                            (
                                                cinder,
                                                "SERVER",
                                                f"WSGI_GET_/v3/{project}/volumes/{volume_id}",
                                            ),
                                            [],
                                        ]
                                    ],
                                ],
                            ],
                        ],
                        [(nova, "INTERNAL", "translate"), []],
                    ],
                ]
            ],
        ]
    )
    post = next(s for s in in_trace if s["name"] == f"WSGI_POST_/v3/{project}/volumes")
    assert (post["attributes"]["http.method"], post["attributes"]["http.path"]) == (
        "POST",
        f"/v3/{project}/volumes",
    )
    assert root["attributes"]["voltrace.outcome"] == "success"

    # The key went nowhere: not the collector, voltrace's logs, its traces or its output.
    for path in (collector.spans_file, log_file, traces_file, serve.output):
        assert TEST_HMAC_KEY not in path.read_text(errors="replace"), path.name


def test_cinder_ignores_a_wrong_key(profiled_cinder, collector):
    """A request signed with another key still succeeds, and Cinder emits no span for it."""
    project = uuid.uuid4().hex
    wrong = (uuid.uuid4().int, uuid.uuid4().int >> 64)
    right = (uuid.uuid4().int, uuid.uuid4().int >> 64)
    for (trace_id, span_id), key in ((wrong, "not-the-key"), (right, TEST_HMAC_KEY)):
        response = profiled_cinder.request(
            "GET",
            f"/v3/{project}/volumes",
            project=project,
            headers=signed_headers(trace_id, span_id, key),
        )
        assert response.status == 200
    # Cinder exports one span at a time, in order: once the second is in, the first would be.
    spans = collector.wait_for_spans(
        lambda spans: any(s["trace_id"] == f"{right[0]:032x}" for s in spans)
    )
    assert not [s for s in spans if s["trace_id"] == f"{wrong[0]:032x}"]
    (span,) = [s for s in spans if s["trace_id"] == f"{right[0]:032x}"]
    assert span["parent_span_id"] == f"{right[1]:016x}"
