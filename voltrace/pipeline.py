"""The runner: six stages, in order, over one CreateState.

The runner is the only place that knows stages run in order, times them and
turns their failures into Nova faults. Telemetry plugs in from outside through
``PipelineObserver``: the runner calls it around the whole request and around
each stage, and stages never see it. An observer that fails is switched off for
that call and counted, never allowed to change the answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from voltrace import cinder
from voltrace.errors import NovaFault, unexpected_api_error
from voltrace.stages import STAGES, Stage
from voltrace.state import CreateState, CreateVolumeRequest, StageRecord, StageServices

LOG = logging.getLogger(__name__)


class PipelineObserver(Protocol):
    """Hooks around a request and around each stage; telemetry implements them."""

    def request(self, state: CreateState) -> AbstractContextManager[object]: ...

    def stage(
        self,
        stage: Stage,
        state: CreateState,
        record: StageRecord,
    ) -> AbstractContextManager[object]: ...


class NullObserver:
    """Observes nothing: the pipeline runs exactly the same without telemetry."""

    @contextmanager
    def request(self, state: CreateState) -> Iterator[None]:
        yield

    @contextmanager
    def stage(self, stage: Stage, state: CreateState, record: StageRecord) -> Iterator[None]:
        yield


class ObserverErrors:
    """Counts what observers raised; the first of each kind is logged with its traceback."""

    def __init__(self) -> None:
        self.count = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def record(self, where: str, exc: BaseException) -> None:
        key = f"{where}:{type(exc).__name__}"
        with self._lock:
            self.count += 1
            first = key not in self._seen
            self._seen.add(key)
        if first:
            LOG.error("telemetry observer failed in %s; the request goes on", where, exc_info=exc)


OBSERVER_ERRORS = ObserverErrors()


@contextmanager
def guarded(
    where: str,
    open_observation: Callable[..., AbstractContextManager[object]],
    *args: object,
) -> Iterator[None]:
    """Run the body inside ``open_observation(*args)``; its own failures are only counted."""
    try:
        observation = open_observation(*args)
        observation.__enter__()
    except Exception as exc:
        OBSERVER_ERRORS.record(where, exc)
        yield
        return
    try:
        yield
    finally:
        try:
            observation.__exit__(None, None, None)
        except Exception as exc:
            OBSERVER_ERRORS.record(where, exc)


class Pipeline:
    """Runs the stages in order over a CreateState; the first fault stops it."""

    def __init__(
        self,
        services: StageServices,
        stages: Sequence[Stage] | None = None,
        observer: PipelineObserver | None = None,
    ) -> None:
        self.services = services
        self.stages = tuple(stages or STAGES)
        self.observer: PipelineObserver = observer or NullObserver()

    def run(self, request: CreateVolumeRequest) -> CreateState:
        state = CreateState(request=request, services=self.services)
        with guarded("request", self.observer.request, state):
            for stage in self.stages:
                record = StageRecord(stage.name, stage.nova_code)
                state.records.append(record)
                with guarded(stage.name, self.observer.stage, stage, state, record):
                    self._run_stage(stage, state, record)
                if record.fault is not None:
                    break
        return state

    @staticmethod
    def _run_stage(stage: Stage, state: CreateState, record: StageRecord) -> None:
        start = time.perf_counter()
        try:
            with stage_calls(record):
                record.report = stage.run(state)
        except NovaFault as fault:
            record.fault = fault
        except Exception as exc:  # a bug or an unforeseen answer: Nova's expected_errors path
            record.fault = unexpected_api_error(exc)
        finally:
            record.duration_s = time.perf_counter() - start
        if record.fault is not None:
            state.fault = record.fault
            state.failed_stage = stage.name


def stage_calls(record: StageRecord) -> AbstractContextManager[object]:
    """Keep every Cinder exchange a stage makes on its record, as its duration is kept."""
    return cinder.recording_calls(record.cinder_calls)
