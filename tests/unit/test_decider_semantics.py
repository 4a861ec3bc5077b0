"""The decider's semantics: duplicates, stale replies, timers, operators, compensation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.decider import decide, derive_message_id
from sagaline.orchestrator.core.payloads import to_payload
from sagaline.orchestrator.core.policies import Budget, Retry
from sagaline.orchestrator.core.saga import Saga, child, parallel, sleep, step, wait_for_signal
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.commands import CancelSaga, StartSaga
from sagaline.schemas.events import (
    BudgetExceeded,
    InputIgnored,
    SagaFinished,
    SignalRejected,
    StepAttemptFailed,
    StepDispatched,
    StepTimedOut,
)
from sagaline.schemas.replies import StepFailed, StepSucceeded
from sagaline.schemas.tasks import ExecuteStep

pytestmark = pytest.mark.unit


class Order(BaseModel):
    id: str = "o-1"
    reserved: int = 0
    charged: bool = False
    shipped_by: str | None = None
    note: str | None = None


class Reserved(BaseModel):
    units: int


class Pipeline(Saga[Order]):
    type_name = "pipeline"
    budget = Budget(max_retries=4)

    @step(retry=Retry(max_attempts=3, initial=timedelta(seconds=10), jitter=0.0))
    def reserve(self, ctx: StepContext, data: Order) -> Reserved:
        return Reserved(units=1)

    @reserve.on_result
    def _reserved(self, data: Order, result: Reserved) -> Order:
        return data.model_copy(update={"reserved": data.reserved + result.units})

    @reserve.compensation
    def release(self, ctx: StepContext, data: Order) -> None:
        return None

    @step(timeout=timedelta(minutes=1), heartbeat_timeout=timedelta(seconds=20))
    def charge(self, ctx: StepContext, data: Order) -> None:
        return None

    @charge.compensation
    def refund(self, ctx: StepContext, data: Order) -> None:
        return None

    @step(on_failure="pause")
    def ship(self, ctx: StepContext, data: Order) -> None:
        return None


def kit_at(step_name: str = "reserve") -> SagaTestKit[Order]:
    kit = SagaTestKit(Pipeline)
    kit.start(Order())
    order = ["reserve", "charge", "ship"]
    for name in order:
        if name == step_name:
            break
        kit.succeed(name)
    return kit


def test_a_duplicate_reply_is_ignored_and_the_step_never_runs_again() -> None:
    kit = kit_at()
    task = kit.expect_task("reserve")
    kit.succeed("reserve", Reserved(units=2))
    reply = kit.inputs[-1]
    decision = kit.deliver(reply)  # the relay published it twice
    assert decision.outgoing == ()
    assert [type(e) for e in decision.events] == [InputIgnored]
    assert kit.data.reserved == 2
    dispatched = [e for e in kit.events if isinstance(e, StepDispatched) and e.step == "reserve"]
    assert len(dispatched) == 1 and dispatched[0].task_id == task.task_id


def test_a_failure_of_an_old_attempt_is_stale() -> None:
    kit = kit_at()
    first = kit.expect_task("reserve")
    kit.fail("reserve", "flaky")
    kit.advance(seconds=10)
    second = kit.expect_task("reserve")
    assert second.attempt == 2 and second.idempotency_key == first.idempotency_key
    late = StepFailed(
        envelope=kit.envelope(),
        step="reserve",
        attempt=1,
        idempotency_key=first.idempotency_key,
        task_id=first.task_id,
        retryable=True,
        error_type="E",
        error_message="again",
    )
    kit.deliver(late)
    kit.expect_event(InputIgnored, reason="stale")
    kit.expect_task("reserve")  # attempt 2 still pending, nothing new


def test_a_late_success_of_an_earlier_attempt_is_accepted() -> None:
    kit = kit_at()
    first = kit.expect_task("reserve")
    kit.fail("reserve")  # attempt 1 reported failure, but a retry of it actually committed
    late = StepSucceeded(
        envelope=kit.envelope(),
        step="reserve",
        attempt=1,
        idempotency_key=first.idempotency_key,
        task_id=first.task_id,
        result=to_payload(Reserved(units=1)),
    )
    kit.deliver(late)
    kit.expect_tasks(["charge"])
    kit.advance(minutes=5)  # the retry timer is gone with the completed step
    assert [e.attempt for e in kit.events if isinstance(e, StepDispatched)] == [1, 1, 2, 3]


def test_retries_back_off_exponentially_then_compensate() -> None:
    kit = kit_at()
    kit.fail("reserve")
    kit.advance(seconds=9)
    kit.expect_no_tasks()
    kit.advance(seconds=1)
    kit.fail("reserve")
    kit.advance(seconds=19)
    kit.expect_no_tasks()
    kit.advance(seconds=1)
    kit.fail("reserve")
    last = kit.expect_event(StepAttemptFailed, attempt=3)
    assert last.final  # type: ignore[union-attr]
    kit.expect_compensations([])
    kit.expect_status("compensated")


def test_a_terminal_failure_is_not_retried() -> None:
    kit = kit_at("charge")
    kit.fail("charge", "card declined", retryable=False, error_type="TerminalError")
    kit.expect_compensations(["reserve"])
    kit.expect_status("compensated")


def test_heartbeats_keep_a_long_step_alive_until_they_stop() -> None:
    kit = kit_at("charge")
    kit.advance(seconds=15)
    kit.heartbeat("charge", progress=0.5)
    kit.advance(seconds=15)
    kit.heartbeat("charge", progress=0.9)
    kit.expect_task("charge")
    kit.advance(seconds=20)
    kit.expect_event(StepTimedOut, kind="heartbeat_timeout", attempt=1)
    kit.advance(seconds=5)
    assert kit.expect_task("charge").attempt == 2


def test_cancel_compensates_completed_steps_in_reverse_order_each_once() -> None:
    kit = kit_at("ship")
    kit.cancel(by="ops", reason="customer left")
    kit.expect_status("compensating")
    # ship is in flight: compensation waits for it; it failing leaves nothing to undo
    kit.fail("ship", retryable=False)
    kit.expect_compensations(["charge", "reserve"])
    kit.expect_status("cancelled")
    kit.cancel(by="ops")
    kit.expect_event(InputIgnored, reason="terminal")
    assert kit.compensated_steps() == ["charge", "reserve"]


def test_a_compensation_is_retried_until_it_succeeds() -> None:
    kit = kit_at("ship")
    kit.succeed("ship")
    kit.expect_status("completed")
    kit = kit_at("ship")
    kit.cancel()
    kit.fail("ship", retryable=False)
    kit.compensation_failed("charge", "provider down")
    kit.expect_no_tasks()
    kit.advance(seconds=1.2)
    kit.compensation_failed("charge", "still down")
    kit.advance(seconds=3)
    kit.expect_compensations(["charge", "reserve"])
    kit.expect_status("cancelled")


def test_a_compensation_that_cannot_succeed_fails_the_saga_for_a_person() -> None:
    kit = kit_at("ship")
    kit.cancel()
    kit.fail("ship", retryable=False)
    kit.compensation_failed("charge", "account closed", retryable=False)
    kit.expect_status("failed")
    finished = kit.expect_event(SagaFinished)
    assert "compensation of charge failed" in (finished.reason or "")  # type: ignore[union-attr]
    kit.expect_no_tasks()


def test_pause_holds_new_work_and_resume_dispatches_it() -> None:
    kit = kit_at()
    kit.pause(by="ops")
    kit.succeed("reserve", Reserved(units=1))  # the running step may still finish
    kit.expect_no_tasks()
    kit.pause(by="ops")
    kit.expect_event(InputIgnored, reason="duplicate")
    kit.resume(by="ops")
    kit.expect_tasks(["charge"])


def test_a_permanently_failed_step_pauses_and_an_operator_retries_it() -> None:
    kit = kit_at("ship")
    kit.fail("ship", retryable=False)
    kit.expect_status("paused")
    kit.retry_step("ship", by="ops")
    task = kit.expect_task("ship")
    assert task.attempt == 2
    kit.succeed("ship")
    kit.expect_status("completed")


def test_an_operator_skips_a_failed_step() -> None:
    kit = kit_at("ship")
    kit.fail("ship", retryable=False)
    kit.skip_step("ship", by="ops")
    kit.expect_status("completed")


def test_an_operator_skip_with_a_result_folds_it_into_the_data() -> None:
    kit = kit_at()
    kit.skip_step("reserve", Reserved(units=7))
    assert kit.data.reserved == 7
    kit.expect_task("charge")
    kit.succeed("reserve", Reserved(units=1))  # the skipped attempt reports late
    kit.expect_event(InputIgnored, reason="late")
    assert kit.data.reserved == 7


class Flaky(Saga[Order]):
    type_name = "flaky"
    budget = Budget(max_retries=2)

    @step(retry=Retry(max_attempts=10, initial=timedelta(seconds=1), jitter=0.0))
    def call(self, ctx: StepContext, data: Order) -> None:
        return None


def test_the_retry_budget_pauses_the_saga_for_a_person() -> None:
    kit = SagaTestKit(Flaky)
    kit.start(Order())
    for _ in range(2):
        kit.fail("call")
        kit.advance(seconds=5)
    kit.expect_status("running")
    kit.fail("call")
    kit.expect_event(BudgetExceeded, kind="retries", limit=2, used=3)
    kit.expect_status("paused")
    kit.advance(minutes=1)  # the retry comes due but nothing is dispatched while paused
    kit.expect_no_tasks()
    kit.resume(by="ops")
    assert kit.expect_task("call").attempt == 4
    kit.succeed("call")
    kit.expect_status("completed")


def test_start_is_idempotent_and_a_different_input_is_a_conflict() -> None:
    kit = kit_at()
    start = kit.inputs[0]
    kit.deliver(start)
    kit.expect_event(InputIgnored, reason="duplicate")
    assert isinstance(start, StartSaga)
    other = start.model_copy(update={"input_sha256": "0" * 64})
    kit.deliver(other)
    kit.expect_event(InputIgnored, reason="conflict")
    kit.expect_task("reserve")


def test_a_reply_for_an_unknown_saga_is_rejected_without_events() -> None:
    kit = kit_at()
    reply = kit.inputs[0]
    orphan = StepSucceeded(
        envelope=reply.envelope.model_copy(update={"saga_id": "ghost"}),
        step="reserve",
        attempt=1,
        idempotency_key="k",
        task_id="t",
    )
    decision = decide(Pipeline, None, orphan)
    assert decision.events == () and decision.state is None
    assert decision.rejected is not None and "ghost" in decision.rejected


def test_outgoing_records_carry_deterministic_envelopes() -> None:
    kit = kit_at()
    start = kit.inputs[0]
    first = decide(Pipeline, None, start)
    again = decide(Pipeline, None, start)
    assert first == again
    task = first.outgoing[0].record
    assert isinstance(task, ExecuteStep)
    assert task.envelope.message_id == derive_message_id(start.envelope.message_id, 0)
    assert task.envelope.causation_id == start.envelope.message_id
    assert task.envelope.correlation_id == start.envelope.correlation_id
    assert task.envelope.occurred_at == start.envelope.occurred_at


def test_jitter_is_derived_from_the_saga_and_attempt() -> None:
    policy = Retry(initial=timedelta(seconds=10), jitter=0.5)
    a = policy.delay(2, "saga-1", "s")
    assert a == policy.delay(2, "saga-1", "s")
    assert timedelta(seconds=10) <= a <= timedelta(seconds=30)
    assert {policy.delay(2, f"saga-{i}", "s") for i in range(20)} != {a}


class Fanout(Saga[Order]):
    type_name = "fanout"

    @step
    def a(self, ctx: StepContext, data: Order) -> Reserved:
        return Reserved(units=1)

    @a.on_result
    def _a(self, data: Order, result: Reserved) -> Order:
        return data.model_copy(update={"reserved": data.reserved + result.units})

    @a.compensation
    def undo_a(self, ctx: StepContext, data: Order) -> None:
        return None

    @step
    def b(self, ctx: StepContext, data: Order) -> Reserved:
        return Reserved(units=10)

    @b.on_result
    def _b(self, data: Order, result: Reserved) -> Order:
        return data.model_copy(update={"reserved": data.reserved + result.units})

    @b.compensation
    def undo_b(self, ctx: StepContext, data: Order) -> None:
        return None

    both = parallel(a, b)
    cool_down = sleep(timedelta(hours=1))
    shipped = wait_for_signal(timeout=timedelta(days=2), on_timeout="fail")

    @shipped.on_signal
    def _shipped(self, data: Order, signal: BaseModel) -> Order:
        return data.model_copy(update={"shipped_by": getattr(signal, "by", None)})


def test_parallel_steps_join_then_sleep_then_wait_for_a_signal() -> None:
    kit = SagaTestKit(Fanout)
    kit.start(Order())
    kit.expect_tasks(["a", "b"])
    kit.succeed("b", Reserved(units=10))
    kit.expect_tasks(["a"])
    kit.succeed("a", Reserved(units=1))
    assert kit.data.reserved == 11
    kit.expect_status("waiting")
    kit.advance(minutes=59)
    kit.signal("shipped", by="dock")
    kit.expect_event(SignalRejected, name="shipped")
    kit.advance(minutes=1)
    kit.expect_waiting_for("shipped")
    kit.signal("shipped", by="dock")
    assert kit.data.shipped_by == "dock"
    kit.expect_status("completed")


def test_a_failed_branch_compensates_the_other_after_it_finishes() -> None:
    kit = SagaTestKit(Fanout)
    kit.start(Order())
    kit.fail("a", retryable=False)
    kit.expect_status("compensating")
    kit.expect_tasks(["b"])
    kit.succeed("b", Reserved(units=10))
    kit.expect_compensations(["b"])
    kit.expect_status("compensated")


def test_a_wait_timeout_can_fail_the_saga() -> None:
    kit = SagaTestKit(Fanout)
    kit.start(Order())
    kit.succeed("a", Reserved(units=1))
    kit.succeed("b", Reserved(units=1))
    kit.advance(days=3)
    kit.expect_status("failed")


class Parent(Saga[Order]):
    type_name = "parent"

    sub = child(Pipeline)

    @sub.on_result
    def _sub(self, data: Order, result: Order) -> Order:
        return data.model_copy(update={"note": f"child reserved {result.reserved}"})


def test_a_child_saga_reports_its_outcome_to_its_parent() -> None:
    parent = SagaTestKit(Parent, saga_id="p-1")
    decision = parent.start(Order())
    start = decision.outgoing[0]
    assert start.destination == "commands" and isinstance(start.record, StartSaga)
    assert start.record.parent is not None and start.record.parent.step == "sub"
    kid = SagaTestKit(Pipeline, saga_id=start.record.envelope.saga_id)
    kid.deliver(start.record)
    kid.succeed("reserve", Reserved(units=3))
    kid.succeed("charge")
    done = kid.succeed("ship")
    kid.expect_status("completed")
    reply = done.outgoing[-1]
    assert reply.destination == "replies" and isinstance(reply.record, StepSucceeded)
    assert reply.record.envelope.saga_id == "p-1"
    parent.deliver(reply.record)
    parent.expect_status("completed")
    assert parent.data.note == "child reserved 3"


def test_a_timeout_while_paused_compensates_only_after_resume() -> None:
    kit = SagaTestKit(Fanout)
    kit.start(Order())
    kit.succeed("a", Reserved(units=1))
    kit.succeed("b", Reserved(units=1))
    kit.advance(hours=1)
    kit.expect_waiting_for("shipped")
    kit.pause(by="ops")
    kit.advance(days=2)  # the wait times out (on_timeout="fail") even while paused
    kit.expect_status("failed")
    kit = kit_at("charge")
    kit.pause(by="ops")
    kit.fail("charge", retryable=False)  # the failure decides to compensate ...
    kit.expect_status("paused")  # ... but the pause holds the compensations
    kit.expect_no_tasks()
    kit.resume(by="ops")
    kit.expect_compensations(["reserve"])
    kit.expect_status("compensated")


def test_cancel_overrides_a_pause() -> None:
    kit = kit_at("charge")
    kit.pause(by="ops")
    kit.succeed("charge")
    kit.cancel(by="ops")
    kit.expect_compensations(["charge", "reserve"])
    kit.expect_status("cancelled")


def test_a_failed_child_fails_its_node_and_a_cancelled_parent_cancels_its_child() -> None:
    parent = SagaTestKit(Parent, saga_id="p-2")
    start = parent.start(Order()).outgoing[0].record
    assert isinstance(start, StartSaga)
    kid = SagaTestKit(Pipeline, saga_id=start.envelope.saga_id)
    kid.deliver(start)
    kid.fail("reserve", retryable=False)
    kid.expect_status("compensated")
    reply = kid.decisions[-1].outgoing[-1]
    assert reply.destination == "replies" and isinstance(reply.record, StepFailed)
    assert reply.record.error_type == "ChildSagaCompensated"
    parent.deliver(reply.record)
    parent.expect_status("compensated")

    parent = SagaTestKit(Parent, saga_id="p-3")
    child_start = parent.start(Order()).outgoing[0].record
    assert isinstance(child_start, StartSaga)
    cancel = parent.cancel(by="ops").outgoing
    assert [(o.destination, type(o.record).__name__) for o in cancel] == [
        ("commands", "CancelSaga")
    ]
    assert isinstance(cancel[0].record, CancelSaga)
    assert cancel[0].record.envelope.saga_id == child_start.envelope.saga_id
