"""A complete real Cinder 29: cinder-api + cinder-scheduler + cinder-volume, on 127.0.0.1.

The measured recipe is shared/full-cinder.md; this module follows it. Pieces:

* a RabbitMQ broker we own (``rabbitmq.RabbitMQ``), one **vhost per stack**: queue names
  (``cinder-scheduler``, ``cinder-volume.<host>``) would otherwise collide;
* a PostgreSQL 15 server copied from a db-synced template (``postgres.Postgres``), one
  **database per stack** (``CREATE DATABASE … TEMPLATE cinder``): sqlite shared by three
  processes gives random 500s;
* the three services from cinder's venv, each in its own process group, with cinder's fake
  driver subclassed to inject faults (``fake_backend_driver.py``: metadata ``fault=backend``,
  ``fault=noresched``, ``sleep_s=N``; ``FAKE_CAPACITY_GB``).

``FullCinder`` owns all of it (the dev tool's ``run --full``); a test session shares one
broker and one PostgreSQL between stacks (``tests/support/full_cinder.py``)::

    with FullCinder(workdir, tracing=Tracing("osprofiler", otlp, key)) as full:
        full.stack.url, full.stack.endpoint_template, full.stack.freeze("cinder-scheduler")

Tracing (``Tracing.mode``):

``osprofiler``
    cinder's own ``[profiler]`` with the OTLP driver: voltrace's signed headers make the
    services' ``WSGI_*``/``rpc``/``drive`` spans join the caller's trace (the default);
``otel``
    the PyPI instrumentations for oslo.messaging and taskflow plus a WSGI middleware,
    started by ``cinder_otel_boot.py``: W3C ``traceparent``, CONSUMER spans per RPC and
    taskflow task spans;
``off``
    nothing traced.

Readiness, in order (full-cinder.md §5): ``GET /`` answers; ``os-services`` (3.7) shows
cinder-volume and cinder-scheduler ``up``; ``get_pools`` returns a pool (an RPC call: the
scheduler consumes its queue). Stopping SIGKILLs each service's process group and
descendants: the broker vhost and the database are throwaway.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from voltrace.devtools import postgres, processes, rabbitmq
from voltrace.devtools.cinder_admin import CinderAdmin, cinder_environment
from voltrace.devtools.cinder_venv import (
    RealCinderError,
    default_venv,
    ensure_side_deps,
    ensure_venv,
    say,
    side_dir,
    side_ready,
    venv_ready,
)
from voltrace.devtools.ports import free_port

SERVICES = ("cinder-api", "cinder-scheduler", "cinder-volume")
HOST = "testhost"
BACKEND = "fake1"
#: Where the fake driver's volumes land (``<host>@<backend>#<pool>``; the fake's pool is "fake").
POOL = f"{HOST}@{BACKEND}#fake"
TRACING_MODES = ("osprofiler", "otel", "off")
_HERE = Path(__file__).parent
_SHIPPED = ("fake_backend_driver.py", "cinder_otel_boot.py")
_TEMPLATE_READY = ".voltrace-ready"


@dataclass(frozen=True)
class Tracing:
    """How the services trace, and where the spans go (OTLP/HTTP)."""

    mode: str = "off"
    otlp_endpoint: str | None = None  # e.g. http://127.0.0.1:4318
    hmac_key: str | None = None  # osprofiler only

    def __post_init__(self) -> None:
        if self.mode not in TRACING_MODES:
            raise ValueError(f"tracing must be one of {', '.join(TRACING_MODES)}")
        if self.mode != "off" and not self.otlp_endpoint:
            raise ValueError(f"tracing {self.mode} needs an OTLP endpoint")
        if self.mode == "osprofiler" and not self.hmac_key:
            raise ValueError("tracing osprofiler needs an HMAC key")

    def __repr__(self) -> str:
        return f"Tracing(mode={self.mode!r}, otlp_endpoint={self.otlp_endpoint!r})"


# ---------------------------------------------------------------------------
# Prerequisites: packages on the machine, side deps, the PostgreSQL template
# ---------------------------------------------------------------------------


def missing_prerequisites() -> list[str]:
    """What the machine lacks for a complete Cinder, each with the command that installs it."""
    missing = []
    if not rabbitmq.installed():
        missing.append(f"RabbitMQ ({rabbitmq.SERVER}): {rabbitmq.INSTALL_HINT}")
    if not postgres.installed():
        missing.append(f"PostgreSQL 15 ({postgres.BIN}): {postgres.INSTALL_HINT}")
    return missing


def template_dir(venv: Path) -> Path:
    return side_dir(venv) / "pg15-template"


def full_ready(venv: Path | None = None, tracing: str = "osprofiler") -> bool:
    """True if ``build --full`` has run: venv, extras and the db-synced template exist."""
    venv = (venv or default_venv()).absolute()
    return (
        venv_ready(venv)
        and side_ready(venv, "base")
        and (tracing != "otel" or side_ready(venv, "otel"))
        and (template_dir(venv) / _TEMPLATE_READY).exists()
    )


def ensure_full(venv: Path | None = None, *, progress: TextIO | None = None) -> Path:
    """Build everything ``run --full`` needs (each part is a no-op when complete).

    RabbitMQ is only needed to run, so a missing broker is reported, not fatal; the
    PostgreSQL template cannot be made without PostgreSQL.
    """
    venv = ensure_venv(venv, progress=progress)
    ensure_side_deps(venv, "base", progress=progress)
    ensure_side_deps(venv, "otel", progress=progress)
    if not postgres.installed():
        raise RealCinderError(
            f"the complete Cinder needs PostgreSQL 15 ({postgres.BIN}): {postgres.INSTALL_HINT}"
        )
    ensure_pg_template(venv, progress=progress)
    if not rabbitmq.installed():
        say(progress, f"note: `run --full` will also need RabbitMQ: {rabbitmq.INSTALL_HINT}")
    return venv


def ensure_pg_template(venv: Path, *, progress: TextIO | None = None) -> Path:
    """A PostgreSQL data dir holding database ``cinder`` after ``cinder-manage db sync``."""
    target = template_dir(venv)
    if (target / _TEMPLATE_READY).exists():
        return target / "data"
    say(progress, f"building the PostgreSQL template (initdb + cinder-manage db sync) in {target}")
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="voltrace-pgtpl-"))
    try:
        postgres.init_cluster(scratch / "data")
        say(progress, f"  [{time.monotonic() - started:4.0f} s] initdb done")
        with postgres.Postgres(scratch / "data", copy=False) as pg:
            pg.create_database(postgres.TEMPLATE_DB, template=None)
            conf = scratch / "cinder.conf"
            conf.write_text(
                f"[DEFAULT]\nstate_path = {scratch}/state\n[database]\nconnection = {pg.url()}\n"
            )
            env = cinder_environment()
            env["PYTHONPATH"] = str(side_dir(venv) / "base")
            sync = subprocess.run(
                [str(venv / "bin" / "cinder-manage"), "--config-file", str(conf), "db", "sync"],
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                env=env,
                timeout=300,
                check=False,
            )
            if sync.returncode != 0:
                raise RealCinderError(
                    f"cinder-manage db sync exited {sync.returncode}:\n"
                    f"{(sync.stdout + sync.stderr)[-3000:]}"
                )
        say(progress, f"  [{time.monotonic() - started:4.0f} s] db sync done")
        partial = target.with_name(f"{target.name}.{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(scratch / "data", partial / "data", symlinks=True)
        (partial / "data" / "postmaster.pid").unlink(missing_ok=True)
        (partial / _TEMPLATE_READY).write_text("cinder 29.0.0, PostgreSQL 15\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(progress, f"PostgreSQL template ready in {time.monotonic() - started:.1f} s")
    return target / "data"


# ---------------------------------------------------------------------------
# One stack: the three services on one vhost and one database
# ---------------------------------------------------------------------------


def stack_conf(
    workdir: Path,
    *,
    api_port: int,
    transport_url: str,
    database_url: str,
    tracing: Tracing,
    scheduler_max_attempts: int | None = None,
) -> str:
    """cinder.conf shared by the three services (full-cinder.md §4)."""
    conf = f"""\
        [DEFAULT]
        auth_strategy = noauth
        transport_url = {transport_url}
        api_paste_config = {workdir}/etc/api-paste.ini
        osapi_volume_listen = 127.0.0.1
        osapi_volume_listen_port = {api_port}
        osapi_volume_workers = 1
        state_path = {workdir}/state
        log_dir = {workdir}/log
        use_stderr = false
        debug = false
        host = {HOST}
        enabled_backends = {BACKEND}
        storage_availability_zone = nova
        default_availability_zone = nova
        # heartbeat every second, "down" 5 s after the last one: liveness tests stay short
        report_interval = 1
        service_down_time = 5
        periodic_interval = 5
        # the scheduler waits this long for capabilities before it heartbeats (default 60)
        scheduler_driver_init_wait_time = 10
        # bounds RPC calls (get_pools, os-services >= 3.49); default 60
        rpc_response_timeout = 10
        """
    if scheduler_max_attempts is not None:
        conf += f"scheduler_max_attempts = {scheduler_max_attempts}\n"
    conf += f"""
        [database]
        connection = {database_url}

        [oslo_concurrency]
        lock_path = {workdir}/locks

        [coordination]
        backend_url = file://{workdir}/coordination

        [oslo_messaging_notifications]
        driver = noop

        [{BACKEND}]
        volume_driver = fake_backend_driver.FaultyFakeDriver
        volume_backend_name = {BACKEND}
        """
    if tracing.mode == "osprofiler":
        host_port = str(tracing.otlp_endpoint).split("://", 1)[-1].rstrip("/")
        conf += f"""
        [profiler]
        enabled = true
        hmac_keys = {tracing.hmac_key}
        connection_string = otlp://{host_port}
        """
    return textwrap.dedent(conf)


def _paste_ini(venv: Path, tracing: Tracing) -> str:
    """cinder's own api-paste.ini; with otel, the W3C middleware first in the noauth pipeline."""
    text = (venv / "etc" / "cinder" / "api-paste.ini").read_text()
    if tracing.mode != "otel":
        return text
    pipeline = "noauth = request_id "
    if pipeline not in text:
        raise RealCinderError("cinder's api-paste.ini has no `noauth = request_id …` pipeline")
    text = text.replace(pipeline, "noauth = otel request_id ", 1)
    return text + ("\n[filter:otel]\npaste.filter_factory = cinder_otel_boot:wsgi_filter_factory\n")


