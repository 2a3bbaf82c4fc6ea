"""``explain --summary``: an incident over many creates, not one create at a time.

Counts by outcome, by failed stage and failure class; p50/p95/p99 of each stage and of
the whole create; the slowest creates with their request ids; and, when many creates
ended their Cinder calls in read timeouts, that Cinder itself is hung or saturated.
Fed one diagnosis at a time: it keeps numbers, never spans.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from voltrace.explain.model import Diagnosis
from voltrace.terminal import Terminal, escape, format_ms, wrap

PERCENTILES = (50, 95, 99)
# This many creates with read timeouts in call_cinder, and this share of them: Cinder is
# hung or saturated, not one unlucky request.
SATURATED_MIN_CREATES = 2
SATURATED_MIN_SHARE = 0.2


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100), None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass(order=True)
class _Slow:
    duration_ms: float
    request_id: str = field(compare=False)
    trace_id: str = field(compare=False)
    outcome: str = field(compare=False)
    failure_class: str = field(compare=False)
    link: str = field(compare=False)


@dataclass
class Summary:
    """Running totals over the creates fed to :meth:`add`."""

    slowest_n: int = 5
    creates: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failed_stages: Counter[str] = field(default_factory=Counter)
    failure_classes: Counter[tuple[str, str]] = field(default_factory=Counter)
    stage_ms: dict[str, list[float]] = field(default_factory=dict)
    total_ms: list[float] = field(default_factory=list)
    read_timeouts: int = 0  # creates whose Cinder calls ended in read timeouts
    resent: int = 0  # creates whose POST was sent more than once
    extra_posts: int = 0
    timeout_s: float | None = None
    sources: Counter[str] = field(default_factory=Counter)
    _slowest: list[_Slow] = field(default_factory=list)

    def add(self, d: Diagnosis) -> None:
        self.creates += 1
        self.sources[d.source] += 1
        self.outcomes[d.outcome] += 1
        if d.failed:
            self.failed_stages[d.failed_stage or "?"] += 1
            self.failure_classes[(d.failed_stage or "?", d.failure_class or "?")] += 1
        for stage in d.stages:
            if stage.status != "skipped":
                self.stage_ms.setdefault(stage.name, []).append(stage.duration_ms)
        if d.duration_ms is not None:
            self.total_ms.append(d.duration_ms)
            slow = _Slow(
                d.duration_ms,
                d.request_id or "?",
                d.trace_id or "?",
                d.outcome,
                d.failure_class or "-",
                d.link or "",
            )
            if len(self._slowest) < self.slowest_n:
                heapq.heappush(self._slowest, slow)
            elif self.slowest_n:
                heapq.heappushpop(self._slowest, slow)
        if d.details.get("read_timeouts"):
            self.read_timeouts += 1
            if isinstance(d.details.get("timeout_s"), float):
                self.timeout_s = d.details["timeout_s"]
        posts = d.details.get("posts")
        if isinstance(posts, int) and posts > 1:
            self.resent += 1
            self.extra_posts += posts - 1

    @property
    def slowest(self) -> list[_Slow]:
        return sorted(self._slowest, reverse=True)

    @property
    def saturated(self) -> bool:
        """Many creates' Cinder calls ended in read timeouts: Cinder is hung or saturated."""
        return (
            self.read_timeouts >= SATURATED_MIN_CREATES
            and self.read_timeouts >= SATURATED_MIN_SHARE * self.creates
        )

    def verdicts(self) -> list[str]:
        """What the creates say together, beyond the counts."""
        said = []
        if self.saturated:
            call = percentile(self.stage_ms.get("call_cinder", []), 50)
            limit = f" ([cinder] timeout {self.timeout_s:g} s)" if self.timeout_s else ""
            typical = f"; call_cinder p50 {format_ms(call)}" if call is not None else ""
            said.append(
                f"Cinder looks hung or saturated: {self.read_timeouts} of "
                f"{self.creates} creates ended their Cinder calls in read "
                f"timeouts{limit}{typical}. Check cinder-api (its log, workers, "
                "database) before anything in nova-api."
            )
        if self.resent:
            said.append(
                f"{self.resent} create(s) were sent to Cinder more than once "
                f"({self.extra_posts} extra POST(s) after read timeouts): Cinder may "
                "hold that many volumes nobody asked for; list the projects' volumes "
                "(openstack volume list --project PROJECT --long) and delete the "
                "extras."
            )
        return said

    def to_json(self) -> dict[str, Any]:
        return {
            "creates": self.creates,
            "by_outcome": dict(self.outcomes),
            "by_failed_stage": dict(self.failed_stages),
            "by_failure_class": [
                {"failed_stage": stage, "failure_class": cls, "count": n}
                for (stage, cls), n in self.failure_classes.most_common()
            ],
            "duration_ms": self._percentiles(self.total_ms),
            "stages_ms": {
                name: self._percentiles(values) for name, values in self.stage_ms.items()
            },
            "slowest": [
                {
                    "request_id": s.request_id,
                    "trace_id": s.trace_id,
                    "duration_ms": round(s.duration_ms, 3),
                    "outcome": s.outcome,
                    "failure_class": None if s.failure_class == "-" else s.failure_class,
                    "link": s.link or None,
                }
                for s in self.slowest
            ],
            "cinder_read_timeouts": self.read_timeouts,
            "cinder_saturated": self.saturated,
            "resent_creates": self.resent,
            "verdicts": self.verdicts(),
            "sources": dict(self.sources),
        }

    @staticmethod
    def _percentiles(values: list[float]) -> dict[str, float | None]:
        found: dict[str, float | None] = {"count": len(values)}
        for q in PERCENTILES:
            value = percentile(values, q)
            found[f"p{q}"] = None if value is None else round(value, 3)
        return found

    def render(self, term: Terminal) -> list[str]:
        """The summary as terminal lines."""
        bold = ("1",)
        out = [
            term.paint(f"{self.creates} create(s)", *bold)
            + "  "
            + ", ".join(f"{name} {count}" for name, count in self.outcomes.most_common())
        ]
        if self.failure_classes:
            out.append("")
            out.append(
                term.paint(f"  {'failed stage':<18}{'failure class':<28}{'creates':>8}", *bold)
            )
            for (stage, cls), count in self.failure_classes.most_common():
                out.append(f"  {escape(stage):<18}{escape(cls):<28}{count:>8}")
        out.append("")
        header = f"  {'stage':<18}" + "".join(f"{'p' + str(q):>11}" for q in PERCENTILES)
        out.append(term.paint(f"{header}{'creates':>9}", *bold))
        rows = [*self.stage_ms.items(), ("(whole create)", self.total_ms)]
        for name, values in rows:
            cells = "".join(f"{format_ms(percentile(values, q)):>11}" for q in PERCENTILES)
            out.append(f"  {escape(name):<18}{cells}{len(values):>9}")
        if self.slowest:
            out.append("")
            out.append(term.paint(f"  slowest {len(self.slowest)}", *bold))
            for s in self.slowest:
                link = f"  {escape(s.link)}" if s.link else ""
                out.append(
                    f"  {format_ms(s.duration_ms):>10}  {escape(s.request_id)}  "
                    f"{escape(s.outcome)} {escape(s.failure_class)}{link}"
                )
        for verdict in self.verdicts():
            out.append("")
            lines = wrap(escape(verdict), term.width - 4)
            out.append("  " + term.paint(lines[0], "1", "33"))
            out.extend("  " + term.paint(line, "1", "33") for line in lines[1:])
        return out
