"""Real nova 34 answers byte for byte the same with voltrace's instrumentation as without it.

A seeded generator makes ~200 requests to nova-api: creates with varied bodies (sizes of
every kind, names and descriptions up to and past their limits, metadata of many sizes,
volume types, zones, existing / missing / malformed snapshot ids, unknown keys, malformed,
empty and oversized bodies), Content-Types, microversions (both headers), roles, URL
projects, Cinder faults injected into the simulator (statuses, resets, garbage, latency),
and other routes (version documents, volume show and list, unknown paths).

Each request goes to plain nova (the ``real_nova`` fixture) and then to instrumented nova
(``instrumented_real_nova``), each in front of its own deterministic simulator reset before
the request, so volume, snapshot and Cinder request ids agree. Compared: status, reason,
every response header in order and the body bytes, and every request nova made to Cinder
(method, path, body, every header). Left out by design: Date and nova's random request ids
(``x-openstack-request-id``, ``x-compute-request-id`` and the ``X-OpenStack-Request-ID``
nova sends Cinder), and each side's own ports (both are 5-digit ephemeral ports, so lengths
agree). The one difference allowed is the ``traceparent`` the instrumentation adds to
nova's Cinder requests.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import string
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.nova_instrumentation import (
    HEADERS,
    PROJECT,
    Server,
    instrumented_real_nova_fixture,  # noqa: F401  (registers instrumented_real_nova)
    make_snapshot,
    server_span,
)
from tests.support.real_nova import RealNovaService, SimAdmin
from tests.support.real_nova import real_nova as real_nova  # registers the fixture

SEED = 11
COUNT = 200
SNAPSHOT = "{snapshot}"  # stands for the case's (deterministic) snapshot id
MISSING_SNAPSHOT = "8c2a3ab9-0bd0-4d7b-9f5e-3a1c05f1e0aa"
# A volume no simulator has: nova's show answers 404 after asking Cinder.
UNKNOWN_VOLUME = "00000000-0000-0000-0000-000000000000"
# nova's random per-request ids, and the date: never equal between two requests.
UNCOMPARED_ANSWER_HEADERS = {"date", "x-openstack-request-id", "x-compute-request-id"}
UNCOMPARED_CINDER_HEADERS = {"x-openstack-request-id"}
ADDED_CINDER_HEADER = "traceparent"


@dataclass(frozen=True)
class Case:
    """One request to nova-api and the Cinder faults it meets."""

    index: int
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    faults: tuple[str, ...] = ()
    snapshot: bool = False  # a snapshot exists in the simulator; SNAPSHOT in body is its id
    notes: tuple[str, ...] = field(default=(), compare=False)

    def render(self, snapshot_id: str | None) -> tuple[str, str, bytes | None, dict[str, str]]:
        body = self.body
        if body is not None and snapshot_id is not None:
            body = body.replace(SNAPSHOT.encode(), snapshot_id.encode())
        return self.method, self.path, body, dict(self.headers)


# ---------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------


def text(rng: random.Random, length: int) -> str:
    alphabet = string.ascii_letters + string.digits + " -_.:/é✓"
    return "".join(rng.choice(alphabet) for _ in range(length))


def volume(rng: random.Random, notes: list[str]) -> tuple[dict[str, Any], bool]:
    """A create body's ``volume``, valid, then with one thing broken in about a third of
    them; True if it names the existing snapshot."""
    body: dict[str, Any] = {"size": rng.choice([1, 1, 1, 2, 5, 10, 100, "3"])}
    if rng.random() < 0.4:
        body["display_name"] = text(rng, rng.choice([0, 1, 12, 255]))
    if rng.random() < 0.3:
        body["display_description"] = text(rng, rng.choice([0, 40, 255]))
    if rng.random() < 0.35:
        body["metadata"] = {
            text(rng, rng.choice([1, 8, 255])): text(rng, rng.choice([0, 8, 255]))
            for _ in range(rng.choice([0, 1, 3, 20]))
        }
    if rng.random() < 0.1:
        body["availability_zone"] = "nova"
    snapshot = rng.random() < 0.15
    if snapshot:
        body["snapshot_id"] = SNAPSHOT
        notes.append("snapshot")
    if rng.random() < 0.35:
        broken = rng.choice(
            [
                "size",
                "size",
                "no-size",
                "name",
                "description",
                "metadata-key",
                "metadata-value",
                "metadata-empty-key",
                "volume-type",
                "zone",
                "unknown-key",
                "snapshot",
            ]
        )
        notes.append(f"broken:{broken}")
        if broken == "size":
            body["size"] = rng.choice([0, -1, "abc", 1.5, None, 10**9])
        elif broken == "no-size":
            del body["size"]
        elif broken == "name":
            body["display_name"] = text(rng, 256)
        elif broken == "description":
            body["display_description"] = text(rng, rng.choice([256, 3000]))
        elif broken.startswith("metadata"):
            key = {"metadata-key": text(rng, 256), "metadata-empty-key": ""}.get(broken, "k")
            value = text(rng, 256) if broken == "metadata-value" else "v"
            body["metadata"] = {key: value}
        elif broken == "volume-type":
            body["volume_type"] = rng.choice(["gold", None, ""])
        elif broken == "zone":
            body["availability_zone"] = rng.choice(["az-2", None])
        elif broken == "unknown-key":
            body[rng.choice(["foo", "imageRef", "source_volid"])] = "x"
        else:
            snapshot = False
            body["snapshot_id"] = rng.choice([MISSING_SNAPSHOT, "not-a-uuid", None])
    return body, snapshot


def create_headers(rng: random.Random, notes: list[str]) -> dict[str, str]:
    headers = dict(HEADERS)
    roll = rng.random()
    if roll < 0.08:
        headers["X-Roles"] = rng.choice(["reader", "admin", ""])
    elif roll < 0.11:
        del headers["X-User-Id"]
    if rng.random() < 0.25:
        version = rng.choice(["2.1", "2.10", "2.35", "2.36", "2.x", "3.0", "latest", " 2.1 "])
        if rng.random() < 0.8:
            headers["OpenStack-API-Version"] = f"compute {version}"
        else:
            headers["X-OpenStack-Nova-API-Version"] = version
        notes.append(f"microversion:{version}")
    if rng.random() < 0.12:
        content_type = rng.choice(
            ["application/json; charset=UTF-8", "text/plain", "text/xml", "application/xml", ""]
        )
        if content_type:
            headers["Content-Type"] = content_type
        else:
            del headers["Content-Type"]
        notes.append(f"content-type:{content_type or 'none'}")
    return headers


FAULTS = (
    "volumes.create:status=400",
    "volumes.create:status=403",
    "volumes.create:status=404",
    "volumes.create:status=413",
    "volumes.create:status=500",
    "volumes.create:status=503",
    "volumes.create:action=reset",
    "volumes.create:action=garbage",
    "volumes.create:action=truncated",
    "volumes.create:latency_ms=30",
    "volumes.get:status=404",
    "volumes.get:status=500",
    "snapshots.get:status=403",
    "snapshots.get:status=500",
)


def other_route(rng: random.Random) -> tuple[str, str, bytes | None]:
    return rng.choice(
        [
            ("GET", "/", None),
            ("GET", "/v2.1", None),
            ("GET", "/v2.1/", None),
            ("GET", "/v2.1/os-volumes", None),
            ("GET", "/v2.1/os-volumes/detail", None),
            ("GET", f"/v2.1/os-volumes/{UNKNOWN_VOLUME}", None),
            ("GET", "/v2.1/no-such-api", None),
            ("PUT", "/v2.1/os-volumes", b"{}"),
            ("DELETE", "/v2.1/os-volumes", None),
        ]
    )


def generate(seed: int = SEED, count: int = COUNT) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        notes: list[str] = []
        headers = create_headers(rng, notes)
        method, path, faults, snapshot = "POST", "/v2.1/os-volumes", (), False
        body: bytes | None
        roll = rng.random()
        if roll < 0.08:
            method, path, body = other_route(rng)
            notes.append("other-route")
        elif roll < 0.16:
            body = rng.choice(
                [
                    b'{"volume": {"size": 1',
                    b"",
                    b"[]",
                    b'{"volume": []}',
                    b'{"volume": null}',
                    b"not json",
                    json.dumps(
                        {"volume": {"size": 1, "display_description": "x" * 120000}}
                    ).encode(),
                ]
            )
            notes.append("raw-body")
        else:
            content, snapshot = volume(rng, notes)
            body = json.dumps({"volume": content}).encode()
            if rng.random() < 0.3:
                faults = (rng.choice(FAULTS),)
                notes.append(f"fault:{faults[0]}")
        path_roll = rng.random()
        if method == "POST" and path_roll < 0.12:
            path = rng.choice(
                [
                    f"/v2.1/{PROJECT}/os-volumes",
                    "/v2.1/def456/os-volumes",
                    f"/v2/{PROJECT}/os-volumes",
                ]
            )
            notes.append(f"path:{path}")
        cases.append(
            Case(
                index,
                method,
                path,
                tuple(headers.items()),
                body,
                faults,
                snapshot,
                tuple(notes),
            )
        )
    return cases


CASES = generate()


# ---------------------------------------------------------------------------
# Sending and normalising
# ---------------------------------------------------------------------------


@dataclass
class Exchange:
    """What one nova-api did with one case: its answer and its Cinder requests."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    cinder: list[dict[str, Any]]
    request_id: str | None
    traceparents: int  # Cinder requests that carried one (before it was taken out)


