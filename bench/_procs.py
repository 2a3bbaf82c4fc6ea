"""Processes the attribution and load benchmarks start: servers by component, and a client.

* ``start_voltrace`` runs ``voltrace serve`` with exactly the telemetry parts asked for:
  the parts through ``VOLTRACE_TELEMETRY_COMPONENTS`` (a bench-only knob read by
  voltrace.telemetry), the exporter through the usual command-line options and ``OTEL_*``.
  ``package_root`` runs the server from another copy of the package (a patched one, to
  measure a change before it lands), never from the checkout's working directory.
* ``ClientProcess`` is the benchmark's client in a process of its own, so the client's
  work and the orchestrator's bookkeeping never share a GIL with each other. It speaks JSON
  lines on stdin/stdout: ``python bench/_procs.py client``.

Every process is stopped by its pid (``Proc.stop``, ``ClientProcess.stop``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    BENCH_PROJECT,
    BENCH_TOKEN,
    REPO,
    Proc,
    RotelCollector,
    free_port,
    wait_for_port,
)

COMPONENTS_ENV = "VOLTRACE_TELEMETRY_COMPONENTS"
ALL_COMPONENTS = ("server", "client", "stages", "logs", "metrics")
EXPORTERS = ("otlp-http", "otlp-grpc", "traces-file", "jaeger-file")
BODY = {"size": 1, "display_name": "bench"}


def package_honours_components(package_root: Path) -> bool:
    """Whether that copy of voltrace reads the components knob (else every mode is "all")."""
    telemetry = package_root / "voltrace" / "telemetry"
    return any(
        source.exists() and COMPONENTS_ENV in source.read_text()
        for source in (telemetry / "components.py", telemetry / "__init__.py")
    )


def server_env(package_root: Path, extra: dict[str, str]) -> dict[str, str]:
    """This environment without OTEL_* or the knob, voltrace imported from ``package_root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != COMPONENTS_ENV}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(package_root), str(REPO), os.environ.get("PYTHONPATH", "")]
    )
    env.update(extra)
    return env


def start_voltrace(
    workdir: Path,
    name: str,
    sim_port: int,
    *,
    telemetry: bool,
    components: Sequence[str] = ALL_COMPONENTS,
    exporters: Sequence[str] = (),
    collector: RotelCollector | None = None,
    package_root: Path = REPO,
    workers: int = 1,
    threads: int = 16,
    extra_env: dict[str, str] | None = None,
    wait: bool = True,
) -> tuple[Proc, dict[str, Path]]:
    """``voltrace serve`` (gunicorn) with the given telemetry parts and span exporters.

    ``telemetry=False`` is the production "off": ``OTEL_SDK_DISABLED=true`` and
    ``--log-level off``, no telemetry object at all. Otherwise every telemetry mode gets the
    same log file and metrics port options, and the knob decides which parts run.
    ``exporters`` are names from ``EXPORTERS``; at most one of them OTLP.
    """
    port = free_port()
    log = workdir / f"{name}.log"
    files: dict[str, Path] = {}
    args = [sys.executable, "-m", "voltrace", "serve", "--port", str(port),
            "--workers", str(workers), "--threads", str(threads),
            "--cinder-endpoint", f"http://127.0.0.1:{sim_port}/v3/%(project_id)s"]  # fmt: skip
    env: dict[str, str] = dict(extra_env or {})
    if not telemetry:
        args += ["--log-level", "off"]
        env["OTEL_SDK_DISABLED"] = "true"
    else:
        env[COMPONENTS_ENV] = ",".join(components) or "none"
        files["logs"] = workdir / f"{name}-logs.jsonl"
        args += ["--log-file", str(files["logs"]), "--log-format", "json",
                 "--metrics-port", str(free_port())]  # fmt: skip
        args += _exporter_options(exporters, collector, workdir, name, env, files)
    with open(log, "ab") as out:
        # cwd is the workdir: `python -m` puts the working directory first on sys.path, and
        # the checkout's voltrace must not shadow package_root's.
        popen = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=server_env(package_root, env),
            cwd=workdir,
        )
    proc = Proc(name, popen, port, log)
    if wait:
        try:
            wait_for_port(port, popen, timeout=60)
        except BaseException:
            proc.stop()  # the caller never got it, so nobody else would
            raise
    return proc, files


