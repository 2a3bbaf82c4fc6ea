"""Test glue for the real cinder-api (voltrace.devtools.real_cinder): venv, start, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import require
from tests.support.cli import voltrace_command
from voltrace.client import NovaClient, Response, identity_headers
from voltrace.devtools.real_cinder import (
    Profiler,
    RealCinder,
    RealCinderError,
    ensure_venv,
    free_port,
)

USER = "u-real"


@contextmanager
def running_cinder(workdir: Path, profiler: Profiler | None = None) -> Iterator[RealCinder]:
    """A started cinder-api; a venv that cannot be built skips locally and fails under CI."""
    try:
        venv = ensure_venv(progress=sys.stderr)
    except RealCinderError as exc:
        require(False, f"the real cinder-api venv cannot be built: {exc}")
        raise  # unreachable: require() skipped or failed
    cinder = RealCinder(workdir, venv=venv, profiler=profiler)
    try:
        cinder.start()
    except RealCinderError as exc:
        require(False, f"cinder-api did not start: {exc}")
        raise  # unreachable: require() skipped or failed
    try:
        yield cinder
    finally:
        cinder.stop()


def noauth_headers(project: str, user: str = USER) -> dict[str, str]:
    """Identity headers for voltrace whose token cinder's noauth accepts (``user:project``)."""
    return identity_headers(
        user_id=user, project_id=project, roles="member", token=f"{user}:{project}"
    )


def create(url: str, project: str, volume: dict) -> Response:
    """POST /v2.1/os-volumes to voltrace as a member of ``project``."""
    client = NovaClient(url)
    try:
        return client.create_volume(volume, headers=noauth_headers(project))
    finally:
        client.close()


class VoltraceServe:
    """``voltrace serve`` as a subprocess (gunicorn, one worker), stopped with SIGTERM."""

    def __init__(
        self, workdir: Path, cinder_endpoint: str, env: Mapping[str, str], *args: str
    ) -> None:
        self.port = free_port()
        self.output = workdir / "voltrace-serve.out"
        command = voltrace_command(
            "serve",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--cinder-endpoint",
            cinder_endpoint,
            *args,
        )
        with open(self.output, "wb") as out:
            # Only the variables given here configure its telemetry and the bridge.
            inherited = {
                k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "VOLTRACE_"))
            }
            self.process = subprocess.Popen(
                command,
                env={**inherited, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_until_serving(self, timeout: float = 30.0) -> VoltraceServe:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"voltrace serve exited {self.process.returncode}: "
                    f"{self.output.read_text(errors='replace')}"
                )
            try:
                NovaClient(self.url, timeout=1.0).request("GET", "/").status  # noqa: B018
                return self
            except OSError:
                time.sleep(0.02)  # polling interval while gunicorn boots
        raise AssertionError(
            f"voltrace serve never answered on {self.url} within {timeout:.0f} s: "
            f"{self.output.read_text(errors='replace')}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: gunicorn's worker_exit flushes telemetry
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class DevTool:
    """``python -m voltrace.devtools.real_cinder ...`` as a subprocess, its stderr in a file."""

    def __init__(self, workdir: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.stderr = workdir / "real_cinder.err"
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "VOLTRACE_OSPROFILER"))
        }
        with open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "voltrace.devtools.real_cinder", *args],
                env={**inherited, **(env or {})},
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def output(self) -> str:
        return self.stderr.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 120.0) -> str:
        """Poll stderr until it holds ``text``; fails at once if the tool exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return self.output()
            if self.process.poll() is not None:
                raise AssertionError(
                    f"real_cinder exited {self.process.returncode}:\n{self.output()}"
                )
            time.sleep(0.1)  # polling interval while it starts
        raise AssertionError(f"real_cinder never printed {text!r}:\n{self.output()}")

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for it to exit by itself; returns the exit code."""
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a user's Ctrl-C or a supervisor would; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
