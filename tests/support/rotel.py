"""A real OTLP collector for tests: rotel-agent from PyPI, started on free loopback ports."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import rotel  # the wheel ships the agent binary next to this module

from tests.support.net import free_port, wait_for_port

AGENT = Path(rotel.__file__).parent / "rotel-agent"
PROCESSOR = Path(__file__).parent / "rotel_processor.py"


class RotelCollector:
    """rotel-agent receiving OTLP gRPC and HTTP, writing every span it gets to a file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.spans_file = workdir / "rotel-spans.jsonl"
        self.log_file = workdir / "rotel.log"
        self.process: subprocess.Popen | None = None

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> RotelCollector:
        env = dict(os.environ, ROTEL_SPANS_OUT=str(self.spans_file))
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(AGENT),
                    "start",
                    "--otlp-grpc-endpoint",
                    f"127.0.0.1:{self.grpc_port}",
                    "--otlp-http-endpoint",
                    f"127.0.0.1:{self.http_port}",
                    "--exporter",
                    "blackhole",
                    "--pid-file",
                    str(self.workdir / "rotel.pid"),
                    "--otlp-with-trace-processor",
                    str(PROCESSOR),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for_port(self.grpc_port)
        wait_for_port(self.http_port)
        return self

    def spans(self) -> list[dict[str, Any]]:
        if not self.spans_file.exists():
            return []
        # The agent may be writing while we read: a last line without its newline is not
        # whole yet, and is read next time.
        *whole, _partial = self.spans_file.read_text().split("\n")
        return [json.loads(line) for line in whole if line]

    def wait_for_spans(self, predicate: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Poll the collector's output until ``predicate(spans)`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spans = self.spans()
            if predicate(spans):
                return spans
            time.sleep(0.05)
        raise TimeoutError(f"collector never received the expected spans; got {self.spans()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> RotelCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
