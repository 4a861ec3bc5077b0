"""What the demo runs: the sagas it starts, what a person does to each, what must come out.

The plan is deterministic for a run id and sizes.  Refunds: the seed case
(customer 12345, $150, order of March 15 2026) is approved; the others are
approved or rejected in turn, one asks for more than its order (ineligible)
and one is never answered (its approval times out).  Research: ordinary
questions, and one asked "in depth", which exceeds the token budget and
pauses until a person resumes it.  Enrichment: a clean batch, a batch with
a rate-limited contact (retried), and a batch whose provider is down
(compensated).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel

from sagaline.orchestrator.core.saga import Saga
from sagaline.sagas.enrichment import Contact, LeadBatch, LeadEnrichment
from sagaline.sagas.refund import DemoRefundAgent, RefundRequest
from sagaline.sagas.research import ResearchAgent, ResearchData
from sagaline.sagas.tables import Tables

__all__ = ["MANAGER", "RESEARCH_LEAD", "Action", "DemoPlan", "PlannedSaga", "plan", "seed"]

Action = Literal["approve", "reject", "timeout", "ineligible", "resume", "none", "retried"]

MANAGER = "maria.manager@shop.example"
SECOND_MANAGER = "sam.supervisor@shop.example"
RESEARCH_LEAD = "rita.lead@research.example"

QUESTIONS = (
    "How do Kafka transactions give exactly-once processing, and what is 3 * 12 + 4?",
    "What is a saga compensation and when does it run?",
    "Why must a payment API receive idempotency keys?",
    "How does a compacted topic help a restarting process?",
)
DEEP_QUESTION = (
    "Explain in depth how idempotency keys, the outbox and Kafka transactions work together"
)


@dataclass(frozen=True)
class PlannedSaga:
    """One saga of the demo and its expected outcome."""

    saga_id: str
    kind: Literal["refund", "research", "enrichment"]
    definition: type[Saga[Any]]
    data: BaseModel
    action: Action
    expect_status: Literal["completed", "compensated"]
    by: str | None = None

    @property
    def paid(self) -> bool:
        """A refund whose payment must be reversed exactly once."""
        return self.kind == "refund" and self.action == "approve"


@dataclass(frozen=True)
class DemoPlan:
    run_id: str
    sagas: tuple[PlannedSaga, ...]
    orders: tuple[tuple[str, int, int, date], ...]  # (order_id, customer_id, cents, ordered_on)

    def of_kind(self, kind: str) -> list[PlannedSaga]:
        return [s for s in self.sagas if s.kind == kind]


def _refund_actions(n: int) -> list[Action]:
    if n <= 0:
        return []
    actions: list[Action] = ["approve" if i % 2 == 0 else "reject" for i in range(n)]
    if n >= 2:
        actions[-1] = "timeout"
    if n >= 4:
        actions[-2] = "ineligible"
    return actions


def _refunds(run_id: str, count: int) -> tuple[list[PlannedSaga], list[tuple[str, int, int, date]]]:
    sagas: list[PlannedSaga] = []
    orders: list[tuple[str, int, int, date]] = []
    for i, action in enumerate(_refund_actions(count)):
        customer = 12345 + i
        order_id = f"ORD-2026-03-15-{run_id}" if i == 0 else f"ORD-{run_id}-{i:02d}"
        cents = 15_000 if i == 0 else 2_000 + 1_000 * i
        orders.append((order_id, customer, cents, date(2026, 3, 15)))
        asked = cents + 5_000 if action == "ineligible" else cents
        sagas.append(
            PlannedSaga(
                saga_id=f"refund-{run_id}-{i:02d}",
                kind="refund",
                definition=DemoRefundAgent,
                data=RefundRequest(
                    customer_id=customer,
                    order_id=order_id,
                    amount_cents=asked,
                    reason="item arrived damaged" if i == 0 else "changed mind",
                ),
                action=action,
                expect_status="compensated" if action in ("reject", "timeout") else "completed",
                by=MANAGER if i % 4 != 2 else SECOND_MANAGER,
            )
        )
    return sagas, orders


def _research(run_id: str, count: int) -> list[PlannedSaga]:
    sagas: list[PlannedSaga] = []
    for i in range(count):
        deep = count >= 2 and i == count - 1
        sagas.append(
            PlannedSaga(
                saga_id=f"research-{run_id}-{i:02d}",
                kind="research",
                definition=ResearchAgent,
                data=ResearchData(
                    question=DEEP_QUESTION if deep else QUESTIONS[i % len(QUESTIONS)]
                ),
                action="resume" if deep else "none",
                expect_status="completed",
                by=RESEARCH_LEAD if deep else None,
            )
        )
    return sagas


def _enrichments(run_id: str, count: int) -> list[PlannedSaga]:
    sagas: list[PlannedSaga] = []
    for i in range(count):
        variant = i % 3
        domains = {
            0: ["acme.example", "hooli.example", "globex.example"],
            1: ["initech.example", "flaky.example"],
            2: ["umbrella.example", "down.example", "acme.example"],
        }[variant]
        contacts = [
            Contact(email=f"contact{j}.{i}@{d}", name=f"Contact {j} of batch {i}")
            for j, d in enumerate(domains)
        ]
        sagas.append(
            PlannedSaga(
                saga_id=f"enrich-{run_id}-{i:02d}",
                kind="enrichment",
                definition=LeadEnrichment,
                data=LeadBatch(batch_id=f"batch-{run_id}-{i:02d}", contacts=contacts),
                action={0: "none", 1: "retried", 2: "none"}[variant],  # type: ignore[arg-type]
                expect_status="compensated" if variant == 2 else "completed",
            )
        )
    return sagas


def plan(run_id: str, *, refunds: int, research: int, enrichments: int) -> DemoPlan:
    """The sagas of one demo run."""
    sagas, orders = _refunds(run_id, refunds)
    sagas += _research(run_id, research)
    sagas += _enrichments(run_id, enrichments)
    return DemoPlan(run_id, tuple(sagas), tuple(orders))


def seed(conn: Any, tables: Tables, demo: DemoPlan) -> None:
    """Insert the orders and (re)set the customers the refunds need; commit."""
    with conn.transaction():
        for order_id, customer, cents, ordered_on in demo.orders:
            conn.execute(
                f"INSERT INTO {tables.customers} (customer_id, name, email) VALUES (%s, %s, %s)"
                " ON CONFLICT (customer_id) DO UPDATE SET refund_status = 'none',"
                " pending_refund_cents = 0, updated_at = now()",
                (customer, f"Customer {customer}", f"customer{customer}@mail.example"),
            )
            conn.execute(
                f"INSERT INTO {tables.orders} (order_id, customer_id, amount_cents, ordered_on,"
                " payment_id) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (order_id) DO NOTHING",
                (order_id, customer, cents, ordered_on, f"pay-{order_id}"),
            )
