"""Processes we started, found and stopped by PID through /proc (Linux only, no psutil).

RabbitMQ's ``erl_child_setup`` and ``inet_gethost`` each run in a process group of
their own, so killing a group is not enough: ``kill_tree`` also walks the
descendants, parent links first, before anything is signalled (a dead parent's
children are re-parented to init and could no longer be found).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_tree(pids: Iterable[int], sig: int = signal.SIGKILL) -> list[int]:
    """Signal each PID, its process group and all its descendants; returns what was signalled."""
    targets: list[int] = []
    for pid in pids:
        if alive(pid):
            targets.extend([pid, *descendants(pid)])
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    for pid in pids:
        # Our own children started with start_new_session lead their group (pgid == pid).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
    return targets


def wait_gone(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """Poll until none of ``pids`` is alive; returns those still alive at the deadline."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        remaining = [pid for pid in remaining if alive(pid)]
        if remaining:
            time.sleep(0.02)  # polling interval, not a synchronisation
    return remaining


def memory_kb(pids: Iterable[int]) -> tuple[int, int]:
    """Summed (PSS, RSS) in kB of the live ``pids``, from /proc/PID/smaps_rollup."""
    pss = rss = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            name, _, value = line.partition(":")
            if name == "Pss":
                pss += int(value.split()[0])
            elif name == "Rss":
                rss += int(value.split()[0])
    return pss, rss


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"
