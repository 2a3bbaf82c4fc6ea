"""voltrace installs into nova 34's venv without touching nova's packages.

Against the real venvs of tests/support (real_nova's plain nova 34 built with OpenStack's
upper-constraints for that cycle, and nova_venv's, which is that plus ``pip install -c
<constraints> -e <this checkout>`` and opentelemetry-distro):

* pip, asked to install this checkout into plain nova's venv, resolves under the
  constraints and changes no pinned package; without them it changes none of nova's
  installed packages either (voltrace's floors are at or below nova 34's pins);
* the real install did the same: every package of plain nova is in the instrumented venv at
  the same version, and ``pip check`` is clean;
* ``import voltrace.instrumentation.nova`` loads only the standard library, what nova's
  venv already has, OpenTelemetry and wrapt; instrumenting in code, with nova's modules
  imported, still loads no orjson, protobuf, gRPC, exporter, gunicorn or cheroot;
* ``opentelemetry-instrument`` finds ``voltrace_nova`` through voltrace's own entry point.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.nova_instrumentation import venv as instrumented_venv
from tests.support.real_nova import nova_venv
from voltrace.devtools.real_nova import CONSTRAINTS_FILE
from voltrace.instrumentation.nova import NovaVolumesInstrumentor

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINT_GROUP = "opentelemetry_instrumentor"
ENTRY_POINT = "voltrace_nova"
# What the instrumentation itself may bring into nova's venv, besides what nova has.
ALLOWED_NEW = {"voltrace", "wrapt"}
ALLOWED_NEW_PREFIX = "opentelemetry-"
# Imported by nothing on the instrumentation's path (only by voltrace serve and exporters).
NEVER_IMPORTED = (
    "orjson",
    "grpc",
    "google.protobuf",
    "opentelemetry.exporter",
    "opentelemetry.proto",
    "gunicorn",
    "cheroot",
)


def canonical(name: str) -> str:
    """PEP 503's normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> dict[str, str]:
    """upper-constraints' pins, name -> version (``name===version[;markers]`` lines)."""
    pins: dict[str, str] = {}
    for line in CONSTRAINTS_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "===" not in line or ";" in line:  # marker lines do not apply to this Python
            continue
        name, version = line.split("===", 1)
        pins[canonical(name)] = version.strip()
    return pins


def installed(venv: Path) -> dict[str, str]:
    """The venv's distributions, name -> version, as its own pip lists them."""
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    return {canonical(d["name"]): d["version"] for d in json.loads(result.stdout)}


def dry_run(venv: Path, tmp_path: Path, *pip_args: str) -> list[tuple[str, str]]:
    """What ``pip install <pip_args> <this checkout>`` would install, (name, version)."""
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--dry-run",
            "--quiet",
            "--report",
            str(report),
            *pip_args,
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"pip could not resolve voltrace into nova's venv:\n{result}"
    entries = json.loads(report.read_text())["install"]
    return [(canonical(e["metadata"]["name"]), e["metadata"]["version"]) for e in entries]


@pytest.fixture(scope="module")
def plain_venv() -> Path:
    return nova_venv()


@pytest.fixture(scope="module")
def nova_packages(plain_venv: Path) -> dict[str, str]:
    return installed(plain_venv)


def test_pip_with_novas_constraints_changes_no_pinned_package(
    plain_venv: Path, nova_packages: dict[str, str], tmp_path: Path
) -> None:
    """Resolved under upper-constraints: every pinned package at its pin, none of nova's
    installed packages reinstalled, and the OpenTelemetry family at nova 34's pins."""
    pins = constraints()
    planned = dict(dry_run(plain_venv, tmp_path, "-c", str(CONSTRAINTS_FILE)))
    assert planned.pop("voltrace") == "0.1.0"
    off_pin = {n: (v, pins[n]) for n, v in planned.items() if n in pins and pins[n] != v}
    assert off_pin == {}, "pip would install these off their pin (got, pin)"
    touched = {n: (nova_packages[n], v) for n, v in planned.items() if n in nova_packages}
    assert touched == {}, "pip would change these packages of nova's (installed, new)"
    # The packages voltrace's floors were loosened for, resolved at nova 34's pins.
    for name in ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-semantic-conventions"):
        assert planned[name] == pins[name]
    assert planned["opentelemetry-instrumentation"].startswith("0.65")
    for name in ("python-cinderclient", "keystoneauth1", "webob", "prometheus-client", "wrapt"):
        assert name not in planned and nova_packages[name] == pins[name]


def test_pip_without_constraints_changes_none_of_novas_packages(
    plain_venv: Path, nova_packages: dict[str, str], tmp_path: Path
) -> None:
    """Even a plain ``pip install voltrace`` (no -c) only adds packages: every installed one
    (cinderclient, keystoneauth1, oslo.*, webob, wrapt, prometheus-client ...) satisfies
    voltrace's floors as it is."""
    planned = dict(dry_run(plain_venv, tmp_path))
    touched = {n: (nova_packages[n], v) for n, v in planned.items() if n in nova_packages}
    assert touched == {}, "pip would change these packages of nova's (installed, new)"
    assert "voltrace" in planned


def test_the_real_install_left_every_nova_package_as_it_was(
    nova_packages: dict[str, str],
) -> None:
    """The instrumented venv is plain nova plus additions; pip check finds no conflict."""
    venv = instrumented_venv()
    packages = installed(venv)
    changed = {
        n: (v, packages.get(n, "(removed)"))
        for n, v in nova_packages.items()
        if packages.get(n) != v
    }
    assert changed == {}
    added = set(packages) - set(nova_packages)
    assert {"voltrace", "opentelemetry-sdk", "opentelemetry-instrumentation"} <= added
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "check"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert check.returncode == 0, check.stdout + check.stderr


