"""One create, one trace, two services: the whole span tree for every outcome (issue 3)."""

from __future__ import annotations

import socket

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import member_headers
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import Fault

STAGES = ["parse", "authorize", "resolve_snapshot", "derive_size", "call_cinder", "translate"]


def trace_of(captured, response):
    request_id = response.header("x-openstack-request-id")
    spans = captured.complete_trace(request_id)
    return captured.server_span(request_id), spans


def stage_spans(captured, server):
    return captured.children(captured.pipeline_span(server))


def test_plain_create_tree(nova, captured):
    """SERVER → create_volume → six stages; POST and lazy GET under call_cinder, each continued
    by cinder-api's SERVER span and its steps."""
    response = nova.create({"size": 1})
    server, spans = trace_of(captured, response)
    assert captured.tree(server) == [
        ("nova-api", "SERVER", "POST /v2.1/os-volumes"),
        [
            [
                ("nova-api", "INTERNAL", "create_volume"),
                [
                    [("nova-api", "INTERNAL", "parse"), []],
                    [("nova-api", "INTERNAL", "authorize"), []],
                    [("nova-api", "INTERNAL", "resolve_snapshot"), []],
                    [("nova-api", "INTERNAL", "derive_size"), []],
                    [
                        ("nova-api", "INTERNAL", "call_cinder"),
                        [
                            [
                                ("nova-api", "CLIENT", "POST"),
                                [
                                    [
                                        ("cinder-api", "SERVER", "POST /v3/{project_id}/volumes"),
                                        [
                                            [("cinder-api", "INTERNAL", "validate"), []],
                                            [("cinder-api", "INTERNAL", "check_quota"), []],
                                            [("cinder-api", "INTERNAL", "persist"), []],
                                        ],
                                    ]
                                ],
                            ],
                            [
                                ("nova-api", "CLIENT", "GET"),
                                [
                                    [
                                        (
                                            "cinder-api",
                                            "SERVER",
                                            "GET /v3/{project_id}/volumes/{volume_id}",
                                        ),
                                        [[("cinder-api", "INTERNAL", "lookup"), []]],
                                    ]
                                ],
                            ],
                        ],
                    ],
                    [("nova-api", "INTERNAL", "translate"), []],
                ],
            ]
        ],
    ]
    assert len({s.context.trace_id for s in spans}) == 1
    assert all(s.status.status_code is not StatusCode.ERROR for s in spans)


def test_server_span_attributes_on_success(nova, captured):
    """The attributes an SRE searches by, with the stable HTTP conventions."""
    response = nova.create({"size": 1})
    server, _ = trace_of(captured, response)
    attrs = server.attributes
    volume_id = response.json()["volume"]["id"]
    request_id = response.header("x-openstack-request-id")
    assert attrs["http.request.method"] == "POST"
    assert attrs["http.route"] == "/v2.1/os-volumes"
    assert attrs["http.response.status_code"] == 200
    assert attrs["url.path"] == "/v2.1/os-volumes"
    assert attrs["voltrace.outcome"] == "success"
    assert attrs["voltrace.failed_stage"] == "none"
    assert attrs["openstack.request_id"] == request_id
    assert attrs["openstack.global_request_id"] == request_id
    assert attrs["cinder.request_id"].startswith("req-")
    assert attrs["voltrace.volume.id"] == volume_id
    assert server.status.status_code is StatusCode.UNSET


def test_stage_span_attributes(nova, captured):
    """Each stage names itself and its Nova code; skipped stages say so; decisions recorded."""
    response = nova.create({"size": 1})
    server, _ = trace_of(captured, response)
    stages = {s.name: s for s in stage_spans(captured, server)}
    assert list(stages) == STAGES
    for name, span in stages.items():
        assert span.attributes["voltrace.stage"] == name
        assert span.attributes["voltrace.nova_code"].startswith("nova/")
    assert stages["resolve_snapshot"].attributes["voltrace.stage.skipped"] is True
    assert stages["call_cinder"].attributes["voltrace.stage.skipped"] is False
    assert stages["derive_size"].attributes["voltrace.size.source"] == "request"
    assert stages["call_cinder"].attributes["voltrace.volume.id"] == response.json()["volume"]["id"]


