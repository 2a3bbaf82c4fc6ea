"""Fuzzing POST /v2.1/os-volumes with hypothesis: bodies, headers, microversions, types, sizes.

Whatever arrives, voltrace must answer like Nova: never a traceback, never a 5xx except the
500s Nova gives (nova-spec.md §1, §6), always a well-formed Nova fault body (or webob's own
body for the 401, 413 and unknown-path 404 that paste middleware and the router answer),
and always a complete trace.

Examples: 2,000 with ``CI=true`` (profile ``voltrace-ci``), 150 otherwise; set
``VOLTRACE_FUZZ_EXAMPLES`` to override. One server and one simulator serve every example.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.conftest import IN_CI, NOVA_VOLUME_KEYS, TEST_TOKEN
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator
from voltrace.client import NovaClient
from voltrace.errors import FAULT_NAMES
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.testing import Captured, capture

settings.register_profile(
    "voltrace-ci",
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "voltrace-dev", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE = settings.get_profile("voltrace-ci" if IN_CI else "voltrace-dev")
if os.environ.get("VOLTRACE_FUZZ_EXAMPLES"):
    PROFILE = settings(PROFILE, max_examples=int(os.environ["VOLTRACE_FUZZ_EXAMPLES"]))

PROJECT = "a1ce0000000000000000000000000003"
MAX_BODY = 114688
STAGES = ("parse", "authorize", "resolve_snapshot", "derive_size", "call_cinder", "translate")
# The 500s Nova itself answers for this endpoint (spec §6): an uncaught Cinder error.
# internal_error (a voltrace bug) and cinder_bad_response (a healthy Cinder never sends
# one) are never acceptable.
SPEC_500 = {
    "cinder_not_found",
    "cinder_server_error",
    "cinder_bad_request",
    "cinder_unauthorized",
    "over_quota",
}


# ---------------------------------------------------------------------------
# One simulator and one server for the module
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_sim(cinder_telemetry: Any) -> Iterator[CinderSimulator]:
    with CinderSimulator(
        deterministic=False,
        tracer_provider=cinder_telemetry.tracer_provider,
        default_quotas={"volumes": -1, "gigabytes": -1},
    ) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def fuzz_captured() -> Iterator[Captured]:
    """One capture for every example (emptied before each), so listeners never pile up."""
    with capture() as captured:
        yield captured


@pytest.fixture(scope="module")
def fuzz_url(fuzz_sim: CinderSimulator, telemetry: Any) -> Iterator[str]:
    config = ServeConfig(
        cinder=CinderSettings(endpoint_template=fuzz_sim.endpoint_template, http_retries=0)
    )
    with EmbeddedServer(build_service(config, telemetry)) as server:
        yield server.url


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
any_text = st.text(max_size=40)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(any_text, inner, max_size=3)
    ),
    max_leaves=8,
)

sizes = st.one_of(
    st.integers(-3, 3),
    st.integers(4, 2**31 + 3),
    st.just(2**63),
    st.text("0123456789", max_size=12),
    st.sampled_from(["01", "1 ", " 1", "1.0", "0", "-1"]),
    st.sampled_from([1.0, 1.5, 0.0, -1.0, 1e300]),
    st.booleans(),
    st.none(),
    printable,
    st.lists(st.integers(1, 3), max_size=2),
)
names = st.one_of(
    st.none(), any_text, st.text(min_size=250, max_size=300), st.integers(), st.just("")
)
volume_types = st.one_of(
    st.sampled_from(["__DEFAULT__", "lvmdriver-1", "no-such-type", ""]), printable, st.integers()
)
zones = st.one_of(st.sampled_from(["nova", "elsewhere", ""]), printable, st.none())
metadata = st.one_of(
    st.dictionaries(st.text("abcXYZ09-_:. ", min_size=1, max_size=10), printable, max_size=3),
    st.dictionaries(any_text, json_values, max_size=3),
    json_values,
)
# "EXISTING" becomes the id of a real snapshot of the caller's project.
snapshot_ids = st.one_of(
    st.just("EXISTING"),
    st.uuids().map(str),
    printable,
    st.sampled_from(["", "..", "a/b", "x?y=1", "%2e%2e"]),
    st.integers(),
)

volumes = st.fixed_dictionaries(
    {},
    optional={
        "size": sizes,
        "display_name": names,
        "display_description": names,
        "volume_type": volume_types,
        "availability_zone": zones,
        "metadata": metadata,
        "snapshot_id": snapshot_ids,
        "imageRef": printable,
        "name": names,
    },
)
documents = st.one_of(
    st.builds(lambda v: {"volume": v}, volumes),
    st.builds(
        lambda v, extra: {"volume": v, **extra},
        volumes,
        st.dictionaries(printable, json_values, min_size=1, max_size=2),
    ),
    json_values,
)


def encode(document: Any, how: str) -> bytes:
    text = json.dumps(document, ensure_ascii=how == "ascii")
    if how == "utf-16":
        return text.encode("utf-16")
    return text.encode("utf-8")


oversized = st.integers(-40, 40).map(
    lambda delta: (
        b'{"volume": {"size": 1, "display_name": "' + b"x" * (MAX_BODY - 40 + delta) + b'"}}'
    )
)
bodies = st.one_of(
    st.builds(encode, documents, st.sampled_from(["ascii", "utf-8", "utf-8", "utf-16"])),
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b"{",
            b"null",
            b"[]",
            b'{"volume": {"size": 1}',
            b"\xff\xfe",
            b'{"volume": {"size": 1}}\x00',
            b'{"volume": {"size": NaN}}',
        ]
    ),
    oversized,
)

content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=UTF-8",
            "APPLICATION/JSON",
            "application/vnd.openstack.compute+json",
            "text/plain",
            "",
            "application/xml",
            "multipart/form-data; boundary=x",
            "application/json;",
            "*/*",
            "text/html",
        ]
    ),
    printable,
)
versions = st.one_of(
    st.integers(1, 40).map(lambda minor: f"2.{minor}"),
    st.sampled_from(
        ["2.0", "2.104", "2.105", "3.0", "1.1", "latest", "2.abc", "2", "2.01", "", " 2.1", "2.1.1"]
    ),
    printable,
)
microversion_headers = st.one_of(
    st.just({}),
    st.builds(lambda v: {"OpenStack-API-Version": f"compute {v}"}, versions),
    st.builds(lambda v: {"OpenStack-API-Version": f"volume {v}"}, versions),
    st.builds(lambda v: {"X-OpenStack-Nova-API-Version": v}, versions),
    st.builds(
        lambda a, b: {"OpenStack-API-Version": f"compute {a}", "X-OpenStack-Nova-API-Version": b},
        versions,
        versions,
    ),
    st.builds(lambda v: {"OpenStack-API-Version": v}, printable),
)
good_identity = st.just({"X-User-Id": "u-fuzz", "X-Project-Id": PROJECT, "X-Roles": "member"})
odd_identity = st.fixed_dictionaries(
    {},
    optional={
        "X-User-Id": st.one_of(st.just("u-fuzz"), printable),
        "X-Project-Id": st.one_of(st.just(PROJECT), printable),
        "X-Roles": st.one_of(
            st.sampled_from(
                ["member", "reader", "admin", "member,reader", "", "Member", "admin,reader"]
            ),
            printable,
        ),
    },
)
extra_headers = st.fixed_dictionaries(
    {},
    optional={
        "X-Service-Catalog": st.sampled_from(
            [
                "[]",
                "{not json",
                json.dumps(
                    [{"type": "volumev3", "endpoints": [{"publicURL": "http://127.0.0.1:1/v3/x"}]}]
                ),
            ]
        ),
        "X-OpenStack-Request-ID": st.one_of(st.uuids().map(lambda u: f"req-{u}"), printable),
        "Accept": st.sampled_from(
            ["application/json", "text/html", "*/*", "application/xml", "text/plain", ""]
        ),
    },
)


def weighted(
    draw: st.DrawFn, usual: st.SearchStrategy, unusual: st.SearchStrategy, unusual_share: int = 3
) -> Any:
    """Draw ``unusual`` about unusual_share times in ten, else ``usual``: most requests
    should get far enough to reach the schema, the policy and Cinder."""
    return draw(unusual if draw(st.integers(0, 9)) < unusual_share else usual)


paths = st.one_of(
    st.just("/v2.1/os-volumes"),
    st.just(f"/v2.1/{PROJECT}/os-volumes"),
    st.text("abcdef0123456789-", min_size=1, max_size=12).map(lambda p: f"/v2.1/{p}/os-volumes"),
    st.sampled_from(["/v2.1/os-volumes?foo=bar", "/v2.1/os-volumes?", "/v2.1//os-volumes"]),
)


sane_volumes = st.fixed_dictionaries(
    {"size": st.one_of(st.integers(1, 20), st.sampled_from(["1", "02", 1.0]))},
    optional={
        "display_name": any_text,
        "display_description": any_text,
        "volume_type": st.sampled_from(["__DEFAULT__", "lvmdriver-1", "no-such-type"]),
        "availability_zone": st.just("nova"),
        "metadata": st.dictionaries(
            st.text("abcXYZ09-_:. ", min_size=1, max_size=10), printable, max_size=3
        ),
        "snapshot_id": st.just("EXISTING"),
    },
)


@st.composite
def valid_bodies(draw: st.DrawFn) -> bytes:
    volume = weighted(draw, sane_volumes, volumes, 3)
    return json.dumps({"volume": volume}).encode()


usual_content_types = st.sampled_from(["application/json", "application/json; charset=UTF-8"])


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    headers = {"X-Auth-Token": TEST_TOKEN, **weighted(draw, good_identity, odd_identity, 2)}
    if draw(st.integers(0, 9)) < 2:
        headers.update(draw(extra_headers))
    headers.update(weighted(draw, st.just({}), microversion_headers, 3))
    content_type = weighted(draw, usual_content_types, content_types, 2)
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = weighted(draw, valid_bodies(), bodies, 3)
    path = weighted(draw, st.just("/v2.1/os-volumes"), paths, 2)
    return {"path": path, "body": body, "headers": headers}


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------


def send(url: str, request: dict[str, Any]) -> Any:
    client = NovaClient(url, timeout=30)
    try:
        # http.client adds no Content-Type of its own; ours is exactly what was drawn.
        return client.request(
            "POST", request["path"], body=request["body"], headers=request["headers"]
        )
    finally:
        client.close()


def check_nova_fault(response: Any) -> dict[str, Any]:
    """Nova's fault: ``{"<name>": {"code": N, "message": "..."}}``, JSON, charset UTF-8."""
    assert response.header("Content-Type") == "application/json; charset=UTF-8"
    body = response.json()
    name = FAULT_NAMES.get(response.status, "computeFault")
    assert list(body) == [name], body
    inner = body[name]
    allowed = {"code", "message"} | ({"retryAfter"} if response.status in (413, 429) else set())
    assert set(inner) >= {"code", "message"} and set(inner) <= allowed, body
    assert inner["code"] == response.status
    assert isinstance(inner["message"], str) and inner["message"]
    return inner


