"""How explain is built: no import circles, no OpenStack library, semconv's names, -OO."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from voltrace import semconv
from voltrace.explain import advice

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "voltrace"
OPENSTACK_CLIENTS = ("cinderclient", "keystoneauth1", "oslo_", "jsonschema", "webob")
DISPATCHER = "voltrace.cli"
MINE = ("voltrace.explain", "voltrace.traces", "voltrace.terminal", "voltrace.demo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The voltrace modules ``path`` imports, at the top or inside functions (lazy
    imports count); imports under ``if TYPE_CHECKING:`` never run, so they do not."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    package = (
        module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    )
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            submodules = {f"{base}.{alias.name}" for alias in node.names} & modules
            # `from pkg import submodule` needs the submodule; `from m import name`, m.
            found.update(submodules or {base})
    return (found & modules) - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_explain_traces_terminal_and_demo_are_in_no_import_circle():
    """No module of explain, traces, terminal or demo is on an import circle (lazy included),
    leaving aside edges back into the dispatcher (the next test is about those)."""
    graph = {name: deps - {DISPATCHER} for name, deps in import_graph().items()}
    mine = [c for c in cycles(graph) if any(m.startswith(MINE) for m in c)]
    assert mine == []


# Known today: telemetry/logs.py and telemetry/wsgi.py import the telemetry package.
OTHERS_CIRCLES = "telemetry <-> telemetry.logs/wsgi"


def test_nothing_but_main_imports_the_dispatcher():
    """voltrace.cli imports every subcommand, so only __main__ may import it."""
    importers = sorted(name for name, deps in import_graph().items() if DISPATCHER in deps)
    assert importers == ["voltrace.__main__"]


def test_voltrace_has_no_import_circle():
    """No import circle anywhere in voltrace, counting imports inside functions."""
    assert cycles(import_graph()) == []


def test_explain_imports_only_semconv_terminal_and_traces():
    """explain's modules reach only semconv, terminal and traces (and each other)."""
    graph = import_graph()
    allowed = (
        "voltrace.explain",
        "voltrace.traces",
        "voltrace.terminal",
        "voltrace.semconv",
        "voltrace",
    )
    for name, deps in graph.items():
        if name.startswith(("voltrace.explain", "voltrace.traces", "voltrace.terminal")):
            assert all(d.startswith(allowed) for d in deps), (name, deps)


def test_import_explain_loads_no_openstack_client_library():
    """`import voltrace.explain` in a fresh interpreter loads no cinderclient, keystoneauth1,
    oslo.*, jsonschema or webob."""
    code = (
        "import sys, voltrace.explain, voltrace.explain.cli, voltrace.explain.html; "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert [m for m in loaded if m.startswith(OPENSTACK_CLIENTS)] == []


def test_explain_help_works_under_python_oo():
    """`python -OO -m voltrace explain --help` (docstrings stripped) prints the help."""
    for command in (["-m", "voltrace", "explain", "--help"], ["-m", "voltrace.explain", "-h"]):
        done = subprocess.run(
            [sys.executable, "-OO", *command], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "--request-id" in done.stdout and "Traceback" not in done.stderr


def test_advice_is_only_for_failure_classes_semconv_knows():
    """Every class with its own advice is a row of semconv.FAILURES."""
    assert set(semconv.FAILURES) >= advice.ADVISED_CLASSES


def test_explain_spells_no_voltrace_name_itself():
    """explain, traces and the demo take every voltrace.* attribute name from semconv."""
    sources = [
        *(PACKAGE / "explain").glob("*.py"),
        *(PACKAGE / "traces").glob("*.py"),
        PACKAGE / "demo.py",
        PACKAGE / "terminal.py",
    ]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith("voltrace."), (path.name, node.value)


def test_version_flag():
    """`voltrace --version` names the version."""
    done = subprocess.run(
        [sys.executable, "-m", "voltrace", "--version"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0
    from voltrace import __version__

    assert done.stdout.strip() == f"voltrace {__version__}"