def test_snapshot_create_tree(nova, captured):
    """The snapshot GET hangs under resolve_snapshot and carries the snapshot id."""
    snapshot = nova.sim.add_snapshot("a1ce0000000000000000000000000001", size=1)
    response = nova.create({"size": 1, "snapshot_id": snapshot["id"]})
    server, _ = trace_of(captured, response)
    resolve = next(s for s in stage_spans(captured, server) if s.name == "resolve_snapshot")
    assert resolve.attributes["voltrace.stage.skipped"] is False
    assert resolve.attributes["voltrace.snapshot.id"] == snapshot["id"]
    (client,) = captured.children(resolve)
    assert (client.kind, client.name) == (SpanKind.CLIENT, "GET")
    (cinder_server,) = captured.children(client)
    assert cinder_server.name == "GET /v3/{project_id}/snapshots/{snapshot_id}"
    assert cinder_server.resource.attributes["service.name"] == "cinder-api"


def test_incoming_traceparent_is_continued(nova, captured):
    """A caller's W3C context becomes the parent of nova-api's SERVER span."""
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    headers = {**member_headers(), "traceparent": f"00-{trace_id}-{parent_id}-01"}
    response = nova.create({"size": 1}, headers=headers)
    server, spans = trace_of(captured, response)
    assert f"{server.context.trace_id:032x}" == trace_id
    assert f"{server.parent.span_id:016x}" == parent_id
    assert all(f"{s.context.trace_id:032x}" == trace_id for s in spans)


def test_route_template_names_the_project_variant(nova, captured):
    """The span is named by route template, never by the raw path."""
    response = nova.create({"size": 1}, path="/v2.1/a1ce0000000000000000000000000001/os-volumes")
    server, _ = trace_of(captured, response)
    assert server.name == "POST /v2.1/{project_id}/os-volumes"
    assert server.attributes["http.route"] == "/v2.1/{project_id}/os-volumes"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FAILURES = [
    # (id, request kwargs, fault, failed stage, failure class, http status)
    ("schema", {"volume": {"size": 0}}, None, "parse", "schema_invalid", 400),
    (
        "microversion-2.36",
        {"volume": {"size": 1}, "headers": {"OpenStack-API-Version": "compute 2.36"}},
        None,
        "parse",
        "microversion_not_found",
        404,
    ),
    (
        "microversion-3.0",
        {"volume": {"size": 1}, "headers": {"OpenStack-API-Version": "compute 3.0"}},
        None,
        "parse",
        "unsupported_microversion",
        406,
    ),
    (
        "media-type",
        {"volume": {"size": 1}, "headers": {"Content-Type": "text/xml"}},
        None,
        "parse",
        "unsupported_media_type",
        415,
    ),
    (
        "policy",
        {"volume": {"size": 1}, "headers": {"X-Roles": "reader"}},
        None,
        "authorize",
        "policy_denied",
        403,
    ),
    (
        "snapshot-404",
        {"volume": {"size": 1, "snapshot_id": "nope"}},
        None,
        "resolve_snapshot",
        "snapshot_not_found",
        404,
    ),
    (
        "over-quota",
        {"volume": {"size": 1}},
        Fault("volumes.create", status=413, headers={"Retry-After": "0"}),
        "call_cinder",
        "over_quota",
        403,
    ),
    (
        "cinder-400",
        {"volume": {"size": 1}},
        Fault("volumes.create", status=400),
        "call_cinder",
        "cinder_bad_request",
        400,
    ),
    (
        "cinder-500",
        {"volume": {"size": 1}},
        Fault("volumes.create", status=500),
        "call_cinder",
        "cinder_server_error",
        500,
    ),
    (
        "volume-type",
        {"volume": {"size": 1, "volume_type": "gold"}},
        None,
        "call_cinder",
        "cinder_not_found",
        500,
    ),
    (
        "lazy-get-404",
        {"volume": {"size": 1}},
        Fault("volumes.get", status=404),
        "call_cinder",
        "cinder_not_found",
        500,
    ),
]


