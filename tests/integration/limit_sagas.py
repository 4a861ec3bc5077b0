"""The saga of the concurrency-limit integration test (importable by an
orchestrator subprocess: ``--app limit_sagas:registry``)."""

from __future__ import annotations

import time
from datetime import timedelta

from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.limit_spec import Limit
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, step

#: ``schema.table`` the step records its run in (set by the test; the worker runs in it)
RUNS_TABLE = ""
#: how long one run takes
RUN_SECONDS = 0.4


class Job(BaseModel):
    customer: str
    ran: bool = False


class Limited(Saga[Job]):
    type_name = "it.limited"

    @step(
        compensate=None,
        limit=Limit("it-customer", key=lambda d: d.customer, max_running=2),
        timeout=timedelta(seconds=60),
    )
    def work(self, ctx: StepContext, data: Job) -> None:
        started = time.time()
        time.sleep(RUN_SECONDS)
        ctx.db.execute(
            f"INSERT INTO {RUNS_TABLE} (saga_id, started, finished) VALUES (%s, %s, %s)",
            (ctx.saga_id, started, time.time()),
        )

    @step(compensate=None, uses_db=False)
    def done(self, ctx: StepContext, data: Job) -> None:
        return None


class Throttled(Saga[Job]):
    """At most two starts of ``call`` per customer in any three seconds."""

    type_name = "it.throttled"

    @step(
        compensate=None,
        uses_db=False,
        limit=Limit("it-rate", key=lambda d: d.customer, max_starts=2, per=timedelta(seconds=3)),
    )
    def call(self, ctx: StepContext, data: Job) -> None:
        return None


REGISTRY = SagaRegistry([Limited, Throttled])


def registry() -> SagaRegistry:
    return REGISTRY
