"""Loopback ports for the servers the dev tools start: a free one, whether one is taken,
and one that accepts and never answers (a hung cinder-api or collector, for tests and
benchmarks)."""

from __future__ import annotations

import contextlib
import socket
import threading


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True if something on 127.0.0.1 already accepts connections on ``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class SilentServer:
    """A loopback port that accepts every connection and never sends a byte back: a hung
    cinder-api or a hung collector."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
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

    stop = close  # for the benchmarks' stopping(), which stops processes and servers alike
