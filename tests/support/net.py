"""Ports on loopback: a free one, and whether something listens on one."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading

from tests.support.polling import poll


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_block(count: int, attempts: int = 200) -> int:
    """The first of ``count`` consecutive free ports, for servers that take ``port + i``
    (``voltrace serve --workers N`` puts worker i's /metrics on ``metrics_port + i``)."""
    for _ in range(attempts):
        first = free_port()
        if first + count > 65536:
            continue
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return first
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def listening(port: int, process: subprocess.Popen | None = None) -> bool:
    """True once 127.0.0.1:port accepts; fails at once if ``process`` has exited."""
    if process is not None and process.poll() is not None:
        raise AssertionError(f"{process.args!r} exited with {process.returncode}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_for_port(
    port: int, process: subprocess.Popen | None = None, timeout: float = 30.0
) -> None:
    poll(lambda: listening(port, process), timeout, f"something to listen on port {port}")


class SilentServer:
    """A loopback port that accepts every connection and never sends a byte back: a hung
    cinder-api or a hung collector."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                self.accepted.append(self.listener.accept()[0])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Let go: every held request gets its connection closed (and fails)."""
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in [*self.accepted, self.listener]:
            conn.close()