# Runs in the instrumented venv: which modules a step loads, and which distribution each
# top-level one comes from (None: the standard library or a built-in).
PROBE = textwrap.dedent(
    """
    import importlib.metadata, json, sys

    def loaded(step):
        before = set(sys.modules)
        step()
        return sorted(set(sys.modules) - before)

    def import_nova():
        import voltrace.instrumentation.nova  # noqa: F401

    def instrument():
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider
        from voltrace.instrumentation.nova import NovaVolumesInstrumentor

        NovaVolumesInstrumentor().instrument(
            tracer_provider=TracerProvider(), meter_provider=MeterProvider()
        )

    def import_novas_api():
        # What nova-api imports; the post-import hooks then wrap it (and load nova_hooks).
        import nova.api.openstack.compute.volumes  # noqa: F401
        import nova.api.openstack.urlmap  # noqa: F401
        import nova.volume.cinder  # noqa: F401

    steps = {"import": import_nova, "instrument": instrument, "nova": import_novas_api}
    wanted = sys.argv[1].split(",")
    result = {name: loaded(steps[name]) for name in wanted}
    owners = importlib.metadata.packages_distributions()
    tops = {m.split(".")[0] for ms in result.values() for m in ms}
    result["_owners"] = {
        t: None if (t in sys.stdlib_module_names or t in sys.builtin_module_names)
        else owners.get(t, ["(unknown)"])
        for t in tops
    }
    if "instrument" in wanted:
        from voltrace.instrumentation.nova_runtime import RUNTIME
        result["_wrapped"] = RUNTIME.volume_controller is not None
    print(json.dumps(result))
    """
)


def probe(steps: str) -> dict[str, Any]:
    venv = instrumented_venv()
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", PROBE, steps],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=venv,  # not this checkout: only what the venv has is importable
        env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OTEL_"))},
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.splitlines()[-1]))


def never_imported(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in NEVER_IMPORTED)]


def test_importing_the_instrumentor_loads_only_nova_opentelemetry_and_wrapt(
    nova_packages: dict[str, str],
) -> None:
    """Each module the import loads is the standard library's, a package nova's venv already
    had, OpenTelemetry's, wrapt's or voltrace's; none of voltrace serve's own dependencies."""
    result = probe("import")
    modules = result["import"]
    assert "voltrace.instrumentation.nova" in modules
    foreign = {}
    for top in sorted({m.split(".")[0] for m in modules}):
        owners = result["_owners"][top]
        if owners is None:
            continue
        names = {canonical(o) for o in owners}
        if not all(
            n in nova_packages or n in ALLOWED_NEW or n.startswith(ALLOWED_NEW_PREFIX)
            for n in names
        ):
            foreign[top] = sorted(names)
    assert foreign == {}
    assert never_imported(modules) == []
    # Not even the SDK or structlog: the import is the API, BaseInstrumentor and wrapt.
    assert not [m for m in modules if m.startswith(("opentelemetry.sdk", "structlog"))]


def test_instrumenting_nova_in_code_loads_no_exporter_serving_or_json_library() -> None:
    """instrument() with SDK providers, then nova's API modules imported (so the hooks are
    wrapped): still no orjson, protobuf, gRPC, OTel exporter, gunicorn or cheroot, beyond
    what nova's own modules import without voltrace."""
    instrumented = probe("import,instrument,nova")
    assert instrumented["_wrapped"] is True  # the post-import hooks ran on nova's modules
    plain = probe("nova")["nova"]
    loaded = instrumented["import"] + instrumented["instrument"] + instrumented["nova"]
    assert sorted(set(never_imported(loaded)) - set(plain)) == []


def test_opentelemetry_instrument_finds_voltrace_nova_by_its_entry_point() -> None:
    """voltrace's own distribution declares the entry point, and opentelemetry-instrument
    (with the distro's configurator) loads and instruments it at interpreter start."""
    venv = instrumented_venv()
    python = str(venv / "bin" / "python")
    listing = subprocess.run(
        [
            python,
            "-c",
            "import importlib.metadata as m, json; print(json.dumps([(e.name, e.value, "
            f"e.dist.name) for e in m.entry_points(group={ENTRY_POINT_GROUP!r})]))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=venv,
    )
    entries = [tuple(e) for e in json.loads(listing.stdout)]
    ours = [e for e in entries if e[0] == ENTRY_POINT]
    assert ours == [
        (
            ENTRY_POINT,
            f"{NovaVolumesInstrumentor.__module__}:{NovaVolumesInstrumentor.__name__}",
            "voltrace",
        )
    ]
    check = (
        "from voltrace.instrumentation.nova import NovaVolumesInstrumentor as I; "
        "from voltrace.instrumentation.nova_runtime import RUNTIME; "
        "print(I().is_instrumented_by_opentelemetry, RUNTIME.telemetry_source is not None)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "OTEL_"))}
    env.update(
        OTEL_SERVICE_NAME="nova-api",
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    run = subprocess.run(
        [str(venv / "bin" / "opentelemetry-instrument"), python, "-c", check],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=venv,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "True"], run.stderr
    # Without opentelemetry-instrument, nothing instruments itself.
    plain = subprocess.run(
        [python, "-c", check], capture_output=True, text=True, check=True, cwd=venv, env=env
    )
    assert plain.stdout.split() == ["False", "False"]


def test_the_dev_environment_sees_the_same_entry_point() -> None:
    """This checkout's own install (pip install -e .) declares it too: one package."""
    from importlib.metadata import entry_points

    found = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == ENTRY_POINT]
    assert [(e.value, e.dist.name if e.dist else None) for e in found] == [
        ("voltrace.instrumentation.nova:NovaVolumesInstrumentor", "voltrace")
    ]
