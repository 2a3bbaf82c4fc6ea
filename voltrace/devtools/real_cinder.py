"""A real cinder-api (PyPI ``cinder`` 29.0.0) on 127.0.0.1, alone or as a complete Cinder.

Cinder runs from its own cached virtualenv (``cinder_venv``) and is only ever spoken to over
HTTP: it monkey-patches eventlet, so it is never imported into voltrace's process. Commands::

    python -m voltrace.devtools.real_cinder build    # venv, extras, PostgreSQL template
    python -m voltrace.devtools.real_cinder run --port 8776 [--profiler-otlp URL]
    python -m voltrace.devtools.real_cinder run --full [--tracing osprofiler|otel|off]
                                                      [--otlp URL] [--capacity-gb N]

``run`` is cinder-api alone (noauth, sqlite, no volume service: volumes stay ``creating``).
``run --full`` is the complete Cinder of ``cinder_stack`` (api + scheduler + volume over
our own RabbitMQ, PostgreSQL from a template): volumes go ``available`` or ``error`` for
real, and every failure past the API can be produced on purpose (see ``fake_backend_driver``).
Both keep their work directory (and cinder-api.log) after they stop, and print its path.
The latency benchmark lives in ``bench/real_cinder.py``.

In code (the integration tests do this)::

    with RealCinder(tmp_path) as cinder:            # conf, db, start, wait for GET /
        ServeConfig(cinder=CinderSettings(endpoint_template=cinder.endpoint_template))
        cinder.set_quota(project, volumes=1)
        snapshot = cinder.available_snapshot(project, size=1)

Settings of the simple cinder-api:

* ``auth_strategy = noauth``: the token is ``"<user>:<project>"`` and every
  caller is admin (voltrace forwards the user's token as Nova does, so send
  ``X-Auth-Token: user:project`` to voltrace);
* ``cinder-manage db sync`` runs once per venv; later starts copy that schema
  (a fresh, empty DB each time, about 2.5 s faster);
* ``available_snapshot`` makes a usable snapshot the way an operator would fix a
  stuck one (set ``volumes.host`` in the DB, then ``os-reset_status``);
* with ``Profiler(hmac_keys, otlp_endpoint)`` cinder's ``[profiler]`` exports
  OSProfiler spans over OTLP/HTTP (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE=1``, so
  each span leaves as soon as it ends instead of after 512 of them).

Stopping sends SIGTERM to cinder-api's PID (its worker follows; SIGKILL after
10 s), then SIGKILLs whatever is left in the process group it was started in.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voltrace.devtools import cinder_stack
from voltrace.devtools.cinder_admin import (
    ADMIN_PROJECT,
    CinderAdmin,
    Profiler,
    Response,
    cinder_environment,
)
from voltrace.devtools.cinder_venv import (
    CINDER_VERSION,
    REQUIREMENTS,
    VENV_ENV,
    RealCinderError,
    default_venv,
    ensure_venv,
    venv_ready,
)
from voltrace.devtools.ports import free_port, port_in_use
from voltrace.devtools.processes import tail

__all__ = [
    "ADMIN_PROJECT",
    "CINDER_VERSION",
    "REQUIREMENTS",
    "Profiler",
    "RealCinder",
    "RealCinderError",
    "Response",
    "cinder_conf",
    "cinder_environment",
    "default_venv",
    "ensure_venv",
    "free_port",
    "main",
    "venv_ready",
]

_DB_TEMPLATE = "voltrace-synced-cinder.sqlite"


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


class RealCinder(CinderAdmin):
    """One cinder-api process, its sqlite DB and its logs, all under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        venv: Path | None = None,
        port: int | None = None,
        profiler: Profiler | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
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

    def start(self) -> RealCinder:
        if not venv_ready(self.venv):
            raise RealCinderError(
                f"no complete cinder venv at {self.venv}; run "
                "`python -m voltrace.devtools.real_cinder build` first"
            )
        if port_in_use(self.port):
            raise RealCinderError(
                f"port {self.port} on 127.0.0.1 is already in use; stop that process or "
                "choose another --port"
            )
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
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
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
            [
                str(self.venv / "bin" / "cinder-manage"),
                "--config-file",
                str(self.conf_path),
                "db",
                "sync",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            timeout=120,
            check=False,
        )
        if sync.returncode != 0:
            raise RealCinderError(
                f"cinder-manage db sync exited {sync.returncode}; "
                f"see {self.output_path}:\n{tail(self.output_path)}"
            )
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
                    f"{self.output_path}:\n{tail(self.output_path)}\n"
                    f"{self.log_path}:\n{tail(self.log_path)}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                # Only counts while our process lives: the pre-start check and this one
                # together mean the answer is ours, not another server's on the port.
                if self.request("GET", "/", timeout=1.0).status in (200, 300) and (
                    self.process.poll() is None
                ):
                    return
            if time.monotonic() > deadline:
                raise RealCinderError(
                    f"cinder-api did not answer GET / on {self.url} within "
                    f"{self.startup_timeout:.0f} s; see {self.log_path}"
                )
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

    # -- the admin side: CinderAdmin; plus what only sqlite allows ------

    def set_volume_host(self, volume_id: str, host: str = "localhost@lvm#lvm") -> None:
        """What the scheduler would have done; snapshot create refuses a volume without a host."""
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=30)) as db, db:
            db.execute("UPDATE volumes SET host = ? WHERE id = ?", (host, volume_id))

    def available_snapshot(self, project: str, size: int = 1) -> dict:
        """A snapshot in status ``available`` (of a new volume of ``size`` GB)."""
        volume = self.create_volume(project, size=size, name="snapshot-source")
        self.set_volume_host(volume["id"])
        self.reset_status(project, "volumes", volume["id"], "available")
        snapshot = self._ok(
            self.request(
                "POST",
                f"/v3/{project}/snapshots",
                {"snapshot": {"volume_id": volume["id"], "name": "voltrace-snap"}},
                project=project,
            ),
            202,
        )["snapshot"]
        self.reset_status(project, "snapshots", snapshot["id"], "available")
        return self.get_snapshot(project, snapshot["id"])


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voltrace.devtools.real_cinder",
        description="A real Cinder 29 on 127.0.0.1: cinder-api alone, or the complete "
        "Cinder (api + scheduler + volume over RabbitMQ and PostgreSQL).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser(
        "build",
        help="create the cached venv, the complete Cinder's extras and its "
        "PostgreSQL template (each a no-op when complete)",
    )
    build.add_argument("--venv", type=Path, help=f"default: ${VENV_ENV} or the user cache")
    build.add_argument(
        "--api-only",
        action="store_true",
        help="only the venv cinder-api needs (no RabbitMQ/PostgreSQL parts)",
    )
    run = commands.add_parser("run", help="run until Ctrl-C/SIGTERM, then stop everything")
    run.add_argument("--port", type=int, default=8776, help="cinder-api's port (default 8776)")
    run.add_argument(
        "--workdir",
        type=Path,
        help="conf, databases and logs (default: a new voltrace-cinder-* dir "
        "under the temp dir, kept after exit)",
    )
    run.add_argument(
        "--full",
        action="store_true",
        help="the complete Cinder: api + scheduler + volume (fake driver with "
        "fault knobs) over our own RabbitMQ and PostgreSQL",
    )
    run.add_argument(
        "--profiler-otlp",
        metavar="URL",
        help="cinder-api alone: enable [profiler], exporting OTLP/HTTP here; the "
        "HMAC key comes from VOLTRACE_OSPROFILER_HMAC_KEY",
    )
    run.add_argument(
        "--tracing",
        choices=cinder_stack.TRACING_MODES,
        default=None,
        help="--full: osprofiler (the default with --otlp: cinder's own "
        "[profiler], joined by voltrace's signed headers), otel (the PyPI "
        "oslo.messaging/taskflow instrumentations, W3C traceparent) or off",
    )
    run.add_argument("--otlp", metavar="URL", help="--full: OTLP/HTTP endpoint for the spans")
    run.add_argument(
        "--capacity-gb", type=float, help="--full: the fake pool's capacity (default: infinite)"
    )
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            if args.api_only:
                print(ensure_venv(args.venv, progress=sys.stderr))
            else:
                print(cinder_stack.ensure_full(args.venv, progress=sys.stderr))
            return 0
        if not 0 < args.port < 65536:
            raise RealCinderError(f"--port {args.port} is not a TCP port (1-65535)")
        return _run_full(args) if args.full else _run(args)
    except (RealCinderError, ValueError) as exc:
        print(f"real_cinder: {exc}", file=sys.stderr)
        return 1


