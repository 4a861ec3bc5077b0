"""The test kit itself: running real step bodies (sync and async), errors, usage, the clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import RetryableError, TerminalError, TestKitError
from sagaline.orchestrator.core.policies import Budget, Retry
from sagaline.orchestrator.core.saga import Saga, step
from sagaline.orchestrator.core.testing import SagaTestKit, TestStepContext
from sagaline.schemas.events import StepAttemptFailed, UsageRecorded

pytestmark = pytest.mark.unit


class Job(BaseModel):
    fail_times: int = 0
    terminal: bool = False
    bad_input: bool = False
    result: str | None = None


class Out(BaseModel):
    text: str


ATTEMPTS: dict[str, int] = {}


class Worker(Saga[Job]):
    type_name = "worker-kit"
    budget = Budget(max_cost_micros=1_000)

    @step(retry=Retry(max_attempts=4, non_retryable=(ValueError,), jitter=0.0))
    async def work(self, ctx: StepContext, data: Job) -> Out:
        ATTEMPTS[ctx.saga_id] = ctx.attempt
        ctx.heartbeat(progress=0.5)
        ctx.report_usage(llm_calls=1, tokens_in=10, tokens_out=5, cost_micros=300)
        if data.bad_input:
            raise ValueError("bad input")
        if data.terminal:
            raise TerminalError("gone")
        if ctx.attempt <= data.fail_times:
            raise RetryableError("try again")
        return Out(text=f"done on {ctx.attempt}")

    @work.on_result
    def _work(self, data: Job, result: Out) -> Job:
        return data.model_copy(update={"result": result.text})


def test_async_steps_run_and_retryable_errors_are_retried() -> None:
    kit = SagaTestKit(Worker, saga_id="w-1")
    kit.start(Job(fail_times=2))
    for _ in range(3):
        kit.run_steps()
        kit.advance(minutes=1)
    kit.expect_status("completed")
    assert kit.data.result == "done on 3" and ATTEMPTS["w-1"] == 3
    used = [e for e in kit.events if isinstance(e, UsageRecorded)]
    assert len(used) == 3 and used[0].usage.cost_micros == 300


def test_usage_over_budget_pauses() -> None:
    kit = SagaTestKit(Worker, saga_id="w-2")
    kit.start(Job(fail_times=3))
    for _ in range(4):
        kit.run_steps()
        kit.advance(minutes=1)
    kit.expect_status("paused")  # 4 x 300 micros > 1000: paused before moving on
    assert kit.data.result == "done on 4"
    kit.resume(by="finance")
    kit.expect_status("completed")


@pytest.mark.parametrize("job", [Job(terminal=True), Job(bad_input=True)])
def test_terminal_and_non_retryable_errors_fail_at_once(job: Job) -> None:
    kit = SagaTestKit(Worker, saga_id="w-3")
    kit.start(job)
    kit.run_steps()
    failed = kit.expect_event(StepAttemptFailed)
    assert failed.final and not failed.retryable  # type: ignore[union-attr]
    kit.expect_status("compensated")


def test_expectations_explain_what_is_pending() -> None:
    kit = SagaTestKit(Worker, saga_id="w-4")
    with pytest.raises(TestKitError, match="has not started"):
        _ = kit.data
    kit.start(Job())
    with pytest.raises(
        TestKitError, match="no pending step task 'nope'; pending: \\['step:work'\\]"
    ):
        kit.succeed("nope")
    with pytest.raises(TestKitError, match="expected status 'completed', got 'running'"):
        kit.expect_status("completed")
    with pytest.raises(TestKitError, match="expected the compensation of 'work'"):
        kit.expect_compensations(["work"])


def test_the_test_context_records_heartbeats_and_usage() -> None:
    ctx = TestStepContext(saga_id="s", saga_type="t", step="x", attempt=1, idempotency_key="k")
    ctx.heartbeat(0.3, "a third")
    ctx.report_usage(tokens_in=3)
    ctx.report_usage(tokens_in=4, cost_micros=2)
    assert ctx.heartbeats == [(0.3, "a third")]
    assert ctx.usage.tokens_in == 7 and ctx.usage.cost_micros == 2
    assert isinstance(ctx, StepContext)


def test_advance_fires_timers_in_due_order_and_keeps_the_clock() -> None:
    kit = SagaTestKit(Worker, saga_id="w-5")
    start = kit.now
    kit.start(Job())
    kit.fail("work")
    fired = kit.advance(hours=2)
    assert len(fired) == 1 and kit.now == start + timedelta(hours=2)
    assert kit.expect_task("work").attempt == 2