def _exporter_options(
    exporters: Sequence[str],
    collector: RotelCollector | None,
    workdir: Path,
    name: str,
    env: dict[str, str],
    files: dict[str, Path],
) -> list[str]:
    """Command-line options (and OTEL_* in ``env``, output paths in ``files``) per exporter."""
    unknown = set(exporters) - set(EXPORTERS)
    if unknown:
        raise ValueError(f"unknown exporter(s) {sorted(unknown)}; use {EXPORTERS}")
    otlp = [e for e in exporters if e.startswith("otlp-")]
    if len(otlp) > 1:
        raise ValueError("one OTLP exporter per server: the protocol is process-wide")
    args: list[str] = []
    if otlp:
        if collector is None:
            raise ValueError(f"{otlp[0]} needs a collector")
        grpc = otlp[0] == "otlp-grpc"
        args.append("--otlp")
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = (
            collector.grpc_endpoint if grpc else collector.http_endpoint
        )
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc" if grpc else "http/protobuf"
    if "traces-file" in exporters:
        files["traces"] = workdir / f"{name}-traces.jsonl"
        args += ["--traces-file", str(files["traces"])]
    if "jaeger-file" in exporters:
        files["jaeger"] = workdir / f"{name}-jaeger.json"
        args += ["--jaeger-file", str(files["jaeger"])]
    return args


# ---------------------------------------------------------------------------
# The client, in its own process
# ---------------------------------------------------------------------------


class ClientProcess:
    """Sends creates one at a time to named targets; runs in a child process."""

    def __init__(self, workdir: Path) -> None:
        self.stderr = open(workdir / "client.err", "ab")  # noqa: SIM115 - closed in stop
        self.popen = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=REPO,
            text=True,
            bufsize=1,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def call(self, **command: Any) -> dict[str, Any]:
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self.popen.stdin.write(json.dumps(command) + "\n")
        line = self.popen.stdout.readline()
        if not line:
            raise RuntimeError(f"bench client exited with {self.popen.poll()}; see client.err")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"bench client: {answer['error']}")
        return answer

    def nova(self, name: str, url: str) -> None:
        """Register a nova-api (voltrace serve or real nova) under ``name``."""
        self.call(op="nova", name=name, url=url)

    def floor(self, name: str, sim_port: int) -> None:
        """Register the floor: python-cinderclient straight to the simulator."""
        self.call(op="floor", name=name, sim_port=sim_port)

    def run(self, name: str, n: int) -> dict[str, Any]:
        """``n`` creates against ``name``: latencies (s), request ids, the client's CPU (s)."""
        return self.call(op="run", name=name, n=n)

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(RuntimeError, OSError, ValueError):
                self.call(op="quit")
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.stderr.close()


def floor_client(sim_port: int) -> Any:
    """python-cinderclient at 3.0 on a keystoneauth session, as Nova builds it, no server."""
    import requests
    from cinderclient import client as cinder_client
    from keystoneauth1 import session as ks_session
    from keystoneauth1 import token_endpoint

    url = f"http://127.0.0.1:{sim_port}/v3/{BENCH_PROJECT}"
    http = requests.Session()
    http.trust_env = False
    session = ks_session.Session(auth=token_endpoint.Token(url, BENCH_TOKEN), session=http)
    return cinder_client.Client("3.0", session=session, endpoint_override=url, connect_retries=3)


def _client_main() -> int:
    from voltrace.client import NovaClient, identity_headers

    headers = identity_headers(user_id="bench-user", project_id=BENCH_PROJECT, token=BENCH_TOKEN)
    targets: dict[str, Any] = {}

    def create(name: str) -> str:
        target = targets[name]
        if not isinstance(target, NovaClient):
            volume = target.volumes.create(1, name="bench")
            hasattr(volume, "volume_image_metadata")  # the lazy GET Nova's translation makes
            return ""
        response = target.create_volume(BODY, headers=headers)
        if response.status != 200:
            raise RuntimeError(f"{name}: {response.status} {response.body[:300]!r}")
        return response.header("x-openstack-request-id") or ""

    for line in sys.stdin:
        command = json.loads(line)
        try:
            op = command["op"]
            if op == "quit":
                print(json.dumps({}), flush=True)
                return 0
            if op == "nova":
                targets[command["name"]] = NovaClient(command["url"])
                answer: dict[str, Any] = {}
            elif op == "floor":
                targets[command["name"]] = floor_client(command["sim_port"])
                answer = {}
            elif op == "run":
                latencies: list[float] = []
                request_ids: list[str] = []
                cpu_before = time.process_time()
                for _ in range(command["n"]):
                    started = time.perf_counter()
                    request_ids.append(create(command["name"]))
                    latencies.append(time.perf_counter() - started)
                answer = {
                    "latencies": latencies,
                    "request_ids": request_ids,
                    "cpu_s": time.process_time() - cpu_before,
                }
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as exc:  # reported to the orchestrator, which stops the run
            answer = {"error": repr(exc)}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["client"]:
        sys.exit("usage: python bench/_procs.py client  (the benchmarks start it themselves)")
    sys.exit(_client_main())
