"""The refund agent: the seed case of sagaline.

Customer 12345 asks for $150 back on the order of March 15 2026.  The saga

1. checks eligibility against the order in Postgres (a rule step: the order
   belongs to the customer and has enough left to refund);
2. marks the customer record "refund pending" (compensation reverts it);
3. asks a manager, and waits up to 7 days for the answer; the approval is
   bound to what the manager is shown (:class:`ApprovalView`: the order, the
   amount, the reason), so an approve given on another amount is refused;
4. reverses the payment through the payment provider, passing the step's
   idempotency key (the pivot: no way back after it);
5. notifies the customer.

A rejection or a timeout of the approval compensates: the customer record
is restored and nothing is paid.  Every write goes through ``ctx.db``, the
step's own transaction, which commits together with the recorded result;
so a crashed and redelivered step never writes twice.

The approval timeout is part of the definition (7 days).  The demo cannot
wait a week, so it registers :class:`DemoRefundAgent`, a subclass under its
own type name whose approval times out after 20 seconds; in-flight sagas of
one type never change their timeout.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, Field

from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import TerminalError
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.saga import DONE, Done, Saga, SignalInfo, approval, step
from sagaline.sagas.tables import Tables
from sagaline.schemas.personal import Personal

__all__ = [
    "APPROVAL_TIMEOUT",
    "DEMO_APPROVAL_TIMEOUT",
    "ApprovalView",
    "CustomerUpdate",
    "DemoRefundAgent",
    "Eligibility",
    "Notification",
    "PaymentReversal",
    "RefundAgent",
    "RefundRequest",
    "provider_reverse_payment",
]

#: How long a manager has to answer (the product behaviour).
APPROVAL_TIMEOUT = timedelta(days=7)
#: The demo cannot wait a week.
DEMO_APPROVAL_TIMEOUT = timedelta(seconds=20)

_STEP_RETRY = Retry(
    max_attempts=5, initial=timedelta(milliseconds=200), max_interval=timedelta(seconds=5)
)


def _unset(value: object) -> bool:
    # absent from the JSON when unset, so sagas started before the field keep their bytes
    return value is None


class RefundRequest(BaseModel):
    """The saga data: the request, then what the steps found and did."""

    customer_id: int
    order_id: str
    amount_cents: int = Field(gt=0)
    reason: str = ""
    #: personal: encrypted with the saga's data key on every topic and table; erasable
    customer_email: Annotated[str | None, Personal] = Field(None, exclude_if=_unset)
    eligible: bool | None = None
    eligibility_note: str | None = None
    previous_refund_status: str | None = None
    approved_by: str | None = None
    decision_note: str | None = None
    reversal_id: str | None = None
    notification_id: int | None = None


class ApprovalView(BaseModel):
    """What the manager approves: an approve carries this view's SHA-256."""

    customer_id: int
    order_id: str
    amount_cents: int
    reason: str


class Eligibility(BaseModel):
    """Result of ``check_eligibility``."""

    eligible: bool
    note: str
    refundable_cents: int = 0


class CustomerUpdate(BaseModel):
    """Result of ``update_customer_record``: what to restore on compensation."""

    previous_refund_status: str
    pending_refund_cents: int


class PaymentReversal(BaseModel):
    """Result of ``reverse_payment``: the provider's reversal id."""

    reversal_id: str
    amount_cents: int


class Notification(BaseModel):
    """Result of ``notify_customer``."""

    notification_id: int
    channel: str
    #: where it went (personal, like the request's ``customer_email``)
    sent_to: Annotated[str | None, Personal] = Field(None, exclude_if=_unset)


