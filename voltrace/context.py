"""The state of one create as it moves through the pipeline.

Plain data: the HTTP layer builds a ``CreateVolumeRequest``, the runner wraps
it in a ``CreateContext``, stages read and fill it, and telemetry reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oslo_context import context as oslo_context

from voltrace import cinder
from voltrace.errors import NovaFault
from voltrace.microversion import APIVersion
from voltrace.policy import VolumePolicy
from voltrace.schema import BodyValidator, create_schema


@dataclass(frozen=True)
class CreateVolumeRequest:
    """What the HTTP layer hands the pipeline: plain data, no WSGI or webob."""

    url: str  # the full request URL, query string included (Nova's req.url)
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    content_length: int | None
    context: oslo_context.RequestContext  # identity and request ids
    path_project_id: str | None = None


@dataclass
class StageReport:
    """What a stage decided, as attributes for spans and logs; or why it had nothing to do."""

    decisions: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


@dataclass
class StageRecord:
    """One stage's run, filled in by the runner and read by observers."""

    name: str
    nova_code: str
    report: StageReport | None = None
    fault: NovaFault | None = None
    duration_s: float = 0.0

    @property
    def status(self) -> str:
        if self.fault is not None:
            return "error"
        if self.report is not None and self.report.skipped:
            return "skipped"
        return "ok"


@dataclass
class Environment:
    """What stages need from the outside world, built once per process."""

    policy: VolumePolicy
    volume_api: cinder.VolumeAPI
    size_from_snapshot: bool = False
    validator: BodyValidator = field(init=False)

    def __post_init__(self) -> None:
        self.validator = BodyValidator(create_schema(size_from_snapshot=self.size_from_snapshot))


@dataclass
class CreateContext:
    """The state of one create as it moves through the stages."""

    request: CreateVolumeRequest
    env: Environment
    api_version: APIVersion | None = None
    body: Any = None
    snapshot: dict | None = None
    size: Any = None
    size_source: str | None = None
    volume: dict | None = None
    response_body: dict | None = None
    location: str | None = None
    fault: NovaFault | None = None
    failed_stage: str | None = None
    records: list[StageRecord] = field(default_factory=list)
    cinder_calls: list[cinder.CinderCall] = field(default_factory=list)

    @property
    def volume_spec(self) -> dict:
        return self.body["volume"]

    @property
    def volume_id(self) -> str | None:
        return self.volume["id"] if self.volume else None

    @property
    def outcome(self) -> str:
        if self.fault is None:
            return "success"
        return "server_error" if self.fault.status >= 500 else "client_error"

    @property
    def http_status(self) -> int:
        return self.fault.status if self.fault is not None else 200
