"""A registry whose ``test.approved`` takes a different data model than the orchestrator's.

The client validates and sends it; the orchestrator (running
``orchestrator_sagas.REGISTRY``) cannot decode it and dead-letters the start.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, approval, step


class OtherData(BaseModel):
    label: str


class Approved(Saga[OtherData]):
    type_name = "test.approved"

    @step(uses_db=False)
    def reserve(self, ctx: StepContext, data: OtherData) -> None:
        return None

    @reserve.compensation
    def release(self, ctx: StepContext, data: OtherData) -> None:
        return None

    manager_ok = approval(timeout=timedelta(minutes=5))


registry = SagaRegistry([Approved])
