"""What the HTTP layers did with one request, read by telemetry after the answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voltrace.errors import NovaFault

if TYPE_CHECKING:
    from voltrace.state import CreateState, StageRecord


@dataclass
class RequestRecord:
    """What the HTTP layers did with one request, for telemetry to read after the answer.

    Each layer that answers records itself here (the router its route, a paste
    filter that refuses the request its stage and failure class, the pipeline its
    stage records), so telemetry never has to infer a failure from a status code.
    It lives in the WSGI environ under ``ENV_KEY``, as oslo's request ids do.
    """

    ENV_KEY = "voltrace.request"

    route: str | None = None
    is_create: bool = False
    failed_stage: str | None = None
    failure_class: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    stages: list[StageRecord] = field(default_factory=list)
    volume_id: str | None = None
    cinder_request_id: str | None = None

    @classmethod
    def of(cls, environ: dict[str, Any]) -> RequestRecord:
        """The record of the request ``environ`` belongs to (made on first use)."""
        record = environ.get(cls.ENV_KEY)
        if record is None:
            record = environ[cls.ENV_KEY] = cls()
        return record

    def refused(self, stage: str, fault: NovaFault) -> None:
        """A layer answered with ``fault``."""
        self.failed_stage = stage
        self.failure_class = fault.failure_class
        self.error_type = fault.cause_type
        self.error_message = fault.message

    def finished(self, state: CreateState) -> None:
        """The pipeline ran: keep what it did, not the state itself."""
        self.stages = state.records
        self.volume_id = state.volume_id
        self.cinder_request_id = state.cinder_request_id
        if state.fault is not None and state.failed_stage is not None:
            self.refused(state.failed_stage, state.fault)
