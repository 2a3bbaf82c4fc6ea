"""explain on real requests to a real voltrace server: the schema field it names, probes it
does not count, and where it says the time went."""

from __future__ import annotations

import pytest

from tests.conftest import member_headers
from voltrace.explain import TraceDiagnoser, diagnose_logs, timing
from voltrace.traces import group_traces, spans_from_sdk


def diagnose(captured, response):
    """The create's diagnosis from its trace and from its logs."""
    request_id = response.header("x-openstack-request-id")
    spans = captured.complete_trace(request_id)
    diagnoses = [
        d for trace in group_traces(spans_from_sdk(spans)) for d in TraceDiagnoser().diagnose(trace)
    ]
    (from_trace,) = [d for d in diagnoses if d.request_id == request_id]
    return from_trace, diagnose_logs(captured.logs_for(request_id))


@pytest.mark.parametrize(
    ("volume", "field", "says"),
    [
        ({"size": 0}, "size", "Fix field 'size'"),
        ({"size": 1, "metadata": "x"}, "metadata", "Fix field 'metadata'"),
        ({"size": 1, "volume_type": 3}, "volume_type", "Fix field 'volume_type'"),
        ({"size": 1, "colour": "red"}, "volume", "Remove 'colour'"),
        ({}, "size", "Add 'size'"),
    ],
)
def test_schema_invalid_names_the_field(nova, captured, volume, field, says):
    """schema_invalid's next step names the field Nova's message names (not always size)."""
    response = nova.create(volume)
    assert response.status == 400
    for d in diagnose(captured, response):
        assert d.failure_class == "schema_invalid"
        assert d.details["field"] == field
        assert says in d.next_step


def test_probes_are_not_failed_creates(nova, captured):
    """A readiness GET / and an unknown route are not creates: explain counts none of them."""
    client = nova.client()
    for path in ("/", "/v2.1/os-nothing"):
        client.request("GET", path, headers=member_headers())
    captured.wait_for(lambda c: len(c.server_spans()) >= 2)
    diagnoser = TraceDiagnoser()
    found = [
        d
        for trace in group_traces(spans_from_sdk(captured.spans))
        for d in diagnoser.diagnose(trace)
    ]
    assert found == [] and diagnoser.other_requests == 2 and diagnoser.problems == []


def test_time_between_client_and_server_is_named(nova, captured):
    """A create's time is split into nova-api's own work, the network, and inside Cinder."""
    response = nova.create({"size": 1})
    assert response.status == 200
    d, _ = diagnose(captured, response)
    parts = {t.what: t.ms for t in d.time_spent}
    assert {timing.INSIDE_CINDER, timing.NETWORK, timing.NOVA_OWN} <= set(parts)
    assert sum(parts.values()) == pytest.approx(d.duration_ms, rel=0.01)
    # The critical path goes through the slower of call_cinder's two hops (POST, then the
    # lazy GET): which one depends on the machine's load, so either will do.
    client_step = next(
        p for p in d.critical_path if p["name"].startswith(("POST /v3/", "GET /v3/"))
    )
    assert client_step["self_is"].startswith("network and queueing")
