"""Cinder 29's own virtualenv, and the side directories the complete Cinder needs next to it.

Cinder monkey-patches eventlet, so it is never imported into voltrace's process: it runs
from its own cached venv and is spoken to over HTTP only. Layout, all under
``${XDG_CACHE_HOME:-~/.cache}/voltrace/`` unless ``$VOLTRACE_CINDER_VENV`` names the venv:

``cinder-29.0.0-venv/``
    cinder, osprofiler and the OTLP exporter (``REQUIREMENTS``);
``cinder-29.0.0-venv.full-deps/base``
    ``fixtures`` (``cinder.tests.fake_driver`` imports ``cinder.tests.unit``, which needs it)
    and ``psycopg2-binary``: on ``PYTHONPATH`` of the complete Cinder's services, so the venv
    itself, which the simple cinder-api also uses, stays as it is;
``cinder-29.0.0-venv.full-deps/otel``
    the PyPI OpenTelemetry instrumentations for oslo.messaging, taskflow and WSGI
    (``--tracing otel``).

Each is built in place under a file lock and marked ready by a stamp written last, so a
killed build is redone, never half-used. Builds print progress as pip goes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from voltrace.devtools.venv_build import locked, run_logged, say

CINDER_VERSION = "29.0.0"
#: What goes into cinder's venv. osprofiler's OTLP driver needs the SDK and the HTTP exporter.
REQUIREMENTS = (
    f"cinder=={CINDER_VERSION}",
    "osprofiler==4.4.0",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-http==1.45.2",
)
#: The complete Cinder's extras, beside the venv (see the module docstring).
SIDE_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "base": ("fixtures==4.3.2", "psycopg2-binary==2.9.13"),
    "otel": (
        "opentelemetry-instrumentation-oslo-messaging==0.13.1",
        "opentelemetry-instrumentation-taskflow==0.13.1",
        "opentelemetry-instrumentation-wsgi==0.66b2",
        # the same SDK as the venv's, so whichever copy is imported first behaves the same
        "opentelemetry-sdk==1.45.2",
        "opentelemetry-exporter-otlp-proto-http==1.45.2",
    ),
}
VENV_ENV = "VOLTRACE_CINDER_VENV"
_READY = ".voltrace-ready"
_BUILD_TIMEOUT_S = 900.0


class RealCinderError(RuntimeError):
    """The venv could not be built, or cinder did not come up (the message says why)."""


# One build step of this venv: into its log, with progress, within the build's bound.
_run_logged = functools.partial(
    run_logged, timeout_s=_BUILD_TIMEOUT_S, error=RealCinderError, what="the cinder venv"
)


def default_venv() -> Path:
    """``$VOLTRACE_CINDER_VENV``, else the per-user cache."""
    if os.environ.get(VENV_ENV):
        return Path(os.environ[VENV_ENV]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "voltrace" / f"cinder-{CINDER_VERSION}-venv"


def side_dir(venv: Path) -> Path:
    """Where the complete Cinder's extra packages live, next to ``venv``."""
    return venv.parent / f"{venv.name}.full-deps"


def _stamp(python: str, requirements: Sequence[str]) -> dict[str, Any]:
    return {"requirements": list(requirements), "python": os.path.realpath(python)}


def _stamped(path: Path, requirements: Sequence[str]) -> bool:
    try:
        stamp = json.loads((path / _READY).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("requirements") == list(requirements)


def venv_ready(venv: Path | None = None) -> bool:
    """True if ``venv`` holds a complete build of exactly ``REQUIREMENTS``."""
    venv = venv or default_venv()
    return (venv / "bin" / "cinder-api").exists() and _stamped(venv, REQUIREMENTS)


def side_ready(venv: Path, part: str) -> bool:
    return _stamped(side_dir(venv) / part, SIDE_REQUIREMENTS[part])


def ensure_venv(
    venv: Path | None = None, *, python: str = sys.executable, progress: TextIO | None = None
) -> Path:
    """Build cinder's venv unless a complete one is there; returns its path.

    Raises ``RealCinderError`` (with the tail of pip's output) if it cannot be built.
    """
    venv = (venv or default_venv()).absolute()
    log_path = venv.parent / f"{venv.name}.build.log"
    with locked(venv, RealCinderError):
        if venv_ready(venv):
            return venv
        say(progress, f"building cinder {CINDER_VERSION} venv in {venv} (log: {log_path})")
        # A venv cannot be moved after it is built (its scripts name their path),
        # so build in place; the ready stamp is written last.
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        with open(log_path, "w") as log:
            _run_logged([python, "-m", "venv", str(venv)], log, log_path, progress, started)
            _run_logged(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--no-input",
                    "--disable-pip-version-check",
                    *REQUIREMENTS,
                ],
                log,
                log_path,
                progress,
                started,
            )
        if not (venv / "bin" / "cinder-api").exists():
            raise RealCinderError(f"{venv} has no bin/cinder-api after pip install; see {log_path}")
        (venv / _READY).write_text(json.dumps(_stamp(python, REQUIREMENTS)))
        say(progress, f"cinder venv ready in {time.monotonic() - started:.1f} s")
        return venv


def ensure_side_deps(venv: Path, part: str, *, progress: TextIO | None = None) -> Path:
    """``pip install --target`` one part of ``SIDE_REQUIREMENTS`` next to ``venv``."""
    target = side_dir(venv) / part
    log_path = side_dir(venv) / f"{part}.build.log"
    with locked(venv, RealCinderError):
        if side_ready(venv, part):
            return target
        say(
            progress,
            f"installing {part} extras for the complete Cinder into {target} (log: {log_path})",
        )
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(log_path, "w") as log:
            _run_logged(
                [
                    str(venv / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--no-input",
                    "--disable-pip-version-check",
                    "--target",
                    str(target),
                    *SIDE_REQUIREMENTS[part],
                ],
                log,
                log_path,
                progress,
                started,
            )
        (target / _READY).write_text(json.dumps(_stamp(sys.executable, SIDE_REQUIREMENTS[part])))
        say(progress, f"{part} extras ready in {time.monotonic() - started:.1f} s")
        return target
