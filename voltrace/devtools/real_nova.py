"""A real nova-api (PyPI ``nova`` 34.0.0) on 127.0.0.1, serving its own api-paste.ini pipeline.

The twin of ``real_cinder``: nova runs from its own cached virtualenv, built with OpenStack's
upper-constraints for the nova 34 cycle (``data/upper-constraints-nova34.txt``, a copy of the
team's reference file), and is only ever spoken to over HTTP. Commands::

    python -m voltrace.devtools.real_nova build        # build the venv once (a few minutes)
    python -m voltrace.devtools.real_nova run --port 8774 \\
        [--cinder-endpoint 'http://127.0.0.1:8776/v3/%(project_id)s']

and in code (the differential test does this)::

    with RealNova(tmp_path, cinder_endpoint=sim.endpoint_template) as nova:
        http.client.HTTPConnection("127.0.0.1", nova.port) ...

What runs is nova's own pipeline, ``composite:osapi_compute`` of the ``api-paste.ini`` shipped
in the wheel (``<venv>/etc/nova/api-paste.ini``), on a threaded ``wsgiref`` server (the only
WSGI server in nova's venv), with two edits:

* ``[filter:authtoken]`` is :func:`voltrace.devtools.nova_host.trusted_identity_filter_factory`:
  there is no Keystone, so the identity headers keystonemiddleware would set (X-User-Id,
  X-Project-Id, X-Roles, X-Service-Catalog, X-Auth-Token, ...) are trusted as sent;
* ``[filter:cors]`` reads this nova.conf (``oslo_config_file``) instead of searching /etc.

``extra_filters`` put more paste filters first in both ``keystone =`` pipelines, and
``paste_ini`` replaces the whole file; ``extra_installs`` are more ``pip install`` runs into
the venv (each with the same constraints), e.g. ``("-e", "/work/main")``. The venv's cache
key covers nova's version, the constraints file, the extra installs (and, for a source tree
among them, its pyproject's dependencies and entry points) and Python.

nova.conf is minimal: ``[cinder] endpoint_template`` when given (otherwise nova looks
``volumev3`` up in X-Service-Catalog, its default), ``transport_url = fake://``, in-memory
sqlite, everything else nova's defaults (``[oslo_middleware] enable_proxy_headers_parsing =
False``, ``max_request_body_size = 114688``, policy defaults).

Stopping sends SIGTERM to the host's PID (SIGKILL after 10 s).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from voltrace.devtools.ports import free_port
from voltrace.devtools.processes import tail
from voltrace.devtools.venv_build import locked, run_logged, say

NOVA_VERSION = "34.0.0"
REQUIREMENTS = (f"nova=={NOVA_VERSION}",)
DATA_DIR = Path(__file__).with_name("data")
CONSTRAINTS_FILE = DATA_DIR / "upper-constraints-nova34.txt"
HOST_SCRIPT = Path(__file__).with_name("nova_host.py")
VENV_ENV = "VOLTRACE_NOVA_VENV"
STANDIN_FILTER = "nova_host:trusted_identity_filter_factory"
# The two pipelines that serve /v2.1/+ and /v2/+ (nova's keystone = lines).
KEYSTONE_PIPELINES = ("openstack_compute_api_v21", "openstack_compute_api_v21_legacy_v2_compatible")
_READY = ".voltrace-ready"
_BUILD_TIMEOUT_S = 1500.0


class RealNovaError(RuntimeError):
    """The venv could not be built, or nova-api did not come up (the message says why)."""


# One build step of this venv: into its log, with progress, within the build's bound.
_run_logged = functools.partial(
    run_logged, timeout_s=_BUILD_TIMEOUT_S, error=RealNovaError, what="the nova venv"
)


# ---------------------------------------------------------------------------
# The venv
# ---------------------------------------------------------------------------


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "voltrace"


def cache_key(extra_installs: Sequence[Sequence[str]] = (), python: str = sys.executable) -> str:
    """What the venv is built from: nova, the constraints' bytes, the extras, the interpreter,
    and what a local source tree among the extras declares (see :func:`_source_metadata`)."""
    digest = hashlib.sha256()
    parts: list[Any] = [
        list(REQUIREMENTS),
        [list(e) for e in extra_installs],
        os.path.realpath(python),
    ]
    sources = [m for e in extra_installs for m in map(_source_metadata, e) if m is not None]
    if sources:  # only then: plain nova's key stays what it always was
        parts.append(sources)
    digest.update(json.dumps(parts).encode())
    digest.update(CONSTRAINTS_FILE.read_bytes())
    return digest.hexdigest()[:12]


def _source_metadata(arg: str) -> Any:
    """For a source tree installed from its path (editable or not): its ``[project]``
    dependencies and entry points, which pip resolved and wrote into the venv at build
    time. Its code is not in the key: an editable install picks code changes up by itself."""
    pyproject = Path(arg) / "pyproject.toml"
    if not pyproject.is_file():
        return None
    try:
        project = tomllib.loads(pyproject.read_text()).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return pyproject.read_text(errors="replace")
    return [
        project.get(key)
        for key in ("name", "dependencies", "entry-points", "scripts", "requires-python")
    ]


def default_venv(extra_installs: Sequence[Sequence[str]] = ()) -> Path:
    """``$VOLTRACE_NOVA_VENV`` (plain nova only), else the per-user cache, keyed."""
    if os.environ.get(VENV_ENV) and not extra_installs:
        return Path(os.environ[VENV_ENV]).expanduser()
    return _cache_dir() / f"nova-{NOVA_VERSION}-{cache_key(extra_installs)}-venv"


def build_log_path(venv: Path) -> Path:
    """The pip log, kept next to the venv (it survives the build, failed or not)."""
    return venv.parent / f"{venv.name}.build.log"


def venv_ready(venv: Path, extra_installs: Sequence[Sequence[str]] = ()) -> bool:
    """True if ``venv`` holds a complete build with this cache key."""
    try:
        stamp = json.loads((venv / _READY).read_text())
    except (OSError, ValueError):
        return False
    return (venv / "etc" / "nova" / "api-paste.ini").exists() and stamp.get("key") == cache_key(
        extra_installs
    )


def ensure_venv(
    venv: Path | None = None,
    *,
    extra_installs: Sequence[Sequence[str]] = (),
    python: str = sys.executable,
    progress: TextIO | None = None,
) -> Path:
    """Build nova's venv unless a complete one is there; returns its path.

    ``progress`` gets a line when the build starts, one every few seconds naming what pip
    is doing, and one at the end. Raises ``RealNovaError`` with the tail of the build log.
    """
    venv = (venv or default_venv(extra_installs)).absolute()
    log_path = build_log_path(venv)
    with locked(venv, RealNovaError):
        if venv_ready(venv, extra_installs):
            return venv
        say(progress, f"building nova {NOVA_VERSION} venv in {venv} (log: {log_path})")
        # A venv cannot be moved after it is built (its scripts name their path),
        # so build in place; the ready stamp is written last.
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        pip = [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-input",
            "--disable-pip-version-check",
            "-c",
            str(CONSTRAINTS_FILE),
        ]
        commands = [[python, "-m", "venv", str(venv)], [*pip, *REQUIREMENTS]]
        commands += [[*pip, *extra] for extra in extra_installs]
        with open(log_path, "w") as log:
            for command in commands:
                _run_logged(command, log, log_path, progress, started)
        if not (venv / "etc" / "nova" / "api-paste.ini").exists():
            raise RealNovaError(
                f"{venv} has no etc/nova/api-paste.ini after pip install; see {log_path}"
            )
        (venv / _READY).write_text(
            json.dumps(
                {
                    "key": cache_key(extra_installs),
                    "requirements": list(REQUIREMENTS),
                    "extra_installs": [list(e) for e in extra_installs],
                }
            )
        )
        say(progress, f"nova venv ready in {time.monotonic() - started:.0f} s")
        return venv


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def nova_conf(
    workdir: Path, cinder_endpoint: str | None, cinder_retries: int | None = None, extra: str = ""
) -> str:
    """The minimal nova.conf: nova's defaults except what running without services needs."""
    cinder = ""
    if cinder_endpoint:
        # oslo.config interpolates $name; nova's template uses %(project_id)s, left alone.
        cinder += f"endpoint_template = {cinder_endpoint.replace('$', '$$')}\n"
    if cinder_retries is not None:
        cinder += f"http_retries = {cinder_retries}\n"
    conf = (
        textwrap.dedent(f"""\
        [DEFAULT]
        transport_url = fake://
        log_file = {workdir}/nova-api.log
        state_path = {workdir}/state

        [database]
        connection = sqlite://

        [api_database]
        connection = sqlite://

        [oslo_concurrency]
        lock_path = {workdir}/locks

        [cinder]
        """)
        + cinder
    )
    return conf + (f"\n{extra}\n" if extra else "")


