"""A real cinder-api (PyPI ``cinder`` 29.0.0) on 127.0.0.1: no Keystone, no RabbitMQ, sqlite.

Cinder runs from its own cached virtualenv and is only ever spoken to over
HTTP: it monkey-patches eventlet, so it is never imported into voltrace's
process. Commands::

    python -m voltrace.devtools.real_cinder build     # build the venv once (about a minute)
    python -m voltrace.devtools.real_cinder run --port 8776 [--profiler-otlp http://127.0.0.1:4318]
    python -m voltrace.devtools.real_cinder bench --runs 30   # cinder alone vs through voltrace

and in code (the integration tests do this)::

    with RealCinder(tmp_path) as cinder:            # conf, db, start, wait for GET /
        ServeConfig(cinder=CinderSettings(endpoint_template=cinder.endpoint_template))
        cinder.set_quota(project, volumes=1)
        snapshot = cinder.available_snapshot(project, size=1)

Settings:

* the venv lives in ``$VOLTRACE_CINDER_VENV`` or
  ``${XDG_CACHE_HOME:-~/.cache}/voltrace/cinder-29.0.0-venv``; it is built in
  place under a file lock and marked ready only when complete, so a killed
  build is redone, never half-used;
* ``auth_strategy = noauth``: the token is ``"<user>:<project>"`` and every
  caller is admin (voltrace forwards the user's token as Nova does, so send
  ``X-Auth-Token: user:project`` to voltrace);
* ``cinder-manage db sync`` runs once per venv; later starts copy that schema
  (a fresh, empty DB each time, about 2.5 s faster);
* no volume service runs: volumes stay ``creating``. ``available_snapshot``
  makes a usable snapshot the way an operator would fix a stuck one (set
  ``volumes.host`` in the DB, then ``os-reset_status``);
* with ``Profiler(hmac_keys, otlp_endpoint)`` cinder's ``[profiler]`` exports
  OSProfiler spans over OTLP/HTTP (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE=1``, so
  each span leaves as soon as it ends instead of after 512 of them).

Stopping sends SIGTERM to cinder-api's PID (its worker follows; SIGKILL after
10 s), then SIGKILLs whatever is left in the process group it was started in.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

CINDER_VERSION = "29.0.0"
#: What goes into cinder's venv. osprofiler's OTLP driver needs the SDK and the HTTP exporter.
REQUIREMENTS = (
    f"cinder=={CINDER_VERSION}",
    "osprofiler==4.4.0",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-http==1.45.2",
)
VENV_ENV = "VOLTRACE_CINDER_VENV"
#: The project admin calls run in (cinder wants project ids in URLs to match [0-9a-f-]+).
ADMIN_PROJECT = "ad" * 16
_READY = ".voltrace-ready"
_DB_TEMPLATE = "voltrace-synced-cinder.sqlite"
_BUILD_TIMEOUT_S = 900.0


class RealCinderError(RuntimeError):
    """The venv could not be built, or cinder-api did not come up (the message says why)."""


# ---------------------------------------------------------------------------
# The venv
# ---------------------------------------------------------------------------


def default_venv() -> Path:
    """``$VOLTRACE_CINDER_VENV``, else the per-user cache."""
    if os.environ.get(VENV_ENV):
        return Path(os.environ[VENV_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "voltrace" / f"cinder-{CINDER_VERSION}-venv"


def _stamp(python: str) -> dict[str, Any]:
    return {"requirements": list(REQUIREMENTS), "python": os.path.realpath(python)}


def venv_ready(venv: Path | None = None) -> bool:
    """True if ``venv`` holds a complete build of exactly ``REQUIREMENTS``."""
    venv = venv or default_venv()
    try:
        stamp = json.loads((venv / _READY).read_text())
    except (OSError, ValueError):
        return False
    complete = (venv / "bin" / "cinder-api").exists()
    return complete and stamp.get("requirements") == list(REQUIREMENTS)


def ensure_venv(venv: Path | None = None, *, python: str = sys.executable,
                progress: TextIO | None = None) -> Path:
    """Build cinder's venv unless a complete one is there; returns its path.

    Raises ``RealCinderError`` (with the tail of pip's output) if it cannot be built.
    """
    venv = (venv or default_venv()).absolute()
    log_path = venv.parent / f"{venv.name}.build.log"
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        lock = open(venv.parent / f"{venv.name}.lock", "w")  # noqa: SIM115
    except OSError as exc:
        raise RealCinderError(f"cannot create the cinder venv at {venv}: {exc}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others then reuse it
        if venv_ready(venv):
            return venv
        if progress is not None:
            print(f"building cinder {CINDER_VERSION} venv in {venv} (log: {log_path})",
                  file=progress, flush=True)
        # A venv cannot be moved after it is built (its scripts name their path),
        # so build in place; the ready stamp is written last.
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        with open(log_path, "w") as log:
            for command in (
                [python, "-m", "venv", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input",
                 "--disable-pip-version-check", *REQUIREMENTS],
            ):
                log.write(f"$ {' '.join(command)}\n")
                log.flush()
                try:
                    result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, timeout=_BUILD_TIMEOUT_S,
                                            check=False)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    raise RealCinderError(f"building {venv} failed: {exc}") from exc
                if result.returncode != 0:
                    raise RealCinderError(
                        f"building {venv} failed ({command[0]} exited {result.returncode}); "
                        f"last lines of {log_path}:\n{_tail(log_path)}")
        if not (venv / "bin" / "cinder-api").exists():
            raise RealCinderError(f"{venv} has no bin/cinder-api after pip install; see {log_path}")
        (venv / _READY).write_text(json.dumps(_stamp(python)))
        if progress is not None:
            print(f"cinder venv ready in {time.monotonic() - started:.1f} s", file=progress,
                  flush=True)
        return venv


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------
# cinder-api
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Profiler:
    """cinder.conf ``[profiler]``: signed requests are traced and exported over OTLP/HTTP."""

    hmac_keys: str  # comma-separated; any of them validates a request
    otlp_endpoint: str  # e.g. http://127.0.0.1:4318 (the driver posts to /v1/traces)

    def __repr__(self) -> str:
        return f"Profiler(hmac_keys=<hidden>, otlp_endpoint={self.otlp_endpoint!r})"

    @property
    def connection_string(self) -> str:
        host_port = self.otlp_endpoint.split("://", 1)[-1].rstrip("/")
        return f"otlp://{host_port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cinder_conf(workdir: Path, venv: Path, port: int, profiler: Profiler | None = None) -> str:
    """The minimal cinder.conf for one API process on 127.0.0.1 (see real-components.md)."""
    conf = f"""\
        [DEFAULT]
        auth_strategy = noauth
        transport_url = fake://
        osapi_volume_listen = 127.0.0.1
        osapi_volume_listen_port = {port}
        osapi_volume_workers = 1
        storage_availability_zone = nova
        default_availability_zone = nova
        api_paste_config = {venv}/etc/cinder/api-paste.ini
        state_path = {workdir}/state
        log_dir = {workdir}/log
        enabled_backends =

        [database]
        connection = sqlite:///{workdir}/cinder.sqlite

        [oslo_concurrency]
        lock_path = {workdir}/locks

        [coordination]
        backend_url = file://{workdir}/coordination

        [oslo_messaging_notifications]
        driver = noop
        """
    if profiler is not None:
        conf += f"""
        [profiler]
        enabled = true
        hmac_keys = {profiler.hmac_keys}
        connection_string = {profiler.connection_string}
        """
    return textwrap.dedent(conf)


def cinder_environment(profiler: Profiler | None = None,
                       base: Mapping[str, str] | None = None) -> dict[str, str]:
    """cinder's environment: ours without OTEL_*/VOLTRACE_* (they configure *our* telemetry)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(("OTEL_", "VOLTRACE_", "PYTHON"))}
    if profiler is not None:
        # The forking cinder-api otherwise holds spans until 512 are queued.
        env["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = "1"
    return env


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any


class RealCinder:
    """One cinder-api process, its sqlite DB and its logs, all under ``workdir``."""

    def __init__(self, workdir: Path, *, venv: Path | None = None, port: int | None = None,
                 profiler: Profiler | None = None, startup_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir).absolute()
        self.venv = (venv or default_venv()).absolute()
        self.port = port or free_port()
        self.profiler = profiler
        self.startup_timeout = startup_timeout
        self.conf_path = self.workdir / "cinder.conf"
        self.db_path = self.workdir / "cinder.sqlite"
        self.log_path = self.workdir / "log" / "cinder-api.log"
        self.output_path = self.workdir / "cinder-api.out"
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint_template(self) -> str:
        """Nova's ``[cinder] endpoint_template`` for this cinder-api."""
        return f"{self.url}/v3/%(project_id)s"

    def start(self) -> RealCinder:
        if not venv_ready(self.venv):
            raise RealCinderError(f"no complete cinder venv at {self.venv}; run "
                                  "`python -m voltrace.devtools.real_cinder build` first")
        for name in ("state", "log", "locks", "coordination"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        # The file holds the HMAC keys when profiling: readable by us only.
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as conf:
            conf.write(cinder_conf(self.workdir, self.venv, self.port, self.profiler))
        env = cinder_environment(self.profiler)
        with open(self.output_path, "ab") as out:
            self._sync_db(out, env)
            # Its own session, so stop() can reach the forked worker too.
            self.process = subprocess.Popen(
                [str(self.venv / "bin" / "cinder-api"), "--config-file", str(self.conf_path)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _sync_db(self, out: Any, env: Mapping[str, str]) -> None:
        """``cinder-manage db sync``, once per venv: later starts copy the synced schema."""
        template = self.venv / _DB_TEMPLATE
        if template.exists():
            shutil.copyfile(template, self.db_path)
            return
        sync = subprocess.run(
            [str(self.venv / "bin" / "cinder-manage"), "--config-file", str(self.conf_path),
             "db", "sync"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env),
            timeout=120, check=False)
        if sync.returncode != 0:
            raise RealCinderError(f"cinder-manage db sync exited {sync.returncode}; "
                                  f"see {self.output_path}:\n{_tail(self.output_path)}")
        partial = template.with_name(f"{template.name}.{os.getpid()}")
        shutil.copyfile(self.db_path, partial)
        os.replace(partial, template)  # atomic: a reader sees all of it or nothing

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RealCinderError(
                    f"cinder-api exited {self.process.returncode} while starting; "
                    f"{self.output_path}:\n{_tail(self.output_path)}\n"
                    f"{self.log_path}:\n{_tail(self.log_path)}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/", timeout=1.0).status in (200, 300):
                    return
            if time.monotonic() > deadline:
                raise RealCinderError(f"cinder-api did not answer GET / on {self.url} within "
                                      f"{self.startup_timeout:.0f} s; see {self.log_path}")
            time.sleep(0.05)  # polling interval while it boots, not a synchronisation

    def stop(self) -> None:
        """SIGTERM by PID, wait, then SIGKILL its process group if anything is left."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # The worker it forked shares its process group (pgid == its pid).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def __enter__(self) -> RealCinder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the admin side (plain http.client: never traced, never signed) -----

    def request(self, method: str, path: str, body: Any = None, *, project: str = ADMIN_PROJECT,
                timeout: float = 30.0, headers: Mapping[str, str] | None = None) -> Response:
        """One call to cinder-api as an admin of ``project`` (noauth token ``admin:project``)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            all_headers = {"X-Auth-Token": f"admin:{project}", "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                all_headers["Content-Type"] = "application/json"
            all_headers.update(headers or {})
            conn.request(method, path, body=data, headers=all_headers)
            raw = conn.getresponse()
            payload = raw.read()
            parsed: Any = None
            if payload:
                try:
                    parsed = json.loads(payload)
                except ValueError:
                    parsed = payload.decode(errors="replace")
            return Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, parsed)
        finally:
            conn.close()

    def _ok(self, response: Response, *expected: int) -> Any:
        if response.status not in expected:
            raise RealCinderError(f"cinder-api answered {response.status}: {response.body}")
        return response.body

    def set_quota(self, project: str, **limits: int) -> dict:
        """``PUT /v3/{project}/os-quota-sets/{project}``, e.g. ``volumes=1``."""
        body = self._ok(self.request("PUT", f"/v3/{project}/os-quota-sets/{project}",
                                     {"quota_set": limits}, project=project), 200)
        return body["quota_set"]

    def create_volume(self, project: str, size: int = 1, **fields: Any) -> dict:
        body = {"volume": {"size": size, **fields}}
        return self._ok(self.request("POST", f"/v3/{project}/volumes", body, project=project),
                        202)["volume"]

    def get_volume(self, project: str, volume_id: str) -> dict:
        return self._ok(self.request("GET", f"/v3/{project}/volumes/{volume_id}",
                                     project=project), 200)["volume"]

    def get_snapshot(self, project: str, snapshot_id: str) -> dict:
        return self._ok(self.request("GET", f"/v3/{project}/snapshots/{snapshot_id}",
                                     project=project), 200)["snapshot"]

    def create_volume_type(self, name: str) -> dict:
        return self._ok(self.request("POST", f"/v3/{ADMIN_PROJECT}/types",
                                     {"volume_type": {"name": name}}), 200)["volume_type"]

    def reset_status(self, project: str, kind: str, item_id: str, status: str) -> None:
        """``os-reset_status`` on a volume or snapshot (``kind`` = volumes | snapshots)."""
        self._ok(self.request("POST", f"/v3/{project}/{kind}/{item_id}/action",
                              {"os-reset_status": {"status": status}}, project=project), 202)

    def set_volume_host(self, volume_id: str, host: str = "localhost@lvm#lvm") -> None:
        """What the scheduler would have done; snapshot create refuses a volume without a host."""
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=30)) as db, db:
            db.execute("UPDATE volumes SET host = ? WHERE id = ?", (host, volume_id))

    def available_snapshot(self, project: str, size: int = 1) -> dict:
        """A snapshot in status ``available`` (of a new volume of ``size`` GB)."""
        volume = self.create_volume(project, size=size, name="snapshot-source")
        self.set_volume_host(volume["id"])
        self.reset_status(project, "volumes", volume["id"], "available")
        snapshot = self._ok(self.request(
            "POST", f"/v3/{project}/snapshots",
            {"snapshot": {"volume_id": volume["id"], "name": "voltrace-snap"}},
            project=project), 202)["snapshot"]
        self.reset_status(project, "snapshots", snapshot["id"], "available")
        return self.get_snapshot(project, snapshot["id"])


# ---------------------------------------------------------------------------
# Latency: cinder-api alone vs the same create through voltrace
# ---------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench(runs: int = 30, warmup: int = 3, profiler_key: str | None = None,
          out: TextIO = sys.stdout) -> dict[str, Any]:
    """Alternate the same create: cinderclient straight to cinder-api, then through voltrace.

    voltrace runs as ``voltrace serve`` (gunicorn, traced: OTLP JSON file and JSON
    logs); this process has no telemetry, so its cinderclient is not instrumented.
    With ``profiler_key`` cinder profiles and voltrace signs (the OSProfiler bridge on).
    """
    from cinderclient import client as cinder_client
    from keystoneauth1 import session as ks_session
    from keystoneauth1.token_endpoint import Token

    from voltrace.client import NovaClient, identity_headers

    ensure_venv(progress=sys.stderr)
    project, user = uuid.uuid4().hex, "bench-user"
    token = f"{user}:{project}"
    with tempfile.TemporaryDirectory(prefix="voltrace-bench-") as tmp:
        workdir = Path(tmp)
        profiler = None
        collector = None
        if profiler_key:
            collector = _NullCollector().start()
            profiler = Profiler(profiler_key, collector.url)
        with RealCinder(workdir / "cinder", profiler=profiler) as cinder:
            cinder.set_quota(project, volumes=-1, gigabytes=-1)
            nova_port = free_port()
            env = dict(os.environ, OTEL_TRACES_EXPORTER="none")
            if profiler_key:
                env["VOLTRACE_OSPROFILER_HMAC_KEY"] = profiler_key
            command = [sys.executable, "-m", "voltrace", "serve", "--port", str(nova_port),
                       "--cinder-endpoint", cinder.endpoint_template, "--workers", "1",
                       "--traces-file", str(workdir / "traces.jsonl"),
                       "--log-file", str(workdir / "voltrace.log"), "--log-format", "json"]
            with open(workdir / "serve.out", "wb") as serve_out:
                nova = subprocess.Popen(command, env=env, stdout=serve_out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                _wait_for_port(nova_port, nova)
                direct = cinder_client.Client(
                    "3.0", session=ks_session.Session(),
                    auth=Token(endpoint=cinder.url, token=token),
                    endpoint_override=cinder.endpoint_template % {"project_id": project})
                client = NovaClient(f"http://127.0.0.1:{nova_port}")
                headers = identity_headers(user_id=user, project_id=project, roles="member",
                                           token=token)

                def via_cinder() -> None:
                    volume = direct.volumes.create(1, name="bench")
                    # Nova's _untranslate_volume_summary_view: this triggers the lazy GET.
                    hasattr(volume, "volume_image_metadata")

                def via_voltrace() -> None:
                    response = client.create_volume({"size": 1, "display_name": "bench"},
                                                    headers=headers)
                    if response.status != 200:
                        raise RealCinderError(f"voltrace answered {response.status}: "
                                              f"{response.body!r}")

                timings: dict[str, list[float]] = {"cinder": [], "voltrace": []}
                for index in range(warmup + runs):
                    order = [("cinder", via_cinder), ("voltrace", via_voltrace)]
                    if index % 2:
                        order.reverse()  # alternate who goes first
                    for name, call in order:
                        started = time.perf_counter()
                        call()
                        elapsed = time.perf_counter() - started
                        if index >= warmup:
                            timings[name].append(elapsed)
                client.close()
            finally:
                nova.send_signal(signal.SIGTERM)
                try:
                    nova.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    nova.kill()
                    nova.wait()
        if collector is not None:
            collector.stop()
        own = _own_cost_from_traces(workdir / "traces.jsonl")
    result = {
        "runs": runs,
        "osprofiler_bridge": bool(profiler_key),
        "cinder_ms": _summary(timings["cinder"]),
        "voltrace_ms": _summary(timings["voltrace"]),
        "added_ms_median": round(
            (statistics.median(timings["voltrace"]) - statistics.median(timings["cinder"])) * 1e3,
            3),
        # Each run's pair, voltrace minus cinder: robust to drifting machine load.
        "added_ms_paired_median": round(statistics.median(
            v - c for v, c in zip(timings["voltrace"], timings["cinder"], strict=True)) * 1e3, 3),
        "voltrace_in_process_ms_from_trace": own,
    }
    print(json.dumps(result, indent=2), file=out)
    return result


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values) * 1e3, 3),
            "p10": round(_percentile(values, 0.1) * 1e3, 3),
            "p90": round(_percentile(values, 0.9) * 1e3, 3)}


