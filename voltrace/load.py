"""``voltrace load``: steady create traffic against a running nova-api, by scenario mix.

Feeds the dashboards and alerts from a real server, the way an operator would
check them before trusting them::

    voltrace load --url http://127.0.0.1:8774 --rate 20 --duration 60s \\
        --mix success=8,over_quota=1,schema_invalid=1

Requests leave on a fixed schedule (open loop: a slow server does not slow the
sender, it piles up in-flight requests, as real clients do), from ``--concurrency``
threads, each with its own keep-alive connection. A progress line shows the rate
and the answers so far; the end prints one row per scenario with its expected
status, what came back and the latency percentiles. The exit status is 1 when any
answer differed from its scenario's expected status, or a request failed outright.

Each scenario is a create an SRE meets in production, and every one of them fails
(or succeeds) for the reason its name says on Nova and on voltrace alike.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import queue
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from voltrace.client import NovaClient, identity_headers


@dataclass(frozen=True)
class LoadScenario:
    """One kind of create and the status Nova answers it with."""

    name: str
    expected_status: int
    volume: dict[str, Any]
    roles: str = "member,reader"
    headers: dict[str, str] = field(default_factory=dict)
    authenticated: bool = True


SCENARIOS: dict[str, LoadScenario] = {
    s.name: s
    for s in (
        LoadScenario("success", 200, {"size": 1}),
        # Cinder's default quota is 1000 GB per project.
        LoadScenario("over_quota", 403, {"size": 1500}),
        LoadScenario("schema_invalid", 400, {"size": 0}),
        LoadScenario("policy_denied", 403, {"size": 1}, roles="reader"),
        LoadScenario(
            "snapshot_not_found",
            404,
            {"size": 1, "snapshot_id": "00000000-0000-4000-8000-00000000dead"},
        ),
        LoadScenario("cinder_not_found", 500, {"size": 1, "volume_type": "voltrace-no-such-type"}),
        LoadScenario(
            "microversion_not_found",
            404,
            {"size": 1},
            headers={"OpenStack-API-Version": "compute 2.36"},
        ),
        LoadScenario("unauthenticated", 401, {"size": 1}, authenticated=False),
    )
}


class LoadError(ValueError):
    """A bad --mix, --rate or --duration (one line, for the CLI)."""


def parse_mix(text: str) -> dict[str, float]:
    """``success=8,over_quota=1`` -> weights; unknown names and bad numbers are errors."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if name not in SCENARIOS:
            raise LoadError(f"--mix: unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise LoadError(f"--mix: {part!r}: the weight must be a number") from None
        if weight < 0:
            raise LoadError(f"--mix: {part!r}: the weight must not be negative")
        weights[name] = weight
    if not weights or sum(weights.values()) <= 0:
        raise LoadError("--mix: give at least one scenario a positive weight")
    return weights


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None:
        raise LoadError(f"--duration: {text!r} is not a duration like 30s, 5m or 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


@dataclass
class Outcome:
    scenario: str
    status: int | None  # None: no answer at all (connection refused, timeout)
    latency_s: float
    error: str | None = None


@dataclass
class LoadReport:
    """Everything that came back, per scenario."""

    duration_s: float
    outcomes: list[Outcome]
    late_starts: int  # sends that left more than one interval behind schedule

    def by_scenario(self) -> dict[str, list[Outcome]]:
        rows: dict[str, list[Outcome]] = {}
        for outcome in self.outcomes:
            rows.setdefault(outcome.scenario, []).append(outcome)
        return rows

    @property
    def unexpected(self) -> int:
        return sum(1 for o in self.outcomes if o.status != SCENARIOS[o.scenario].expected_status)

    def table(self) -> str:
        header = ("scenario", "sent", "expected", "answers", "p50 ms", "p95 ms", "p99 ms")
        rows: list[tuple[str, ...]] = [header]
        for name, outcomes in sorted(self.by_scenario().items()):
            statuses = Counter("no answer" if o.status is None else str(o.status) for o in outcomes)
            latencies = sorted(o.latency_s * 1000 for o in outcomes if o.status is not None)
            rows.append(
                (
                    name,
                    str(len(outcomes)),
                    str(SCENARIOS[name].expected_status),
                    " ".join(f"{status}x{count}" for status, count in sorted(statuses.items())),
                    *(
                        f"{percentile(latencies, q):.1f}" if latencies else "-"
                        for q in (0.50, 0.95, 0.99)
                    ),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        rate = len(self.outcomes) / self.duration_s if self.duration_s else 0.0
        lines.append(
            f"{len(self.outcomes)} creates in {self.duration_s:.1f} s "
            f"({rate:.1f}/s), {self.unexpected} unexpected answers"
            + (
                f", {self.late_starts} sent late (the sender fell behind)"
                if self.late_starts
                else ""
            )
        )
        return "\n".join(lines)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def run_load(
    url: str,
    *,
    rate: float,
    duration_s: float,
    mix: dict[str, float],
    concurrency: int = 8,
    project_id: str | None = None,
    user_id: str = "load-user",
    token: str = "load-token",
    seed: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> LoadReport:
    """Send ``rate`` creates a second for ``duration_s``, drawn from ``mix``."""
    if rate <= 0:
        raise LoadError("--rate must be greater than 0")
    if concurrency < 1:
        raise LoadError("--concurrency must be at least 1")
    names = list(mix)
    weights = [mix[name] for name in names]
    chooser = random.Random(seed)
    work: queue.Queue[str | None] = queue.Queue()
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def worker() -> None:
        client = NovaClient(url, timeout=120.0)
        try:
            while (name := work.get()) is not None:
                outcome = _send(client, SCENARIOS[name], project_id, user_id, token)
                with lock:
                    outcomes.append(outcome)
        finally:
            client.close()

    threads = [
        threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()

    interval = 1.0 / rate
    started = time.monotonic()
    next_progress = started + 1.0
    late = 0
    for sent in itertools.count():
        due = started + sent * interval
        if due - started >= duration_s:
            break
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        elif now - due > interval:
            late += 1
        work.put(chooser.choices(names, weights)[0])
        if progress is not None and time.monotonic() >= next_progress:
            next_progress += 1.0
            with lock:
                answered = list(outcomes)
            progress(_progress_line(time.monotonic() - started, sent + 1, answered))
    for _ in threads:
        work.put(None)
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return LoadReport(elapsed, outcomes, late)


def _send(
    client: NovaClient, scenario: LoadScenario, project_id: str | None, user_id: str, token: str
) -> Outcome:
    # A project of its own per create by default: Cinder's quota (10 volumes a project)
    # would otherwise turn a long run's successes into over_quota. Hex, as Cinder routes.
    project = project_id or uuid.uuid4().hex
    headers = (
        identity_headers(user_id=user_id, project_id=project, roles=scenario.roles, token=token)
        if scenario.authenticated
        else {}
    )
    headers.update(scenario.headers)
    started = time.perf_counter()
    try:
        answer = client.create_volume(scenario.volume, headers=headers)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(scenario.name, None, time.perf_counter() - started, str(exc))
    return Outcome(scenario.name, answer.status, time.perf_counter() - started)


def _progress_line(elapsed_s: float, sent: int, answered: list[Outcome]) -> str:
    statuses = Counter("err" if o.status is None else str(o.status) for o in answered)
    answers = " ".join(f"{status}:{count}" for status, count in sorted(statuses.items()))
    return (
        f"{elapsed_s:6.1f} s  sent {sent}  answered {len(answered)}  "
        f"in flight {sent - len(answered)}  {answers}"
    )


# -- the command ---------------------------------------------------------------


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Send steady create traffic to a running nova-api (voltrace serve "
        "or a real nova-api), by scenario mix, and report what came back."
    )
    parser.add_argument(
        "--url", default="http://127.0.0.1:8774", help="nova-api's base URL (default %(default)s)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=10.0,
        metavar="R",
        help="creates per second (default %(default)s)",
    )
    parser.add_argument(
        "--duration",
        default="30s",
        metavar="D",
        help="how long: 90, 90s, 5m, 1h (default %(default)s)",
    )
    parser.add_argument(
        "--mix",
        default="success=1",
        metavar="NAME=W,...",
        help="scenario weights (default %(default)s); scenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        metavar="N",
        help="sending threads, one keep-alive connection each (default %(default)s)",
    )
    parser.add_argument(
        "--project-id",
        help="X-Project-Id of every create (default: a new project per "
        "create, so Cinder's per-project quota never fills up)",
    )
    parser.add_argument("--seed", type=int, help="make the scenario sequence repeatable")


def run_cli(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        mix = parse_mix(args.mix)
        duration_s = parse_duration(args.duration)
        tty = err.isatty()
        report = run_load(
            args.url,
            rate=args.rate,
            duration_s=duration_s,
            mix=mix,
            concurrency=args.concurrency,
            project_id=args.project_id,
            seed=args.seed,
            progress=lambda line: print(
                ("\r" if tty else "") + line, end="" if tty else "\n", file=err, flush=True
            ),
        )
    except LoadError as exc:
        print(f"voltrace load: {exc}", file=err)
        return 2
    if err.isatty():
        print(file=err)
    print(report.table(), file=out)
    failed = sum(1 for o in report.outcomes if o.status is None)
    return 1 if report.unexpected or failed else 0
