"""voltrace against real nova-api 34 on generated requests: the same answer, the same Cinder calls.

hypothesis generates whole HTTP requests (method, raw request target, header lines in order,
duplicates included, raw body bytes) plus a script for Cinder (faults, a snapshot to use).
Each goes to real nova 34 (tests/support/real_nova.py's ``running_real_nova``, nova's own
paste pipeline) and to voltrace (the in-process server of tests/conftest.py, telemetry on;
``VOLTRACE_DIFFERENTIAL_SERVE=1``: ``voltrace serve`` on gunicorn); each side has its own
in-process deterministic simulator, reset before every example (the same snapshot ids).
Compared: status, body bytes, the headers that matter (``COMPARED_HEADERS``; request ids by
consistency, not value) and every request that reached Cinder (method, path with query,
body, ``CINDER_HEADERS``).

Requests out of scope (docs/nova-differences.md) are never generated; test_out_of_scope.py
pins voltrace's answer to them. Examples: 2,000 (profile ``differential``), 20,000 under
``-m slow`` (``differential-slow``); ``VOLTRACE_DIFFERENTIAL_EXAMPLES`` overrides, and
``VOLTRACE_DIFFERENTIAL_SEED`` picks the seed. A difference fails with a curl reproducer.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.support.real_cinder import VoltraceServe
from tests.support.real_nova import SimAdmin, running_real_nova
from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator, Fault
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry

settings.register_profile(
    "differential",
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
settings.register_profile(
    "differential-slow",
    max_examples=20000,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _profile(name: str) -> settings:
    profile = settings.get_profile(name)
    if os.environ.get("VOLTRACE_DIFFERENTIAL_EXAMPLES"):
        profile = settings(profile, max_examples=int(os.environ["VOLTRACE_DIFFERENTIAL_EXAMPLES"]))
    return profile


SEED = int(os.environ.get("VOLTRACE_DIFFERENTIAL_SEED", "0")) or None
HOST = "nova.test:8774"  # both sides see the same Host, so Location and hrefs compare as-is
PROJECT = "abc123"
USER = "u-diff"
MAX_BODY = 114688

# Response headers compared by value, in order per name (everything else is either
# per-process noise or per-server framing: Date, Server, Connection, Content-Length...).
COMPARED_HEADERS = (
    "content-type",
    "location",
    "openstack-api-version",
    "x-openstack-nova-api-version",
    "vary",
    "retry-after",
    "allow",
    "www-authenticate",
    "access-control-allow-origin",
)
REQUEST_ID_HEADERS = ("x-openstack-request-id", "x-compute-request-id")
CINDER_HEADERS = (
    "x-auth-token",
    "x-openstack-request-id",
    "content-type",
    "accept",
    "openstack-api-version",
    "x-service-token",
)
REQUEST_ID = re.compile(r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# ---------------------------------------------------------------------------
# One generated exchange
# ---------------------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    target: str
    headers: list[tuple[str, bytes]]
    body: bytes
    faults: list[dict[str, Any]] = field(default_factory=list)
    snapshot_project: str | None = None  # make a snapshot there first (id: SNAPSHOT_ID)

    def curl(self, base: str = "http://127.0.0.1:8774") -> str:
        parts = ["curl", "-si", "--path-as-is", "-X", self.method, f"{base}{self.target}"]
        for name, value in self.headers:
            parts += ["-H", f"{name}: {value.decode('latin-1')}"]
        if self.body:
            parts += ["--data-binary", repr(self.body)[2:-1]]
        lines = [shlex.join(parts)]
        if self.snapshot_project:
            lines.insert(0, f"# first: a snapshot in project {self.snapshot_project}")
        for fault in self.faults:
            lines.insert(0, f"# cinder-sim fault: {json.dumps(fault)}")
        return "\n".join(lines)


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    cinder: list[dict[str, Any]]

    def view(self) -> dict[str, Any]:
        own = [v for n, v in self.headers if n.lower() in REQUEST_ID_HEADERS]
        # Order matters within one name (Vary twice), not across names.
        compared = sorted(
            ((n.lower(), v) for n, v in self.headers if n.lower() in COMPARED_HEADERS),
            key=lambda header: header[0],
        )
        return {
            "status": self.status,
            "headers": compared,
            "request_ids": _request_id_shape(own),
            "body": self.body,
            "cinder": [_cinder_view(call, own[0] if own else None) for call in self.cinder],
        }


def _request_id_shape(values: list[str]) -> str:
    """Both request-id headers present, equal and req-<uuid>; or both absent."""
    if not values:
        return "absent"
    if len(values) == 2 and values[0] == values[1] and REQUEST_ID.fullmatch(values[0]):
        return "req-<uuid>, twice, equal"
    return f"inconsistent: {values}"


def _cinder_view(call: dict[str, Any], own_request_id: str | None) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in call["headers"].items()}
    kept = {name: headers.get(name) for name in CINDER_HEADERS}
    if own_request_id and kept["x-openstack-request-id"] == own_request_id:
        kept["x-openstack-request-id"] = "<nova's own request id>"
    body: Any = call["body"]
    with contextlib.suppress(ValueError):
        body = json.loads(body) if body else None
    return {"method": call["method"], "path": call["path"], "headers": kept, "body": body}


def send(port: int, exchange: Exchange, timeout: float = 60.0) -> tuple[int, list, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(exchange.method, exchange.target, skip_host=True, skip_accept_encoding=True)
        for name, value in exchange.headers:
            conn.putheader(name, value)
        conn.endheaders(exchange.body or None)
        raw = conn.getresponse()
        return raw.status, raw.getheaders(), raw.read()
    finally:
        conn.close()


class Side:
    """One server under test and the in-process simulator only it talks to."""

    def __init__(self, name: str, port: int, sim: CinderSimulator) -> None:
        self.name, self.port, self.sim = name, port, sim

    def prepare(self, exchange: Exchange) -> None:
        self.sim.reset()
        if exchange.snapshot_project:
            # Deterministic ids: both simulators make the same snapshot id.
            SNAPSHOT_ID[exchange.snapshot_project] = self.sim.add_snapshot(
                exchange.snapshot_project
            )["id"]
        for fault in exchange.faults:
            self.sim.inject(Fault.from_dict(fault))

    def run(self, exchange: Exchange) -> Answer:
        status, headers, body = send(self.port, exchange)
        return Answer(status, headers, body, [r.to_dict() for r in self.sim.recorded_requests()])


SNAPSHOT_ID: dict[str, str] = {}


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

# Size values as raw JSON text: the schema's edge cases, ±inf and NaN spelt the ways
# Python's json accepts, and values jsonschema or int() treat surprisingly.
SIZES = [
    "1",
    "2",
    '"1"',
    '"01"',
    "0",
    "-5",
    "1.0",
    "1.5",
    "true",
    "false",
    "null",
    '"#$%"',
    '""',
    "1e400",
    "-1e400",
    "Infinity",
    "-Infinity",
    "NaN",
    "1" + "0" * 30,
    '"\\ud800"',
    '" 1"',
    "[1]",
    "{}",
    '"\\u0663"',
    '"1e3"',
    '"0"',
    '"-1"',
    "1E2",
    "-0",
    '"1.5"',
]
STRINGS = [
    '"x"',
    '""',
    '"nova"',
    '"lvmdriver-1"',
    '"__DEFAULT__"',
    '"no-such-type"',
    '"\\u0000"',
    '"\\ud83d"',
    '"\\u00e9t\\u00e9"',
    '"caf\u00e9"',
    "1",
    "null",
    "true",
    "[]",
    "{}",
    '"' + "n" * 300 + '"',
    '"a\\nb"',
]
METADATA = [
    "{}",
    '{"a": "b"}',
    '{"a": 1}',
    '{"k": null}',
    "1",
    '"x"',
    "null",
    "[]",
    '{"": ""}',
    '{"a": {"b": [1, 2]}}',
]
FIELDS = [
    "volume_type",
    "metadata",
    "snapshot_id",
    "availability_zone",
    "display_name",
    "display_description",
]


def _nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@st.composite
def volume_object(draw: st.DrawFn) -> str:
    """The ``volume`` object as JSON text, keys in any order, any of them wrong."""
    pairs: list[tuple[str, str]] = []
    if draw(st.integers(0, 9)) > 0:
        pairs.append(("size", draw(st.sampled_from(SIZES))))
    for name in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=4)):
        if name == "metadata":
            value = draw(st.sampled_from(METADATA))
        elif name == "snapshot_id":
            value = draw(st.sampled_from(['"SNAP"', '"no-such-snapshot"', "1", '""']))
        else:
            value = draw(st.sampled_from(STRINGS))
        pairs.append((name, value))
    if draw(st.integers(0, 7)) == 0:
        pairs.append(
            (
                draw(st.sampled_from(["foo", "imageRef", "Size", "name"])),
                draw(st.sampled_from(["1", '"x"', "null"])),
            )
        )
    order = draw(st.permutations(pairs))
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in order) + "}"


@st.composite
def json_body(draw: st.DrawFn) -> str:
    volume = draw(volume_object())
    shape = draw(st.integers(0, 19))
    if shape < 14:
        return f'{{"volume": {volume}}}'
    return draw(
        st.sampled_from(
            [
                f'{{"volume": {volume}, "extra": 1}}',
                "{}",
                "[]",
                "null",
                '"x"',
                '{"volume": null}',
                '{"volume": []}',
                f'{{"volumes": {volume}}}',
                f"[{volume}]",
                '{"volume": 1}',
                f'{{"extra": 1, "volume": {volume}}}',
            ]
        )
    )


@st.composite
def raw_body(draw: st.DrawFn) -> bytes:
    """Bodies that are not plain JSON: malformed, not UTF-8, nested deep, huge."""
    kind = draw(
        st.sampled_from(["malformed", "bytes", "deep", "deep_metadata", "huge", "bom", "latin1"])
    )
    if kind == "malformed":
        return draw(
            st.sampled_from(
                [
                    b"{",
                    b"not json",
                    b'{"volume": {"size": 1}',
                    b"{'a': 1}",
                    b'{"volume": {"size": 1}} trailing',
                    b"\x00",
                    b" ",
                    b'{"volume": {"size": 1,}}',
                ]
            )
        )
    if kind == "bytes":
        bad = draw(
            st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80", b"\x80abc"])
        )
        return b'{"volume": {"size": 1, "display_name": "' + bad + b'"}}'
    if kind == "latin1":
        return '{"volume": {"size": 1, "display_name": "caf\u00e9"}}'.encode("latin-1")
    if kind == "bom":
        return b'\xef\xbb\xbf{"volume": {"size": 1}}'
    # Between 600 and 19,999 levels, whether json.loads (or a later repr) hits Python's
    # recursion limit depends on each process's stack depth: out of scope (docs).
    depth = draw(st.sampled_from([2, 20, 100, 300, 500, 20000, 40000]))
    if kind == "deep":
        return _nested(depth).encode()
    if kind == "deep_metadata":
        return f'{{"volume": {{"size": 1, "metadata": {{"a": {_nested(depth)}}}}}}}'.encode()
    length = draw(
        st.sampled_from([MAX_BODY - 40, MAX_BODY - 29, MAX_BODY - 28, MAX_BODY + 1, 200_000])
    )
    filler = "n" * max(length - 40, 1)
    return f'{{"volume": {{"size": 1, "display_name": "{filler}"}}}}'.encode()


CONTENT_TYPES = [
    b"application/json",
    b"application/json",
    b"application/json; charset=utf-8",
    b"application/json ; charset=utf-8",
    b"application/json;charset=UTF-8",
    b"text/plain",
    b"",
    b"application/xml",
    b"application/vnd.openstack.compute+json",
    b"APPLICATION/JSON",
    b"application/json;version=2.1",
    b"text/html",
    b"application/x-www-form-urlencoded",
    b" application/json",
    b"application/json;",
    b"multipart/form-data",
]
ACCEPTS = [
    b"application/json",
    b"*/*",
    b"text/html",
    b"application/xml",
    b"application/vnd.openstack.compute+json",
    b"text/plain",
    b"application/json;q=0.5, application/vnd.openstack.compute+json",
    b"application/json;version=2.1",
    b"text/html;q=0.1, application/json",
]
VERSIONS = [
    b"compute 2.1",
    b"compute 2.35",
    b"compute 2.36",
    b"compute latest",
    b"compute 3.0",
    b"compute 2.abc",
    b"volume 3.0",
    b"compute 2.1, volume 3.0",
    b"compute 2.0",
    b"compute 1.1",
    b"compute  2.5",
    b"COMPUTE 2.5",
    b"compute 2.104",
    b"compute 2.105",
    b"compute 02.1",
    b"",
    b"compute 2.1 ",
    b"compute\t2.1",
    b"compute 2.10",
    b"compute 2.01",
]
LEGACY_VERSIONS = [b"2.1", b"2.35", b"2.36", b"latest", b"3.0", b"abc", b""]
ROLES = [
    b"member",
    b" admin ",
    b"MEMBER",
    b"member,,",
    b"\xfcser",
    b"member,reader",
    b"reader",
    b"admin",
    b"",
    b"Member",
    b"member, reader",
    b"admin,member",
]
PROJECT_IDS = [
    PROJECT.encode(),
    PROJECT.encode(),
    b"",
    b"ABC123",
    b"p-member",
    b"abc-123",
    b"0",
    b"ab12" * 8,
]
USER_IDS = [USER.encode(), USER.encode(), b"", b"u 2", b"\xfc", b"0"]
REQUEST_IDS = [
    b"req-1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    b"req-nope",
    b"",
    b"REQ-1B4E28BA-2FA1-11D2-883F-0016D3CCA427",
]
CATALOGS = [
    b"[]",
    b"not json",
    b"{}",
    b"[1]",
    b'"x"',
    b"1",
    b"null",
    b'{"a": 1}',
    b'[{"type": "volumev3"}]',
    json.dumps(
        [
            {
                "type": "volumev3",
                "name": "cinderv3",
                "endpoints": [{"publicURL": "http://127.0.0.1:9/v3/abc123", "region": "RegionOne"}],
            }
        ]
    ).encode(),
]


@st.composite
def header_lines(draw: st.DrawFn, body: bytes) -> list[tuple[str, bytes]]:
    lines: list[tuple[str, bytes]] = [("Host", HOST.encode())]

    def maybe(name: str, values: list[bytes], present: int = 1, out_of: int = 2) -> None:
        if draw(st.integers(1, out_of)) <= present:
            lines.append((name, draw(st.sampled_from(values))))

    maybe("X-User-Id", USER_IDS, 19, 20)
    maybe("X-Project-Id", PROJECT_IDS, 19, 20)
    maybe("X-Roles", ROLES, 19, 20)
    maybe("X-Auth-Token", [b"tok-diff", b""], 19, 20)
    if draw(st.integers(0, 9)) == 0:
        lines.append(("X-User", USER.encode()))
    if draw(st.integers(0, 9)) == 0:
        lines.append(("X-Tenant-Id", PROJECT.encode()))
    maybe("X-Service-Catalog", CATALOGS, 1, 12)
    maybe("X-OpenStack-Request-ID", REQUEST_IDS, 1, 5)
    maybe("Content-Type", CONTENT_TYPES, 9, 10)
    if draw(st.integers(0, 11)) == 0:
        lines.append(("Content-Type", draw(st.sampled_from(CONTENT_TYPES))))  # a duplicate
    maybe("Accept", ACCEPTS, 1, 3)
    maybe("OpenStack-API-Version", VERSIONS, 1, 3)
    maybe("X-OpenStack-Nova-API-Version", LEGACY_VERSIONS, 1, 6)
    maybe("X-Forwarded-Proto", [b"https", b"http", b"ftp"], 1, 8)
    maybe("X-Forwarded-Host", [b"proxy.test"], 1, 15)
    maybe("Forwarded", [b"proto=https;host=fwd.test"], 1, 15)
    maybe("Origin", [b"http://evil.test"], 1, 15)
    if body or draw(st.booleans()):
        lines.append(("Content-Length", str(len(body)).encode()))
    return draw(st.permutations(lines))


def _project_path(pid: str) -> str:
    return f"/v2.1/{pid}/os-volumes"


CREATE_PATHS = ["/v2.1/os-volumes"] * 6 + [
    _project_path(PROJECT),
    _project_path(PROJECT),
    _project_path("ABC123"),
    _project_path("abc-123"),
    _project_path("-"),
    _project_path("0"),
    _project_path("p-member"),
    _project_path("ab12" * 8),
    _project_path("abcdef0123456789" * 4),
    "/v2.1//os-volumes",
    "//v2.1/os-volumes",
    "/v2.1/os-volumes/",
    "/v2.1/os-volumes//",
    "/v2.1/os-volumes.json",
    "/v2.1/os%2Dvolumes",
    "/v2.1/%61bc123/os-volumes",
    "/v2.1/os-volumes/x",
    "/v2.1///os-volumes",
    f"/v2.1//{PROJECT}//os-volumes",
    "/v2.1/OS-VOLUMES",
    "/v2.1/os-volume",
    "/v2.1/os-volumes/detail",
    "/v2.1/os-volumes;x",
    "/v2.1/os-volumes%00",
    "/v2.1/%C3%A9/os-volumes",
    "/v2.1/ab%2Dc/os-volumes",
    f"/v2.1/{PROJECT}/os-volumes/",
    "/v2.1/os-volumes/%20",
]
QUERIES = ["", "", "", "?foo=bar", "?a=%ff", "?size=2", "?", "?x=1&x=2", "?%C3%A9=1", "?a=%C3"]


@st.composite
def exchanges(draw: st.DrawFn) -> Exchange:
    kind = draw(st.integers(0, 29))
    if kind == 0:  # the version documents
        path = draw(st.sampled_from(["/", "/v2.1", "/v2.1/", "//", "/v2.1//"]))
        body = draw(st.sampled_from([b"", b"", b"", b"x", b"\xff", b"{}"]))
        method = draw(st.sampled_from(["GET", "GET", "HEAD"]))
    else:
        path = draw(st.sampled_from(CREATE_PATHS))
        # Never GET: GET on these paths is nova's volume list/show (out of scope).
        method = draw(
            st.sampled_from(["POST"] * 15 + ["PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE"])
        )
        if (
            "/os-volumes/" in path
            and path.rstrip("/") != "/v2.1/os-volumes"
            and method in ("DELETE", "HEAD")
        ):
            method = "PUT"  # DELETE /os-volumes/{id} is nova's volume delete: out of scope
        body = draw(
            st.one_of(
                json_body().map(str.encode),
                json_body().map(str.encode),
                json_body().map(str.encode),
                raw_body(),
                st.just(b""),
            )
        )
    target = path + draw(st.sampled_from(QUERIES))
    headers = draw(header_lines(body))
    faults = draw(st.lists(cinder_fault(), max_size=2))
    snapshot_project = None
    if b'"SNAP"' in body:
        snapshot_project = draw(st.sampled_from([PROJECT, PROJECT, "0ddba11"]))
    return Exchange(method, target, headers, body, faults, snapshot_project)


@st.composite
def cinder_fault(draw: st.DrawFn) -> dict[str, Any]:
    route = draw(
        st.sampled_from(["volumes.create", "volumes.create", "volumes.get", "snapshots.get"])
    )
    if draw(st.integers(0, 5)) == 0:
        fault: dict[str, Any] = {
            "route": route,
            "action": draw(st.sampled_from(["garbage", "truncated"])),
        }
    else:
        fault = {
            "route": route,
            "status": draw(
                st.sampled_from([400, 401, 403, 404, 406, 409, 413, 429, 500, 501, 503])
            ),
        }
        body = draw(
            st.sampled_from(
                [
                    None,
                    None,
                    {"badRequest": {"code": 400, "message": "m"}},
                    {"message": "top"},
                    "",
                    "plain text",
                    {},
                ]
            )
        )
        if body is not None:
            fault["body"] = body
        if fault["status"] in (413, 429) and draw(st.booleans()):
            fault["headers"] = {"Retry-After": draw(st.sampled_from(["0", "7", "soon"]))}
    if draw(st.booleans()):
        fault["times"] = 1
    return fault


def _with_snapshot(exchange: Exchange) -> Exchange:
    if exchange.snapshot_project is None:
        return exchange
    # Both sims are reset, then make the same volume and snapshot: the same ids.
    snap = SNAPSHOT_ID.get(exchange.snapshot_project, "SNAP")
    exchange.body = exchange.body.replace(b'"SNAP"', json.dumps(snap).encode())
    return exchange


# ---------------------------------------------------------------------------
# Fixtures and the comparison
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def voltrace_side(
    telemetry: Telemetry, cinder_telemetry: Telemetry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Side]:
    """voltrace in-process with telemetry on, in front of its own deterministic simulator;
    with VOLTRACE_DIFFERENTIAL_SERVE=1, `voltrace serve` (gunicorn, traced to a file)."""
    with CinderSimulator(
        deterministic=True, tracer_provider=cinder_telemetry.tracer_provider
    ) as sim:
        if os.environ.get("VOLTRACE_DIFFERENTIAL_SERVE") == "1":
            workdir = tmp_path_factory.mktemp("differential-serve")
            serve = VoltraceServe(
                workdir,
                sim.endpoint_template,
                {},
                "--cinder-retries",
                "0",
                "--traces-file",
                str(workdir / "traces.jsonl"),
                "--log-file",
                str(workdir / "voltrace.log"),
            )
            try:
                yield Side("voltrace serve", serve.wait_until_serving().port, sim)
            finally:
                serve.stop()
            return
        config = ServeConfig(
            cinder=CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
        )
        with EmbeddedServer(build_service(config, telemetry)) as server:
            yield Side("voltrace", int(server.url.rsplit(":", 1)[1]), sim)


@pytest.fixture(scope="module")
def nova_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    """Real nova 34 (tests/support/real_nova.py) in front of its own in-process simulator."""
    with (
        CinderSimulator(deterministic=True) as sim,
        running_real_nova(
            tmp_path_factory.mktemp("differential-nova"), simulator=SimAdmin(sim.port)
        ) as nova,
    ):
        yield Side("nova", nova.nova.port, sim)


def run_both(
    nova: Side, voltrace: Side, exchange: Exchange, pool: concurrent.futures.ThreadPoolExecutor
) -> tuple[Answer, Answer]:
    # The snapshot id is learnt while preparing, so prepare first (in parallel), then send.
    prepared = [pool.submit(side.prepare, exchange) for side in (nova, voltrace)]
    for future in prepared:
        future.result()
    _with_snapshot(exchange)
    answers = [pool.submit(side.run, exchange) for side in (nova, voltrace)]
    return answers[0].result(), answers[1].result()


def describe(exchange: Exchange, nova: Answer, voltrace: Answer) -> str:
    def show(view: dict[str, Any]) -> str:
        body = view["body"]
        shown = body[:600].decode("utf-8", "replace") + ("..." if len(body) > 600 else "")
        rest = {k: v for k, v in view.items() if k != "body"}
        return f"{json.dumps(rest, indent=1, default=str)[:3000]}\nbody: {shown}"

    return (
        f"\nreproduce (against each server, each with a fresh "
        f"`voltrace cinder-sim --deterministic`):\n{exchange.curl()}\n"
        f"\n--- real nova 34:\n{show(nova.view())}\n--- voltrace:\n{show(voltrace.view())}"
    )


def check(
    nova_side: Side,
    voltrace_side: Side,
    exchange: Exchange,
    pool: concurrent.futures.ThreadPoolExecutor,
) -> None:
    nova, voltrace = run_both(nova_side, voltrace_side, exchange, pool)
    nova_view, voltrace_view = nova.view(), voltrace.view()
    for key in ("status", "body", "headers", "request_ids", "cinder"):
        if nova_view[key] != voltrace_view[key]:
            raise AssertionError(f"{key} differs" + describe(exchange, nova, voltrace))


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        yield executor


def _differential(profile: str) -> Any:
    def decorate(test: Any) -> Any:
        test = given(exchange=exchanges())(test)
        test = _profile(profile)(test)
        return seed(SEED)(test) if SEED is not None else test

    return decorate


@_differential("differential")
def test_voltrace_answers_like_real_nova(
    nova_side: Side,
    voltrace_side: Side,
    pool: concurrent.futures.ThreadPoolExecutor,
    exchange: Exchange,
) -> None:
    """Same status, body, headers and Cinder calls as real nova 34, for every request."""
    check(nova_side, voltrace_side, exchange, pool)


@pytest.fixture(scope="module")
def asked_for_slow(request: pytest.FixtureRequest) -> None:
    """Ten minutes of examples run only when asked for: ``-m slow``."""
    if "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("the long differential run needs `-m slow`")


@pytest.mark.slow
@pytest.mark.usefixtures("asked_for_slow")
@_differential("differential-slow")
def test_voltrace_answers_like_real_nova_at_length(
    nova_side: Side,
    voltrace_side: Side,
    pool: concurrent.futures.ThreadPoolExecutor,
    exchange: Exchange,
) -> None:
    """The same comparison over ten times as many requests."""
    check(nova_side, voltrace_side, exchange, pool)
