"""Ports on loopback: free ones, whether something listens on one, and a silent server
(the last two kinds from ``voltrace.devtools.ports``, which the dev tools and benches use)."""

from __future__ import annotations

import socket
import subprocess

from tests.support.polling import poll
from voltrace.devtools.ports import SilentServer, free_port

__all__ = ["SilentServer", "free_port", "free_port_block", "listening", "wait_for_port"]


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
