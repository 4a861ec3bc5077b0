"""The demo's verdict: outcomes as planned, side effects exactly once, no LLM call repeated.

Every check reads the business tables the steps wrote (through their own
transactions) and compares them with the plan and the final saga snapshots.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sagaline.orchestrator.demo.plan import DemoPlan, PlannedSaga
from sagaline.sagas.refund import RefundRequest
from sagaline.sagas.tables import Tables
from sagaline.schemas.payload import from_payload
from sagaline.schemas.state import SagaState

__all__ = [
    "Check",
    "SagaOutcome",
    "check_effects",
    "check_outcomes",
    "check_read_model",
    "outcome_of",
    "read_model_statuses",
]


@dataclass(frozen=True)
class Check:
    """One verdict: its name, whether it held, and what was seen."""

    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SagaOutcome:
    """How one saga ended, next to what the plan expected."""

    saga_id: str
    kind: str
    action: str
    expected: str
    status: str
    reason: str | None
    llm_calls: int
    tokens: int
    retries: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def outcome_of(planned: PlannedSaga, state: SagaState | None) -> SagaOutcome:
    return SagaOutcome(
        saga_id=planned.saga_id,
        kind=planned.kind,
        action=planned.action,
        expected=planned.expect_status,
        status=state.status if state else "missing",
        reason=state.outcome_reason if state else None,
        llm_calls=state.usage.llm_calls if state else 0,
        tokens=(state.usage.tokens_in + state.usage.tokens_out) if state else 0,
        retries=state.retries_used if state else 0,
    )


def check_outcomes(demo: DemoPlan, states: dict[str, SagaState]) -> list[Check]:
    """Each saga ended as planned; approvals name their approver; budgets paused."""
    checks: list[Check] = []
    wrong = [
        f"{p.saga_id}: {states[p.saga_id].status if p.saga_id in states else 'missing'}"
        f" (expected {p.expect_status})"
        for p in demo.sagas
        if p.saga_id not in states or states[p.saga_id].status != p.expect_status
    ]
    checks.append(
        Check("outcomes", not wrong, "; ".join(wrong) or f"all {len(demo.sagas)} sagas as planned")
    )
    approvers: list[str] = []
    for p in demo.of_kind("refund"):
        state = states.get(p.saga_id)
        if state is None or p.action not in ("approve", "reject"):
            continue
        data = from_payload(state.data, RefundRequest)
        # with signing on the orchestrator records "SIGNER for CLAIMED" (docs/security.md)
        if (data.approved_by or "").rpartition(" for ")[2] != p.by:
            approvers.append(f"{p.saga_id}: decided by {data.approved_by!r}, expected {p.by!r}")
    checks.append(
        Check(
            "approver_identity",
            not approvers,
            "; ".join(approvers) or "every decision names its approver",
        )
    )
    paused = [
        p.saga_id
        for p in demo.of_kind("research")
        if p.action == "resume"
        and "tokens" not in (states[p.saga_id].budget_exceeded if p.saga_id in states else [])
    ]
    checks.append(
        Check(
            "budget_pause",
            not paused,
            f"no budget pause recorded for {paused}"
            if paused
            else "the in-depth question paused on its token budget, then was resumed",
        )
    )
    retried = [
        p.saga_id
        for p in demo.of_kind("enrichment")
        if p.action == "retried" and (p.saga_id not in states or states[p.saga_id].retries_used < 1)
    ]
    checks.append(
        Check(
            "retries",
            not retried,
            f"no retry recorded for {retried}"
            if retried
            else "the rate-limited contact was retried",
        )
    )
    return checks


def _rows(db: Any, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return list(db.execute(sql, params).fetchall())


def _count_by_saga(db: Any, table: str, ids: list[str]) -> dict[str, int]:
    rows = _rows(
        db,
        f"SELECT saga_id, count(*) FROM {table} WHERE saga_id = ANY(%s) GROUP BY saga_id",
        (ids,),
    )
    return {str(r[0]): int(r[1]) for r in rows}


def _check_payments(db: Any, tables: Tables, demo: DemoPlan, ids: list[str]) -> Check:
    paid = {p.saga_id for p in demo.sagas if p.paid}
    payments = _count_by_saga(db, tables.payments, ids)
    dup_keys = _rows(
        db,
        f"SELECT idempotency_key, count(*) FROM {tables.payments} WHERE saga_id = ANY(%s)"
        " GROUP BY idempotency_key HAVING count(*) > 1",
        (ids,),
    )
    wrong = [
        f"{s}: {payments.get(s, 0)} reversals"
        for s in ids
        if payments.get(s, 0) != (1 if s in paid else 0)
    ]
    return Check(
        "payments_once",
        not wrong and not dup_keys,
        "; ".join(wrong + [f"key {k} used {n} times" for k, n in dup_keys])
        or f"{len(paid)} approved refunds paid exactly once, nothing paid for the others",
    )


def _check_notifications(db: Any, tables: Tables, demo: DemoPlan, ids: list[str]) -> Check:
    paid = {p.saga_id for p in demo.sagas if p.paid}
    notes = _count_by_saga(db, tables.notifications, ids)
    wrong = [
        f"{s}: {notes.get(s, 0)} notifications"
        for s in ids
        if notes.get(s, 0) != (1 if s in paid else 0)
    ]
    return Check(
        "notifications_once",
        not wrong,
        "; ".join(wrong) or f"{len(paid)} customers notified exactly once",
    )


def _check_customers(db: Any, tables: Tables, demo: DemoPlan) -> Check:
    customers = [
        d.customer_id for p in demo.of_kind("refund") if isinstance(d := p.data, RefundRequest)
    ]
    records = {
        int(r[0]): (r[1], int(r[2]))
        for r in _rows(
            db,
            f"SELECT customer_id, refund_status, pending_refund_cents FROM {tables.customers}"
            " WHERE customer_id = ANY(%s)",
            (customers,),
        )
    }
    wrong = []
    for p in demo.of_kind("refund"):
        assert isinstance(p.data, RefundRequest)
        status, pending = records.get(p.data.customer_id, ("missing", -1))
        want = "refunded" if p.paid else "none"
        if status != want or pending != 0:
            wrong.append(
                f"customer {p.data.customer_id}: {status}, {pending} cents pending (want {want}, 0)"
            )
    return Check(
        "customer_records",
        not wrong,
        "; ".join(wrong)
        or "refunded records updated; rejected and timed-out ones restored by compensation",
    )


def _check_leads(db: Any, tables: Tables, demo: DemoPlan, ids: list[str]) -> Check:
    leads = _count_by_saga(db, tables.leads, ids)
    dup_leads = _rows(
        db,
        f"SELECT saga_id, email, count(*) FROM {tables.leads} WHERE saga_id = ANY(%s)"
        " GROUP BY saga_id, email HAVING count(*) > 1",
        (ids,),
    )
    wrong = []
    for p in demo.of_kind("enrichment"):
        contacts = len(getattr(p.data, "contacts", []))
        expected = contacts if p.expect_status == "completed" else 0
        if leads.get(p.saga_id, 0) != expected:
            wrong.append(f"{p.saga_id}: {leads.get(p.saga_id, 0)} leads (want {expected})")
    return Check(
        "leads_once",
        not wrong and not dup_leads,
        "; ".join(wrong + [f"{s} {e} stored {n} times" for s, e, n in dup_leads])
        or "one lead per contact of completed batches; compensated batches left none",
    )


def _check_llm_calls(
    db: Any, tables: Tables, ids: list[str], states: dict[str, SagaState]
) -> Check:
    calls = _rows(
        db,
        f"SELECT idempotency_key, count(*) FROM {tables.llm_calls}"
        " WHERE saga_id = ANY(%s) GROUP BY idempotency_key",
        (ids,),
    )
    repeated = [(k, n) for k, n in calls if n > 1]
    ledger_total = sum(n for _, n in calls)
    recorded_total = sum(s.usage.llm_calls for i, s in states.items() if i in set(ids))
    return Check(
        "llm_calls_not_repeated",
        not repeated and ledger_total == recorded_total,
        (
            f"{ledger_total} LLM calls in the ledger, {len(calls)} distinct turns,"
            f" {recorded_total} calls in the sagas' recorded usage"
            + (f"; repeated: {repeated[:5]}" if repeated else "")
        ),
    )


def _check_reports(db: Any, tables: Tables, demo: DemoPlan, ids: list[str]) -> Check:
    reports = _count_by_saga(db, tables.research_reports, ids)
    wrong = [
        f"{p.saga_id}: {reports.get(p.saga_id, 0)} reports"
        for p in demo.of_kind("research")
        if reports.get(p.saga_id, 0) != 1
    ]
    return Check(
        "reports_once", not wrong, "; ".join(wrong) or "one report filed per research saga"
    )


def check_effects(
    db: Any, tables: Tables, demo: DemoPlan, states: dict[str, SagaState]
) -> list[Check]:
    """Side effects in the business tables happened exactly as often as they should."""
    ids = [p.saga_id for p in demo.sagas]
    return [
        _check_payments(db, tables, demo, ids),
        _check_notifications(db, tables, demo, ids),
        _check_customers(db, tables, demo),
        _check_leads(db, tables, demo, ids),
        _check_llm_calls(db, tables, ids, states),
        _check_reports(db, tables, demo, ids),
    ]


def read_model_statuses(db: Any, schema: str, ids: list[str]) -> dict[str, str]:
    """Status of each saga in the projection's read model (``sagaline list``)."""
    rows = _rows(
        db, f"SELECT saga_id, status FROM {schema}.saga_status WHERE saga_id = ANY(%s)", (ids,)
    )
    return {str(r[0]): str(r[1]) for r in rows}


def check_read_model(rows: dict[str, str], states: dict[str, SagaState], ids: list[str]) -> Check:
    """The read model the projection keeps from the journal agrees with the state topic."""
    wrong = [
        f"{i}: read model {rows.get(i, 'missing')},"
        f" state {states[i].status if i in states else '?'}"
        for i in ids
        if i not in states or rows.get(i) != states[i].status
    ]
    return Check(
        "read_model",
        not wrong,
        "; ".join(wrong[:5]) or f"the journal projection shows the same {len(ids)} final statuses",
    )
