"""Benchmark of the pure core: ``sagaline bench core`` prints JSON.

Measures, on a three-step saga with a compensation and an approval, how many
inputs per second ``decide`` handles alone, with the journal entry (hash
chain) and snapshot stamping the runtime adds, and how fast ``fold``
rebuilds state from events.  No Kafka, no database: this is the CPU cost
the orchestrator pays per message.
"""

from __future__ import annotations

import time
from datetime import timedelta

from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.decider import decide
from sagaline.orchestrator.core.fold import fold
from sagaline.orchestrator.core.journal import record_decision
from sagaline.orchestrator.core.saga import Saga, approval, step
from sagaline.orchestrator.core.testing import SagaTestKit

__all__ = ["run"]


class BenchData(BaseModel):
    order_id: str = "o-1"
    amount_cents: int = 1_000
    reserved: bool = False


class Reserved(BaseModel):
    ok: bool


class BenchSaga(Saga[BenchData]):
    type_name = "decider-bench"

    @step(timeout=timedelta(seconds=30))
    def reserve(self, ctx: StepContext, data: BenchData) -> Reserved:
        return Reserved(ok=True)

    @reserve.on_result
    def _reserved(self, data: BenchData, result: Reserved) -> BenchData:
        return data.model_copy(update={"reserved": result.ok})

    @reserve.compensation
    def release(self, ctx: StepContext, data: BenchData) -> None:
        return None

    manager_ok = approval(timeout=timedelta(days=1))

    @step
    def pay(self, ctx: StepContext, data: BenchData) -> None:
        return None


def _one_saga(i: int) -> SagaTestKit[BenchData]:
    kit = SagaTestKit(BenchSaga, saga_id=f"bench-{i}", check_fold=False)
    kit.start(BenchData())
    kit.succeed("reserve", Reserved(ok=True))
    kit.approve("manager_ok", by="bench")
    kit.succeed("pay")
    return kit


def run(sagas: int = 2_000) -> dict[str, object]:
    """Decide, journal and fold ``sagas`` sagas; the figures ``sagaline bench core`` prints."""
    inputs_per_saga = 4

    kits = [_one_saga(i) for i in range(sagas)]
    recorded = [list(kit.inputs) for kit in kits]

    start = time.perf_counter()
    for inputs_of_saga in recorded:
        state = None
        for inp in inputs_of_saga:
            state = decide(BenchSaga, state, inp).state
    decide_only = time.perf_counter() - start

    start = time.perf_counter()
    for inputs_of_saga in recorded:
        state = None
        for inp in inputs_of_saga:
            _, state = record_decision(state, inp, decide(BenchSaga, state, inp))
    with_journal = time.perf_counter() - start

    events = [e for kit in kits for entry in kit.journal for e in entry.events]
    start = time.perf_counter()
    for kit in kits:
        fold(e for entry in kit.journal for e in entry.events)
    folding = time.perf_counter() - start

    inputs = sagas * inputs_per_saga
    return {
        "benchmark": "decider",
        "sagas": sagas,
        "inputs": inputs,
        "events": len(events),
        "decide_inputs_per_s": round(inputs / decide_only),
        "decide_us_per_input": round(decide_only / inputs * 1e6, 1),
        "decide_and_journal_inputs_per_s": round(inputs / with_journal),
        "journal_us_per_input": round((with_journal - decide_only) / inputs * 1e6, 1),
        "fold_events_per_s": round(len(events) / folding),
    }