def _unparseable(request: dict[str, Any]) -> bool:
    """A body nova cannot even decode (not UTF-8, nested past the parser): FaultWrapper's 500."""
    body = request["body"]
    try:
        json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return True
    except RecursionError:
        return True
    except ValueError:
        return False
    return False


def check_answer(response: Any, request: dict[str, Any], server: Any) -> None:
    status = response.status
    text = response.body.decode("utf-8", errors="replace")
    assert "Traceback" not in text and 'File "' not in text, text
    attributes = server.attributes
    assert attributes["http.response.status_code"] == status
    failure_class = attributes["voltrace.failure_class"]
    assert failure_class != "internal_error" or _bad_catalog(request) or _unparseable(request), (
        status,
        text,
    )

    if status == 200:
        volume = response.json()["volume"]
        assert list(volume) == NOVA_VOLUME_KEYS
        assert attributes["voltrace.outcome"] == "success"
    elif status == 401:
        assert failure_class == "unauthenticated"
        assert not request["headers"].get("X-User-Id")  # missing or empty, as nova reads it
        assert "401" in text  # webob's own body, as Nova's NovaKeystoneContext answers
    elif status == 413 and failure_class == "request_too_large":
        assert len(request["body"]) > MAX_BODY
        assert "413" in text or "Entity Too Large" in text
    elif status == 404 and failure_class == "no_route":
        assert "404" in text  # nova's router answers an unknown path with webob's body
    elif status == 500 and _bad_catalog(request):
        assert "Invalid service catalog json" in text  # nova/api/auth.py, webob's body
    elif status == 500 and _unparseable(request):
        # Nova decodes the body outside the controller: FaultWrapper's generic 500.
        assert check_nova_fault(response)["message"].startswith("The server has either erred")
    else:
        inner = check_nova_fault(response)
        if status >= 500:
            assert status == 500, (status, text)
            assert failure_class in SPEC_500, (failure_class, text)
            assert inner["message"].startswith(
                "Unexpected API Error. Please contact the administrator\n<class '"
            )
    if len(request["body"]) > MAX_BODY:
        assert status == 413


