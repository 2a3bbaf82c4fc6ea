"""Shared fixtures: a real Cinder simulator and a real nova-api server on 127.0.0.1.

Everything goes over real HTTP through the real python-cinderclient; telemetry
is the real SDK, captured in memory through ``voltrace.testing``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from voltrace.cinder import CinderSettings
from voltrace.cinder_sim import CinderSimulator
from voltrace.client import NovaClient, identity_headers
from voltrace.server import EmbeddedServer, ServeConfig, build_service
from voltrace.telemetry import Telemetry, TelemetryConfig
from voltrace.testing import Captured, capture

# Every token, key and password the suite uses; test_secrets.py scans for them.
TEST_TOKEN = "tok-SECRET-7f3a9c"
TEST_HMAC_KEY = "hmac-SECRET-51d2e8"
SECRETS = (TEST_TOKEN, TEST_HMAC_KEY)

IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the secrets scan last, so it reads everything the whole run exported."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_secrets.py"))


def require(condition: bool, why: str) -> None:
    """Skip locally when a real component is missing; fail loudly in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {why}")
    pytest.skip(why)


# Nova's volume view (nova/api/openstack/compute/volumes.py _translate_volume_detail_view),
# keys in its order; and the body nova/volume/cinder.py sends for POST /volumes, in order.
NOVA_VOLUME_KEYS = [
    "id",
    "status",
    "size",
    "availabilityZone",
    "createdAt",
    "attachments",
    "displayName",
    "displayDescription",
    "volumeType",
    "snapshotId",
    "metadata",
]
NOVA_CINDER_CREATE_KEYS = [
    "size",
    "consistencygroup_id",
    "snapshot_id",
    "name",
    "description",
    "volume_type",
    "availability_zone",
    "metadata",
    "imageRef",
    "source_volid",
    "backup_id",
]

# The member user's project: hex, as keystone makes them and as Cinder routes them.
MEMBER_PROJECT = "a1ce0000000000000000000000000001"


def member_headers(project_id: str = MEMBER_PROJECT, **overrides: Any) -> dict[str, str]:
    values = {
        "user_id": "u-member",
        "project_id": project_id,
        "roles": "member,reader",
        "token": TEST_TOKEN,
    }
    values.update(overrides)
    return identity_headers(**values)


def set_volume_quota(sim: CinderSimulator, project_id: str, volumes: int) -> None:
    """Through the simulator's os-quota-sets API, as an operator would."""
    client = NovaClient(sim.url)
    answer = client.request(
        "PUT",
        f"/v3/{project_id}/os-quota-sets/{project_id}",
        json.dumps({"quota_set": {"volumes": volumes}}).encode(),
        {"Content-Type": "application/json", "X-Auth-Token": "admin"},
    )
    client.close()
    assert answer.status == 200, answer.body


@pytest.fixture(scope="session")
def telemetry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Telemetry]:
    """nova-api's telemetry for the whole session: spans and logs, exported to files."""
    out = tmp_path_factory.mktemp("telemetry")
    nova = Telemetry.create(
        TelemetryConfig(
            service_name="nova-api",
            use_env_service_name=False,
            traces_file=str(out / "traces.jsonl"),
            log_file=str(out / "logs.jsonl"),
            log_format="json",
            # The suite's callers send known traceparents and expect them continued; the
            # untrusted default is tested in test_secrets.py with its own Telemetry.
            trust_incoming_trace_context=True,
        )
    )
    yield nova
    nova.shutdown()


@pytest.fixture(scope="session")
def cinder_telemetry(telemetry: Telemetry) -> Iterator[Telemetry]:
    """cinder-api's side of the same process: its own resource, the same exporters."""
    cinder = telemetry.sibling("cinder-api")
    yield cinder
    cinder.shutdown()


@pytest.fixture
def sim(cinder_telemetry: Telemetry) -> Iterator[CinderSimulator]:
    """A fresh deterministic Cinder simulator, traced as cinder-api."""
    with CinderSimulator(
        deterministic=True, tracer_provider=cinder_telemetry.tracer_provider
    ) as simulator:
        yield simulator


@dataclass
class Nova:
    """A running voltrace server and a client for it."""

    server: EmbeddedServer
    sim: CinderSimulator
    config: ServeConfig
    clients: list[NovaClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> NovaClient:
        client = NovaClient(self.url)
        self.clients.append(client)
        return client

    def create(
        self, volume: dict | None = None, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        return self.client().create_volume(
            volume, headers=member_headers() if headers is None else headers, **kwargs
        )


@pytest.fixture
def start_nova(sim: CinderSimulator, telemetry: Telemetry) -> Iterator[Any]:
    """Start voltrace serve in-process against ``sim``; options as ServeConfig fields."""
    started: list[Nova] = []

    def start(**options: Any) -> Nova:
        cinder = options.pop("cinder", None) or CinderSettings(
            endpoint_template=sim.endpoint_template, http_retries=0
        )
        config = ServeConfig(cinder=cinder, **options)
        server = EmbeddedServer(build_service(config, telemetry)).start()
        nova = Nova(server, sim, config)
        started.append(nova)
        return nova

    yield start
    for nova in started:
        for client in nova.clients:
            client.close()
        nova.server.stop()


@pytest.fixture
def nova(start_nova: Any) -> Nova:
    """voltrace with nova 34's defaults, in front of the simulator."""
    return start_nova()


@pytest.fixture
def captured() -> Iterator[Captured]:
    with capture() as result:
        yield result
