"""Serving voltrace: the app factory, an in-process server, and the production server.

* ``build_service`` wires policy, Cinder client, pipeline, API and telemetry.
* ``EmbeddedServer`` runs it on cheroot (a threaded, keep-alive WSGI server)
  in this process: the demo, the tests and the benchmarks use it.
* ``serve`` runs it on gunicorn (``--workers`` processes of ``gthread``
  workers). Telemetry is built in each worker *after* fork
  (``preload_app=False``): a BatchSpanProcessor's thread, a gRPC channel and a
  Prometheus server do not survive fork. With telemetry fully off
  (``OTEL_SDK_DISABLED=true`` and ``--log-level off``) no Telemetry is built at all.

Shutdown: SIGTERM is graceful (gunicorn stops accepting, in-flight requests
finish within ``GRACEFUL_TIMEOUT_S``), SIGINT is quick; either way each worker
runs ``worker_exit`` after its last request, which flushes every queued span
and log line (``TELEMETRY_FLUSH_TIMEOUT_S``) before the process exits.
tests/test_serve_process.py checks both against the files the server wrote.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from voltrace.api import MAX_REQUEST_BODY_SIZE, build_app
from voltrace.cinder import CinderSettings, VolumeAPI
from voltrace.follow import FollowingObserver, FollowSettings, VolumeFollower
from voltrace.pipeline import Pipeline
from voltrace.policy import VolumePolicy
from voltrace.state import StageServices
from voltrace.telemetry import Telemetry, TelemetryConfig, sdk_disabled


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8774
    cinder: CinderSettings = field(default_factory=CinderSettings)
    policy_file: str | None = None
    size_from_snapshot: bool = False
    workers: int = 1
    threads: int = 16
    max_request_body_size: int = MAX_REQUEST_BODY_SIZE
    # [oslo_middleware] enable_proxy_headers_parsing: off, as in nova, so X-Forwarded-Proto
    # and Forwarded never change the URLs voltrace answers with unless a proxy is trusted.
    enable_proxy_headers_parsing: bool = False
    # --follow-volumes: off by default, as Nova never looks at a volume after its 200.
    follow: FollowSettings | None = None
    # --healthcheck: oslo.middleware's /healthcheck, for load balancers' probes.
    healthcheck: bool = False
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)


def build_service(config: ServeConfig, telemetry: Telemetry | None = None) -> Any:
    """The whole nova-api side as one WSGI app; telemetry wraps it when given."""
    services = StageServices(
        policy=VolumePolicy(config.policy_file),
        volume_api=VolumeAPI(config.cinder),
        size_from_snapshot=config.size_from_snapshot,
    )
    if telemetry is not None and not (telemetry.enabled or telemetry.config.logs_enabled):
        telemetry = None  # nothing to observe with: the bare app
    observer: Any = telemetry.observer if telemetry else None
    if config.follow is not None and telemetry is not None:
        follower = VolumeFollower(services.volume_api, telemetry, config.follow)
        _followers.append(follower)
        observer = FollowingObserver(observer, follower)
    pipeline = Pipeline(services, observer=observer)
    app = build_app(
        pipeline,
        config.max_request_body_size,
        enable_proxy_headers_parsing=config.enable_proxy_headers_parsing,
        healthcheck=config.healthcheck,
    )
    return telemetry.instrument_wsgi(app) if telemetry else app


_followers: list[VolumeFollower] = []


def stop_followers() -> None:
    """Stop every volume follower this process started (bounded), before telemetry flushes."""
    while _followers:
        _followers.pop().shutdown()


def _nova_like_cheroot() -> Any:
    """cheroot's connection class, reading requests as nova-api's reference server does.

    The reference is the threaded wsgiref server real_nova hosts nova 34 on: a repeated
    Content-Type (or Content-Length) keeps its *first* value and other repeated headers are
    joined with ","; a request target starting with "//" is a path (nova's URL map folds the
    slashes), not an absolute URI for cheroot to refuse.
    """
    from cheroot import server as cheroot_server

    first_wins = {b"Content-Type", b"Content-Length"}

    class HeaderReader(cheroot_server.HeaderReader):
        def __call__(self, rfile: Any, hdict: dict | None = None) -> dict:
            hdict = {} if hdict is None else hdict
            name = None
            while True:
                line = rfile.readline()
                if not line:
                    raise ValueError("Illegal end of headers.")
                if line == b"\r\n":
                    return hdict
                if not line.endswith(b"\r\n"):
                    raise ValueError("HTTP requires CRLF terminators")
                if line[:1] in (b" ", b"\t"):  # a continuation of the previous header
                    if name is None:
                        raise ValueError("Illegal header line.")
                    hdict[name] = hdict[name] + b" " + line.strip()
                    continue
                key, colon, value = line.partition(b":")
                if not colon:
                    raise ValueError("Illegal header line.")
                name, value = key.strip().title(), value.strip()
                if name not in hdict:
                    hdict[name] = value
                elif name not in first_wins:
                    hdict[name] = hdict[name] + b"," + value

    class FoldLeadingSlashes:
        """The request line's "//path" as "/path"; everything else read as is."""

        def __init__(self, rfile: Any) -> None:
            self._rfile = rfile

        def readline(self, *args: Any) -> bytes:
            line: bytes = self._rfile.readline(*args)
            method, space, rest = line.partition(b" ")
            if space and rest.startswith(b"//"):
                line = method + b" /" + rest.lstrip(b"/")
            return line

        def __getattr__(self, name: str) -> Any:
            return getattr(self._rfile, name)

    class Request(cheroot_server.HTTPRequest):
        header_reader = HeaderReader()

        def read_request_line(self) -> Any:
            rfile = self.rfile
            self.rfile = FoldLeadingSlashes(rfile)
            try:
                return super().read_request_line()
            finally:
                self.rfile = rfile

    class Connection(cheroot_server.HTTPConnection):
        RequestHandlerClass = Request

    return Connection


