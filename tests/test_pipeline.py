"""The runner: stage order, the first fault stops it, bugs become a 500, observers cannot hurt."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import member_headers
from voltrace import semconv
from voltrace.api import build_app
from voltrace.cinder import CinderSettings, VolumeAPI
from voltrace.cinder_sim import CinderSimulator
from voltrace.client import NovaClient
from voltrace.pipeline import OBSERVER_ERRORS, Pipeline
from voltrace.policy import VolumePolicy
from voltrace.server import EmbeddedServer
from voltrace.stages import STAGES, Stage
from voltrace.state import StageReport, StageServices
from voltrace.telemetry import Telemetry


@pytest.fixture
def served(sim: CinderSimulator, telemetry: Telemetry) -> Iterator[Served]:
    """voltrace serve's app around a Pipeline the test can change, traced as in production."""
    services = StageServices(
        policy=VolumePolicy(None),
        volume_api=VolumeAPI(
            CinderSettings(endpoint_template=sim.endpoint_template, http_retries=0)
        ),
    )
    pipeline = Pipeline(services, observer=telemetry.observer)
    server = EmbeddedServer(telemetry.instrument_wsgi(build_app(pipeline))).start()
    client = NovaClient(server.url)
    yield Served(pipeline, client, sim)
    client.close()
    server.stop()


@dataclass
class Served:
    pipeline: Pipeline
    client: NovaClient
    sim: CinderSimulator

    def create(self, volume: dict) -> Any:
        return self.client.create_volume(volume, headers=member_headers())

    def replace_stage(self, name: str, run: Any) -> None:
        self.pipeline.stages = tuple(
            Stage(s.name, s.nova_code, run) if s.name == name else s for s in self.pipeline.stages
        )


def test_a_bug_in_a_stage_is_novas_unexpected_api_error(served: Served, captured: Any) -> None:
    """An exception escaping a stage is answered as expected_errors does: 500 computeFault."""

    def broken(state: Any) -> StageReport:
        raise KeyError("a bug")

    served.replace_stage("derive_size", broken)
    answer = served.create({"size": 1})
    assert answer.status == 500
    assert answer.json() == {
        "computeFault": {
            "code": 500,
            "message": "Unexpected API Error. Please contact the administrator\n<class 'KeyError'>",
        }
    }
    captured.complete_trace(answer.header("x-openstack-request-id"))
    server = captured.server_span()
    assert server.attributes[semconv.FAILED_STAGE] == "derive_size"
    assert server.attributes[semconv.FAILURE_CLASS] == "internal_error"
    stage_names = [s.name for s in captured.children(captured.pipeline_span(server))]
    assert stage_names == ["parse", "authorize", "resolve_snapshot", "derive_size"]


def test_stages_after_a_fault_do_not_run(served: Served, captured: Any) -> None:
    """The first fault stops the pipeline: no later stage runs, no Cinder call is made."""
    answer = served.create({"size": 0})
    assert answer.status == 400
    assert served.sim.recorded == []
    captured.complete_trace(answer.header("x-openstack-request-id"))
    assert [s.name for s in captured.children(captured.pipeline_span())] == ["parse"]


class _ExplodingObserver:
    """Fails wherever it is asked to: on entry, or on exit."""

    def __init__(self, where: str) -> None:
        self.where = where

    @contextmanager
    def request(self, state: Any) -> Any:
        if self.where == "request-enter":
            raise RuntimeError("observer bug")
        yield
        if self.where == "request-exit":
            raise RuntimeError("observer bug")

    @contextmanager
    def stage(self, stage: Any, state: Any, record: Any) -> Any:
        if self.where == "stage-enter":
            raise RuntimeError("observer bug")
        yield
        if self.where == "stage-exit":
            raise RuntimeError("observer bug")


@pytest.mark.parametrize("where", ["request-enter", "request-exit", "stage-enter", "stage-exit"])
def test_a_failing_observer_never_changes_the_answer(served: Served, where: str) -> None:
    """Telemetry that raises is counted and switched off for that call; the create succeeds."""
    before = OBSERVER_ERRORS.count
    served.pipeline.observer = _ExplodingObserver(where)
    answer = served.create({"size": 1})
    assert answer.status == 200, answer.body
    assert answer.json()["volume"]["size"] == 1
    assert OBSERVER_ERRORS.count > before


def test_every_stage_reports_on_its_record(served: Served) -> None:
    """Each stage leaves a record: its status, duration and the Cinder calls it made."""
    pipeline = served.pipeline
    states: list[Any] = []
    original_run = pipeline.run

    def run(request: Any) -> Any:
        states.append(original_run(request))
        return states[-1]

    pipeline.run = run  # type: ignore[method-assign]
    assert served.create({"size": 1}).status == 200
    records = {r.name: r for r in states[0].records}
    assert [r.name for r in states[0].records] == [s.name for s in STAGES]
    assert records["resolve_snapshot"].status == "skipped"
    assert [c.method for c in records["call_cinder"].cinder_calls] == ["POST", "GET"]
    assert records["call_cinder"].attributes["cinder.connect_retries"] == 0
    assert all(r.duration_s > 0 for r in states[0].records)