def _bad_catalog(request: dict[str, Any]) -> bool:
    return request["headers"].get("X-Service-Catalog") == "{not json"


def check_trace(captured: Any, response: Any) -> Any:
    """The whole trace arrived: server span, and the pipeline's stages up to the last run."""
    request_id = response.header("x-openstack-request-id")
    assert request_id and request_id.startswith("req-")
    captured.complete_trace(request_id, timeout=15)
    server = captured.server_span(request_id)
    pipeline = [s for s in captured.children(server) if s.name == "create_volume"]
    if response.status in (200,) or response.header("OpenStack-API-Version"):
        # Anything the pipeline answered: one pipeline span, stages in order, the failed
        # stage (if any) is the last one.
        (pipeline_span,) = pipeline
        stages = [s.name for s in captured.children(pipeline_span)]
        assert stages == list(STAGES[: len(stages)])
        failed = server.attributes["voltrace.failed_stage"]
        assert (failed == "none" and stages == list(STAGES)) or stages[-1] == failed
    return server


def _fixed(path: str, body: bytes, **headers: str) -> dict[str, Any]:
    return {"path": path, "body": body, "headers": {"X-Auth-Token": TEST_TOKEN, **headers}}


MEMBER = {"X-User-Id": "u", "X-Project-Id": PROJECT, "X-Roles": "member"}


