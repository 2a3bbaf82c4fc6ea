"""Loopback ports for the servers the dev tools start: a free one, whether one is taken,
and one that accepts and never answers (a hung cinder-api or collector, for tests and
benchmarks)."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from pathlib import Path

# Below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default).
_PICK_FROM = 10_000


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port nobody listens on right now, outside the kernel's ephemeral range.

    A server started as a process binds its port seconds after the port was picked. A
    port the kernel picked (bind to port 0) could meanwhile be handed to any other
    bind(0) or outgoing connection on the machine (another test's server, say), and the
    caller would then talk to that. The kernel never hands out ports outside its range.
    """
    low, high = _ephemeral_range()
    candidates = range(_PICK_FROM, low) if low - _PICK_FROM >= 1000 else range(high + 1, 65536)
    for _ in range(200):
        port = random.choice(candidates)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use, or closing (TIME_WAIT)
            return port
    with socket.socket() as sock:  # everything tried was taken: the kernel's pick
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
