"""Approvals bound to what the approver saw (issue 15, item 5)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from journal_builders import rehash
from pydantic import BaseModel

from sagaline.orchestrator.core.audit_rules import audit_saga
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.payloads import input_sha256, to_payload
from sagaline.orchestrator.core.saga import Saga, approval, step, wait_for_signal
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.events import SignalAccepted, SignalRejected, WaitOpened

pytestmark = pytest.mark.unit


class Order(BaseModel):
    customer: str
    amount_cents: int = 0
    quotes: int = 0
    note: str = ""


class Shown(BaseModel):
    amount_cents: int


class Quote(BaseModel):
    amount_cents: int


class Refund(Saga[Order]):
    type_name = "bound-refund-test"

    @step
    def quote(self, ctx: StepContext, data: Order) -> Quote:
        return Quote(amount_cents=100 * (data.quotes + 1))

    @quote.on_result
    def _quoted(self, data: Order, result: Quote) -> Order:
        return data.model_copy(
            update={"amount_cents": result.amount_cents, "quotes": data.quotes + 1}
        )

    ok = approval(timeout=timedelta(days=1), on_reject=quote)

    @ok.shows
    def _shown(self, data: Order) -> Shown:
        return Shown(amount_cents=data.amount_cents)

    @step
    def pay(self, ctx: StepContext, data: Order) -> None:
        return None


def _events(kit: SagaTestKit, kind: type[object]) -> list[object]:
    return [e for e in kit.events if isinstance(e, kind)]


def test_the_wait_records_the_view_and_its_hash() -> None:
    kit = SagaTestKit(Refund, saga_id="b-1")
    kit.start(Order(customer="ada"))
    kit.succeed(Refund.quote, Quote(amount_cents=700))
    opened = _events(kit, WaitOpened)[-1]
    assert isinstance(opened, WaitOpened)
    view = to_payload(Shown(amount_cents=700))
    assert opened.bound and opened.shown == view
    assert opened.shown_sha256 == input_sha256(view) == kit.shown_sha256(Refund.ok)


def test_an_approve_on_the_current_view_is_granted_and_recorded() -> None:
    kit = SagaTestKit(Refund, saga_id="b-2")
    kit.start(Order(customer="ada"))
    kit.succeed(Refund.quote, Quote(amount_cents=700))
    seen = kit.shown_sha256(Refund.ok)
    kit.approve(Refund.ok, by="alice", seen_sha256=seen)
    accepted = _events(kit, SignalAccepted)[-1]
    assert isinstance(accepted, SignalAccepted) and accepted.seen_sha256 == seen
    kit.succeed(Refund.pay)
    kit.expect_status("completed")
    assert audit_saga(kit.journal) == []


def test_an_approve_without_the_hash_is_refused_and_the_wait_stays_open() -> None:
    kit = SagaTestKit(Refund, saga_id="b-3")
    kit.start(Order(customer="ada"))
    kit.succeed(Refund.quote, Quote(amount_cents=700))
    kit.signal(Refund.ok, by="alice", approved=True)
    refused = _events(kit, SignalRejected)[-1]
    assert isinstance(refused, SignalRejected)
    assert "bound to what the approver saw" in refused.reason
    kit.expect_waiting_for(Refund.ok)


def test_an_approve_of_a_view_that_changed_since_is_refused_then_asked_again() -> None:
    kit = SagaTestKit(Refund, saga_id="b-4")
    kit.start(Order(customer="ada"))
    kit.succeed(Refund.quote, Quote(amount_cents=700))
    first_view = kit.shown_sha256(Refund.ok)
    kit.reject(Refund.ok, by="bob", note="quote again")  # back to quote: another amount
    kit.succeed(Refund.quote, Quote(amount_cents=900))
    second_view = kit.shown_sha256(Refund.ok)
    assert second_view is not None and second_view != first_view
    kit.approve(Refund.ok, by="alice", seen_sha256=first_view)  # she saw 700
    refused = _events(kit, SignalRejected)[-1]
    assert isinstance(refused, SignalRejected)
    assert "changed since the approver saw it" in refused.reason
    kit.expect_waiting_for(Refund.ok)
    kit.approve(Refund.ok, by="alice", seen_sha256=second_view)  # she looks again: 900
    kit.succeed(Refund.pay)
    kit.expect_status("completed")
    assert kit.data.amount_cents == 900
    assert audit_saga(kit.journal) == []


def test_a_reject_needs_no_hash() -> None:
    kit = SagaTestKit(Refund, saga_id="b-5")
    kit.start(Order(customer="ada"))
    kit.succeed(Refund.quote, Quote(amount_cents=700))
    kit.reject(Refund.ok, by="bob")
    kit.expect_task(Refund.quote)


class Plain(Saga[Order]):
    type_name = "plain-approval-test"

    ok = approval(timeout=timedelta(days=1))


def test_an_unbound_approval_checks_a_hash_when_one_is_given() -> None:
    kit = SagaTestKit(Plain, saga_id="b-6")
    kit.start(Order(customer="ada", amount_cents=5))
    assert kit.shown_sha256(Plain.ok) is None  # nothing recorded for unbound waits
    kit.approve(Plain.ok, seen_sha256="0" * 64)
    refused = _events(kit, SignalRejected)[-1]
    assert isinstance(refused, SignalRejected) and "changed since" in refused.reason
    assert kit.state is not None
    kit.approve(Plain.ok, seen_sha256=input_sha256(kit.state.data))
    kit.expect_status("completed")


class WholeData(Saga[Order]):
    type_name = "bound-whole-test"

    ok = approval(timeout=timedelta(days=1), bound=True)


def test_bound_without_a_view_binds_the_whole_data() -> None:
    kit = SagaTestKit(WholeData, saga_id="b-7")
    kit.start(Order(customer="ada", amount_cents=5))
    assert kit.state is not None
    assert kit.shown_sha256(WholeData.ok) == input_sha256(kit.state.data)
    kit.approve(WholeData.ok)  # the kit's approver sees the current view
    kit.expect_status("completed")


def test_the_audit_finds_an_approval_granted_on_another_view() -> None:
    kit = SagaTestKit(Refund, saga_id="b-8")
    kit.start(Order(customer="ada"))
    kit.succeed(Refund.quote, Quote(amount_cents=700))
    kit.approve(Refund.ok, by="alice")
    entries = list(kit.journal)
    at = next(
        i for i, e in enumerate(entries) if any(isinstance(x, SignalAccepted) for x in e.events)
    )
    forged_events = [
        x.model_copy(update={"seen_sha256": "f" * 64}) if isinstance(x, SignalAccepted) else x
        for x in entries[at].events
    ]
    entries[at] = entries[at].model_copy(update={"events": forged_events})
    findings = audit_saga(rehash(entries, at))
    assert [f.check for f in findings] == ["approval"]
    assert "granted on ffffffffffff" in findings[0].message


def test_a_signal_wait_cannot_be_bound() -> None:
    with pytest.raises(SagaDefinitionError, match="only an approval can be bound"):

        class Bad(Saga[Order]):
            type_name = "bad-bound-test"

            w = wait_for_signal(timeout=timedelta(days=1))
            w.bound = True