def unported(value: str, ports: dict[int, str]) -> str:
    for port, name in ports.items():
        value = value.replace(f"127.0.0.1:{port}", f"127.0.0.1:{name}")
    return value


def send(url_port: int, sim: SimAdmin, case: Case) -> Exchange:
    sim.reset()
    snapshot_id = make_snapshot(sim, PROJECT) if case.snapshot else None
    for spec in case.faults:
        sim.inject({"spec": spec})
    method, path, body, headers = case.render(snapshot_id)
    conn = http.client.HTTPConnection("127.0.0.1", url_port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        raw = conn.getresponse()
        status, reason, answer_headers, answer = (
            raw.status,
            raw.reason,
            raw.getheaders(),
            raw.read(),
        )
    finally:
        conn.close()
    ports = {url_port: "NOVA", sim.port: "CINDER"}
    request_id = next((v for k, v in answer_headers if k.lower() == "x-openstack-request-id"), None)
    cinder = []
    traceparents = 0
    for recorded in sim.requests():
        kept = []
        for name, value in recorded["headers"].items():
            if name.lower() == ADDED_CINDER_HEADER:
                traceparents += 1
            elif name.lower() not in UNCOMPARED_CINDER_HEADERS:
                kept.append((name, unported(value, ports)))
        cinder.append(
            {
                "method": recorded["method"],
                "path": recorded["path"],
                "headers": kept,
                "body": unported(recorded["body"], ports),
            }
        )
    compared_headers = [
        (k, unported(v, ports))
        for k, v in answer_headers
        if k.lower() not in UNCOMPARED_ANSWER_HEADERS
    ]
    body_bytes = answer
    for port, name in ports.items():
        body_bytes = body_bytes.replace(f"127.0.0.1:{port}".encode(), f"127.0.0.1:{name}".encode())
    return Exchange(status, reason, compared_headers, body_bytes, cinder, request_id, traceparents)


@pytest.fixture(scope="module")
def exchanges(
    real_nova: RealNovaService, instrumented_real_nova: Server
) -> list[tuple[Case, Exchange, Exchange]]:
    """Every case, to plain nova then to instrumented nova."""
    instrumented_port = int(instrumented_real_nova.url.rsplit(":", 1)[1])
    return [
        (
            case,
            send(real_nova.nova.port, real_nova.sim, case),
            send(instrumented_port, instrumented_real_nova.sim, case),
        )
        for case in CASES
    ]


def differences(plain: Exchange, instrumented: Exchange) -> Iterator[str]:
    for what in ("status", "reason", "headers", "body", "cinder"):
        mine, theirs = getattr(plain, what), getattr(instrumented, what)
        if mine != theirs:
            yield f"{what}:\n    plain:        {mine!r:.600}\n    instrumented: {theirs!r:.600}"


def test_nova_answers_and_calls_cinder_identically_with_and_without_instrumentation(
    exchanges: list[tuple[Case, Exchange, Exchange]],
) -> None:
    """Status, reason, headers in order, body bytes, every Cinder request: all equal."""
    found = [
        f"case {case.index} {case.method} {case.path} {list(case.notes)}: {difference}"
        for case, plain, instrumented in exchanges
        for difference in differences(plain, instrumented)
    ]
    assert found == [], f"{len(found)} differences, first ones:\n" + "\n".join(found[:5])


def test_the_only_added_header_is_traceparent_on_every_cinder_request(
    exchanges: list[tuple[Case, Exchange, Exchange]],
) -> None:
    """Plain nova sends Cinder no traceparent; instrumented nova sends one on each request."""
    plain_total = sum(p.traceparents for _, p, _ in exchanges)
    cinder_requests = [(len(i.cinder), i.traceparents) for _, _, i in exchanges]
    assert plain_total == 0
    assert all(count == sent for count, sent in cinder_requests)
    assert sum(count for count, _ in cinder_requests) > 150


def test_the_generated_set_reaches_every_kind_of_answer(
    exchanges: list[tuple[Case, Exchange, Exchange]],
) -> None:
    """Not a vacuous comparison: successes, client and server errors of many kinds,
    Cinder reached with and without a snapshot lookup."""
    statuses = Counter(p.status for _, p, _ in exchanges)
    assert {200, 400, 401, 403, 404, 406, 413, 415, 500} <= set(statuses), statuses
    assert statuses[200] >= 40
    paths = [r["path"] for _, p, _ in exchanges for r in p.cinder]
    assert any("/snapshots/" in path for path in paths)
    assert sum(path.endswith("/volumes") for path in paths) >= 50


def test_the_instrumentation_traced_every_create_and_swallowed_nothing(
    exchanges: list[tuple[Case, Exchange, Exchange]], instrumented_real_nova: Server
) -> None:
    """The instrumented side really was instrumented: each answered create has its trace;
    nova's output has no "telemetry observer failed" line (no bookkeeping error caught)."""
    creates = [
        i.request_id
        for case, _, i in exchanges
        if case.method == "POST" and "os-volumes" in case.path and i.request_id
    ]
    last = instrumented_real_nova.trace_of(creates[-1])  # the exporter is synchronous
    assert server_span(last) is not None
    traced = {
        span.attr("openstack.request_id")
        for trace in instrumented_real_nova.traces()
        for span in trace.spans
        if span.kind == "server"
    }
    assert set(creates) <= traced
    nova = instrumented_real_nova.nova
    output = nova.output_path.read_text(errors="replace")
    log = nova.log_path.read_text(errors="replace") if nova.log_path.exists() else ""
    assert not re.search("telemetry observer failed", output + log)