@pytest.mark.parametrize("case", FAILURES, ids=[c[0] for c in FAILURES])
def test_failure_tree(nova, captured, case):
    """The failing stage is ERROR with an exception event; later stages have no span;
    the SERVER span is ERROR only for 5xx and always carries outcome and failed stage."""
    _, kwargs, fault, failed_stage, failure_class, status = case
    if fault is not None:
        nova.sim.inject(fault)
    headers = {**member_headers(), **kwargs.get("headers", {})}
    response = nova.create(kwargs["volume"], headers=headers)
    assert response.status == status
    server, _ = trace_of(captured, response)
    stages = stage_spans(captured, server)
    assert [s.name for s in stages] == STAGES[: STAGES.index(failed_stage) + 1]
    failing = stages[-1]
    assert failing.status.status_code is StatusCode.ERROR
    assert failing.attributes["error.type"] == failure_class
    (event,) = [e for e in failing.events if e.name == "exception"]
    assert event.attributes["exception.type"]
    assert event.attributes["exception.message"]
    for earlier in stages[:-1]:
        assert earlier.status.status_code is not StatusCode.ERROR
    attrs = server.attributes
    assert attrs["voltrace.outcome"] == ("server_error" if status >= 500 else "client_error")
    assert attrs["voltrace.failed_stage"] == failed_stage
    assert attrs["voltrace.failure_class"] == failure_class
    assert attrs["http.response.status_code"] == status
    assert attrs["openstack.request_id"] == response.header("x-openstack-request-id")
    expected = StatusCode.ERROR if status >= 500 else StatusCode.UNSET
    assert server.status.status_code is expected


def test_unreachable_cinder_shows_every_attempt(start_nova, captured):
    """Each connect attempt is its own CLIENT span in ERROR under call_cinder."""
    endpoint = f"http://127.0.0.1:{_closed_port()}/v3/%(project_id)s"
    nova = start_nova(
        cinder=CinderSettings(endpoint_template=endpoint, http_retries=1, connect_retry_delay=0.01)
    )
    response = nova.create({"size": 1})
    server, _ = trace_of(captured, response)
    call_cinder = stage_spans(captured, server)[-1]
    assert call_cinder.name == "call_cinder"
    assert call_cinder.attributes["error.type"] == "cinder_unreachable"
    assert call_cinder.attributes["cinder.connect_retries"] == 1
    attempts = captured.children(call_cinder)
    assert [(s.kind, s.name) for s in attempts] == [(SpanKind.CLIENT, "POST")] * 2
    assert all(s.status.status_code is StatusCode.ERROR for s in attempts)
    assert server.attributes["voltrace.failure_class"] == "cinder_unreachable"


@pytest.mark.parametrize(
    "case",
    [
        ("sizelimit", "request_too_large", 413),
        ("keystonecontext", "unauthenticated", 401),
    ],
)
def test_answers_before_the_pipeline_still_get_a_server_span(nova, captured, case):
    """413 and 401 are answered by paste filters: a SERVER span with no pipeline under it."""
    failed_stage, failure_class, status = case
    if status == 413:
        response = nova.create(raw_body=b" " * 120_000)
    else:
        headers = member_headers()
        del headers["X-User-Id"]
        response = nova.create({"size": 1}, headers=headers)
    assert response.status == status
    server, spans = trace_of(captured, response)
    assert spans == [server]
    assert server.attributes["voltrace.failed_stage"] == failed_stage
    assert server.attributes["voltrace.failure_class"] == failure_class


def test_components_knob_is_bench_only_and_strict(monkeypatch):
    """Unset, every part runs (what users get); a typo fails loudly instead of silently
    measuring everything (bench/attribution.py's VOLTRACE_TELEMETRY_COMPONENTS)."""
    from voltrace.telemetry.components import ALL_COMPONENTS, COMPONENTS_ENV, _components

    monkeypatch.delenv(COMPONENTS_ENV, raising=False)
    assert _components() == ALL_COMPONENTS
    monkeypatch.setenv(COMPONENTS_ENV, "none")
    assert _components() == frozenset()
    monkeypatch.setenv(COMPONENTS_ENV, "server, stages")
    assert _components() == {"server", "stages"}
    monkeypatch.setenv(COMPONENTS_ENV, "server,stage")
    with pytest.raises(ValueError, match="stage"):
        _components()


def test_otlp_http_is_the_default_protocol(monkeypatch):
    """Unset, OTLP goes over HTTP with the SDK's own exporter: no gRPC channel to survive
    gunicorn's fork."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from voltrace.telemetry import otlp_span_exporter

    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    exporter = otlp_span_exporter()
    try:
        assert isinstance(exporter, OTLPSpanExporter)
    finally:
        exporter.shutdown()