def paste_ini(original: str, conf_path: Path, extra_filters: Sequence[tuple[str, str]] = ()) -> str:
    """nova's api-paste.ini with authtoken's stand-in, cors reading ``conf_path``, and
    ``extra_filters`` (name, ``module:factory``) first in both ``keystone =`` pipelines."""
    text = original.replace(
        "paste.filter_factory = keystonemiddleware.auth_token:filter_factory",
        f"paste.filter_factory = {STANDIN_FILTER}",
    )
    if STANDIN_FILTER not in text:
        raise RealNovaError(
            "nova's api-paste.ini has no keystonemiddleware authtoken filter "
            "to replace; is this nova 34?"
        )
    text = text.replace(
        "oslo_config_project = nova", f"oslo_config_project = nova\noslo_config_file = {conf_path}"
    )
    if extra_filters:
        names = " ".join(name for name, _ in extra_filters)
        for pipeline in KEYSTONE_PIPELINES:
            text, count = re.subn(
                rf"(\[composite:{pipeline}\][^\[]*?\nkeystone = )", rf"\g<1>{names} ", text
            )
            if count != 1:
                raise RealNovaError(f"no keystone = line in [composite:{pipeline}]")
        text += "".join(
            f"\n[filter:{name}]\npaste.filter_factory = {factory}\n"
            for name, factory in extra_filters
        )
    return text


