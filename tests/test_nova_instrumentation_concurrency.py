"""Concurrent creates on one instrumented real nova-api 34 give whole, unmixed traces.

24 creates from 8 client threads, released together, hit the session's instrumented nova
(its threaded host serves them at once). Each create has values no other has: its own size
(1..24) and, for two in three, one of three snapshots. For every answer, its trace must be
exactly voltrace serve's shape (SERVER, ``create_volume``, the six stages in order, the
CLIENT spans under resolve_snapshot and call_cinder) and every value in it must be that
request's own: its request id on the SERVER and ``create_volume`` spans and on each of its log
lines, its size on derive_size, its snapshot on resolve_snapshot and that CLIENT span's URL,
its volume id (from the answer) on SERVER, call_cinder, translate and the lazy GET. Each
request Cinder received carries a ``traceparent`` whose trace and parent are the matching
CLIENT span of the same create. The tests in test_nova_instrumentation.py cover the shape of
one create at a time; this file covers many at once.
"""

from __future__ import annotations

import itertools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.nova_instrumentation import (
    Server,
    allow_volumes,
    instrumented_real_nova_fixture,  # noqa: F401  (registers instrumented_real_nova)
    make_snapshot,
    request_id_of,
    server_span,
)
from voltrace import semconv
from voltrace.devtools.real_nova import Response
from voltrace.traces import Span, Trace

THREADS = 8
CREATES = 24
SNAPSHOTS = 3
NOVA = semconv.NOVA_API_SERVICE
SIZE_VALUE = semconv.decision_attribute("size.value")
SNAPSHOT_ID = semconv.decision_attribute("snapshot.id")


@dataclass(frozen=True)
class Create:
    size: int
    snapshot_id: str | None


@dataclass
class Answered:
    create: Create
    answer: Response
    request_id: str
    volume_id: str
    trace: Trace


@pytest.fixture(scope="module")
def answered(instrumented_real_nova: Server) -> list[Answered]:
    """The 24 creates, sent 3 per thread from 8 threads that start together."""
    server = instrumented_real_nova
    server.sim.reset()
    allow_volumes(server.sim, 100)
    snapshots = [make_snapshot(server.sim) for _ in range(SNAPSHOTS)]
    creates = [
        Create(size, None if size % 3 == 0 else snapshots[size % SNAPSHOTS])
        for size in range(1, CREATES + 1)
    ]
    start = threading.Barrier(THREADS)

    def thread(index: int) -> list[tuple[Create, Response]]:
        start.wait(timeout=60)
        mine = creates[index::THREADS]
        out = []
        for create in mine:
            volume: dict[str, Any] = {"size": create.size}
            if create.snapshot_id:
                volume["snapshot_id"] = create.snapshot_id
            out.append((create, server.create(volume)))
        return out

    with ThreadPoolExecutor(THREADS) as pool:
        results = [pair for batch in pool.map(thread, range(THREADS)) for pair in batch]
    answered = []
    for create, answer in results:
        assert answer.status == 200, answer.body
        request_id = request_id_of(answer)
        volume_id = json.loads(answer.body)["volume"]["id"]
        answered.append(
            Answered(create, answer, request_id, volume_id, server.trace_of(request_id))
        )
    return answered


def path(span: Span) -> str:
    return urlsplit(str(span.attr("url.full", ""))).path


def shape(trace: Trace) -> list[Any]:
    """(name, kind, children...) from the SERVER span down, nova-api's spans only."""
    root = server_span(trace)
    assert root is not None

    def walk(span: Span) -> list[Any]:
        children = [c for c in trace.children(span) if c.service == NOVA]
        name = (
            f"{span.attr('http.request.method')} {path(span)}"
            if span.kind == "client"
            else span.name
        )
        return [name, span.kind, [walk(c) for c in children]]

    return walk(root)


