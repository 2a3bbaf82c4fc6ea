"""Instrumented real nova-api 34 under gunicorn, 2 sync workers, with and without --preload.

nova's paste app (``voltrace.devtools.nova_host:wsgi_app()``, what nova/wsgi/osapi_compute.py
builds) with the voltrace paste filter, its default batch span processor, traces and JSON
logs appended by both workers to one file each. Per mode: wait until both workers answer,
send 40 creates from 4 client threads (every third from a snapshot), send SIGTERM to the
master right after the last answer (the batch processor still holds the last spans), wait
for the master and both workers to exit. Then every answered request id must have its whole
tree in the traces file (SERVER, create_volume, six stages, its CLIENT spans) and its seven
log lines, from both workers (gunicorn's access log names the worker pid of each answer).
With --preload the filter factory runs in the master before the fork; the telemetry is
still built in each worker, on its first request.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.support.nova_instrumentation import (
    HEADERS,
    TelemetryFiles,
    allow_volumes,
    make_snapshot,
    server_span,
    venv,
)
from tests.support.polling import poll
from tests.support.real_nova import SimProcess
from voltrace import semconv
from voltrace.devtools import nova_host
from voltrace.devtools.real_nova import free_port, nova_conf
from voltrace.instrumentation import nova_venv

CREATES = 40
CLIENTS = 4
WORKERS = 2
# gunicorn's access log line: the answer's request id and the worker pid that served it.
ACCESS_FORMAT = "%({x-openstack-request-id}o)s %(p)s"


@dataclass
class Run:
    """One gunicorn run: what was answered, by which worker, and what the files hold."""

    preload: bool
    answers: list[tuple[int, str, bool]]  # (status, request id, from a snapshot)
    workers: dict[str, str]  # request id -> worker pid, from the access log
    worker_pids: set[int]  # from gunicorn's error log ("Booting worker with pid")
    master_exit: int
    files: TelemetryFiles
    traces_before_sigterm: int  # in the file when SIGTERM was sent (the rest were pending)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    process = SimProcess(tmp_path_factory.mktemp("gunicorn-sim"))
    try:
        yield process
    finally:
        process.stop()


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        raw = conn.getresponse()
        return raw.status, raw.read()
    finally:
        conn.close()


def create(port: int, volume: dict[str, Any]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/v2.1/os-volumes", json.dumps({"volume": volume}).encode(), HEADERS)
        raw = conn.getresponse()
        raw.read()
        return raw.status, str(raw.getheader("x-openstack-request-id"))
    finally:
        conn.close()


def access_log(path: Path) -> list[tuple[str, str]]:
    """(request id or "-", worker pid) per answer gunicorn logged."""
    if not path.exists():
        return []
    pairs = (line.split() for line in path.read_text().splitlines())
    return [(p[0], p[1].strip("<>")) for p in pairs if len(p) == 2]


def version_document(port: int) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        get(port, "/")


def booted_workers(path: Path) -> set[int]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return {int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if "Booting worker" in line}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def gunicorn_nova(workdir: Path, sim: SimProcess, preload: bool) -> Iterator[Any]:
    """nova-api under gunicorn; yields (process, port, files); SIGTERM by PID after."""
    python_venv = venv()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("state", "locks"):
        (workdir / name).mkdir(exist_ok=True)
    (workdir / "nova.conf").write_text(nova_conf(workdir, sim.endpoint_template, 0))
    files = TelemetryFiles(workdir / "traces.jsonl", workdir / "voltrace.log")
    paste = nova_venv.instrumented_paste_ini(
        python_venv, workdir, traces_file=str(files.traces_file), log_file=str(files.log_file)
    )
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "VOLTRACE_", "PYTHON", "OS_"))
    }
    env.update(
        PYTHONPATH=str(Path(nova_host.__file__).parent),
        NOVA_HOST_CONFIG_FILE=str(workdir / "nova.conf"),
        NOVA_HOST_PASTE=str(paste),
    )
    command = [
        str(python_venv / "bin" / "gunicorn"),
        "-w",
        str(WORKERS),
        "-k",
        "sync",
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "10",
        "--pid",
        str(workdir / "gunicorn.pid"),
        "--access-logfile",
        str(workdir / "access.log"),
        "--access-logformat",
        ACCESS_FORMAT,
        "--error-logfile",
        str(workdir / "gunicorn.log"),
        *(["--preload"] if preload else []),
        "nova_host:wsgi_app()",
    ]
    with open(workdir / "gunicorn.out", "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir,
        )
    try:
        yield process, port, files
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve_and_stop(workdir: Path, sim: SimProcess, preload: bool) -> Run:
    sim.reset()
    allow_volumes(sim, CREATES + 10)
    snapshot = make_snapshot(sim)
    with gunicorn_nova(workdir, sim, preload) as (process, port, files):
        access = workdir / "access.log"

        def both_workers_answer() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited {process.returncode}")
            with ThreadPoolExecutor(CLIENTS) as pool:
                list(pool.map(version_document, [port] * CLIENTS))
            return len({pid for _, pid in access_log(access)}) == WORKERS

        try:
            poll(both_workers_answer, timeout=120, what="both gunicorn workers answering")
        except TimeoutError as exc:
            require(False, f"gunicorn nova-api did not come up: {exc}")

        def send(index: int) -> tuple[int, str, bool]:
            from_snapshot = index % 3 == 0
            volume: dict[str, Any] = {"size": 1}
            if from_snapshot:
                volume["snapshot_id"] = snapshot
            return (*create(port, volume), from_snapshot)

        with ThreadPoolExecutor(CLIENTS) as pool:
            answers = list(pool.map(send, range(CREATES)))
        # Right after the last answer: the batch processor still holds the last spans.
        in_file = len(files.traces())
        process.send_signal(signal.SIGTERM)
        master_exit = process.wait(timeout=60)
    workers = booted_workers(workdir / "gunicorn.log")
    poll(lambda: not any(map(alive, workers)), timeout=30, what="gunicorn workers exited")
    return Run(preload, answers, dict(access_log(access)), workers, master_exit, files, in_file)


@pytest.fixture(scope="module", params=[False, True], ids=["lazy", "preload"])
def run(
    request: pytest.FixtureRequest, sim: SimProcess, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    return serve_and_stop(tmp_path_factory.mktemp(f"gunicorn-{request.param}"), sim, request.param)


def test_gunicorn_stops_cleanly_after_both_workers_served_creates(run: Run) -> None:
    """All 40 creates answered 200, by both workers; the master exits 0 on SIGTERM."""
    assert [status for status, _, _ in run.answers] == [200] * CREATES
    served_by = Counter(run.workers[request_id] for _, request_id, _ in run.answers)
    assert len(served_by) == WORKERS, served_by
    assert {int(pid) for pid in served_by} <= run.worker_pids
    assert run.master_exit == 0


def test_sigterm_right_after_the_last_answer_loses_no_trace(run: Run) -> None:
    """Every answered request id's whole tree is in the traces file."""
    traces = {
        str(span.attr(semconv.REQUEST_ID)): trace
        for trace in run.files.traces()
        if (span := server_span(trace)) is not None
    }
    missing = [rid for _, rid, _ in run.answers if rid not in traces]
    assert missing == [], (
        f"{len(missing)} of {CREATES} traces lost ({run.traces_before_sigterm} were in the "
        "file at SIGTERM)"
    )
    for _, request_id, from_snapshot in run.answers:
        trace = traces[request_id]
        names = Counter(s.name if s.kind != "client" else s.kind for s in trace.spans)
        assert names == Counter(
            {
                f"POST {semconv.CREATE_ROUTE}": 1,
                semconv.PIPELINE_SPAN: 1,
                **dict.fromkeys(semconv.STAGE_NAMES, 1),
                "client": 3 if from_snapshot else 2,
            }
        ), request_id
        server = server_span(trace)
        assert server is not None and trace.children(server)[0].name == semconv.PIPELINE_SPAN


def test_sigterm_right_after_the_last_answer_loses_no_log_line(run: Run) -> None:
    """Six stage lines and request.finished per create, all in the shared log file."""
    lines = Counter((line.get("request_id"), line.get("event")) for line in run.files.logs())
    expected = [semconv.stage_event(s) for s in semconv.STAGE_NAMES] + [semconv.REQUEST_FINISHED]
    for _, request_id, _ in run.answers:
        assert [lines[(request_id, event)] for event in expected] == [1] * len(expected)
