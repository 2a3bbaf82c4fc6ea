"""The real nova 34 venv with voltrace's instrumentation in it (demo, bench and tests share it).

It is ``voltrace.devtools.real_nova``'s venv (nova 34 under OpenStack's upper-constraints for
that cycle) plus two more ``pip install -c <those constraints>`` runs:

1. voltrace from this source checkout, editable, **with** its dependencies: what an operator
   installs into nova's venv (pyproject's floors are nova 34's pins, so pip only adds
   packages; ``tests/test_nova_instrumentation_packaging.py`` checks it). Its
   ``opentelemetry_instrumentor`` entry point is what ``opentelemetry-instrument`` finds;
2. :data:`LOADING_PACKAGES`: ``opentelemetry-distro``, which ``opentelemetry-instrument``
   needs to configure the SDK.

The venv's cache key covers the checkout's ``[project]`` dependencies and entry points
(``real_nova.cache_key``), so changing them rebuilds it. Build it (a couple of minutes) with::

    python -m voltrace.instrumentation.nova_venv build
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import voltrace

# opentelemetry-instrument's SDK configurator (the SDK ships no configurator entry point).
LOADING_PACKAGES = ("opentelemetry-distro",)

BUILD_COMMAND = "python -m voltrace.instrumentation.nova_venv build"


class NoSourceCheckout(RuntimeError):
    """voltrace is not running from a source checkout (nothing to install editable)."""


def source_checkout() -> Path:
    """The checkout this voltrace runs from (pyproject.toml next to the package)."""
    root = Path(voltrace.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").exists():
        raise NoSourceCheckout(
            f"voltrace at {root} is not a source checkout; the real-nova venv installs "
            "voltrace from one (git clone, then run from it)"
        )
    return root


def extra_installs(source: Path | None = None) -> tuple[tuple[str, ...], ...]:
    """real_nova's ``extra_installs`` for the instrumented venv."""
    root = source or source_checkout()
    return (("-e", str(root)), LOADING_PACKAGES)


FILTER_NAME = "voltrace"
FILTER_FACTORY = "voltrace.instrumentation.nova:filter_factory"


def instrumented_paste_ini(venv: Path, workdir: Path, **options: str) -> Path:
    """nova's api-paste.ini for ``RealNova(paste_ini=...)``: ``[filter:voltrace]`` first in
    both ``keystone =`` pipelines, with ``options`` as an operator writes them there."""
    from voltrace.devtools.real_nova import paste_ini

    original = (venv / "etc" / "nova" / "api-paste.ini").read_text()
    # RealNova copies a custom ini as is: the cors filter must still read its nova.conf.
    text = paste_ini(original, workdir / "nova.conf", [(FILTER_NAME, FILTER_FACTORY)])
    marker = f"paste.filter_factory = {FILTER_FACTORY}\n"
    lines = "".join(f"{key} = {value}\n" for key, value in options.items())
    path = workdir / "api-paste.instrumented.ini"
    path.write_text(text.replace(marker, marker + lines))
    return path


def venv_path() -> Path:
    from voltrace.devtools.real_nova import default_venv

    return default_venv(extra_installs())


def is_built() -> bool:
    from voltrace.devtools.real_nova import venv_ready

    return venv_ready(venv_path(), extra_installs())


def build(progress: object = sys.stderr) -> Path:
    from voltrace.devtools.real_nova import ensure_venv

    return ensure_venv(extra_installs=extra_installs(), progress=progress)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m voltrace.instrumentation.nova_venv",
        description="the real nova 34 venv with voltrace's instrumentation installed",
    )
    parser.add_argument("command", choices=("build", "path"))
    args = parser.parse_args(argv)
    from voltrace.devtools.real_nova import RealNovaError

    try:
        if args.command == "path":
            print(venv_path())
            return 0 if is_built() else 1
        print(build())
        return 0
    except (RealNovaError, NoSourceCheckout) as exc:
        print(f"nova_venv: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
