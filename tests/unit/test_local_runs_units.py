"""``Outbound``: local tasks held, run and decided within one batch; its bounds.

The real decider (``CoreLogic``) and the real ``LocalStepRunner`` (steps without a
database), no Kafka: ``decide`` below stages a decision in the batch as the engine's
``_decide`` does (overlay, journal entries, then ``Outbound.route``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.context import Context
from pydantic import BaseModel

from sagaline import DONE, Done, Node, Saga, StepContext, parallel, step
from sagaline.consumers.local_steps import LocalStepRunner
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.core.payloads import input_sha256, to_payload
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.runtime.batch import Batch
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.local_runs import LocalLimits, Outbound
from sagaline.orchestrator.runtime.transactions import Produce
from sagaline.schemas.base import Envelope, Record
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import TASK_TYPES, ExecuteStep

pytestmark = pytest.mark.unit

NAMES = TopicNames("unit-local")


class Ticks(BaseModel):
    n: int = 0
    until: int = 5


class Loop(Saga[Ticks]):
    type_name = "unit.local-loop"

    @step(local=True, uses_db=False, compensate=None)
    def tick(self, ctx: StepContext, data: Ticks) -> Ticks:
        return Ticks(n=data.n + 1, until=data.until)

    @tick.on_result
    def _tick(self, data: Ticks, result: Ticks) -> Ticks:
        return result

    @tick.route("tick", DONE)
    def _again(self, data: Ticks) -> Node | Done:
        return type(self).tick if data.n < data.until else DONE


class Fan(Saga[Ticks]):
    """Two local branches in parallel, then a local step after the join."""

    type_name = "unit.local-fan"

    @step(local=True, uses_db=False, compensate=None)
    def left(self, ctx: StepContext, data: Ticks) -> None:
        return None

    @step(local=True, uses_db=False, compensate=None)
    def right(self, ctx: StepContext, data: Ticks) -> None:
        return None

    both = parallel(left, right)

    @step(local=True, uses_db=False, compensate=None)
    def after(self, ctx: StepContext, data: Ticks) -> None:
        return None


#: saga ids whose ``Slow.crawl`` started, in order
CRAWLED: list[str] = []
CRAWL_LOCK = threading.Lock()


class Slow(Saga[Ticks]):
    """A local step that runs far past the batch's time for local steps."""

    type_name = "unit.local-slow"

    @step(local=True, uses_db=False, compensate=None, timeout=timedelta(seconds=30))
    def crawl(self, ctx: StepContext, data: Ticks) -> None:
        with CRAWL_LOCK:
            CRAWLED.append(ctx.saga_id)
        time.sleep(3.0)


REGISTRY = SagaRegistry([Loop, Fan, Slow])


@pytest.fixture
def runner() -> Iterator[LocalStepRunner]:
    local = LocalStepRunner(REGISTRY, pool=None, replies_topic=NAMES.replies)
    yield local
    local.close()


def _start(saga_id: str, until: int, saga: type[Saga[Ticks]] = Loop) -> StartSaga:
    data = to_payload(Ticks(until=until))
    envelope = Envelope(
        message_id=f"start-{saga_id}",
        saga_id=saga_id,
        saga_type=saga.type_name,
        occurred_at=datetime.now(UTC),
    )
    return StartSaga(envelope=envelope, data=data, input_sha256=input_sha256(data))


def _run_batch(outbound: Outbound, starts: list[StartSaga]) -> Batch:
    logic, codec = CoreLogic(REGISTRY), AvroCodec()

    def decide(
        batch: Batch, saga_id: str, partition: int, record: Record, _: Context | None
    ) -> None:
        out = logic.decide(batch.overlay.get(saga_id), record)
        batch.overlay[saga_id] = out.state
        batch.partition_of[saga_id] = partition
        for entry in out.journal:
            batch.produces.append(Produce(NAMES.journal, saga_id.encode(), codec.encode(entry)))
        outbound.route(batch, saga_id, partition, out.outgoing, {})

    batch = Batch()
    for start in starts:
        decide(batch, start.envelope.saga_id, 0, start, None)
    outbound.drain(batch, decide)
    return batch


