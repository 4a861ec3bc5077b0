"""The benchmark's saga: five no-op steps in a row."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, step

__all__ = ["BENCH_REGISTRY", "BenchData", "NoOp5", "registry"]

_TIMEOUT = timedelta(seconds=30)


class BenchData(BaseModel):
    """Saga data of the benchmark saga."""

    n: int = 0


class NoOp5(Saga[BenchData]):
    """Five steps that do nothing (the responder may sleep to simulate work)."""

    type_name = "bench.noop5"

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def s1(self, ctx: StepContext, data: BenchData) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def s2(self, ctx: StepContext, data: BenchData) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def s3(self, ctx: StepContext, data: BenchData) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def s4(self, ctx: StepContext, data: BenchData) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def s5(self, ctx: StepContext, data: BenchData) -> None:
        return None


BENCH_REGISTRY = SagaRegistry([NoOp5])


def registry() -> SagaRegistry:
    """The registry the benchmark's orchestrator runs (``--app``)."""
    return BENCH_REGISTRY
