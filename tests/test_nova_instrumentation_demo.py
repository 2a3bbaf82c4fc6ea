"""``voltrace demo --nova real``'s logic (voltrace.instrumentation.nova_demo), on real nova 34.

* With no venv built (an empty cache), the demo gets one line saying how to build it, and
  ``RealNovaDemo`` refuses with that line.
* With it built, every scenario of the demo's own library (``voltrace.demo.SCENARIOS``) goes
  through real instrumented nova-api processes (one per server kind, started on first use),
  in front of the demo's in-process simulator with the demo's settings, and is diagnosed by
  ``RealNovaDemo.diagnose`` from nova's spans in the shared traces file joined with the
  simulator's in memory. Each must give the status, failed stage and failure class the
  scenario expects, from a whole trace (nova-api's six stages, Cinder's SERVER spans under
  nova's CLIENT spans); the one kind real nova cannot play is skipped with its reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.nova_instrumentation import venv
from voltrace import demo, semconv
from voltrace.cinder_sim import CinderSimulator
from voltrace.client import NovaClient, identity_headers
from voltrace.instrumentation import nova_demo, nova_venv
from voltrace.telemetry import Telemetry, TelemetryConfig
from voltrace.testing import Captured, capture


def test_without_the_venv_the_demo_is_told_in_one_line_how_to_build_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty cache (a machine that never built it): one line, with the build command."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    why = nova_demo.unavailable_reason()
    assert why is not None and "\n" not in why
    assert nova_venv.BUILD_COMMAND in why and str(tmp_path / "empty-cache") in why
    with pytest.raises(nova_demo.RealNovaUnavailable) as refused:
        nova_demo.RealNovaDemo(
            tmp_path,
            cinder_endpoint="http://127.0.0.1:1/v3/%(project_id)s",
            traces_file=tmp_path / "traces.jsonl",
            log_file=tmp_path / "logs.jsonl",
        )
    assert str(refused.value) == why


def test_unsupported_server_kinds_are_skipped_with_a_reason() -> None:
    reasons = {s.server: nova_demo.RealNovaDemo.skip_reason(s.server) for s in demo.SCENARIOS}
    assert reasons == {
        "default": None,
        "unreachable": None,
        "hung": None,
        "size_from_snapshot": nova_demo.UNSUPPORTED["size_from_snapshot"],
    }


@dataclass
class Ran:
    status: int
    request_id: str | None
    diagnosis: Any
    traced: bool
    creates_received: int
    trace: list[Any]  # nova-api's spans, from the file
    cinder_servers: int  # cinder-api SERVER spans of the same trace, in memory


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Ran]]:
    """Every supported demo scenario through real nova, as the demo sets it up."""
    venv()  # built in CI; locally a skip that names the build command
    out = tmp_path_factory.mktemp("demo-real")
    with contextlib.ExitStack() as stack:
        captured: Captured = stack.enter_context(capture())
        telemetry = Telemetry.create(
            TelemetryConfig(
                service_name=semconv.NOVA_API_SERVICE,
                use_env_service_name=False,
                traces_file=str(out / demo.TRACES_FILE),
                log_file=str(out / demo.LOGS_FILE),
                log_format="json",
            )
        )
        stack.callback(telemetry.shutdown)
        cinder_telemetry = telemetry.sibling(semconv.CINDER_API_SERVICE)
        stack.callback(cinder_telemetry.shutdown)
        sim = CinderSimulator(
            telemetry=cinder_telemetry, backend=demo.DEMO_BACKEND, default_quotas={"volumes": 100}
        ).start()
        stack.callback(sim.stop)
        snapshot_id = sim.add_snapshot(demo.PROJECT, size=2, name="demo-snapshot")["id"]
        real = nova_demo.RealNovaDemo(
            out,
            cinder_endpoint=sim.endpoint_template,
            traces_file=out / demo.TRACES_FILE,
            log_file=out / demo.LOGS_FILE,
        )
        stack.callback(real.close)
        results = {}
        for scenario in demo.SCENARIOS:
            if real.skip_reason(scenario.server) is None:
                results[scenario.name] = run(real, sim, captured, scenario, snapshot_id)
        yield results


def run(
    real: nova_demo.RealNovaDemo,
    sim: CinderSimulator,
    captured: Captured,
    scenario: demo.Scenario,
    snapshot_id: str,
) -> Ran:
    seen = len(sim.recorded_requests())
    for fault in scenario.faults:
        sim.inject(fault)
    for backend_fault in scenario.backend_faults:
        sim.inject_backend_fault(backend_fault)
    for binary in scenario.services_down:
        sim.stop_service(binary)
    client = NovaClient(real.url(scenario.server))
    try:
        headers = identity_headers(
            user_id=demo.USER, project_id=demo.PROJECT, roles=scenario.roles, token="demo-token"
        )
        response = client.create_volume(
            scenario.body(snapshot_id), headers={**headers, **scenario.headers}
        )
    finally:
        client.close()
        sim.clear_faults()
        sim.clear_backend_faults()
        for binary in scenario.services_down:
            sim.start_service(binary, purge=True)
    sim.wait_idle(demo.TRACE_WAIT_S)
    request_id = response.header("x-openstack-request-id")
    diagnosis, traced = real.diagnose(request_id, captured)
    received = sum(
        1
        for r in sim.recorded_requests()[seen:]
        if r.method == "POST" and r.path.endswith(f"/{demo.PROJECT}/volumes")
    )
    spans = (real.nova_spans(request_id) if request_id else None) or []
    cinder_servers = 0
    if spans:
        trace = captured.trace(int(spans[0].trace_id, 16))
        cinder_servers = sum(1 for s in trace if s.kind.name == "SERVER")
    return Ran(response.status, request_id, diagnosis, traced, received, spans, cinder_servers)


SUPPORTED = [s for s in demo.SCENARIOS if nova_demo.RealNovaDemo.skip_reason(s.server) is None]


@pytest.mark.parametrize("scenario", SUPPORTED, ids=lambda s: s.name)
def test_each_demo_scenario_gives_its_expected_answer_through_real_nova(
    scenario: demo.Scenario, ran: dict[str, Ran]
) -> None:
    """The status, failed stage and class the demo expects, diagnosed from a whole trace."""
    result = ran[scenario.name]
    d = result.diagnosis
    assert result.traced and d is not None
    assert (result.status, d.failed_stage, d.failure_class) == (
        scenario.status,
        scenario.failed_stage,
        scenario.failure_class,
    )
    if scenario.verdict:
        assert scenario.verdict in (d.next_step or "")
    if scenario.creates_received is not None:
        assert result.creates_received == scenario.creates_received


@pytest.mark.parametrize("scenario", SUPPORTED, ids=lambda s: s.name)
def test_each_trace_joins_real_novas_stages_and_cinders_spans(
    scenario: demo.Scenario, ran: dict[str, Ran]
) -> None:
    """nova-api's spans come from real nova (stages marked wrapped or between_hooks); those
    of the creates that reached a stage ran through it."""
    result = ran[scenario.name]
    timing = {s.attr(semconv.STAGE_TIMING) for s in result.trace if s.attr(semconv.STAGE)}
    assert timing and timing <= {"wrapped", "between_hooks"}
    if scenario.status == 200:
        stages = [s.name for s in result.trace if s.attr(semconv.STAGE)]
        assert sorted(stages) == sorted(semconv.STAGE_NAMES)
        # Cinder's POST and lazy GET, served by the in-process simulator, in nova's trace.
        assert result.cinder_servers >= 2
