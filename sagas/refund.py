"""The refund agent: check eligibility, update the record, wait for a manager,
reverse the payment, notify.  A rejection or a 7-day silence compensates.

Step bodies are small and real: they write to the step's database
transaction (``ctx.db``) when there is one and otherwise only compute.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from orchestrator.context import StepContext
from orchestrator.policies import Retry
from orchestrator.saga import Saga, approval, step

__all__ = ["Eligibility", "PaymentReversed", "RecordUpdated", "RefundAgent", "RefundData"]


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

    @check_eligibility.route("notify")
    def _skip_ineligible(self, data: RefundData) -> str | None:
        return None if data.eligible else "notify"

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
