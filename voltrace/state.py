"""The state of one create as it moves through the pipeline.

The HTTP layer builds a ``CreateVolumeRequest`` (plain data), the runner wraps it
in a ``CreateState`` together with the process-wide ``StageServices`` (policy,
Cinder client, schema validator), stages read and fill the state, and each
stage's run is kept as a ``StageRecord`` that telemetry reads afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voltrace import cinder
from voltrace.errors import NovaFault
from voltrace.identity import NovaRequestContext
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
    identity: NovaRequestContext  # who is calling, and the request ids
    path_project_id: str | None = None


@dataclass
class StageReport:
    """What a stage decided, as ``voltrace.<key>`` attributes; or why it had nothing to do."""

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
    # Every HTTP exchange with Cinder the stage made (request ids, metrics).
    cinder_calls: list[cinder.CinderCall] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.fault is not None:
            return "error"
        if self.report is not None and self.report.skipped:
            return "skipped"
        return "ok"

    @property
    def attributes(self) -> dict[str, Any]:
        """What the stage reported, on success (its decisions) or failure (the fault's details)."""
        if self.fault is not None:
            return self.fault.details
        return self.report.decisions if self.report is not None else {}


@dataclass
class StageServices:
    """What stages need from the outside world, built once per process."""

    policy: VolumePolicy
    volume_api: cinder.VolumeAPI
    size_from_snapshot: bool = False
    validator: BodyValidator = field(init=False)

    def __post_init__(self) -> None:
        self.validator = BodyValidator(create_schema(size_from_snapshot=self.size_from_snapshot))


@dataclass
class CreateState:
    """The state of one create as it moves through the stages."""

    request: CreateVolumeRequest
    services: StageServices
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

    @property
    def volume_spec(self) -> dict:
        return self.body["volume"]

    @property
    def volume_id(self) -> str | None:
        return self.volume["id"] if self.volume else None

    @property
    def cinder_request_id(self) -> str | None:
        """The last request id Cinder answered with (on success, the lazy GET's)."""
        for record in reversed(self.records):
            for call in reversed(record.cinder_calls):
                if call.request_id:
                    return call.request_id
        return None

    @property
    def http_status(self) -> int:
        return self.fault.status if self.fault is not None else 200
