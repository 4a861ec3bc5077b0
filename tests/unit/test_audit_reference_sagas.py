"""The audit and the strict replay accept what the reference sagas really record.

Each scenario runs a saga of ``sagas/`` through the test kit (the real
decider and journal); the audit must find nothing and a strict replay with
``sagas:REGISTRY`` must re-decide every input identically.  This guards the
demo's final audit against false alarms on agents, fan-outs, retries,
budgets and pauses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sagaline.orchestrator.core.audit_rules import audit_saga
from sagaline.orchestrator.core.replay_check import definition_lookup, replay_entries
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.sagas import REGISTRY
from sagaline.sagas.enrichment import (
    MAX_CONTACTS,
    BatchRanked,
    Contact,
    EnrichedContact,
    LeadBatch,
    LeadEnrichment,
)
from sagaline.sagas.refund import (
    APPROVAL_TIMEOUT,
    CustomerUpdate,
    Eligibility,
    Notification,
    PaymentReversal,
    RefundAgent,
    RefundRequest,
)
from sagaline.sagas.research import ReportFiled, ResearchAgent, ResearchData
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.tasks import CompensateStep

pytestmark = pytest.mark.unit

SEED = RefundRequest(
    customer_id=12345, order_id="ORD-2026-03-15", amount_cents=15_000, reason="damaged"
)
SLOTS = [f"enrich_{i}" for i in range(1, MAX_CONTACTS + 1)]


def _compensate_all(kit: SagaTestKit[Any]) -> None:
    """Answer every pending compensation with a success (the worker's reply)."""
    for _ in range(20):
        pending = [t for t in kit.pending_tasks if isinstance(t, CompensateStep)]
        if not pending:
            return
        kit.compensated(pending[0].step)


def _refund_until_approval() -> SagaTestKit[RefundRequest]:
    kit = SagaTestKit(RefundAgent, saga_id="refund-12345")
    kit.start(SEED)
    kit.succeed("check_eligibility", Eligibility(eligible=True, note="ok", refundable_cents=15_000))
    kit.succeed(
        "update_customer_record",
        CustomerUpdate(previous_refund_status="none", pending_refund_cents=15_000),
    )
    return kit


def refund_approved() -> SagaTestKit[Any]:
    kit = _refund_until_approval()
    kit.approve("manager_approval", by="manager@shop.example", note="looks fine")
    kit.succeed("reverse_payment", PaymentReversal(reversal_id="rev-1", amount_cents=15_000))
    kit.deliver(kit.inputs[-1])  # the relay published the reply twice
    kit.succeed("notify_customer", Notification(notification_id=7, channel="email"))
    kit.approve("manager_approval", by="late@shop.example")  # after the end: refused
    return kit


def refund_rejected() -> SagaTestKit[Any]:
    kit = _refund_until_approval()
    kit.reject("manager_approval", by="manager@shop.example", note="outside policy")
    _compensate_all(kit)
    return kit


def refund_timed_out() -> SagaTestKit[Any]:
    kit = _refund_until_approval()
    kit.advance(APPROVAL_TIMEOUT * 1.01)
    _compensate_all(kit)
    return kit


def refund_cancelled_while_paying() -> SagaTestKit[Any]:
    kit = _refund_until_approval()
    kit.approve("manager_approval", by="manager@shop.example")
    kit.cancel(by="ops@shop.example", reason="customer withdrew")
    kit.succeed("reverse_payment", PaymentReversal(reversal_id="rev-9", amount_cents=15_000))
    _compensate_all(kit)
    return kit


def _batch(*emails: str) -> LeadBatch:
    return LeadBatch(
        batch_id="b-1", contacts=[Contact(email=e, name=e.split("@")[0]) for e in emails]
    )


def _enriched(slot: int, email: str, score: int) -> EnrichedContact:
    return EnrichedContact(slot=slot, email=email, company="c", industry="i", score=score)


def enrichment_with_retries() -> SagaTestKit[Any]:
    kit = SagaTestKit(LeadEnrichment, saga_id="leads-1")
    kit.start(_batch("ann@acme.example", "fay@flaky.example"))
    kit.fail("enrich_2", "rate-limited")
    kit.advance(seconds=1)
    kit.fail("enrich_2", "rate-limited")
    kit.advance(seconds=2)
    kit.succeed("enrich_2", _enriched(2, "fay@flaky.example", 30))
    kit.succeed("enrich_1", _enriched(1, "ann@acme.example", 40))
    for slot in SLOTS[2:]:
        kit.succeed(slot, EnrichedContact(slot=int(slot[-1]), skipped=True))
    kit.succeed("rank_batch", BatchRanked(enriched=2, top_email="ann@acme.example"))
    return kit


def enrichment_compensated() -> SagaTestKit[Any]:
    kit = SagaTestKit(LeadEnrichment, saga_id="leads-2")
    kit.start(_batch("ann@acme.example", "dan@down.example"))
    kit.succeed("enrich_1", _enriched(1, "ann@acme.example", 40))
    kit.succeed("enrich_3", EnrichedContact(slot=3, skipped=True))
    kit.succeed("enrich_4", EnrichedContact(slot=4, skipped=True))
    for _ in range(3):
        kit.fail("enrich_2", "provider unavailable")
        kit.advance(seconds=5)
    kit.fail("enrich_2", "provider unavailable")
    _compensate_all(kit)
    return kit


def _run_agent(kit: SagaTestKit[ResearchData]) -> None:
    ran = 0
    while kit.pending_tasks and kit.pending_tasks[0].step != "file_report" and ran < 50:
        ran += kit.run_steps(max_tasks=1)


def research_answered() -> SagaTestKit[Any]:
    kit = SagaTestKit(ResearchAgent, saga_id="research-1")
    kit.start(
        ResearchData(
            question="How do Kafka transactions give exactly-once processing, "
            "and what is 3 * 12 + 4?"
        )
    )
    _run_agent(kit)
    kit.succeed("file_report", ReportFiled(report_id="research-1"))
    return kit


def research_over_budget_resumed() -> SagaTestKit[Any]:
    kit = SagaTestKit(ResearchAgent, saga_id="research-2")
    kit.start(
        ResearchData(
            question="Explain in depth how idempotency keys, the outbox and Kafka "
            "transactions work together"
        )
    )
    _run_agent(kit)
    kit.resume(by="lead@research.example", reason="worth the tokens")
    _run_agent(kit)
    kit.succeed("file_report", ReportFiled(report_id="research-2"))
    return kit


SCENARIOS: dict[str, tuple[Callable[[], SagaTestKit[Any]], str]] = {
    "refund approved (with a duplicate reply and a late approval)": (refund_approved, "completed"),
    "refund rejected": (refund_rejected, "compensated"),
    "refund approval timed out": (refund_timed_out, "compensated"),
    "refund cancelled while paying": (refund_cancelled_while_paying, "cancelled"),
    "enrichment with retries": (enrichment_with_retries, "completed"),
    "enrichment compensated": (enrichment_compensated, "compensated"),
    "research answered": (research_answered, "completed"),
    "research over budget, resumed": (research_over_budget_resumed, "completed"),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_reference_saga_journals_pass_the_audit(name: str) -> None:
    scenario, status = SCENARIOS[name]
    kit = scenario()
    kit.expect_status(status)
    journal: list[JournalEntry] = kit.journal
    findings = audit_saga(journal)
    assert findings == [], "\n".join(f.render() for f in findings)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_reference_saga_journals_replay_strictly(name: str) -> None:
    kit = SCENARIOS[name][0]()
    report = replay_entries(
        {kit.saga_id: kit.journal}, strict=True, definitions=definition_lookup(REGISTRY)
    )
    assert report.ok, "\n".join(d.render() for d in report.divergences)
    assert report.checked_inputs == len(kit.journal)