def expected_shape(a: Answered) -> list[Any]:
    project = "abc123"
    resolve: list[Any] = []
    if a.create.snapshot_id:
        snapshot_get = f"GET /v3/{project}/snapshots/{a.create.snapshot_id}"
        resolve = [[snapshot_get, "client", []]]
    calls = [
        [f"POST /v3/{project}/volumes", "client", []],
        [f"GET /v3/{project}/volumes/{a.volume_id}", "client", []],
    ]
    children = {"resolve_snapshot": resolve, "call_cinder": calls}
    stages = [[name, "internal", children.get(name, [])] for name in semconv.STAGE_NAMES]
    pipeline = [semconv.PIPELINE_SPAN, "internal", stages]
    return [f"POST {semconv.CREATE_ROUTE}", "server", [pipeline]]


def test_every_concurrent_create_has_its_own_whole_trace(answered: list[Answered]) -> None:
    """24 different traces, each one SERVER, create_volume, six stages, the right CLIENTs."""
    assert len(answered) == CREATES
    assert len({a.trace.trace_id for a in answered}) == CREATES
    assert len({a.request_id for a in answered}) == CREATES
    for a in answered:
        assert shape(a.trace) == expected_shape(a), a.request_id
        assert [s.status for s in a.trace.spans if s.status == "error"] == []
    # Not a sequence of single creates: nova served some of them at the same time (8
    # threads released together; a nova that serialised them would make this test moot).
    servers = sorted(
        (s.start_ns, s.end_ns) for a in answered if (s := server_span(a.trace)) is not None
    )
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(servers))


def test_every_value_in_a_trace_is_its_own_requests(answered: list[Answered]) -> None:
    """Request id, size, snapshot and volume id, on the spans that carry them."""
    for a in answered:
        spans = {s.name: s for s in a.trace.spans if s.kind != "client"}
        server = server_span(a.trace)
        assert server is not None
        assert server.attr(semconv.REQUEST_ID) == a.request_id
        assert spans[semconv.PIPELINE_SPAN].attr(semconv.REQUEST_ID) == a.request_id
        assert spans["derive_size"].attr(SIZE_VALUE) == str(a.create.size)
        resolve = spans["resolve_snapshot"]
        assert resolve.attr(SNAPSHOT_ID) == a.create.snapshot_id
        assert resolve.attr(semconv.STAGE_SKIPPED) is (a.create.snapshot_id is None)
        for name in ("call_cinder", "translate"):
            assert spans[name].attr(semconv.VOLUME_ID) == a.volume_id, name
        assert server.attr(semconv.VOLUME_ID) == a.volume_id
        assert server.attr(semconv.CINDER_REQUEST_ID) == spans["call_cinder"].attr(
            semconv.CINDER_REQUEST_ID
        )
        assert json.loads(a.answer.body)["volume"]["size"] == a.create.size


def test_each_cinder_request_names_the_client_span_of_its_own_create(
    answered: list[Answered], instrumented_real_nova: Server
) -> None:
    """traceparent on every request Cinder got: the trace of the create it belongs to, and
    the CLIENT span that made it (same method and path)."""
    clients = {
        (s.trace_id, s.span_id): s for a in answered for s in a.trace.spans if s.kind == "client"
    }
    received = instrumented_real_nova.sim.requests()
    assert len(received) == len(clients)
    matched = set()
    for request in received:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        _, trace_id, parent_id, _ = headers["traceparent"].split("-")
        span = clients[(trace_id, parent_id)]
        assert (span.attr("http.request.method"), path(span)) == (
            request["method"],
            urlsplit(request["path"]).path,
        )
        matched.add((trace_id, parent_id))
    assert matched == set(clients)


def test_each_requests_log_lines_are_its_own(
    answered: list[Answered], instrumented_real_nova: Server
) -> None:
    """Six stage.<name> lines and one request.finished per create, with its request id and
    its volume id; no line of one create names another create's volume."""
    by_request: dict[str, list[dict[str, Any]]] = {}
    for line in instrumented_real_nova.logs():
        by_request.setdefault(str(line.get("request_id")), []).append(line)
    for a in answered:
        lines = by_request[a.request_id]
        events = [line["event"] for line in lines]
        assert sorted(events) == sorted(
            [semconv.stage_event(s) for s in semconv.STAGE_NAMES] + [semconv.REQUEST_FINISHED]
        )
        finished = next(line for line in lines if line["event"] == semconv.REQUEST_FINISHED)
        assert finished["volume_id"] == a.volume_id
        assert {line.get("volume_id") for line in lines} <= {a.volume_id, None}