def _tasks(batch: Batch) -> list[ExecuteStep]:
    codec = AvroCodec()
    found = [
        codec.decode(p.value, TASK_TYPES)
        for p in batch.produces
        if p.topic == NAMES.tasks and p.value
    ]
    return [t for t in found if isinstance(t, ExecuteStep)]


def _state(batch: Batch, saga_id: str) -> SagaState:
    state = batch.overlay[saga_id]
    assert isinstance(state, SagaState)
    return state


def test_a_loop_of_local_steps_finishes_in_one_batch(runner: LocalStepRunner) -> None:
    outbound = Outbound(NAMES, AvroCodec(), runner, "unit")
    batch = _run_batch(outbound, [_start("loop-1", until=5)])
    assert _state(batch, "loop-1").status == "completed"
    assert outbound.runs == 5 and outbound.overflowed == 0
    assert _tasks(batch) == []  # nothing for the workers
    journal = [p for p in batch.produces if p.topic == NAMES.journal]
    assert len(journal) == 6  # the start and five replies, in this one batch


def test_past_the_per_saga_bound_the_task_goes_to_the_workers(runner: LocalStepRunner) -> None:
    outbound = Outbound(NAMES, AvroCodec(), runner, "unit", LocalLimits(per_saga=3))
    batch = _run_batch(outbound, [_start("loop-2", until=10)])
    state = _state(batch, "loop-2")
    assert state.status == "running"
    assert outbound.runs == 3 and outbound.overflowed == 1
    [task] = _tasks(batch)
    assert (task.step, task.envelope.saga_id) == ("tick", "loop-2")
    assert state.steps["tick"].task_id == task.task_id  # the dispatched attempt, sent on


def test_past_the_batch_bound_the_rest_goes_to_the_workers(runner: LocalStepRunner) -> None:
    outbound = Outbound(NAMES, AvroCodec(), runner, "unit", LocalLimits(max_runs=4))
    batch = _run_batch(outbound, [_start("a", until=3), _start("b", until=3)])
    assert outbound.runs == 4 and outbound.overflowed == 2
    assert sorted(t.envelope.saga_id for t in _tasks(batch)) == ["a", "b"]
    assert {_state(batch, s).status for s in ("a", "b")} == {"running"}


def test_without_a_runner_local_tasks_are_produced_for_the_workers() -> None:
    outbound = Outbound(NAMES, AvroCodec(), None, "unit")
    batch = _run_batch(outbound, [_start("plain", until=2)])
    assert outbound.runs == 0
    assert [t.step for t in _tasks(batch)] == ["tick"]


def test_parallel_local_branches_run_in_one_round(runner: LocalStepRunner) -> None:
    outbound = Outbound(NAMES, AvroCodec(), runner, "unit")
    batch = _run_batch(outbound, [_start("fan-1", until=0, saga=Fan)])
    assert _state(batch, "fan-1").status == "completed"
    assert outbound.runs == 3 and _tasks(batch) == []


def test_a_local_task_that_never_got_a_thread_goes_to_the_workers_and_never_runs() -> None:
    # one thread: the first step holds it for 3 s, far past the batch's 0.3 s for
    # local steps; the two queued behind it must not be answered and then run anyway
    single = LocalStepRunner(REGISTRY, pool=None, replies_topic=NAMES.replies, threads=1)
    try:
        outbound = Outbound(NAMES, AvroCodec(), single, "unit", LocalLimits(budget_s=0.3))
        starts = [_start(f"slow-{i}", until=0, saga=Slow) for i in range(3)]
        batch = _run_batch(outbound, starts)
        assert outbound.runs == 3 and outbound.overflowed == 2
        sent = sorted(t.envelope.saga_id for t in _tasks(batch))
        assert sent == ["slow-1", "slow-2"]  # to the workers, their attempt unchanged
        first = _state(batch, "slow-0").steps["crawl"]
        assert first.last_error is not None and "StepTimeout" in first.last_error
        time.sleep(3.5)  # the first run ends; a cancelled task would start now
        with CRAWL_LOCK:
            assert CRAWLED == ["slow-0"]
    finally:
        single.close()