class EmbeddedServer:
    """A real threaded WSGI server (cheroot) on loopback, inside this process."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 16) -> None:
        from cheroot import wsgi

        self._server = wsgi.Server((host, port), app, numthreads=threads, server_name="voltrace")
        self._server.ConnectionClass = _nova_like_cheroot()
        self._thread: threading.Thread | None = None

    def start(self) -> EmbeddedServer:
        self._server.prepare()  # binds, so the real port is known now
        self._thread = threading.Thread(
            target=self._server.serve, name="voltrace-embedded", daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self._server.bind_addr[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# Production: gunicorn
# ---------------------------------------------------------------------------

_worker_telemetry: Telemetry | None = None
_worker_slot = 0

# Telemetry.shutdown gets this long to flush; gunicorn's graceful_timeout must exceed it plus
# the longest in-flight request, or the arbiter SIGKILLs the worker mid-flush.
TELEMETRY_FLUSH_TIMEOUT_S = 10.0
GRACEFUL_TIMEOUT_S = 30
# The exporters' BatchSpanProcessor threads encode whole batches while holding the GIL; with
# CPython's default 5 ms switch interval every request thread waiting for the GIL after
# I/O can stall for up to 5 ms each time. 1 ms cut the traced p99 by about a third in
# bench/overhead.py A/B runs (136 -> 85 ms, p50 and CPU unchanged within noise).
WORKER_SWITCH_INTERVAL_S = 0.001


def _pre_fork(server: Any, worker: Any) -> None:
    # Each worker gets a stable slot, so --metrics-port P serves P, P+1, ...
    taken = {getattr(w, "voltrace_slot", None) for w in server.WORKERS.values()}
    worker.voltrace_slot = next(slot for slot in range(len(taken) + 1) if slot not in taken)


def _post_fork(server: Any, worker: Any) -> None:
    global _worker_slot
    _worker_slot = worker.voltrace_slot


def _worker_exit(server: Any, worker: Any) -> None:
    # Runs in the worker after its last request (SIGTERM: graceful; SIGINT/SIGQUIT: quick),
    # so every span still queued and every log line reaches its exporter before exit.
    global _worker_telemetry
    telemetry, _worker_telemetry = _worker_telemetry, None
    stop_followers()
    if telemetry is not None:
        telemetry.shutdown(timeout_s=TELEMETRY_FLUSH_TIMEOUT_S)


def _worker_config(config: ServeConfig, slot: int) -> TelemetryConfig:
    """This worker's telemetry: /metrics on ``metrics_port + slot``, its own Jaeger file."""
    return config.telemetry.for_worker(slot, config.workers)


