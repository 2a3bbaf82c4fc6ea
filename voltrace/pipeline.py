"""The runner: six stages, in order, over one CreateContext.

The runner is the only place that knows stages run in order, times them and
turns their failures into Nova faults. Telemetry plugs in from outside through
``PipelineObserver``: the runner calls it around the whole request and around
each stage, and stages never see it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from voltrace import cinder
from voltrace.context import CreateContext, CreateVolumeRequest, Environment, StageRecord
from voltrace.errors import NovaFault, unexpected_api_error
from voltrace.stages import STAGES, Stage


class PipelineObserver(Protocol):
    """Hooks around a request and around each stage; telemetry implements them."""

    def request(self, ctx: CreateContext) -> Any: ...  # a context manager

    def stage(self, stage: Stage, ctx: CreateContext, record: StageRecord) -> Any: ...


class NullObserver:
    """Observes nothing: the pipeline runs exactly the same without telemetry."""

    @contextmanager
    def request(self, ctx: CreateContext) -> Iterator[None]:
        yield

    @contextmanager
    def stage(self, stage: Stage, ctx: CreateContext, record: StageRecord) -> Iterator[None]:
        yield


class Pipeline:
    """Runs the stages in order over a CreateContext; the first fault stops it."""

    def __init__(
        self, env: Environment, stages: Sequence[Stage] | None = None,
        observer: PipelineObserver | None = None,
    ) -> None:
        self.env = env
        self.stages = tuple(stages or STAGES)
        self.observer: PipelineObserver = observer or NullObserver()

    def run(self, request: CreateVolumeRequest) -> CreateContext:
        ctx = CreateContext(request=request, env=self.env)
        with self.observer.request(ctx), cinder.recording_calls() as calls:
            ctx.cinder_calls = calls
            for stage in self.stages:
                record = StageRecord(stage.name, stage.nova_code)
                ctx.records.append(record)
                with self.observer.stage(stage, ctx, record):
                    self._run_stage(stage, ctx, record)
                if record.fault is not None:
                    break
        return ctx

    @staticmethod
    def _run_stage(stage: Stage, ctx: CreateContext, record: StageRecord) -> None:
        start = time.perf_counter()
        try:
            record.report = stage.run(ctx)
        except NovaFault as fault:
            record.fault = fault
        except Exception as exc:  # a bug or an unforeseen answer: Nova's expected_errors path
            record.fault = unexpected_api_error(exc)
        finally:
            record.duration_s = time.perf_counter() - start
        if record.fault is not None:
            ctx.fault = record.fault
            ctx.failed_stage = stage.name
