"""Building the dev tools' cached venvs (real cinder 29, real nova 34): one step at a time,
every line into a build log, a progress line now and then, a bound on the whole build.

A first build takes minutes with pip silent in between; without the progress lines a
user cannot tell a slow download from a hung one.
"""

from __future__ import annotations

import fcntl
import re
import subprocess
import time
from pathlib import Path
from typing import IO, Any, TextIO

from voltrace.devtools.processes import tail

PROGRESS_EVERY_S = 10.0

_PIP_STEP = re.compile(
    r"^(Collecting|Downloading|Using cached|Building wheel for|Installing collected"
    r"|Successfully installed)\s*(\S*)"
)


def say(progress: TextIO | None, text: str) -> None:
    if progress is not None:
        print(text, file=progress, flush=True)


def locked(venv: Path, error: type[Exception]) -> IO[Any]:
    """An exclusive lock beside ``venv``: one builder at a time, the others then reuse it.
    Closing the returned file releases it."""
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        lock = open(venv.parent / f"{venv.name}.lock", "w")  # noqa: SIM115 - the caller closes
    except OSError as exc:
        raise error(f"cannot create the venv at {venv}: {exc}") from exc
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def run_logged(
    command: list[str],
    log: TextIO,
    log_path: Path,
    progress: TextIO | None,
    started: float,
    *,
    timeout_s: float,
    error: type[Exception],
    what: str,
) -> None:
    """Run one build step of ``what`` into ``log``; ``error`` (with the log's tail) if it
    fails or the whole build, begun at ``started``, passes ``timeout_s``."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise error(f"cannot run {command[0]}: {exc}") from exc
    assert process.stdout is not None
    collected = 0
    last_said = time.monotonic()
    deadline = started + timeout_s
    for line in process.stdout:
        log.write(line)
        now = time.monotonic()
        step = _PIP_STEP.match(line)
        if step is not None:
            collected += step.group(1) == "Collecting"
            final = step.group(1) in ("Installing collected", "Successfully installed")
            if final or now - last_said >= PROGRESS_EVERY_S:
                doing = "installing" if final else f"{step.group(1).lower()} {step.group(2)}"
                say(progress, f"  [{now - started:4.0f} s] {doing} ({collected} packages so far)")
                last_said = now
        if now > deadline:
            process.kill()
            break
    code = process.wait()
    log.flush()
    if time.monotonic() > deadline:
        raise error(
            f"building {what} took over {timeout_s:.0f} s; last lines of "
            f"{log_path}:\n{tail(log_path)}"
        )
    if code != 0:
        raise error(
            f"building {what} failed ({Path(command[0]).name} exited {code}); "
            f"last lines of {log_path}:\n{tail(log_path)}"
        )
