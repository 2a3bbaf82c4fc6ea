"""Slow clients against a real ``voltrace serve``: half-sent requests never starve the others.

Issue 14: gunicorn's gthread worker gave each connection that had sent a byte one of its
threads, which then waited for the rest with no timeout, so ``--threads`` half-sent
requests per worker made the server answer no one. Now a request waits for its bytes in the
worker's poller, and one still not whole after ``--client-timeout`` is answered 408 and
closed (voltrace/server.py ``_voltrace_worker``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import member_headers
from tests.support.cli import voltrace_command
from tests.support.net import free_port, wait_for_port
from tests.support.polling import poll
from voltrace.cinder_sim import CinderSimulator
from voltrace.client import NovaClient, Response
from voltrace.server import arrived_whole

CLIENT_TIMEOUT_S = 6  # generous for a loaded machine: the good create must beat it
CLOSE_MARGIN_S = 30  # how long past the timeout a half-sent connection may stay open


def _identity_lines() -> bytes:
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in member_headers().items())


# The two halves of slowloris: headers that never end, and a member's create (so it passes
# authentication and reaches the body's read) whose body stops short of its Content-Length.
HEADERS_NEVER_FINISHED = b"POST /v2.1/os-volumes HTTP/1.1\r\nHost: voltrace\r\nX-Slow: 1\r\n"
BODY_NEVER_FINISHED = (
    b"POST /v2.1/os-volumes HTTP/1.1\r\nHost: voltrace\r\nContent-Type: application/json\r\n"
    + _identity_lines()
    + b'Content-Length: 100\r\n\r\n{"volume": '
)


@dataclass
class HalfSent:
    """One half-sent request; a thread records what the server did with it."""

    sock: socket.socket
    answer: bytes = b""
    closed_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def open(cls, port: int, request: bytes) -> HalfSent:
        sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S)
        sock.sendall(request)
        sock.settimeout(CLIENT_TIMEOUT_S + CLOSE_MARGIN_S)
        half = cls(sock)
        threading.Thread(target=half._wait, daemon=True).start()
        return half

    def _wait(self) -> None:
        try:
            while chunk := self.sock.recv(4096):
                self.answer += chunk
            self.closed_at = time.monotonic()
        except TimeoutError:
            pass  # still open: the assertion says so
        except OSError:
            self.closed_at = time.monotonic()  # reset: closed with our bytes unread
        finally:
            self.done.set()
            self.sock.close()


@pytest.fixture(scope="module")
def sim() -> Iterator[CinderSimulator]:
    with CinderSimulator(
        deterministic=True, default_quotas={"volumes": -1, "gigabytes": -1}
    ) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def served(sim: CinderSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``voltrace serve --workers 2 --threads 2`` (4 threads in all); yields its port."""
    port = free_port()
    output = tmp_path_factory.mktemp("slow-clients") / "serve.out"
    command = voltrace_command(
        "serve",
        "--port",
        str(port),
        "--workers",
        "2",
        "--threads",
        "2",
        "--client-timeout",
        str(CLIENT_TIMEOUT_S),
        "--cinder-endpoint",
        sim.endpoint_template,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with open(output, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(port, process, timeout=30)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        poll(lambda: len(children.read_text().split()) == 2, 60, "two gunicorn workers")
        # Both workers answer before the attack: booting is not what is measured.
        poll(lambda: _create(port).status == 200, 60, "a first create")
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _create(port: int, timeout: float = 60.0) -> Response:
    client = NovaClient(f"http://127.0.0.1:{port}", timeout=timeout)
    try:
        return client.create_volume({"size": 1}, headers=member_headers())
    finally:
        client.close()


def test_half_sent_requests_do_not_stop_a_good_client(served: int) -> None:
    """Three times as many half-sent requests as the server has threads: a good create
    still gets its 200 while they are all open, and then the server closes every one of
    them (408 when it says why)."""
    halves = [
        HalfSent.open(served, HEADERS_NEVER_FINISHED if i % 2 else BODY_NEVER_FINISHED)
        for i in range(12)
    ]
    response = _create(served, timeout=CLIENT_TIMEOUT_S + CLOSE_MARGIN_S)
    answered_at = time.monotonic()
    assert response.status == 200

    for half in halves:
        assert half.done.wait(CLIENT_TIMEOUT_S + CLOSE_MARGIN_S + 5)
    assert all(half.closed_at is not None for half in halves), "a half-sent request stayed open"
    # The good create was served while the half-sent ones held their connections, not after
    # the server had dropped them.
    assert all(answered_at < (half.closed_at or 0) for half in halves)
    for half in halves:
        assert half.answer == b"" or half.answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_a_slow_but_whole_request_is_served(served: int) -> None:
    """A client that pauses between its headers and its body, well within the timeout, gets
    its create answered like any other: the bound cuts only requests that do not arrive."""
    body = b'{"volume": {"size": 1}}'
    head = (
        b"POST /v2.1/os-volumes HTTP/1.1\r\nHost: voltrace\r\nContent-Type: application/json\r\n"
        + _identity_lines()
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    )
    with socket.create_connection(("127.0.0.1", served), timeout=60) as sock:
        sock.sendall(head)
        time.sleep(1)
        sock.sendall(body[:5])
        time.sleep(0.5)
        sock.sendall(body[5:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (b"", True),  # EOF: gunicorn sees it and closes
        (b"POST /v2.1/os-volumes HTTP/1.1\r\nHost: x\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab", False),
        (b"POST / HTTP/1.1\r\ncontent-length:5\r\n\r\nabcde", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcdeGET / HTTP/1.1\r\n", True),
        # Framings gunicorn judges itself, on a thread still bounded by the timeout:
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nab", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\nab", True),  # more than a peek
        (b"X" * 100, True),  # a peek's worth without an end: the parser refuses it
    ],
)
def test_arrived_whole_only_errs_towards_whole(data: bytes, whole: bool) -> None:
    assert arrived_whole(data, capacity=100) is whole