def _workdir(args: argparse.Namespace) -> Path:
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return Path(args.workdir)
    return Path(tempfile.mkdtemp(prefix="voltrace-cinder-"))


def _exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so a stop during start-up still stops what was started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def _serve_until_signalled(process: subprocess.Popen[bytes] | None, stop: Any, log: Path) -> int:
    """Wait for SIGTERM/Ctrl-C (exit 0) or for cinder-api to die by itself (exit 1)."""
    try:
        with contextlib.suppress(KeyboardInterrupt):
            if process is not None:
                code = process.wait()
                print(
                    f"real_cinder: cinder-api exited {code} by itself; see {log}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
        return 0
    finally:
        stop()


def _run(args: argparse.Namespace) -> int:
    if args.tracing or args.otlp or args.capacity_gb is not None:
        raise RealCinderError("--tracing, --otlp and --capacity-gb need --full")
    ensure_venv(progress=sys.stderr)
    profiler = None
    if args.profiler_otlp:
        key = os.environ.get("VOLTRACE_OSPROFILER_HMAC_KEY")
        if not key:
            raise RealCinderError("--profiler-otlp needs VOLTRACE_OSPROFILER_HMAC_KEY")
        profiler = Profiler(key, args.profiler_otlp)
    if port_in_use(args.port):  # before a work directory is made for nothing
        raise RealCinderError(
            f"port {args.port} on 127.0.0.1 is already in use; stop that "
            "process or choose another --port"
        )
    workdir = _workdir(args)
    _exit_on_sigterm()
    cinder = RealCinder(workdir, port=args.port, profiler=profiler).start()
    print(
        f"cinder-api {CINDER_VERSION} on {cinder.url} (noauth: token 'user:project'); "
        f"voltrace serve --cinder-endpoint '{cinder.endpoint_template}'\n"
        f"log: {cinder.log_path} (kept after exit)",
        file=sys.stderr,
        flush=True,
    )
    return _serve_until_signalled(cinder.process, cinder.stop, cinder.log_path)


def _run_full(args: argparse.Namespace) -> int:
    if args.profiler_otlp:
        raise RealCinderError("with --full use --otlp URL (and --tracing)")
    mode = args.tracing or ("osprofiler" if args.otlp else "off")
    key = os.environ.get("VOLTRACE_OSPROFILER_HMAC_KEY") if mode == "osprofiler" else None
    if mode == "osprofiler" and not key:
        raise RealCinderError(
            "--tracing osprofiler needs VOLTRACE_OSPROFILER_HMAC_KEY (the key voltrace signs with)"
        )
    tracing = cinder_stack.Tracing(mode, args.otlp, key)
    if port_in_use(args.port):
        raise RealCinderError(
            f"port {args.port} on 127.0.0.1 is already in use; stop that "
            "process or choose another --port"
        )
    cinder_stack.ensure_full(progress=sys.stderr)
    workdir = _workdir(args)
    print(f"starting the complete Cinder in {workdir} (about 15 s)...", file=sys.stderr, flush=True)
    started = time.monotonic()
    _exit_on_sigterm()
    full = cinder_stack.FullCinder(
        workdir, api_port=args.port, tracing=tracing, capacity_gb=args.capacity_gb
    ).start()
    stack = full.stack
    print(
        f"complete Cinder {CINDER_VERSION} ready in {time.monotonic() - started:.1f} s on "
        f"{stack.url} (noauth: token 'user:<hex project id>'; tracing {mode})\n"
        f"  voltrace serve --cinder-endpoint '{stack.endpoint_template}'\n"
        f"  faults: volume metadata fault=backend | fault=noresched | sleep_s=N\n"
        f"  logs: {stack.workdir / 'log'}/cinder-{{api,scheduler,volume}}.log "
        f"(kept after exit)",
        file=sys.stderr,
        flush=True,
    )
    return _serve_until_signalled(
        stack.running.get("cinder-api"), full.stop, stack.log_path("cinder-api")
    )


if __name__ == "__main__":
    sys.exit(main())
