"""``voltrace load``: real traffic from the command line to a real server, read by Prometheus."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require
from tests.support.cli import voltrace_command
from tests.support.net import free_port, wait_for_port
from tests.support.polling import poll
from tests.support.prometheus import (
    JOB,
    Prometheus,
    dashboard_targets,
    running_prometheus,
    substitute,
)
from voltrace.load import LoadError, parse_duration, parse_mix

REPO = Path(__file__).resolve().parents[1]
MIX = {
    "success": 4,
    "schema_invalid": 1,
    "policy_denied": 1,
    "over_quota": 1,
    "snapshot_not_found": 1,
    "microversion_not_found": 1,
    "unauthenticated": 1,
    "cinder_not_found": 1,
}


@dataclass
class Stack:
    url: str
    prometheus: Prometheus


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """cinder-sim + voltrace serve (with /metrics) as processes, and Prometheus scraping it."""
    require(bool(shutil.which("prometheus")), "Debian's prometheus package is needed")
    tmp = tmp_path_factory.mktemp("load")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    sim_port, serve_port, metrics_port = free_port(), free_port(), free_port()
    processes: list[subprocess.Popen] = []
    try:
        with running_prometheus(tmp, [f"127.0.0.1:{metrics_port}"]) as prometheus:
            processes.append(
                subprocess.Popen(
                    voltrace_command("cinder-sim", "--port", str(sim_port), "--log-level", "off"),
                    cwd=REPO,
                    env=env,
                    stderr=(tmp / "sim.err").open("w"),
                )
            )
            processes.append(
                subprocess.Popen(
                    voltrace_command(
                        "serve",
                        "--port",
                        str(serve_port),
                        "--metrics-port",
                        str(metrics_port),
                        "--cinder-endpoint",
                        f"http://127.0.0.1:{sim_port}/v3/%(project_id)s",
                        "--cinder-retries",
                        "0",
                        "--log-file",
                        str(tmp / "serve.log"),
                    ),
                    cwd=REPO,
                    env=env,
                    stderr=(tmp / "serve.err").open("w"),
                )
            )
            for port, process in (
                (sim_port, processes[0]),
                (serve_port, processes[1]),
                (metrics_port, processes[1]),
            ):
                wait_for_port(port, process)
            # Scraped before the load starts, so the load's counts show up as increases.
            poll(
                lambda: prometheus.query(f'up{{job="{JOB}"}} == 1'),
                60,
                "Prometheus to scrape voltrace serve",
            )
            yield Stack(f"http://127.0.0.1:{serve_port}", prometheus)
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def load_run(stack: Stack) -> subprocess.CompletedProcess[str]:
    """One `voltrace load` run with every scenario in the mix."""
    mix = ",".join(f"{name}={weight}" for name, weight in MIX.items())
    return subprocess.run(
        voltrace_command(
            "load",
            "--url",
            stack.url,
            "--rate",
            "40",
            "--duration",
            "6s",
            "--mix",
            mix,
            "--concurrency",
            "4",
            "--seed",
            "7",
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_load_reports_every_scenario_with_its_expected_answer(
    load_run: subprocess.CompletedProcess[str],
) -> None:
    """Every scenario answered as Nova would: exit 0 and a table row per scenario."""
    assert load_run.returncode == 0, load_run.stdout + load_run.stderr
    table = load_run.stdout
    for name in MIX:
        row = next(line for line in table.splitlines() if line.startswith(name + " "))
        assert "no answer" not in row, row
    assert "0 unexpected answers" in table
    assert "answered" in load_run.stderr  # the progress line


def test_prometheus_sees_the_load_and_every_dashboard_query_answers(
    stack: Stack, load_run: subprocess.CompletedProcess[str]
) -> None:
    """After a load run, each Grafana panel's query returns data from the real server."""
    assert load_run.returncode == 0, load_run.stderr
    sent = sum(
        int(line.split()[1])
        for line in load_run.stdout.splitlines()
        if line.split() and line.split()[0] in MIX
    )

    def scraped() -> float:
        result = stack.prometheus.query(f'sum(voltrace_creates_total{{job="{JOB}"}})')
        return float(result[0]["value"][1]) if result else 0.0

    poll(lambda: scraped() >= sent, 60, f"Prometheus to scrape {sent} creates")
    classes = {
        r["metric"]["failure_class"]
        for r in stack.prometheus.query(
            f'sum by (failure_class) (voltrace_creates_total{{job="{JOB}"}})'
        )
    }
    assert {
        "none",
        "schema_invalid",
        "policy_denied",
        "over_quota",
        "snapshot_not_found",
        "microversion_not_found",
        "unauthenticated",
        "cinder_not_found",
    } <= classes
    # Rates need two samples: the poll below waits for them.
    empty: list[str] = []

    def all_panels_answer() -> bool:
        empty.clear()
        for title, target in dashboard_targets():
            expr = substitute(target["expr"])
            if "cinder_unreachable" in expr or "spans_dropped" in expr or "in_flight" in expr:
                continue  # not driven by this mix
            if "voltrace_volume" in expr:
                continue  # the row after the 200 needs --follow-volumes: test_prometheus.py
            if not stack.prometheus.query(expr):
                empty.append(title)
        return not empty

    try:
        poll(all_panels_answer, 60, "every driven dashboard panel to answer")
    except TimeoutError:
        raise AssertionError(f"dashboard panels with no data: {empty}") from None


def test_mix_and_duration_errors_are_one_line() -> None:
    """Bad --mix or --duration values are refused with a clear message, not a traceback."""
    assert parse_mix("success=3,over_quota") == {"success": 3.0, "over_quota": 1.0}
    assert parse_duration("2m") == 120.0
    for bad in ("nope=1", "success=x", "success=0"):
        with pytest.raises(LoadError):
            parse_mix(bad)
    with pytest.raises(LoadError):
        parse_duration("soon")
    answer = subprocess.run(
        voltrace_command("load", "--mix", "nope=1", "--duration", "1s"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 2
    assert answer.stderr.strip().startswith("voltrace load: --mix: unknown scenario 'nope'")
    assert "Traceback" not in answer.stderr
