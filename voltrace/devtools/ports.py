"""Loopback ports for the servers the dev tools start: a free one, and whether one is taken."""

from __future__ import annotations

import socket


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
