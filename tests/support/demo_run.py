"""One real `voltrace demo` run per test session, shared by the demo and explain tests.

It runs as its own process (`python -m voltrace demo`), with stdout a pipe (not a TTY)
and no OTEL_* variables from the caller's environment, exactly as a user would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Every scenario's answer, written down independently of voltrace/demo.py:
# scenario -> (HTTP status, failed stage, failure class).
EXPECTED: dict[str, tuple[int, str | None, str | None]] = {
    "plain-create": (200, None, None),
    "from-snapshot": (200, None, None),
    "snapshot-not-found": (404, "resolve_snapshot", "snapshot_not_found"),
    "over-quota": (403, "call_cinder", "over_quota"),
    "invalid-size": (400, "parse", "schema_invalid"),
    "policy-denied": (403, "authorize", "policy_denied"),
    "microversion-2.36": (404, "parse", "microversion_not_found"),
    "cinder-500": (500, "call_cinder", "cinder_server_error"),
    "cinder-slow": (200, None, None),
    "cinder-unreachable": (500, "call_cinder", "cinder_unreachable"),
    "cinder-hung": (500, "call_cinder", "cinder_unreachable"),
    "unknown-volume-type": (500, "call_cinder", "cinder_not_found"),
    "size-from-snapshot": (200, None, None),
    "no-valid-backend": (200, None, None),
    "driver-failure-rescheduled": (200, None, None),
    "scheduler-down": (200, None, None),
    "volume-service-down": (200, None, None),
    "slow-backend": (200, None, None),
}
# What became of each volume Nova answered 200 for, as explain says it: the simulated
# pool is cinder-sim@lvmdriver-1#lvmdriver-1 (100 GB), scheduler_max_attempts 3.
AVAILABLE = (
    "Nova answered 200; the volume then became available on cinder-sim@lvmdriver-1#lvmdriver-1"
)
AFTER: dict[str, str] = {
    "plain-create": AVAILABLE,
    "from-snapshot": AVAILABLE,
    "cinder-slow": AVAILABLE,
    "size-from-snapshot": AVAILABLE,
    "no-valid-backend": "Nova answered 200; the volume then failed in cinder-scheduler: "
    "no valid backend (capacity)",
    "driver-failure-rescheduled": "Nova answered 200; the volume then failed in cinder-volume: "
    "driver error, 3 attempts (max_attempts_exceeded)",
    "scheduler-down": "Nova answered 200; the volume is stuck creating "
    "(waiting on cinder-scheduler)",
    "volume-service-down": "Nova answered 200; the volume is stuck creating "
    "(waiting on cinder-volume on cinder-sim@lvmdriver-1)",
    "slow-backend": AVAILABLE,
}
FAILURES = {name for name, (status, _, _) in EXPECTED.items() if status >= 400}
# The demo's project: hex, as keystone makes project ids (cinder routes no other).
PROJECT = "de30de30de30de30de30de30de30de30"


@dataclass
class DemoRun:
    out: Path
    returncode: int
    stdout: str
    stderr: str
    summary: list[dict[str, Any]]

    def row(self, scenario: str) -> dict[str, Any]:
        return next(r for r in self.summary if r["scenario"] == scenario)

    def request_id(self, scenario: str) -> str:
        return str(self.row(scenario)["request_id"])

    def section(self, scenario: str) -> str:
        """The part of stdout between this scenario's progress line and the next blank line."""
        start = self.stdout.index(f"] {scenario}: ")
        end = self.stdout.find("\n\n", start)
        return self.stdout[start : end if end >= 0 else None]


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus OTEL_* (a developer's collector must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


def run_demo(
    out: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voltrace", "demo", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
    )


_RUN: DemoRun | None = None


def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The full demo, run once per session (about 6 s)."""
    global _RUN
    if _RUN is None:
        out = tmp_path_factory.mktemp("demo") / "voltrace-demo"
        done = run_demo(out, "--no-color")
        summary_file = out / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else []
        _RUN = DemoRun(out, done.returncode, done.stdout, done.stderr, summary)
    return _RUN