def provider_reverse_payment(
    db: Any, tables: Tables, *, idempotency_key: str, saga_id: str, order_id: str, amount_cents: int
) -> PaymentReversal:
    """The payment provider's "reverse" call: one reversal per idempotency key.

    A provider that honours idempotency keys answers a repeated request with
    the reversal it already made; this function does the same over the
    payments table (which stands for the provider here).
    """
    existing = db.execute(
        f"SELECT reversal_id, amount_cents FROM {tables.payments} WHERE idempotency_key = %s",
        (idempotency_key,),
    ).fetchone()
    if existing is not None:
        return PaymentReversal(reversal_id=existing[0], amount_cents=existing[1])
    order = db.execute(
        f"SELECT payment_id FROM {tables.orders} WHERE order_id = %s FOR UPDATE", (order_id,)
    ).fetchone()
    if order is None:
        raise TerminalError(f"order {order_id} vanished before the payment reversal")
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:12]
    reversal_id = f"rev-{digest}"
    db.execute(
        f"INSERT INTO {tables.payments} (reversal_id, idempotency_key, saga_id, order_id,"
        " payment_id, amount_cents) VALUES (%s, %s, %s, %s, %s, %s)",
        (reversal_id, idempotency_key, saga_id, order_id, order[0], amount_cents),
    )
    db.execute(
        f"UPDATE {tables.orders} SET refunded_cents = refunded_cents + %s WHERE order_id = %s",
        (amount_cents, order_id),
    )
    return PaymentReversal(reversal_id=reversal_id, amount_cents=amount_cents)


