"""Small real saga definitions for the orchestrator's Kafka tests and benchmark."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, approval, sleep, step

STEP_TIMEOUT = timedelta(seconds=4)


class PipeData(BaseModel):
    """Saga data of the test sagas."""

    label: str = ""


class Pipeline(Saga[PipeData]):
    """Five no-op steps in a row (each dispatched only after the previous one completed)."""

    type_name = "test.pipeline"

    @step(compensate=None, uses_db=False, timeout=STEP_TIMEOUT)
    def s1(self, ctx: StepContext, data: PipeData) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=STEP_TIMEOUT)
    def s2(self, ctx: StepContext, data: PipeData) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=STEP_TIMEOUT)
    def s3(self, ctx: StepContext, data: PipeData) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=STEP_TIMEOUT)
    def s4(self, ctx: StepContext, data: PipeData) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=STEP_TIMEOUT)
    def s5(self, ctx: StepContext, data: PipeData) -> None:
        return None


class Approved(Saga[PipeData]):
    """A compensable step, a manager's approval, then a final step."""

    type_name = "test.approved"

    @step(uses_db=False, timeout=STEP_TIMEOUT)
    def reserve(self, ctx: StepContext, data: PipeData) -> None:
        return None

    @reserve.compensation
    def release(self, ctx: StepContext, data: PipeData) -> None:
        return None

    manager_ok = approval(timeout=timedelta(minutes=5))

    @step(compensate=None, uses_db=False, timeout=STEP_TIMEOUT)
    def finish(self, ctx: StepContext, data: PipeData) -> None:
        return None


class Sleepy(Saga[PipeData]):
    """A step, a durable two-second sleep, another step."""

    type_name = "test.sleepy"

    @step(compensate=None, uses_db=False, timeout=STEP_TIMEOUT)
    def before(self, ctx: StepContext, data: PipeData) -> None:
        return None

    nap = sleep(timedelta(seconds=2))

    @step(compensate=None, uses_db=False, timeout=STEP_TIMEOUT)
    def after(self, ctx: StepContext, data: PipeData) -> None:
        return None


REGISTRY = SagaRegistry([Pipeline, Approved, Sleepy])


def registry() -> SagaRegistry:
    return REGISTRY
