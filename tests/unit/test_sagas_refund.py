"""The refund agent through the test kit: approve, reject, time out, ineligible."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sagaline.orchestrator.core.saga import WaitSpec
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.sagas.refund import (
    APPROVAL_TIMEOUT,
    CustomerUpdate,
    DemoRefundAgent,
    Eligibility,
    Notification,
    PaymentReversal,
    RefundAgent,
    RefundRequest,
)

pytestmark = pytest.mark.unit

SEED = RefundRequest(
    customer_id=12345, order_id="ORD-2026-03-15", amount_cents=15_000, reason="damaged"
)


def _until_approval(kit: SagaTestKit[RefundRequest]) -> None:
    kit.start(SEED)
    kit.succeed("check_eligibility", Eligibility(eligible=True, note="ok", refundable_cents=15_000))
    kit.succeed(
        "update_customer_record",
        CustomerUpdate(previous_refund_status="none", pending_refund_cents=15_000),
    )
    kit.expect_waiting_for("manager_approval")
    kit.expect_no_tasks()


def test_definition_shape() -> None:
    assert [n.name for n in RefundAgent.sequence] == [
        "check_eligibility",
        "update_customer_record",
        "manager_approval",
        "reverse_payment",
        "notify_customer",
    ]
    assert RefundAgent.type_name == "refund"
    wait = RefundAgent.node("manager_approval")
    assert isinstance(wait, WaitSpec)
    assert wait.timeout == APPROVAL_TIMEOUT == timedelta(days=7)
    assert DemoRefundAgent.type_name == "refund_demo"
    demo_wait = DemoRefundAgent.node("manager_approval")
    assert isinstance(demo_wait, WaitSpec)
    assert demo_wait.timeout is not None and demo_wait.timeout < timedelta(minutes=1)


def test_approved_refund_pays_once_and_notifies() -> None:
    kit = SagaTestKit(RefundAgent, saga_id="refund-12345")
    _until_approval(kit)
    kit.approve("manager_approval", by="manager@shop.example", note="looks fine")
    task = kit.expect_task("reverse_payment")
    assert task.idempotency_key == "refund-12345/reverse_payment/1"
    kit.succeed("reverse_payment", PaymentReversal(reversal_id="rev-1", amount_cents=15_000))
    kit.succeed("notify_customer", Notification(notification_id=7, channel="email"))
    kit.expect_status("completed")
    data = kit.data
    assert data.approved_by == "manager@shop.example"
    assert data.reversal_id == "rev-1"
    assert data.notification_id == 7
    assert kit.compensated_steps() == []


def test_rejection_reverts_the_customer_record_and_pays_nothing() -> None:
    kit = SagaTestKit(RefundAgent)
    _until_approval(kit)
    kit.reject("manager_approval", by="manager@shop.example", note="outside policy")
    kit.expect_compensations(["update_customer_record"])
    kit.expect_status("compensated")
    assert kit.data.approved_by == "manager@shop.example"
    assert not any(getattr(o.record, "step", None) == "reverse_payment" for o in kit.outgoing)


def test_no_answer_in_seven_days_compensates() -> None:
    kit = SagaTestKit(RefundAgent)
    _until_approval(kit)
    kit.advance(days=6, hours=23)
    kit.expect_waiting_for("manager_approval")
    kit.advance(hours=1)
    kit.expect_compensations(["update_customer_record"])
    kit.expect_status("compensated")


def test_demo_variant_times_out_in_seconds() -> None:
    kit = SagaTestKit(DemoRefundAgent)
    _until_approval(kit)
    kit.advance(seconds=30)
    kit.expect_compensations(["update_customer_record"])
    kit.expect_status("compensated")


def test_ineligible_request_ends_without_side_effects() -> None:
    kit = SagaTestKit(RefundAgent)
    kit.start(SEED)
    kit.succeed("check_eligibility", Eligibility(eligible=False, note="no order"))
    kit.expect_status("completed")
    kit.expect_no_tasks()
    assert kit.data.eligible is False


def test_a_failing_record_update_is_retried_then_succeeds() -> None:
    kit = SagaTestKit(RefundAgent)
    kit.start(SEED)
    kit.succeed("check_eligibility", Eligibility(eligible=True, note="ok"))
    kit.fail("update_customer_record", "connection reset")
    kit.expect_no_tasks()
    kit.advance(seconds=1)
    task = kit.expect_task("update_customer_record")
    assert task.attempt == 2
    assert task.idempotency_key.endswith("/update_customer_record/1")
    kit.succeed(
        "update_customer_record",
        CustomerUpdate(previous_refund_status="none", pending_refund_cents=15_000),
    )
    kit.expect_waiting_for("manager_approval")


def test_a_duplicate_approval_is_ignored() -> None:
    kit = SagaTestKit(RefundAgent)
    _until_approval(kit)
    kit.approve("manager_approval", by="a@shop.example")
    kit.approve("manager_approval", by="b@shop.example")
    assert kit.data.approved_by == "a@shop.example"
    kit.expect_tasks(["reverse_payment"])


def test_demo_variant_is_the_same_saga_with_a_short_window() -> None:
    assert [n.name for n in DemoRefundAgent.sequence] == [n.name for n in RefundAgent.sequence]
    kit = SagaTestKit(DemoRefundAgent)
    _until_approval(kit)
    kit.approve("manager_approval", by="manager@shop.example")
    assert kit.data.approved_by == "manager@shop.example"
    kit.expect_tasks(["reverse_payment"])