@dataclass
class CinderStack(CinderAdmin):
    """cinder-api, -scheduler and -volume under ``workdir``, on one vhost and one database."""

    workdir: Path
    transport_url: str
    database_url: str
    venv: Path = field(default_factory=default_venv)
    port: int = 0
    tracing: Tracing = field(default_factory=Tracing)
    capacity_gb: float | None = None
    scheduler_max_attempts: int | None = None
    startup_timeout: float = 120.0
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).absolute()
        self.venv = Path(self.venv).absolute()
        self.port = self.port or free_port()

    @property
    def conf_path(self) -> Path:
        return self.workdir / "etc" / "cinder.conf"

    def log_path(self, service: str) -> Path:
        """oslo.log's file for ``service`` (cinder-api.log, cinder-scheduler.log, …)."""
        return self.workdir / "log" / f"{service}.log"

    def pids(self, service: str | None = None) -> list[int]:
        """The live processes of one service (parent and forked children), or of all three."""
        chosen = [service] if service else list(self.running)
        found = []
        for name in chosen:
            process = self.running.get(name)
            if process is not None and processes.alive(process.pid):
                found += [process.pid, *processes.descendants(process.pid)]
        return found

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> CinderStack:
        if self.tracing.mode == "otel" and not side_ready(self.venv, "otel"):
            raise RealCinderError(
                "tracing otel needs the OpenTelemetry extras: run "
                "`python -m voltrace.devtools.real_cinder build`"
            )
        for name in ("etc", "state", "log", "locks", "coordination", "drivers"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        for shipped in _SHIPPED:
            shutil.copyfile(_HERE / shipped, self.workdir / "drivers" / shipped)
        (self.workdir / "etc" / "api-paste.ini").write_text(_paste_ini(self.venv, self.tracing))
        # The file holds the HMAC key when profiling: readable by us only.
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as conf:
            conf.write(
                stack_conf(
                    self.workdir,
                    api_port=self.port,
                    transport_url=self.transport_url,
                    database_url=self.database_url,
                    tracing=self.tracing,
                    scheduler_max_attempts=self.scheduler_max_attempts,
                )
            )
        try:
            for service in ("cinder-volume", "cinder-scheduler", "cinder-api"):
                self._launch(service)
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _environment(self, service: str) -> dict[str, str]:
        env = cinder_environment()
        path = [str(side_dir(self.venv) / "base"), str(self.workdir / "drivers")]
        if self.tracing.mode == "otel":
            path.append(str(side_dir(self.venv) / "otel"))
            env.update(
                OTEL_SERVICE_NAME=service,
                OTEL_EXPORTER_OTLP_ENDPOINT=str(self.tracing.otlp_endpoint),
                OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            )
        if self.tracing.mode != "off":
            # api and volume fork after start: with batches of 512 their spans never leave.
            env["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(path)
        if service == "cinder-volume" and self.capacity_gb is not None:
            env["FAKE_CAPACITY_GB"] = str(self.capacity_gb)
        return env

    def _launch(self, service: str) -> None:
        short = service.removeprefix("cinder-")
        if self.tracing.mode == "otel":
            command = [
                str(self.venv / "bin" / "python"),
                str(self.workdir / "drivers" / "cinder_otel_boot.py"),
                short,
            ]
        else:
            command = [str(self.venv / "bin" / service)]
        # Named explicitly: oslo.log would name the file after the outermost script, which
        # under cinder_otel_boot.py is not the service.
        command += ["--config-file", str(self.conf_path), "--log-file", f"{service}.log"]
        with open(self.workdir / "log" / f"{service}.out", "ab") as out:
            # Its own process group, so stop() reaches the children it forks.
            self.running[service] = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment(service),
                start_new_session=True,
                cwd=self.workdir,
            )

    def _failure(self, what: str) -> RealCinderError:
        logs = "\n".join(
            f"--- {path}:\n{processes.tail(path, 12)}"
            for service in SERVICES
            for path in (self.workdir / "log" / f"{service}.out", self.log_path(service))
            if path.exists() and path.stat().st_size
        )
        return RealCinderError(f"{what}\n{logs}")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        checks = [
            ("cinder-api to answer GET /", self._api_answers),
            ("cinder-volume and cinder-scheduler to be up in os-services", self._all_up),
            ("the scheduler to return a pool (get_pools)", self._has_pools),
        ]
        for what, check in checks:
            while True:
                for service, process in self.running.items():
                    if process.poll() is not None:
                        raise self._failure(
                            f"{service} exited {process.returncode} while "
                            f"starting (waiting for {what})"
                        )
                with contextlib.suppress(OSError, http.client.HTTPException, RealCinderError):
                    if check():
                        break
                if time.monotonic() > deadline:
                    raise self._failure(
                        f"the complete Cinder was not ready within "
                        f"{self.startup_timeout:.0f} s (waiting for {what})"
                    )
                time.sleep(0.1)  # polling interval while the services boot

    def _api_answers(self) -> bool:
        # cinder-api's version document, not some other server's answer on the port
        answer = self.request("GET", "/", timeout=2.0)
        return (
            answer.status in (200, 300)
            and isinstance(answer.body, dict)
            and ("versions" in answer.body)
        )

    def _all_up(self) -> bool:
        return self.service_states() == {"cinder-scheduler": "up", "cinder-volume": "up"}

    def _has_pools(self) -> bool:
        return bool(self.pools())

    def service_states(self) -> dict[str, str]:
        """``{binary: state}`` from os-services (one host, one backend here)."""
        return {s["binary"]: s["state"] for s in self.services()}

    def freeze(self, service: str) -> None:
        """SIGSTOP a service (parent and children): with PostgreSQL it holds no lock."""
        self._signal(service, signal.SIGSTOP)

    def thaw(self, service: str) -> None:
        self._signal(service, signal.SIGCONT)

    def _signal(self, service: str, sig: int) -> None:
        for pid in self.pids(service):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self) -> None:
        """SIGKILL each service's process group and descendants; reap them."""
        launched, self.running = list(self.running.values()), {}
        signalled = processes.kill_tree([p.pid for p in launched])
        for process in launched:
            process.wait()
        left = processes.wait_gone(signalled, timeout=5)
        if left:
            raise RealCinderError(f"cinder processes survived SIGKILL: {left}")

    def __enter__(self) -> CinderStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# Everything at once: broker + PostgreSQL + one stack (the dev tool)
