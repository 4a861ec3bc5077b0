"""The refund agent (the seed shape) written with the API and proven with the test kit.

check eligibility -> update record -> manager approval (7 days) -> reverse
payment (pivot) -> notify; a rejection or a timeout compensates.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.saga import Node, Saga, approval, step
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.events import CompensationStarted, SignalRejected, StepDispatched
from sagaline.schemas.tasks import CompensateStep

pytestmark = pytest.mark.unit


class RefundData(BaseModel):
    order_id: str
    customer: str
    amount_cents: int
    eligible: bool | None = None
    record_version: int | None = None
    reversal_id: str | None = None
    notified: bool = False


class Eligibility(BaseModel):
    eligible: bool
    reason: str = ""


class RecordUpdated(BaseModel):
    version: int


class PaymentReversed(BaseModel):
    reversal_id: str


class RefundAgent(Saga[RefundData]):
    """Refund an order after a manager approves it."""

    type_name = "refund"
    version = 1
    deadline = timedelta(days=8)

    @step(retry=Retry(max_attempts=5), timeout=timedelta(seconds=30))
    def check_eligibility(self, ctx: StepContext, data: RefundData) -> Eligibility:
        eligible = 0 < data.amount_cents <= 100_000_00
        return Eligibility(eligible=eligible, reason="" if eligible else "amount out of range")

    @check_eligibility.on_result
    def _eligibility(self, data: RefundData, result: Eligibility) -> RefundData:
        return data.model_copy(update={"eligible": result.eligible})

    @check_eligibility.route("notify")  # declared below: named here, returned as the node
    def _skip_ineligible(self, data: RefundData) -> Node | None:
        return None if data.eligible else type(self).notify

    @step(timeout=timedelta(seconds=30))
    def update_record(self, ctx: StepContext, data: RefundData) -> RecordUpdated:
        if ctx.db is not None:
            ctx.db.execute(
                "UPDATE refund_orders SET status = 'refund_pending' WHERE order_id = %s",
                (data.order_id,),
            )
        return RecordUpdated(version=1)

    @update_record.on_result
    def _record(self, data: RefundData, result: RecordUpdated) -> RefundData:
        return data.model_copy(update={"record_version": result.version})

    @update_record.compensation
    def restore_record(self, ctx: StepContext, data: RefundData) -> None:
        if ctx.db is not None:
            ctx.db.execute(
                "UPDATE refund_orders SET status = 'open' WHERE order_id = %s", (data.order_id,)
            )

    manager_ok = approval(timeout=timedelta(days=7))

    @step(pivot=True, retry=Retry(max_attempts=10), timeout=timedelta(minutes=1))
    def reverse_payment(self, ctx: StepContext, data: RefundData) -> PaymentReversed:
        # the payment provider deduplicates on the idempotency key
        return PaymentReversed(reversal_id=f"rev-{ctx.idempotency_key}")

    @reverse_payment.on_result
    def _reversed(self, data: RefundData, result: PaymentReversed) -> RefundData:
        return data.model_copy(update={"reversal_id": result.reversal_id})

    @step(retry=Retry(max_attempts=None, max_interval=timedelta(minutes=10)))
    def notify(self, ctx: StepContext, data: RefundData) -> None:
        ctx.logger.info("refund of %s for %s: %s", data.order_id, data.customer, data.reversal_id)


def started() -> SagaTestKit[RefundData]:
    kit = SagaTestKit(RefundAgent, saga_id="refund-o-17")
    kit.start(RefundData(order_id="o-17", customer="ada", amount_cents=72_00))
    return kit


def at_approval() -> SagaTestKit[RefundData]:
    kit = started()
    kit.succeed(RefundAgent.check_eligibility, Eligibility(eligible=True))
    kit.succeed(RefundAgent.update_record, RecordUpdated(version=4))
    kit.expect_waiting_for(RefundAgent.manager_ok)
    kit.expect_status("waiting")
    kit.expect_no_tasks()
    return kit


def test_approved_refund_reverses_the_payment_and_notifies() -> None:
    kit = at_approval()
    kit.approve("manager_ok", by="alice")
    kit.succeed("reverse_payment", PaymentReversed(reversal_id="rev-1"))
    kit.succeed("notify")
    kit.expect_status("completed")
    assert kit.data.reversal_id == "rev-1"
    assert kit.data.record_version == 4
    assert kit.compensated_steps() == []


def test_rejection_compensates_the_record_update() -> None:
    kit = at_approval()
    kit.reject("manager_ok", by="bob", note="fraud")
    task = kit.pending_tasks[0]
    assert isinstance(task, CompensateStep)
    assert task.step_result is not None  # the compensation sees what the step did
    kit.expect_compensations(["update_record"])
    kit.expect_status("compensated")
    assert "rejected by bob: fraud" in (kit.state.outcome_reason or "")  # type: ignore[union-attr]


def test_seven_days_of_silence_compensate() -> None:
    kit = at_approval()
    kit.advance(days=6, hours=23)
    kit.expect_status("waiting")
    kit.advance(hours=1)
    kit.expect_compensations(["update_record"])
    kit.expect_status("compensated")
    kit.expect_event(CompensationStarted, reason="manager_ok timed out")


def test_ineligible_refund_skips_to_notify() -> None:
    kit = started()
    kit.succeed("check_eligibility", Eligibility(eligible=False, reason="too old"))
    kit.expect_tasks(["notify"])
    kit.succeed("notify")
    kit.expect_status("completed")
    dispatched = [e.step for e in kit.events if isinstance(e, StepDispatched)]
    assert dispatched == ["check_eligibility", "notify"]


def test_an_approval_for_another_wait_is_recorded_as_rejected() -> None:
    kit = started()
    kit.approve("manager_ok", by="alice")  # too early: the saga is not waiting yet
    kit.expect_event(SignalRejected, name="manager_ok", by="alice")
    kit.expect_tasks(["check_eligibility"])


def test_run_steps_executes_the_real_step_bodies() -> None:
    kit = started()
    assert kit.run_steps() == 2
    kit.approve("manager_ok", by="alice")
    assert kit.run_steps() == 2
    kit.expect_status("completed")
    assert kit.data.reversal_id == "rev-refund-o-17/reverse_payment/1"


def test_a_step_that_keeps_timing_out_is_retried_then_the_saga_compensates() -> None:
    kit = started()
    kit.succeed("check_eligibility", Eligibility(eligible=True))
    kit.advance(minutes=10)  # three 30 s attempts with backoff, all silent
    attempts = [e.attempt for e in kit.events if isinstance(e, StepDispatched)]
    assert attempts == [1, 1, 2, 3]
    kit.expect_compensations([])  # update_record never completed: nothing to undo
    kit.expect_status("compensated")


def test_diagram_names_every_node() -> None:
    text = RefundAgent.mermaid()
    assert text.startswith("flowchart TD")
    for name in ("check_eligibility", "update_record", "manager_ok", "reverse_payment", "notify"):
        assert name in text
    assert "manager_ok -- reject --> __compensate" in text
