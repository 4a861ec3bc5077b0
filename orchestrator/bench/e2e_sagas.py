"""The end-to-end benchmark's sagas: five steps that do nothing, on each path.

``Kafka5`` replies through the worker's Kafka transaction (``uses_db=False``),
``Outbox5`` through the PostgreSQL inbox/outbox and the relay (no business
write, so the figure is the path's own cost).  ``Local5`` / ``LocalDb5`` are local steps
(run in the orchestrator, without / with the PostgreSQL inbox); ``Local1`` / ``LocalDb1``
give, by difference, what one more local step costs.
"""

from __future__ import annotations

import time
from datetime import timedelta

from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, step

__all__ = [
    "E2E_REGISTRY",
    "E2EFive",
    "Kafka5",
    "Local1",
    "Local5",
    "LocalDb1",
    "LocalDb5",
    "Outbox5",
    "registry",
]

_TIMEOUT = timedelta(seconds=30)


class E2EFive(BaseModel):
    """Saga data: ``sleep_s`` is how long step 3 takes (the recovery bench)."""

    n: int = 0
    sleep_s: float = 0.0


class Kafka5(Saga[E2EFive]):
    """Five no-op steps replying through the worker's Kafka transaction."""

    type_name = "bench.e2e.kafka5"

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def s1(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def s2(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def s3(self, ctx: StepContext, data: E2EFive) -> None:
        time.sleep(data.sleep_s)

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def s4(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def s5(self, ctx: StepContext, data: E2EFive) -> None:
        return None


class Outbox5(Saga[E2EFive]):
    """Five no-op steps replying through the PostgreSQL outbox and the relay."""

    type_name = "bench.e2e.outbox5"

    @step(compensate=None, timeout=_TIMEOUT)
    def s1(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, timeout=_TIMEOUT)
    def s2(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, timeout=_TIMEOUT)
    def s3(self, ctx: StepContext, data: E2EFive) -> None:
        time.sleep(data.sleep_s)

    @step(compensate=None, timeout=_TIMEOUT)
    def s4(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, timeout=_TIMEOUT)
    def s5(self, ctx: StepContext, data: E2EFive) -> None:
        return None


class Local5(Saga[E2EFive]):
    """Five no-op local steps without a database: run in the orchestrator (at-least-once)."""

    type_name = "bench.e2e.local5"

    @step(compensate=None, uses_db=False, local=True, timeout=_TIMEOUT)
    def s1(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, uses_db=False, local=True, timeout=_TIMEOUT)
    def s2(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, uses_db=False, local=True, timeout=_TIMEOUT)
    def s3(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, uses_db=False, local=True, timeout=_TIMEOUT)
    def s4(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, uses_db=False, local=True, timeout=_TIMEOUT)
    def s5(self, ctx: StepContext, data: E2EFive) -> None:
        return None


class LocalDb5(Saga[E2EFive]):
    """Five no-op local database steps: each one PostgreSQL transaction with its inbox row."""

    type_name = "bench.e2e.localdb5"

    @step(compensate=None, local=True, timeout=_TIMEOUT)
    def s1(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, local=True, timeout=_TIMEOUT)
    def s2(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, local=True, timeout=_TIMEOUT)
    def s3(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, local=True, timeout=_TIMEOUT)
    def s4(self, ctx: StepContext, data: E2EFive) -> None:
        return None

    @step(compensate=None, local=True, timeout=_TIMEOUT)
    def s5(self, ctx: StepContext, data: E2EFive) -> None:
        return None


class Local1(Saga[E2EFive]):
    """One no-op local step (with ``Local5``: what each further local step adds)."""

    type_name = "bench.e2e.local1"

    @step(compensate=None, uses_db=False, local=True, timeout=_TIMEOUT)
    def s1(self, ctx: StepContext, data: E2EFive) -> None:
        return None


class LocalDb1(Saga[E2EFive]):
    """One no-op local database step (with ``LocalDb5``: what each further one adds)."""

    type_name = "bench.e2e.localdb1"

    @step(compensate=None, local=True, timeout=_TIMEOUT)
    def s1(self, ctx: StepContext, data: E2EFive) -> None:
        return None


E2E_REGISTRY = SagaRegistry([Kafka5, Outbox5, Local5, LocalDb5, Local1, LocalDb1])


def registry() -> SagaRegistry:
    """The registry of the benchmark's orchestrator and worker (``--app``)."""
    return E2E_REGISTRY