# ---------------------------------------------------------------------------
# nova-api
# ---------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class RealNova:
    """One nova-api host process, its conf, paste ini and logs, all under ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        venv: Path | None = None,
        port: int | None = None,
        cinder_endpoint: str | None = None,
        cinder_retries: int | None = None,
        extra_filters: Sequence[tuple[str, str]] = (),
        paste_ini: Path | None = None,
        extra_installs: Sequence[Sequence[str]] = (),
        conf_extra: str = "",
        env: dict[str, str] | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.workdir = Path(workdir).absolute()
        self.extra_installs = [list(e) for e in extra_installs]
        self.venv = (venv or default_venv(self.extra_installs)).absolute()
        self.port = port or free_port()
        self.cinder_endpoint = cinder_endpoint
        self.cinder_retries = cinder_retries
        self.extra_filters = list(extra_filters)
        self.custom_paste_ini = paste_ini
        self.conf_extra = conf_extra
        self.env = env or {}
        self.startup_timeout = startup_timeout
        self.conf_path = self.workdir / "nova.conf"
        self.paste_path = self.workdir / "api-paste.ini"
        self.log_path = self.workdir / "nova-api.log"
        self.output_path = self.workdir / "nova-api.out"
        self.ready_path = self.workdir / "ready.json"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RealNova:
        if not venv_ready(self.venv, self.extra_installs):
            raise RealNovaError(
                f"no complete nova venv at {self.venv}; run "
                "`python -m voltrace.devtools.real_nova build` first"
            )
        for name in ("state", "locks"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            nova_conf(self.workdir, self.cinder_endpoint, self.cinder_retries, self.conf_extra)
        )
        if self.custom_paste_ini is not None:
            shutil.copyfile(self.custom_paste_ini, self.paste_path)
        else:
            original = (self.venv / "etc" / "nova" / "api-paste.ini").read_text()
            self.paste_path.write_text(paste_ini(original, self.conf_path, self.extra_filters))
        with contextlib.suppress(FileNotFoundError):
            self.ready_path.unlink()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "VOLTRACE_", "PYTHON", "OS_"))
        }
        # nova_host.py's folder, for the stand-in filter's import.
        env["PYTHONPATH"] = str(HOST_SCRIPT.parent)
        env.update(self.env)
        with open(self.output_path, "ab") as out:
            self.process = subprocess.Popen(
                [
                    str(self.venv / "bin" / "python"),
                    str(HOST_SCRIPT),
                    "--config-file",
                    str(self.conf_path),
                    "--paste",
                    str(self.paste_path),
                    "--port",
                    str(self.port),
                    "--ready-file",
                    str(self.ready_path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.workdir,
            )
        try:
            self._wait_until_serving()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                last = tail(self.output_path, 1)
                raise RealNovaError(
                    f"nova-api exited {self.process.returncode} while starting: "
                    f"{last} (see {self.output_path})"
                )
            if self.ready_path.exists():
                ready = json.loads(self.ready_path.read_text())
                # Only our own process, answering nova's version document, counts as serving.
                if ready.get("pid") == self.process.pid:
                    with contextlib.suppress(OSError, http.client.HTTPException):
                        answer = self.request("GET", "/", timeout=5.0)
                        if answer.status == 200 and b'"v2.1"' in answer.body:
                            return
            if time.monotonic() > deadline:
                raise RealNovaError(
                    f"nova-api did not answer GET / on {self.url} within "
                    f"{self.startup_timeout:.0f} s; see {self.output_path}"
                )
            time.sleep(0.1)  # polling interval while nova loads its routes, not a sync

    def stop(self) -> None:
        """SIGTERM by PID, wait, SIGKILL if it has not gone in 10 s."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RealNova:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        timeout: float = 30.0,
    ) -> Response:
        """One plain HTTP exchange with this nova-api."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            raw = conn.getresponse()
            return Response(raw.status, raw.getheaders(), raw.read())
        finally:
            conn.close()


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voltrace.devtools.real_nova", description=(__doc__ or "").split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="create the cached venv (no-op when complete)")
    build.add_argument("--venv", type=Path, help=f"default: ${VENV_ENV} or the user cache")
    run = commands.add_parser("run", help="run nova-api on 127.0.0.1 until Ctrl-C/SIGTERM")
    run.add_argument("--port", type=int, default=8774)
    run.add_argument(
        "--cinder-endpoint",
        metavar="TEMPLATE",
        help="[cinder] endpoint_template, e.g. the simulator's "
        "'http://127.0.0.1:8776/v3/%%(project_id)s' (default: volumev3 "
        "from X-Service-Catalog, as nova does)",
    )
    run.add_argument(
        "--workdir",
        type=Path,
        help="conf, paste ini and logs (default: a new dir under /tmp, kept)",
    )
    run.add_argument("--venv", type=Path, help=f"default: ${VENV_ENV} or the user cache")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(ensure_venv(args.venv, progress=sys.stderr))
            return 0
        return _run(args)
    except RealNovaError as exc:
        print(f"real_nova: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    venv = ensure_venv(args.venv, progress=sys.stderr)
    # Kept after exit, so the log can still be read (and grepped for a request id).
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="voltrace-nova-"))
    nova = RealNova(workdir, venv=venv, port=args.port, cinder_endpoint=args.cinder_endpoint)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        nova.start()
        print(
            f"nova-api {NOVA_VERSION} on {nova.url} (identity headers trusted: X-User-Id, "
            f"X-Project-Id, X-Roles, X-Auth-Token); cinder "
            f"{args.cinder_endpoint or '(volumev3 from X-Service-Catalog)'}; "
            f"log {nova.log_path}",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            assert nova.process is not None
            code = nova.process.wait()
            if code not in (0, -signal.SIGTERM):
                print(f"real_nova: nova-api exited {code}; see {nova.output_path}", file=sys.stderr)
                return 1
    finally:
        nova.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