@given(request=requests())
@example(request=_fixed("/v2.1/os-volumes", b'{"volume": {"size": 1}}', **MEMBER))
@example(
    request=_fixed("/v2.1/os-volumes", b'{"volume": {"size": 1, "volume_type": "x"}}', **MEMBER)
)
@example(request=_fixed("/v2.1/os-volumes", b"x" * (MAX_BODY + 1), **MEMBER))
@example(request=_fixed("/v2.1/os-volumes", b"{}"))
@PROFILE
def test_any_request_gets_nova_answer_and_complete_trace(
    fuzz_url, fuzz_sim, fuzz_captured, request
):
    """Any method of calling os-volumes: Nova's answer, no traceback, complete trace."""
    body = request["body"]
    if b"EXISTING" in body:
        project = request["headers"].get("X-Project-Id", PROJECT)
        snapshot = fuzz_sim.add_snapshot(project or PROJECT)
        body = body.replace(b"EXISTING", snapshot["id"].encode())
        request = {**request, "body": body}
    captured = fuzz_captured
    with captured._changed:  # what earlier examples left behind only slows the lookups
        captured.spans.clear()
        captured.logs.clear()
    response = send(fuzz_url, request)
    server = check_trace(captured, response)
    check_answer(response, request, server)
    # --hypothesis-show-statistics shows how the examples spread over Nova's answers.
    event(f"{response.status} {server.attributes['voltrace.failure_class']}")


def test_fuzz_runs_the_promised_number_of_examples():
    """CI runs at least 2,000 examples; the profile says so."""
    if IN_CI:
        assert PROFILE.max_examples >= 2000
    assert PROFILE.deadline is None