# ---------------------------------------------------------------------------


class FullCinder:
    """Own broker, own PostgreSQL (template copy) and one stack, all under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        venv: Path | None = None,
        api_port: int | None = None,
        tracing: Tracing | None = None,
        capacity_gb: float | None = None,
        scheduler_max_attempts: int | None = None,
    ) -> None:
        self.workdir = Path(workdir).absolute()
        self.venv = (venv or default_venv()).absolute()
        self.api_port = api_port
        self.tracing = tracing or Tracing()
        self.capacity_gb = capacity_gb
        self.scheduler_max_attempts = scheduler_max_attempts
        self.broker: rabbitmq.RabbitMQ | None = None
        self.pg: postgres.Postgres | None = None
        self._stack: CinderStack | None = None

    @property
    def stack(self) -> CinderStack:
        if self._stack is None:
            raise RealCinderError("the complete Cinder is not started")
        return self._stack

    @property
    def pids(self) -> dict[str, list[int]]:
        found = {
            "rabbitmq": self.broker.pids if self.broker else [],
            "postgres": self.pg.pids if self.pg else [],
        }
        if self._stack is not None:
            found.update({s: self._stack.pids(s) for s in SERVICES})
        return found

    def start(self) -> FullCinder:
        if not full_ready(self.venv, self.tracing.mode):
            raise RealCinderError(
                "the complete Cinder is not built: run "
                "`python -m voltrace.devtools.real_cinder build`"
            )
        missing = missing_prerequisites()
        if missing:
            raise RealCinderError("the complete Cinder needs " + "; ".join(missing))
        try:
            self.broker = rabbitmq.RabbitMQ(self.workdir / "rabbitmq", vhosts=["s1"]).launch()
            # PostgreSQL starts while beam boots; cinder starts only once AMQP listens
            # (earlier, oslo.messaging backs off and the first get_pools is dropped).
            self.pg = postgres.Postgres(template_dir(self.venv) / "data").start()
            database = self.pg.create_database("s1")
            self.broker.wait_until_ready()
            self._stack = CinderStack(
                self.workdir / "cinder",
                self.broker.transport_url("s1"),
                database,
                venv=self.venv,
                port=self.api_port or 0,
                tracing=self.tracing,
                capacity_gb=self.capacity_gb,
                scheduler_max_attempts=self.scheduler_max_attempts,
            ).start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stacks first (they hold connections), then PostgreSQL, then the broker."""
        errors: list[str] = []
        for part in (self._stack, self.pg, self.broker):
            if part is None:
                continue
            try:
                part.stop()
            except (RealCinderError, rabbitmq.RabbitMQError, postgres.PostgresError) as exc:
                errors.append(str(exc))
        self._stack = self.pg = self.broker = None
        if errors:
            raise RealCinderError("; ".join(errors))

    def __enter__(self) -> FullCinder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def memory_mb(pids: Mapping[str, Sequence[int]]) -> dict[str, tuple[float, float]]:
    """``{part: (PSS MB, RSS MB)}`` for a ``FullCinder.pids``-shaped mapping, plus ``total``."""
    figures = {}
    for part, part_pids in pids.items():
        pss, rss = processes.memory_kb(part_pids)
        figures[part] = (round(pss / 1024, 1), round(rss / 1024, 1))
    figures["total"] = (
        round(sum(p for p, _ in figures.values()), 1),
        round(sum(r for _, r in figures.values()), 1),
    )
    return figures
