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
finish within ``GRACEFUL_TIMEOUT_S``), SIGINT is quick (``QUICK_STOP_GRACE_S``); either
way each worker runs ``worker_exit`` after its last request, which flushes every queued
span and log line (``TELEMETRY_FLUSH_TIMEOUT_S``) before the process exits.
tests/test_serve_process.py checks both against the files the server wrote.

Slow clients (``--client-timeout``, ``CLIENT_TIMEOUT_S``): a request must arrive whole
within the timeout, and it waits for its bytes in the worker's poller, not on one of
its ``--threads``, so half-sent requests cannot starve the others (tests/test_slow_clients.py,
bench/slowloris.py). Nova's own deployments put a buffering proxy in front; this is the
bound for when there is none.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from voltrace.api import MAX_REQUEST_BODY_SIZE, build_app
from voltrace.cinder import CinderSettings, VolumeAPI
from voltrace.cli_options import CLIENT_TIMEOUT_S
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
    # --client-timeout: how long a client may take to send one whole request; None: unbounded
    # (gunicorn's own gthread reading, for a deployment whose buffering proxy guarantees it).
    client_timeout_s: float | None = CLIENT_TIMEOUT_S
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


STOP_POLL_S = 0.05


class EmbeddedServer:
    """A real threaded WSGI server (cheroot) on loopback, inside this process."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, threads: int = 16) -> None:
        from cheroot import wsgi

        self._server = wsgi.Server((host, port), app, numthreads=threads, server_name="voltrace")
        self._server.ConnectionClass = _nova_like_cheroot()
        # How often cheroot's serve loop wakes (to expire idle keep-alive connections); stop()
        # waits for one wake-up, 0.5 s by default: 0.05 s makes stopping prompt, for
        # Ctrl-C and for tests that start a server each, at a negligible idle cost.
        self._server.expiration_interval = STOP_POLL_S
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
    _abandon_stuck_threads(worker)


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


# How long a quick stop (SIGINT/SIGQUIT) waits for requests in flight before the flush,
# as gunicorn's arbiter gives its workers 2 s on a quick shutdown.
QUICK_STOP_GRACE_S = 2
# A new connection's first bytes are waited for this long on its thread before it goes
# back to the poller: most clients send at once, and the poller round trip is saved.
FIRST_BYTES_WAIT_S = 0.05
# The most of a request looked at (peeked) to decide whether it has arrived whole; a bigger
# one is read on a thread, still within the client timeout.
PEEK_BYTES = 65536
# How long the worker's exit waits for request threads after the flush before leaving
# them (a hung Cinder with Nova's default of no timeout would keep them forever).
STUCK_THREADS_WAIT_S = 1.0

_CONTENT_LENGTH = re.compile(
    rb"\r\ncontent-length[ \t]*:[ \t]*([0-9]+)[ \t]*(?=\r\n)", re.IGNORECASE
)
_TRANSFER_ENCODING = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.IGNORECASE)


class ClientTimeout(Exception):
    """The client did not send its whole request within ``--client-timeout``."""


def arrived_whole(data: bytes, capacity: int) -> bool:
    """Whether ``data`` (the bytes waiting on a connection) holds a whole request.

    Only ever errs towards True: a request taken for whole when it is not is read on a
    thread, still bounded by the client timeout; one taken for partial when it is whole
    would wait for bytes that never come. So anything unusual (EOF, a big request, a
    chunked or oddly framed body) counts as whole, and gunicorn's parser judges it.
    """
    if not data or len(data) >= capacity:
        return True
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False  # the headers are not all there yet
    head = data[: end + 2]
    if _TRANSFER_ENCODING.search(head):
        return True
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) != 1:
        return True  # no body, or a framing gunicorn will refuse
    return len(data) >= end + 4 + int(lengths[0]) or end + 4 + int(lengths[0]) >= capacity


def _voltrace_worker(config: ServeConfig) -> type:
    """gunicorn's gthread worker, with a bound on slow clients and a quick stop that cannot
    deadlock.

    * Slow clients (``config.client_timeout_s``). gthread hands every connection that has
      sent a byte to a thread, which then blocks reading the rest with no timeout, so
      ``--threads`` half-sent requests stopped the worker. Here a connection waits in the
      poller until its whole request has arrived (``arrived_whole`` on a peek), as a buffering
      proxy would, and a request still not whole ``client_timeout_s`` after voltrace first saw
      it is answered 408 and closed; one that stops sending is closed by the poller. What a
      thread still reads (a request too big to peek, a chunked body) times out the same way:
      reads are bounded by the time left, and the body is read before the app runs, so a
      timeout is a 408 from here, never an error inside the app.
    * Quick stop. gthread's SIGQUIT/SIGINT handler calls ``ThreadPoolExecutor.shutdown()`` and
      ``sys.exit()`` from inside the signal handler. When the signal lands while the main
      thread is in ``tpool.submit()`` (accepting a connection), ``shutdown()`` waits for the
      executor's ``_shutdown_lock`` that ``submit()`` holds: the worker hangs until the arbiter
      SIGKILLs it after ``GRACEFUL_TIMEOUT_S``, and ``worker_exit`` never flushes (caught with
      faulthandler stacks under load: 6 of 20 SIGINTs). Here the handler only
      does what SIGTERM's does (``alive = False`` and wake the poller) with a short grace, and
      the loop ends by itself: ``worker_exit`` then flushes as on SIGTERM.
    """
    from gunicorn import util
    from gunicorn.workers import gthread

    timeout_s = config.client_timeout_s or None
    body_limit = config.max_request_body_size

    class ClientSocket(socket.socket):
        """An accepted connection whose blocking reads are bounded: each by ``timeout_s``
        and, while a request is being read, all of them together by ``deadline``."""

        __slots__ = ("deadline",)
        deadline: float | None

        def setblocking(self, flag: bool) -> None:
            # gthread makes a connection blocking (timeout None) before each request: bounded.
            if flag:
                super().settimeout(timeout_s)
            else:
                super().setblocking(False)

        def recv(self, bufsize: int, flags: int = 0) -> bytes:
            deadline = self.deadline
            if deadline is None or self.gettimeout() == 0.0:
                return super().recv(bufsize, flags)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientTimeout()
            super().settimeout(min(left, timeout_s or left))
            try:
                return super().recv(bufsize, flags)
            except TimeoutError:
                raise ClientTimeout() from None
            finally:
                super().settimeout(timeout_s)

    class VoltraceWorker(gthread.ThreadWorker):
        def handle_quit(self, sig: int, frame: Any) -> None:
            if self.alive:
                # Read when the main loop ends: the in-flight wait of a quick stop is short.
                self.cfg.set("graceful_timeout", QUICK_STOP_GRACE_S)
            self.handle_exit(sig, frame)  # alive = False, wake the poller: never raise here

        def accept(self, listener: Any) -> None:
            if timeout_s is None:
                return super().accept(listener)
            # gthread's accept, with the connection's socket made a ClientSocket.
            try:
                client, address = listener.accept()
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                    raise
                return None
            self.nr_conns += 1
            sock = ClientSocket(client.family, client.type, client.proto, client.detach())
            sock.deadline = None
            conn = gthread.TConn(self.cfg, sock, address, listener.getsockname())
            self.enqueue_req(conn)
            return None

        def handle(self, conn: Any) -> Any:
            if timeout_s is None or not isinstance(conn.sock, ClientSocket):
                return super().handle(conn)
            now = time.monotonic()
            deadline = getattr(conn, "voltrace_deadline", None)
            if deadline is None:
                deadline = conn.voltrace_deadline = now + timeout_s
            if not conn.initialized and not conn.data_ready:
                conn.wait_for_data(FIRST_BYTES_WAIT_S)
            if not self._arrived_whole(conn):
                if time.monotonic() < deadline:
                    return gthread._DEFER  # wait in the poller, holding no thread
                self._refuse(conn)
                return False
            conn.voltrace_deadline = None  # the next request on it gets its own
            conn.data_ready = True  # so gthread does not wait for data it has
            conn.sock.deadline = now + timeout_s
            try:
                return super().handle(conn)
            finally:
                conn.sock.deadline = None

        def _arrived_whole(self, conn: Any) -> bool:
            sock = conn.sock
            parser = conn.parser
            if parser is not None and parser.unreader.buf.getvalue():
                return True  # a pipelined request already read: gunicorn's parser has it
            try:
                capacity = min(PEEK_BYTES, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
                sock.setblocking(False)
                data = socket.socket.recv(sock, capacity, socket.MSG_PEEK)
            except BlockingIOError:
                return False
            except OSError:
                return True  # reset or gone: the thread sees it and closes
            return arrived_whole(data, capacity)

        def finish_request(self, conn: Any, fs: Any) -> None:
            super().finish_request(conn, fs)
            deadline = getattr(conn, "voltrace_deadline", None)
            if deadline is not None and conn in self.pending_conns:
                # Waiting in the poller for the rest of its request: until the deadline, however
                # it trickles (gthread would give it the keep-alive timeout from each deferral).
                conn.timeout = deadline

        def murder_pending(self) -> None:
            # gthread stops at the first pending connection not yet due, as its timeouts came in
            # order; deadlines do not, so look at all of them (at most worker_connections).
            now = time.monotonic()
            due = [conn for conn in self.pending_conns if conn.timeout <= now]
            for conn in due:
                self.pending_conns.remove(conn)
                with contextlib.suppress(OSError, KeyError, ValueError):
                    self.poller.unregister(conn.sock)
                self.nr_conns -= 1
                if conn.data_ready:  # it sent part of a request: say why it is closed
                    self._refuse(conn)
                conn.close()

        def handle_request(self, req: Any, conn: Any) -> Any:
            if isinstance(conn.sock, ClientSocket) and conn.sock.deadline is not None:
                try:
                    self._read_body_first(req, conn.sock)
                except ClientTimeout:
                    self._refuse(conn)
                    return False
                finally:
                    conn.sock.deadline = None  # the app's own time (Cinder) is not the client's
            return super().handle_request(req, conn)

        def _read_body_first(self, req: Any, sock: Any) -> None:
            """Read the body (up to nova's limit + 1) within the deadline, and put it back."""
            body = req.body
            length = getattr(body.reader, "length", None)
            if length is not None and length > body_limit:
                return  # sizelimit answers 413 from Content-Length alone, reading nothing
            if getattr(req, "_expected_100_continue", False):
                # What gunicorn's wsgi.create would send next, before the app: sent first here.
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                req._expected_100_continue = False
            head = body.read(body_limit + 1)
            body.buf = io.BytesIO()
            body.buf.write(head)

        def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
            if isinstance(exc, ClientTimeout):
                self._refuse_socket(client, addr)
                return
            super().handle_error(req, client, addr, exc)

        def _refuse(self, conn: Any) -> None:
            self._refuse_socket(conn.sock, conn.client)

        def _refuse_socket(self, sock: Any, addr: Any) -> None:
            if isinstance(sock, ClientSocket):
                sock.deadline = None
            host = addr[0] if isinstance(addr, tuple) and addr else addr
            self.log.warning(
                "Client %s did not send its whole request within %ss: 408", host, timeout_s
            )
            with contextlib.suppress(OSError):  # it may be gone already
                # Bytes left unread make the close a reset, which can beat the 408 to the
                # client: take what has arrived first (never waiting: this may be the poller).
                sock.setblocking(False)
                for _ in range(16):  # at most 1 MiB: a client still flooding gets its reset
                    if not socket.socket.recv(sock, 65536):
                        break
            with contextlib.suppress(OSError):
                util.write_error(sock, 408, "Request Timeout", "")

    return VoltraceWorker


def _abandon_stuck_threads(worker: Any) -> None:
    """After the flush, exit at once if a request thread is still busy.

    Without it, interpreter exit joins every pool thread, so a request stuck in a hung
    Cinder (Nova's default: no timeout) kept the worker until the arbiter's SIGKILL.
    Its span was never going to end; everything else is flushed already.
    """
    if getattr(worker, "pid", None) != os.getpid():
        return  # the arbiter runs worker_exit too, for a worker already gone
    threads = list(getattr(getattr(worker, "tpool", None), "_threads", ()))
    deadline = time.monotonic() + STUCK_THREADS_WAIT_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread for thread in threads if thread.is_alive()]
    if stuck:
        worker.log.warning("Worker exiting with %d request(s) still running", len(stuck))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _gunicorn_application(config: ServeConfig) -> Any:
    from gunicorn.app.base import BaseApplication

    _nova_like_gunicorn()

    class VoltraceApplication(BaseApplication):
        def load_config(self) -> None:
            settings = {
                "bind": f"{config.host}:{config.port}",
                "workers": config.workers,
                "worker_class": _voltrace_worker(config),
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
