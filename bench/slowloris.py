"""Slow clients: how many half-sent requests ``voltrace serve`` tolerates while serving others.

Issue 14: 16 half-sent requests made the default ``voltrace serve`` answer no one for more
than 40 s, and 48 did it to ``--workers 2``: gunicorn's gthread worker gives each
connection that has sent a byte one of its ``--threads``, which then waits for the rest
with no timeout. ``--client-timeout`` (default 10 s) now bounds a request's arrival, and
a half-sent one waits in the worker's poller instead of on a thread.

    python bench/slowloris.py                  # unbounded (--client-timeout 0) vs default
    python bench/slowloris.py --steps 16,48,512 --window 14

For each server (``--workers 1`` and ``2``, 16 threads each, telemetry off: slow clients are
the HTTP server's business) and each attack size N, it keeps N slowloris connections open,
re-opening any the server closes: half send headers that never finish (one more header line
every 2 s), half send whole headers with ``Content-Length: 100`` and a body that never
finishes (one more byte every 2 s). Meanwhile one well-behaved keep-alive client sends
creates back to back for ``--window`` seconds. N is *tolerated* when every create got its
200 within ``--bound`` seconds. An unbounded server stops at its first N not tolerated.
Every process is stopped by pid on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import BENCH_PROJECT, BENCH_TOKEN, Proc, start_serve, start_sim, stopping

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from voltrace.client import NovaClient, identity_headers  # noqa: E402

HEADERS_NEVER_FINISHED = b"POST /v2.1/os-volumes HTTP/1.1\r\nHost: voltrace\r\n"
# With a member's identity, so the request gets past authentication to the body's read.
BODY_NEVER_FINISHED = (
    b"POST /v2.1/os-volumes HTTP/1.1\r\nHost: voltrace\r\nContent-Type: application/json\r\n"
    + b"".join(
        f"{name}: {value}\r\n".encode()
        for name, value in identity_headers(
            project_id=BENCH_PROJECT, token=BENCH_TOKEN, user_id="bench"
        ).items()
    )
    + b'Content-Length: 100\r\n\r\n{"volume": '
)
TRICKLE_EVERY_S = 2.0


@dataclass
class Attack:
    """N half-sent requests kept open; counts how often the server closed one."""

    port: int
    count: int
    closed_by_server: int = 0
    conns: dict[socket.socket, bytes] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _open(self, index: int) -> None:
        kind = BODY_NEVER_FINISHED if index % 2 else HEADERS_NEVER_FINISHED
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            sock.sendall(kind)
            sock.setblocking(False)
        except OSError:
            return  # the backlog is full: try again on the next turn
        self.conns[sock] = b"X-Slow: y\r\n" if kind is HEADERS_NEVER_FINISHED else b" "

    def start(self) -> Attack:
        for index in range(self.count):
            self._open(index)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        index = self.count
        while not self._stop.wait(TRICKLE_EVERY_S):
            for sock, trickle in list(self.conns.items()):
                try:
                    sock.recv(4096)  # anything (a 408) or EOF: the server closed it
                except BlockingIOError:
                    with contextlib.suppress(OSError):
                        sock.send(trickle)
                        continue
                except OSError:
                    pass
                self.closed_by_server += 1
                del self.conns[sock]
                sock.close()
            while len(self.conns) < self.count and not self._stop.is_set():
                before = len(self.conns)
                self._open(index)
                index += 1
                if len(self.conns) == before:
                    break

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in self.conns:
            sock.close()
        self.conns.clear()


def good_client(port: int, window_s: float, bound_s: float) -> dict[str, float]:
    """Creates back to back for ``window_s``; how many got a 200 within ``bound_s``."""
    headers = identity_headers(project_id=BENCH_PROJECT, token=BENCH_TOKEN, user_id="bench")
    answered = late = failed = 0
    worst = 0.0
    deadline = time.monotonic() + window_s
    client = NovaClient(f"http://127.0.0.1:{port}", timeout=bound_s)
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            status = client.create_volume({"size": 1}, headers=headers).status
        except OSError:
            status = 0
            client.close()
            client = NovaClient(f"http://127.0.0.1:{port}", timeout=bound_s)
        took = time.monotonic() - started
        worst = max(worst, took)
        if status != 200:
            failed += 1
        elif took > bound_s:
            late += 1
        else:
            answered += 1
    client.close()
    return {"answered": answered, "late": late, "failed": failed, "worst_s": round(worst, 2)}


def measure(args: argparse.Namespace, workdir: Path, sim: Proc, procs: list) -> list[dict]:
    rows = []
    for label, timeout in (("unbounded (--client-timeout 0)", "0"), ("default", None)):
        for workers in (1, 2):
            extra = [] if timeout is None else ["--client-timeout", timeout]
            name = f"serve-{workers}w-{'default' if timeout is None else 'unbounded'}"
            serve, _ = start_serve(
                workdir, name, sim, telemetry=False, workers=workers, extra_args=extra
            )
            procs.append(serve)
            # Both workers booted: a create answered by each is too strict; a few will do.
            good_client(serve.port, 1.0, 30.0)
            tolerated = 0
            for count in args.steps:
                attack = Attack(serve.port, count).start()
                try:
                    time.sleep(0.5)  # the attack in place before the good client comes
                    result = good_client(serve.port, args.window, args.bound)
                finally:
                    closed = attack.closed_by_server
                    attack.stop()
                ok = result["failed"] == 0 and result["late"] == 0 and result["answered"] > 0
                row = {
                    "server": label,
                    "workers": workers,
                    "slowloris": count,
                    "tolerated": ok,
                    "closed_by_server": closed,
                    **result,
                }
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if not ok:
                    break
                tolerated = count
            rows.append({"server": label, "workers": workers, "max_tolerated": tolerated})
            serve.stop()
            procs.remove(serve)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[16, 48, 128, 384],
        help="attack sizes, in order (default 16,48,128,384)",
    )
    parser.add_argument("--window", type=float, default=14.0, help="seconds of good creates")
    parser.add_argument("--bound", type=float, default=5.0, help="a create's latency bound")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voltrace-slowloris-") as tmp, stopping([]) as procs:
        workdir = Path(tmp)
        sim = start_sim(workdir)
        procs.append(sim)
        rows = measure(args, workdir, sim, procs)
    summary = {
        (r["server"], r["workers"]): r["max_tolerated"] for r in rows if "max_tolerated" in r
    }
    print(f"slowloris connections tolerated while a good client's creates got 200 < {args.bound}s")
    print(f"(window {args.window}s per step; steps {','.join(map(str, args.steps))})")
    print(f"{'workers':>8}  {'unbounded (before)':>20}  {'--client-timeout 10 (now)':>26}")
    for workers in (1, 2):
        before = summary.get(("unbounded (--client-timeout 0)", workers), 0)
        after = summary.get(("default", workers), 0)
        print(f"{workers:>8}  {before:>20}  {after:>26}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
