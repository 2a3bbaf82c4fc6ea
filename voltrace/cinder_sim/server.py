"""HTTP plumbing: the standard library's threading HTTP server, speaking HTTP/1.1.

Socket I/O only. The server is given three callables and knows nothing else of the
simulator: ``admin`` answers requests under ``/__sim__/``; every other request goes to
``record``, then to ``handle``, whose outcome is written back, or turned into a dropped or
reset connection. The server keeps its own set of open connections, so that
:meth:`HTTPServer.close_connections` can cut idle keep-alive ones at shutdown.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from voltrace.cinder_sim.messages import Disconnect, Outcome, RecordedRequest, Request, Response

ADMIN_PREFIX = "/__sim__"

RequestHandler = Callable[[Request], Outcome]
Recorder = Callable[[RecordedRequest], None]
AdminHandler = Callable[[str, str, bytes], Response]  # (method, path, body)


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        handle: RequestHandler,
        record: Recorder,
        admin: AdminHandler,
    ) -> None:
        self.handle = handle
        self.record = record
        self.admin = admin
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut down every open connection (idle keep-alive ones would linger otherwise)."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Read the request, hand it to the server's callables, write the outcome."""

    protocol_version = "HTTP/1.1"  # keep-alive, like cinder-api behind uwsgi/apache
    disable_nagle_algorithm = True  # else delayed ACK stalls each keep-alive request ~40 ms
    server_version = "cinder-sim"
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        # Tracked so that stopping can cut idle keep-alive connections.
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: nothing (least of all a token) goes to stderr."""

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _read_body(self) -> bytes:
        """The request body (Content-Length or chunked); ValueError if it is malformed."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        return self.rfile.read(int(length)) if length else b""

    def _dispatch(self) -> None:
        server = self.server
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True  # we no longer know where the next request starts
            self._write(Response(400, [("Content-Type", "text/plain")], b"bad request body"))
            return
        headers = dict(self.headers.items())
        host, port = self.server.server_address[:2]
        request = Request(
            self.command, self.path, headers, body, str(host), int(port), self.client_address[0]
        )
        if request.path == ADMIN_PREFIX or request.path.startswith(ADMIN_PREFIX + "/"):
            self._write(server.admin(self.command, request.path, body))
            return
        server.record(RecordedRequest(self.command, self.path, headers, body))
        outcome = server.handle(request)
        if isinstance(outcome, Disconnect):
            self._disconnect(outcome.action)
        else:
            self._write(outcome)

    def _write(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            for name, value in response.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if response.body:
                self.wfile.write(response.body)
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it

    def _disconnect(self, action: str) -> None:
        self.close_connection = True
        if action == "reset":
            # Linger on with a 0 s timeout: close() sends RST instead of FIN. The fd really
            # closes when finish() drops the last file object (before socketserver's own
            # shutdown(SHUT_WR), which would otherwise send a FIN first).
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
