"""Ports on loopback: a free one, and whether something listens on one."""

from __future__ import annotations

import socket
import subprocess

from tests.support.polling import poll


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
