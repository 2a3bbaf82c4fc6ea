"""Test glue for the real nova-api 34 (voltrace.devtools.real_nova): venv, simulator, start.

Use the session fixture (one real nova for the whole run)::

    from tests.support.real_nova import real_nova  # noqa: F401  (registers the fixture)

    def test_x(real_nova: RealNovaService) -> None:
        real_nova.sim.reset()
        answer = real_nova.nova.request("POST", "/v2.1/os-volumes", body, headers)
        assert real_nova.sim.requests()[0]["path"].endswith("/volumes")

or your own, with extra paste filters / pip installs (``running_real_nova``). In CI
(``CI=true``) a venv that cannot be built fails the test; locally a missing venv skips with
the command that builds it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, require
from tests.support.cli import voltrace_command
from tests.support.polling import poll
from voltrace.devtools.real_nova import (
    RealNova,
    RealNovaError,
    default_venv,
    ensure_venv,
    free_port,
    venv_ready,
)

BUILD_HINT = "python -m voltrace.devtools.real_nova build"


class SimAdmin:
    """Drives a Cinder simulator over its /__sim__/ admin API (in this process or another)."""

    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint_template(self) -> str:
        return f"{self.url}/v3/%(project_id)s"

    def admin(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            body = None if payload is None else json.dumps(payload).encode()
            conn.request(
                method,
                path,
                body=body,
                headers={"Content-Type": "application/json", "X-Auth-Token": "admin"},
            )
            raw = conn.getresponse()
            data = raw.read()
            return raw.status, json.loads(data) if data else None
        finally:
            conn.close()

    def reset(self) -> None:
        """Forget volumes, snapshots, quotas, faults and recorded requests; ids restart."""
        assert self.admin("POST", "/__sim__/reset")[0] == 204

    def inject(self, fault: dict[str, Any]) -> None:
        """Add a fault, as ``Fault``'s fields or ``{"spec": "ROUTE:key=value"}``."""
        status, body = self.admin("POST", "/__sim__/faults", fault)
        assert status == 200, body

    def requests(self) -> list[dict[str, Any]]:
        """Every Cinder API request received since the last reset (method, path, headers, body)."""
        return list(self.admin("GET", "/__sim__/requests")[1])

    def clear_requests(self) -> None:
        self.admin("DELETE", "/__sim__/requests")


class SimProcess(SimAdmin):
    """``voltrace cinder-sim --deterministic`` in its own process, driven over /__sim__/."""

    def __init__(self, workdir: Path, *args: str) -> None:
        super().__init__(free_port())
        self.output = workdir / "cinder-sim.out"
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(
                voltrace_command(
                    "cinder-sim",
                    "--deterministic",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "off",
                    *args,
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            poll(self._answers, timeout=30, what=f"cinder-sim on port {self.port}")
        except TimeoutError:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"cinder-sim exited {self.process.returncode}: "
                f"{self.output.read_text(errors='replace')}"
            )
        with contextlib.suppress(OSError):
            return self.admin("GET", "/__sim__/faults")[0] == 200
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class RealNovaService:
    """A running real nova-api and the simulator behind it."""

    nova: RealNova
    sim: SimAdmin

    @property
    def url(self) -> str:
        return self.nova.url

    @property
    def sim_url(self) -> str:
        return self.sim.url


def nova_venv(extra_installs: Sequence[Sequence[str]] = ()) -> Path:
    """The venv, built in CI (a failure fails), reused locally (missing: skip, say how)."""
    venv = default_venv(extra_installs)
    if not IN_CI and not venv_ready(venv, extra_installs):
        pytest.skip(f"no real nova venv at {venv}; build it with `{BUILD_HINT}`")
    try:
        return ensure_venv(venv, extra_installs=extra_installs, progress=sys.stderr)
    except RealNovaError as exc:
        require(False, f"the real nova-api venv cannot be built: {exc}")
        raise  # unreachable: require() skipped or failed


@contextlib.contextmanager
def running_real_nova(
    workdir: Path,
    *,
    extra_filters: Sequence[tuple[str, str]] = (),
    paste_ini: Path | None = None,
    extra_installs: Sequence[Sequence[str]] = (),
    env: dict[str, str] | None = None,
    conf_extra: str = "",
    cinder_retries: int | None = 0,
    simulator: SimAdmin | None = None,
) -> Iterator[RealNovaService]:
    """A cinder-sim process and a real nova-api in front of it; both stopped by PID after.

    ``simulator`` (e.g. ``SimAdmin(in_process_sim.port)``) is used instead of starting one.

    ``extra_filters`` are (name, ``module:factory``) pairs put first in nova's ``keystone =``
    pipelines; ``paste_ini`` replaces nova's api-paste.ini; ``extra_installs`` are extra
    ``pip install`` argument lists for the venv (its cache key includes them).
    """
    venv = nova_venv(extra_installs)
    workdir.mkdir(parents=True, exist_ok=True)
    sim = simulator or SimProcess(workdir)
    try:
        nova = RealNova(
            workdir,
            venv=venv,
            cinder_endpoint=sim.endpoint_template,
            cinder_retries=cinder_retries,
            extra_filters=extra_filters,
            paste_ini=paste_ini,
            extra_installs=extra_installs,
            env=env,
            conf_extra=conf_extra,
        )
        try:
            nova.start()
        except RealNovaError as exc:
            require(False, f"real nova-api did not start: {exc}")
        try:
            yield RealNovaService(nova, sim)
        finally:
            nova.stop()
    finally:
        if isinstance(sim, SimProcess):
            sim.stop()


@pytest.fixture(scope="session")
def real_nova(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNovaService]:
    """One real nova-api 34 for the whole session, in front of its own deterministic
    cinder-sim ([cinder] http_retries = 0, like the in-process voltrace of conftest)."""
    with running_real_nova(tmp_path_factory.mktemp("real-nova")) as service:
        yield service