def _own_cost_from_traces(path: Path) -> dict[str, float] | None:
    """Per create: server span minus its Cinder CLIENT spans = voltrace's own time."""
    if not path.exists():
        return None
    spans: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        for resource in json.loads(line).get("resourceSpans", []):
            for scope in resource.get("scopeSpans", []):
                spans.extend(scope.get("spans", []))
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_trace.setdefault(span["traceId"], []).append(span)
    own: list[float] = []
    for trace_spans in by_trace.values():
        servers = [s for s in trace_spans if s.get("kind") in (2, "SPAN_KIND_SERVER")]
        if len(servers) != 1:
            continue
        server = servers[0]
        client_ns = sum(int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"])
                        for s in trace_spans if s.get("kind") in (3, "SPAN_KIND_CLIENT"))
        total_ns = int(server["endTimeUnixNano"]) - int(server["startTimeUnixNano"])
        own.append((total_ns - client_ns) / 1e9)
    return _summary(own) if own else None


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RealCinderError(f"voltrace serve exited {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)  # polling interval while it starts
    raise RealCinderError(f"nothing listens on 127.0.0.1:{port}")


class _NullCollector:
    """An OTLP/HTTP sink for the bench (answers 200, keeps nothing)."""

    def start(self) -> _NullCollector:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voltrace.devtools.real_cinder",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="create the cached venv (no-op when complete)")
    build.add_argument("--venv", type=Path, help=f"default: ${VENV_ENV} or the user cache")
    run = commands.add_parser("run", help="run cinder-api on 127.0.0.1 until Ctrl-C/SIGTERM")
    run.add_argument("--port", type=int, default=8776)
    run.add_argument("--workdir", type=Path, help="conf, sqlite DB and logs (default: a temp dir)")
    run.add_argument("--profiler-otlp", metavar="URL",
                     help="enable [profiler], exporting OTLP/HTTP here; the HMAC key comes "
                          "from VOLTRACE_OSPROFILER_HMAC_KEY, as for `voltrace serve`")
    bench_parser = commands.add_parser("bench", help="median create latency, direct vs voltrace")
    bench_parser.add_argument("--runs", type=int, default=30)
    bench_parser.add_argument("--osprofiler", action="store_true",
                              help="with cinder profiling and voltrace signing (key generated)")
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            print(ensure_venv(args.venv, progress=sys.stderr))
            return 0
        if args.command == "bench":
            bench(args.runs, profiler_key=uuid.uuid4().hex if args.osprofiler else None)
            return 0
        return _run(args)
    except RealCinderError as exc:
        print(f"real_cinder: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    ensure_venv(progress=sys.stderr)
    profiler = None
    if args.profiler_otlp:
        key = os.environ.get("VOLTRACE_OSPROFILER_HMAC_KEY")
        if not key:
            print("real_cinder: --profiler-otlp needs VOLTRACE_OSPROFILER_HMAC_KEY",
                  file=sys.stderr)
            return 2
        profiler = Profiler(key, args.profiler_otlp)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="voltrace-cinder-")))
        cinder = stack.enter_context(RealCinder(workdir, port=args.port, profiler=profiler))
        print(f"cinder-api {CINDER_VERSION} on {cinder.url} (noauth: token 'user:project'); "
              f"voltrace serve --cinder-endpoint '{cinder.endpoint_template}'; "
              f"log {cinder.log_path}", file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            assert cinder.process is not None
            cinder.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