def telemetry_off(config: TelemetryConfig) -> bool:
    """Spans and metrics disabled (OTEL_SDK_DISABLED) and logs off: nothing to build."""
    return sdk_disabled() and not config.logs_enabled


def _nova_like_gunicorn() -> None:
    """Make gunicorn read requests as nova-api's reference server does (see
    ``_nova_like_cheroot``), and never promise keep-alive on a connection it closes.

    * gunicorn refuses a repeated Content-Type (RFC 9110 §5.3) with a bare text/html 400;
      nova takes the first one. Accept it, and hand the app the first value.
    * A 413 leaves the body unread, so gunicorn closes the connection after answering,
      yet its header said ``Connection: keep-alive``: say ``close``.
    """
    from gunicorn.http import message
    from gunicorn.http import wsgi as gunicorn_wsgi

    if getattr(gunicorn_wsgi.create, "voltrace_patched", False):
        return
    message.RFC9110_5_3_SINGLETON_FIELDS = frozenset(
        name for name in message.RFC9110_5_3_SINGLETON_FIELDS if name != "CONTENT-TYPE"
    )
    original_create = gunicorn_wsgi.create

    def create(req: Any, *args: Any, **kwargs: Any) -> Any:
        resp, environ = original_create(req, *args, **kwargs)
        first = next((value for name, value in req.headers if name == "CONTENT-TYPE"), None)
        if first is not None:
            environ["CONTENT_TYPE"] = first
        start_response = resp.start_response

        def closing_start_response(status: str, *more: Any, **kw: Any) -> Any:
            if status[:3] == "413":
                resp.force_close()
            return start_response(status, *more, **kw)

        resp.start_response = closing_start_response
        return resp, environ

    create.voltrace_patched = True  # type: ignore[attr-defined]
    gunicorn_wsgi.create = create


def _gunicorn_application(config: ServeConfig) -> Any:
    from gunicorn.app.base import BaseApplication

    _nova_like_gunicorn()

    class VoltraceApplication(BaseApplication):
        def load_config(self) -> None:
            settings = {
                "bind": f"{config.host}:{config.port}",
                "workers": config.workers,
                "worker_class": "gthread",
                "threads": config.threads,
                "keepalive": 5,
                "graceful_timeout": GRACEFUL_TIMEOUT_S,
                "timeout": 120,
                "preload_app": False,  # build telemetry after fork, in the worker
                "pre_fork": _pre_fork,
                "post_fork": _post_fork,
                "worker_exit": _worker_exit,
                "loglevel": "warning",
                "proc_name": "voltrace",
                # X-Forwarded-Proto & co. are oslo's http_proxy_to_wsgi's business
                # (enable_proxy_headers_parsing), never gunicorn's: nova trusts no proxy.
                "secure_scheme_headers": {},
                "forwarded_allow_ips": "",
            }
            if os.path.isdir("/dev/shm"):
                # The worker heartbeat file: on tmpfs, never stalled by a slow disk.
                settings["worker_tmp_dir"] = "/dev/shm"
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            # Called in the worker, after fork (preload_app=False): the
            # BatchSpanProcessor's thread, the gRPC channel and the Prometheus
            # server all belong to this process only.
            global _worker_telemetry
            sys.setswitchinterval(WORKER_SWITCH_INTERVAL_S)
            telemetry_config = _worker_config(config, _worker_slot)
            if telemetry_off(telemetry_config):
                return build_service(config, None)  # the bare app: no observer at all
            _worker_telemetry = Telemetry.create(telemetry_config)
            return build_service(config, _worker_telemetry)

    return VoltraceApplication()


def serve(config: ServeConfig) -> int:
    """Run ``voltrace serve`` until SIGTERM (graceful, flushes) or SIGINT."""
    _gunicorn_application(config).run()
    return 0
