"""The reference sagas' step bodies against real PostgreSQL (the demo's business tables).

Each step runs with a real connection as ``ctx.db`` inside a transaction,
as the worker runs it; the tests read the tables afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sagaline.orchestrator.core.errors import RetryableError
from sagaline.orchestrator.core.testing import TestStepContext
from sagaline.orchestrator.demo.plan import plan, seed
from sagaline.sagas.enrichment import Contact, LeadBatch, LeadEnrichment
from sagaline.sagas.refund import RefundAgent, RefundRequest, provider_reverse_payment
from sagaline.sagas.tables import APP_SCHEMA_ENV, Tables, ensure_tables

pytestmark = pytest.mark.integration


@pytest.fixture
def tables(database_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tables]:
    monkeypatch.setenv(APP_SCHEMA_ENV, pg_schema)
    with psycopg.connect(database_url) as conn:
        ensure_tables(conn, pg_schema)
        ensure_tables(conn, pg_schema)  # idempotent
    yield Tables(pg_schema)


def _run(
    conn: psycopg.Connection, definition: Any, kind: str, step: str, data: Any, attempt: int = 1
) -> Any:
    handler = definition.handler_for(kind, step)
    ctx = TestStepContext(
        saga_id="saga-x",
        saga_type=definition.type_name,
        step=step,
        attempt=attempt,
        idempotency_key=f"saga-x/{step}/1",
        db=conn,
    )
    with conn.transaction():
        return handler.fn(ctx, data)


def test_refund_steps_and_compensation(database_url: str, tables: Tables) -> None:
    demo = plan("t1", refunds=1, research=0, enrichments=0)
    request = demo.sagas[0].data
    assert isinstance(request, RefundRequest)
    with psycopg.connect(database_url) as conn:
        seed(conn, tables, demo)
        eligibility = _run(conn, RefundAgent, "step", "check_eligibility", request)
        assert eligibility.eligible and eligibility.refundable_cents == 15_000
        too_much = request.model_copy(update={"amount_cents": 20_000})
        assert not _run(conn, RefundAgent, "step", "check_eligibility", too_much).eligible

        update = _run(conn, RefundAgent, "step", "update_customer_record", request)
        assert update.previous_refund_status == "none"
        row = conn.execute(
            f"SELECT refund_status, pending_refund_cents FROM {tables.customers}"
            " WHERE customer_id = 12345"
        ).fetchone()
        assert row == ("refund_pending", 15_000)

        folded = request.model_copy(update={"previous_refund_status": "none"})
        _run(conn, RefundAgent, "compensate", "update_customer_record", folded)
        row = conn.execute(
            f"SELECT refund_status, pending_refund_cents FROM {tables.customers}"
            " WHERE customer_id = 12345"
        ).fetchone()
        assert row == ("none", 0)


def test_payment_provider_honours_idempotency_keys(database_url: str, tables: Tables) -> None:
    with psycopg.connect(database_url) as conn:
        with conn.transaction():
            conn.execute(
                f"INSERT INTO {tables.orders} (order_id, customer_id, amount_cents, ordered_on,"
                " payment_id) VALUES ('o-1', 1, 15000, %s, 'pay-1')",
                (date(2026, 3, 15),),
            )

        def reverse() -> Any:
            with conn.transaction():
                return provider_reverse_payment(
                    conn,
                    tables,
                    idempotency_key="k-1",
                    saga_id="s",
                    order_id="o-1",
                    amount_cents=15_000,
                )

        first, again = reverse(), reverse()
        assert first == again
        count = conn.execute(f"SELECT count(*) FROM {tables.payments}").fetchone()
        refunded = conn.execute(
            f"SELECT refunded_cents FROM {tables.orders} WHERE order_id = 'o-1'"
        ).fetchone()
    assert count == (1,)
    assert refunded == (15_000,)


def test_enrichment_step_writes_a_lead_and_its_compensation_removes_it(
    database_url: str, tables: Tables
) -> None:
    batch = LeadBatch(
        batch_id="b",
        contacts=[
            Contact(email="ann@acme.example", name="Ann"),
            Contact(email="fay@flaky.example", name="Fay"),
        ],
    )
    with psycopg.connect(database_url) as conn:
        result = _run(conn, LeadEnrichment, "step", "enrich_1", batch)
        assert (result.company, result.skipped) == ("Acme Corp", False)
        assert _run(conn, LeadEnrichment, "step", "enrich_3", batch).skipped
        with pytest.raises(RetryableError):
            _run(conn, LeadEnrichment, "step", "enrich_2", batch, attempt=1)
        assert (
            _run(conn, LeadEnrichment, "step", "enrich_2", batch, attempt=3).company == "Flaky Ltd"
        )
        leads = conn.execute(
            sql.SQL("SELECT email FROM {} ORDER BY email").format(
                sql.Identifier(tables.schema, "leads")
            )
        ).fetchall()
        assert leads == [("ann@acme.example",), ("fay@flaky.example",)]
        _run(conn, LeadEnrichment, "compensate", "enrich_1", batch)
        left = conn.execute(f"SELECT email FROM {tables.leads}").fetchall()
    assert left == [("fay@flaky.example",)]
