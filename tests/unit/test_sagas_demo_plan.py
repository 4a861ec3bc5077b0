"""The demo's plan: every path of the reference sagas is exercised, deterministically."""

from __future__ import annotations

import pytest

from sagaline.orchestrator.demo.plan import MANAGER, RESEARCH_LEAD, plan
from sagaline.sagas.refund import RefundRequest

pytestmark = pytest.mark.unit


def test_full_demo_covers_every_path() -> None:
    demo = plan("abc123", refunds=10, research=3, enrichments=3)
    refunds = demo.of_kind("refund")
    assert [p.action for p in refunds] == [
        "approve", "reject", "approve", "reject", "approve",
        "reject", "approve", "reject", "ineligible", "timeout",
    ]  # fmt: skip
    seed = refunds[0].data
    assert isinstance(seed, RefundRequest)
    assert (seed.customer_id, seed.amount_cents) == (12345, 15_000)
    assert seed.order_id == "ORD-2026-03-15-abc123"
    assert {p.expect_status for p in refunds if p.action in ("reject", "timeout")} == {
        "compensated"
    }
    assert all(p.by for p in refunds if p.action in ("approve", "reject"))
    assert refunds[0].by == MANAGER
    research = demo.of_kind("research")
    assert [p.action for p in research] == ["none", "none", "resume"]
    assert research[-1].by == RESEARCH_LEAD
    enrich = demo.of_kind("enrichment")
    assert [(p.action, p.expect_status) for p in enrich] == [
        ("none", "completed"),
        ("retried", "completed"),
        ("none", "compensated"),
    ]
    assert len({p.saga_id for p in demo.sagas}) == 16
    assert len(demo.orders) == 10


def test_ineligible_refund_asks_for_more_than_the_order() -> None:
    demo = plan("x", refunds=4, research=0, enrichments=0)
    by_order = {order_id: cents for order_id, _c, cents, _d in demo.orders}
    for p in demo.of_kind("refund"):
        assert isinstance(p.data, RefundRequest)
        over = p.data.amount_cents > by_order[p.data.order_id]
        assert over == (p.action == "ineligible")


def test_small_sizes() -> None:
    assert [p.action for p in plan("s", refunds=1, research=1, enrichments=1).sagas] == [
        "approve",
        "none",
        "none",
    ]
    assert plan("s", refunds=0, research=0, enrichments=0).sagas == ()
