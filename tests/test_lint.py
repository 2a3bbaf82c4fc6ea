"""The code stays ruff-clean (the pyproject's rules), so CI catches what review misses."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    """`ruff check` finds nothing in voltrace/, tests/ or bench/."""
    ruff = shutil.which("ruff")
    require(ruff is not None, "ruff (pip install -e '.[test]')")
    result = subprocess.run(
        [ruff, "check", "--output-format", "concise", "voltrace", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_imports_without_optional_tools():
    """`import voltrace.cli` works in a fresh interpreter (no test-only imports leak in)."""
    result = subprocess.run(
        [sys.executable, "-c", "import voltrace.cli"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