class RefundAgent(Saga[RefundRequest]):
    """Refund an order after a manager's approval (see the module docstring)."""

    type_name = "refund"
    #: 2: the approval is bound to :class:`ApprovalView` (version 1: :class:`RefundAgentV1`)
    version = 2

    @step(retry=_STEP_RETRY, compensate=None)
    def check_eligibility(self, ctx: StepContext, data: RefundRequest) -> Eligibility:
        """The order exists, belongs to the customer and has enough left to refund."""
        t = Tables.current()
        row = ctx.db.execute(
            f"SELECT customer_id, amount_cents, refunded_cents FROM {t.orders} WHERE order_id = %s",
            (data.order_id,),
        ).fetchone()
        if row is None:
            return Eligibility(eligible=False, note=f"no order {data.order_id}")
        customer_id, total, refunded = row
        left = int(total) - int(refunded)
        if int(customer_id) != data.customer_id:
            return Eligibility(eligible=False, note="the order belongs to another customer")
        if data.amount_cents > left:
            return Eligibility(
                eligible=False,
                note=f"only {left} cents of the order are left to refund",
                refundable_cents=left,
            )
        return Eligibility(eligible=True, note="within the order total", refundable_cents=left)

    @check_eligibility.on_result
    def _eligibility(self, data: RefundRequest, result: Eligibility) -> RefundRequest:
        return data.model_copy(
            update={"eligible": result.eligible, "eligibility_note": result.note}
        )

    @check_eligibility.route(DONE)
    def _stop_when_ineligible(self, data: RefundRequest) -> Done | None:
        return None if data.eligible else DONE

    @step(retry=_STEP_RETRY)
    def update_customer_record(self, ctx: StepContext, data: RefundRequest) -> CustomerUpdate:
        """Mark the customer "refund pending" for this amount."""
        t = Tables.current()
        row = ctx.db.execute(
            f"SELECT refund_status FROM {t.customers} WHERE customer_id = %s FOR UPDATE",
            (data.customer_id,),
        ).fetchone()
        if row is None:
            raise TerminalError(f"no customer {data.customer_id}")
        updated = ctx.db.execute(
            f"UPDATE {t.customers} SET refund_status = 'refund_pending',"
            " pending_refund_cents = pending_refund_cents + %s, updated_at = now()"
            " WHERE customer_id = %s RETURNING pending_refund_cents",
            (data.amount_cents, data.customer_id),
        ).fetchone()
        return CustomerUpdate(previous_refund_status=row[0], pending_refund_cents=updated[0])

    @update_customer_record.on_result
    def _record_updated(self, data: RefundRequest, result: CustomerUpdate) -> RefundRequest:
        return data.model_copy(update={"previous_refund_status": result.previous_refund_status})

    @update_customer_record.compensation
    def revert_customer_record(self, ctx: StepContext, data: RefundRequest) -> None:
        """Take the pending amount off the record and restore its previous status."""
        t = Tables.current()
        ctx.db.execute(
            f"UPDATE {t.customers} SET pending_refund_cents = pending_refund_cents - %s,"
            " refund_status = CASE WHEN pending_refund_cents - %s > 0"
            " THEN refund_status ELSE %s END, updated_at = now() WHERE customer_id = %s",
            (
                data.amount_cents,
                data.amount_cents,
                data.previous_refund_status or "none",
                data.customer_id,
            ),
        )

    manager_approval = approval(timeout=APPROVAL_TIMEOUT)

    @manager_approval.shows
    def approval_view(self, data: RefundRequest) -> ApprovalView:
        """The manager is shown the order and the amount; the approve is bound to them."""
        return ApprovalView(
            customer_id=data.customer_id,
            order_id=data.order_id,
            amount_cents=data.amount_cents,
            reason=data.reason,
        )

    @manager_approval.on_signal
    def record_decision(self, data: RefundRequest, signal: SignalInfo) -> RefundRequest:
        """Keep who decided, and their note, in the saga data."""
        return data.model_copy(update={"approved_by": signal.by, "decision_note": signal.note})

    @step(retry=_STEP_RETRY, pivot=True, compensate=None)
    def reverse_payment(self, ctx: StepContext, data: RefundRequest) -> PaymentReversal:
        """Ask the payment provider to reverse the amount (idempotency key: the step's)."""
        t = Tables.current()
        reversal = provider_reverse_payment(
            ctx.db,
            t,
            idempotency_key=ctx.idempotency_key,
            saga_id=ctx.saga_id,
            order_id=data.order_id,
            amount_cents=data.amount_cents,
        )
        ctx.db.execute(
            f"UPDATE {t.customers} SET pending_refund_cents = pending_refund_cents - %s,"
            " refund_status = 'refunded', updated_at = now() WHERE customer_id = %s",
            (data.amount_cents, data.customer_id),
        )
        return reversal

    @reverse_payment.on_result
    def _reversed(self, data: RefundRequest, result: PaymentReversal) -> RefundRequest:
        return data.model_copy(update={"reversal_id": result.reversal_id})

    @step(retry=_STEP_RETRY, compensate=None)
    def notify_customer(self, ctx: StepContext, data: RefundRequest) -> Notification:
        """Queue the confirmation e-mail (the mailer reads the notifications table)."""
        t = Tables.current()
        dollars = f"${data.amount_cents / 100:,.2f}"
        body = (
            f"Your refund of {dollars} for order {data.order_id} is on its way"
            f" (reversal {data.reversal_id})."
        )
        row = ctx.db.execute(
            f"INSERT INTO {t.notifications} (idempotency_key, saga_id, customer_id, channel,"
            " body) VALUES (%s, %s, %s, 'email', %s) RETURNING notification_id",
            (ctx.idempotency_key, ctx.saga_id, data.customer_id, body),
        ).fetchone()
        return Notification(notification_id=row[0], channel="email", sent_to=data.customer_email)

    @notify_customer.on_result
    def _notified(self, data: RefundRequest, result: Notification) -> RefundRequest:
        return data.model_copy(update={"notification_id": result.notification_id})


class DemoRefundAgent(RefundAgent):
    """The refund agent with a short approval window, for the demo.

    A subclass under its own type name: it inherits every node and replaces
    the approval in place.  Every saga of one type keeps one timeout, so
    replays and audits stay exact.
    """

    type_name = "refund_demo"

    manager_approval = approval(timeout=DEMO_APPROVAL_TIMEOUT)
    manager_approval.on_signal(RefundAgent.record_decision)
    manager_approval.shows(RefundAgent.approval_view)


class RefundAgentV1(RefundAgent):
    """Version 1 of the refund agent: the manager's approval is not bound to a view.

    Version 2 binds the approve to what the manager was shown, so it decides differently
    (``WaitOpened`` carries the view's hash; an approve without it is refused): a new
    version.  This one stays registered so that refunds started before the upgrade finish,
    replay and audit under the decisions they started with (a saga keeps its version).
    """

    type_name = "refund"
    version = 1

    manager_approval = approval(timeout=APPROVAL_TIMEOUT)
    manager_approval.on_signal(RefundAgent.record_decision)
