"""Benchmark of the pure core: ``sagaline bench core`` prints JSON.

Goal 5 of issue 11: the CPU one decided input costs the orchestrator,
``decide`` + the journal entry (hash chain, stamped snapshot) + the Avro
encoding of the new snapshot, p50 over every input of a 5-step saga (the
shape of the end-to-end benchmark's ``noop5``), with the share of each part
and the Avro encoding of the journal entry shown apart (the runtime pays it
too, but the goal does not count it).  Then, on a three-step saga with a
compensation and an approval, how many inputs per second ``decide`` handles
alone and with the journal, and how fast ``fold`` rebuilds state from events.
No Kafka, no database.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.decider import Input, decide
from sagaline.orchestrator.core.fold import fold
from sagaline.orchestrator.core.journal import record_decision
from sagaline.orchestrator.core.saga import Saga, approval, step
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.codec import default_codec
from sagaline.schemas.state import SagaState

__all__ = ["measure", "run"]

#: goal 5: p50 CPU per decided input of a 5-step saga, in microseconds
GOAL_US = 60.0


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


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6, 1)


def _once(
    definition: type[Saga[Any]], recorded: Sequence[Sequence[Input]]
) -> dict[str, list[float]]:
    codec = default_codec()
    clock = time.process_time  # CPU time: other processes on the machine do not count
    parts: dict[str, list[float]] = {"decide": [], "journal": [], "snapshot": [], "entry": []}
    for inputs in recorded:
        state: SagaState | None = None
        for inp in inputs:
            t0 = clock()
            decision = decide(definition, state, inp)
            t1 = clock()
            entry, state = record_decision(state, inp, decision)
            t2 = clock()
            if state is not None:
                codec.encode(state)
            t3 = clock()
            if entry is not None:
                codec.encode(entry)
            t4 = clock()
            parts["decide"].append(t1 - t0)
            parts["journal"].append(t2 - t1)
            parts["snapshot"].append(t3 - t2)
            parts["entry"].append(t4 - t3)
    return parts


def measure(
    definition: type[Saga[Any]], recorded: Sequence[Sequence[Input]], *, repeat: int = 3
) -> dict[str, float]:
    """Time every recorded input through decide, journal and snapshot encoding.

    ``repeat`` passes; the pass with the lowest median counts (the others
    absorb warm-up and noise from other processes).  Microseconds.
    """
    best: dict[str, list[float]] | None = None
    best_p50 = float("inf")
    for _ in range(max(1, repeat)):
        parts = _once(definition, recorded)
        steps = zip(parts["decide"], parts["journal"], parts["snapshot"], strict=True)
        total = [d + j + s for d, j, s in steps]
        p50 = statistics.median(total)
        if p50 < best_p50:
            best_p50, best = p50, {**parts, "total": total}
    assert best is not None
    return {
        "inputs": len(best["total"]),
        "p50_us": _pct(best["total"], 0.5),
        "p90_us": _pct(best["total"], 0.9),
        "mean_us": round(statistics.fmean(best["total"]) * 1e6, 1),
        "decide_p50_us": _pct(best["decide"], 0.5),
        "journal_p50_us": _pct(best["journal"], 0.5),
        "snapshot_encode_p50_us": _pct(best["snapshot"], 0.5),
        "entry_encode_p50_us": _pct(best["entry"], 0.5),
    }


def per_input(sagas: int, repeat: int = 3) -> dict[str, object]:
    """Goal 5: the cost of one decided input of a 5-step saga."""
    from sagaline.orchestrator.bench.long import linear_saga, record

    definition = linear_saga(5)
    recorded = [record(definition, f"five-{i}") for i in range(sagas)]
    figures: dict[str, object] = dict(measure(definition, recorded, repeat=repeat))
    figures["goal_p50_us"] = GOAL_US
    figures["met"] = bool(figures["p50_us"] <= GOAL_US)  # type: ignore[operator]
    return figures


def _best_cpu(passes: int, work: Callable[[], object]) -> float:
    """The lowest CPU time of ``passes`` runs of ``work``: the first absorbs the warm-up
    (caches, compiled codecs, the collector's first rounds), the others the noise."""
    best = float("inf")
    for _ in range(max(1, passes)):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def run(sagas: int = 2_000, passes: int = 3) -> dict[str, object]:
    """Decide, journal and fold ``sagas`` sagas; the figures ``sagaline bench core`` prints.

    CPU time of this process, the best of ``passes`` passes each: the journal's share
    is the difference of two such figures, which a cold first pass made negative."""
    inputs_per_saga = 4

    kits = [_one_saga(i) for i in range(sagas)]
    recorded = [list(kit.inputs) for kit in kits]

    def decide_all() -> None:
        for inputs_of_saga in recorded:
            state = None
            for inp in inputs_of_saga:
                state = decide(BenchSaga, state, inp).state

    def decide_and_journal_all() -> None:
        for inputs_of_saga in recorded:
            state = None
            for inp in inputs_of_saga:
                _, state = record_decision(state, inp, decide(BenchSaga, state, inp))

    def fold_all() -> None:
        for kit in kits:
            fold(e for entry in kit.journal for e in entry.events)

    decide_only = _best_cpu(passes, decide_all)
    with_journal = _best_cpu(passes, decide_and_journal_all)
    folding = _best_cpu(passes, fold_all)
    events = sum(len(entry.events) for kit in kits for entry in kit.journal)

    inputs = sagas * inputs_per_saga
    return {
        "benchmark": "decider",
        "per_input_5_steps": per_input(max(1, sagas // 10)),
        "sagas": sagas,
        "inputs": inputs,
        "events": events,
        "cpu_passes": passes,
        "decide_inputs_per_s": round(inputs / decide_only),
        "decide_us_per_input": round(decide_only / inputs * 1e6, 1),
        "decide_and_journal_inputs_per_s": round(inputs / with_journal),
        "journal_us_per_input": round((with_journal - decide_only) / inputs * 1e6, 1),
        "fold_events_per_s": round(events / folding),
    }
