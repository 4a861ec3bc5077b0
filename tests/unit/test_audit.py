"""The audit on journals made by the real decider, clean and tampered with."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from journal_builders import T0, rehash, renumber, run_refund

from sagaline.orchestrator.core.audit_rules import (
    CHECKS,
    Finding,
    InboxRow,
    audit_entries,
    audit_inbox,
    audit_saga,
)
from sagaline.orchestrator.core.undecodable import Undecodable
from sagaline.schemas.events import (
    CompensationStarted,
    InputIgnored,
    SagaFinished,
    SignalAccepted,
    StepCompensated,
    StepCompleted,
    StepDispatched,
    WaitOpened,
)
from sagaline.schemas.journal import JournalEntry

pytestmark = pytest.mark.unit

OUTCOMES = ["approved", "rejected", "timeout", "failed_reverse", "failed_notify", "cancelled"]


def checks_of(findings: list[Finding]) -> set[str]:
    return {f.check for f in findings}


def with_events(entry: JournalEntry, events: Sequence[object]) -> JournalEntry:
    return entry.model_copy(update={"events": list(events)})


@pytest.mark.parametrize("outcome", [*OUTCOMES, "waiting"])
def test_clean_journals_pass(outcome: str) -> None:
    run = run_refund(f"saga-{outcome}", outcome)
    assert audit_saga(run.entries) == []


def test_clean_report_counts_sagas_and_statuses() -> None:
    runs = [run_refund(f"saga-{o}", o) for o in OUTCOMES]
    report = audit_entries({r.saga_id: r.entries for r in runs}, topic="j")
    assert report.ok, report.render()
    assert report.sagas == len(OUTCOMES)
    assert report.statuses == {"completed": 1, "compensated": 4, "cancelled": 1}
    assert report.compensations == 1 + 1 + 1 + 2 + 1
    data = report.to_dict()
    assert data["ok"] is True
    assert set(data["checks"]) == set(CHECKS)
    assert "audit passed" in report.render()


def test_redelivered_replies_are_recorded_and_still_clean() -> None:
    run = run_refund("saga-dup", "waiting")
    run.redeliver_last_reply()
    assert isinstance(run.entries[-1].events[0], InputIgnored)
    assert audit_saga(run.entries) == []


def test_dropped_entry_breaks_the_chain() -> None:
    entries = run_refund("saga-drop", "approved").entries
    tampered = entries[:2] + entries[3:]
    findings = audit_saga(tampered)
    chain = [f for f in findings if f.check == "chain"]
    assert chain, findings
    assert any("expected seq 3" in f.message for f in chain)
    assert any("prev_hash" in f.message for f in chain)


def test_edited_entry_is_detected_by_its_hash() -> None:
    entries = run_refund("saga-edit", "approved").entries
    signal = entries[3]
    accepted = signal.events[0]
    assert isinstance(accepted, SignalAccepted)
    forged = accepted.model_copy(update={"by": "intern@example.com"})
    entries[3] = with_events(signal, [forged, *signal.events[1:]])
    findings = audit_saga(entries)
    assert [(f.check, f.seq) for f in findings] == [("chain", 4)]
    assert "hash does not match its content" in findings[0].message


def test_reordered_entries_are_detected() -> None:
    entries = run_refund("saga-order", "approved").entries
    entries[2], entries[3] = entries[3], entries[2]
    findings = audit_saga(entries)
    assert "chain" in checks_of(findings)
    assert any("expected seq" in f.message for f in findings)


def test_injected_dispatch_after_completion_is_found_even_when_re_signed() -> None:
    entries = run_refund("saga-redo", "approved").entries
    first_dispatch = entries[0].events[-1]
    assert isinstance(first_dispatch, StepDispatched)
    again = first_dispatch.model_copy(update={"attempt": 2, "task_id": "forged"})
    last = entries[-1]
    entries[-1] = with_events(last, [*last.events[:-1], again, last.events[-1]])
    findings = audit_saga(rehash(entries, start=len(entries) - 1))
    assert checks_of(findings) == {"dispatch"}
    assert "check_eligibility (run 1) dispatched again (attempt 2)" in findings[0].message


def test_a_second_completion_of_one_key_is_a_double_side_effect() -> None:
    entries = run_refund("saga-twice", "approved").entries
    completed = entries[4].events[0]
    assert isinstance(completed, StepCompleted) and completed.step == "reverse_payment"
    last = entries[-1]
    entries[-1] = with_events(last, [completed, *last.events])
    findings = audit_saga(rehash(entries, start=len(entries) - 1))
    assert "side_effects" in checks_of(findings)
    assert any("reverse_payment (run 1) completed twice" in f.message for f in findings)


def test_double_terminal_status_and_decisions_after_it() -> None:
    entries = run_refund("saga-end", "approved").entries
    finished = entries[-1].events[-1]
    assert isinstance(finished, SagaFinished)
    again = finished.model_copy(update={"status": "compensated"})
    extra = entries[-1].model_copy(update={"seq": entries[-1].seq + 1, "events": [again]})
    findings = audit_saga(rehash([*entries, extra], start=len(entries)))
    terminal = [f for f in findings if f.check == "terminal"]
    assert len(terminal) == 2  # a decision after the end, and a second terminal status
    assert any("terminal status 2" in f.message for f in terminal)


def test_ignored_inputs_after_the_end_are_fine() -> None:
    run = run_refund("saga-late", "approved")
    run.redeliver_last_reply()
    assert isinstance(run.entries[-1].events[0], InputIgnored)
    assert audit_saga(run.entries) == []


def test_compensations_in_the_wrong_order() -> None:
    entries = run_refund("saga-comp", "failed_notify").entries
    start = entries[5].events[1]
    assert isinstance(start, CompensationStarted)
    assert start.steps == ["reverse_payment", "update_record"]
    wrong = start.model_copy(update={"steps": ["update_record", "reverse_payment"]})
    entries[5] = with_events(entries[5], [entries[5].events[0], wrong, *entries[5].events[2:]])
    # swap which compensation succeeded first
    first, second = entries[6].events[0], entries[7].events[0]
    assert isinstance(first, StepCompensated) and isinstance(second, StepCompensated)
    entries[6] = with_events(entries[6], [second, *entries[6].events[1:]])
    entries[7] = with_events(entries[7], [first, *entries[7].events[1:]])
    findings = audit_saga(rehash(entries, start=5))
    messages = [f.message for f in findings if f.check == "compensation"]
    assert any("not the completed compensable steps in reverse order" in m for m in messages)
    assert any("update_record compensated before reverse_payment" in m for m in messages)


def test_missing_and_duplicate_compensations() -> None:
    entries = run_refund("saga-miss", "failed_notify").entries
    # drop the compensation of update_record, keep the terminal status
    last = entries[-1]
    entries[-1] = with_events(last, [e for e in last.events if not isinstance(e, StepCompensated)])
    findings = audit_saga(rehash(entries, start=len(entries) - 1))
    assert any(
        f.check == "compensation" and "['update_record'] were not undone" in f.message
        for f in findings
    )

    entries = run_refund("saga-dupcomp", "failed_notify").entries
    done = entries[6].events[0]
    entries[-1] = with_events(entries[-1], [done, *entries[-1].events])
    findings = audit_saga(rehash(entries, start=len(entries) - 1))
    assert any("reverse_payment compensated 2 times" in f.message for f in findings)


def test_compensating_a_step_that_never_completed() -> None:
    entries = run_refund("saga-never", "rejected").entries
    bogus = StepCompensated(at=T0, step="reverse_payment", attempt=1)
    entries[-1] = with_events(entries[-1], [bogus, *entries[-1].events])
    findings = audit_saga(rehash(entries, start=len(entries) - 1))
    assert any("reverse_payment compensated but it never completed" in f.message for f in findings)


def test_step_dispatched_while_approval_is_open() -> None:
    entries = run_refund("saga-sneak", "approved").entries
    # move the dispatch of reverse_payment before the approval was given
    wait_entry, signal_entry = entries[2], entries[3]
    assert isinstance(wait_entry.events[-1], WaitOpened)
    dispatch = signal_entry.events[-1]
    assert isinstance(dispatch, StepDispatched)
    entries[2] = with_events(wait_entry, [*wait_entry.events, dispatch])
    entries[3] = with_events(signal_entry, signal_entry.events[:-1])
    findings = audit_saga(rehash(entries, start=2))
    assert any(
        f.check == "approval"
        and "reverse_payment dispatched while approval manager_ok" in f.message
        for f in findings
    )


def test_leaving_an_approval_without_a_decision() -> None:
    entries = run_refund("saga-skip-approval", "approved").entries
    signal_entry = entries[3]
    assert isinstance(signal_entry.events[0], SignalAccepted)
    entries[3] = with_events(signal_entry, signal_entry.events[1:])
    findings = audit_saga(rehash(entries, start=3))
    assert any(f.check == "approval" and "left approval manager_ok" in f.message for f in findings)


def test_approval_without_identity() -> None:
    entries = run_refund("saga-anon", "approved").entries
    accepted = entries[3].events[0]
    assert isinstance(accepted, SignalAccepted)
    anonymous = accepted.model_copy(update={"by": "  "})
    entries[3] = with_events(entries[3], [anonymous, *entries[3].events[1:]])
    findings = audit_saga(rehash(entries, start=3))
    assert [f.check for f in findings] == ["approval"]
    assert "without the identity" in findings[0].message


def test_partial_history_checks_only_the_chain() -> None:
    entries = run_refund("saga-since", "approved").entries[2:]
    report = audit_entries({"saga-since": entries}, topic="j", since=T0 + timedelta(seconds=3))
    assert report.ok, report.render()
    assert report.partial == ["saga-since"]
    # the links inside the partial history are still verified
    broken = [entries[0], *entries[2:]]
    report = audit_entries({"saga-since": broken}, topic="j", since=T0)
    assert [f.check for f in report.findings] == ["chain", "chain"]


def test_renumbered_forgery_still_fails_other_checks() -> None:
    """A forger who drops the approval entry and re-signs everything defeats the chain,
    but not the approval check."""
    entries = run_refund("saga-forged", "approved").entries
    signal_entry = entries[3]
    forged = with_events(signal_entry, signal_entry.events[1:])
    findings = audit_saga(renumber([*entries[:3], forged, *entries[4:]]))
    assert checks_of(findings) == {"approval"}


def test_undecodable_records_are_findings() -> None:
    bad = Undecodable(partition=0, offset=7, key="saga-x", error="truncated")
    report = audit_entries({}, topic="j", undecodable=[bad])
    assert not report.ok
    assert report.findings[0].check == "decode"
    assert "j[0]@7" in report.findings[0].message


def test_inbox_rows_compared_with_the_journal() -> None:
    run = run_refund("saga-inbox", "approved")
    by_saga = {run.saga_id: run.entries}
    keys = [
        e.idempotency_key
        for entry in run.entries
        for e in entry.events
        if isinstance(e, StepDispatched)
    ]
    rows = [InboxRow(k, run.saga_id, "step", "s", "succeeded") for k in keys]
    assert audit_inbox(rows, by_saga) == []
    stray = InboxRow("not-dispatched", run.saga_id, "step", "notify", "succeeded")
    twice = rows[0]
    other_saga = InboxRow("x", "another-saga", "step", "notify", "succeeded")
    findings = audit_inbox([*rows, stray, twice, other_saga], by_saga)
    messages = sorted(f.message for f in findings)
    assert len(messages) == 2
    assert "never dispatched" in messages[1] or "never dispatched" in messages[0]
    assert any("more than once" in m for m in messages)


def test_a_worker_effect_the_ended_saga_never_recorded_is_found() -> None:
    run = run_refund("saga-leak", "failed_reverse")
    by_saga = {run.saga_id: run.entries}
    reverse = next(
        e
        for entry in run.entries
        for e in entry.events
        if isinstance(e, StepDispatched) and e.step == "reverse_payment"
    )
    failed = InboxRow(reverse.idempotency_key, run.saga_id, "step", "reverse_payment", "failed")
    assert audit_inbox([failed], by_saga) == []
    # the worker says the payment went through, the saga recorded a failure and ended
    leaked = InboxRow(reverse.idempotency_key, run.saga_id, "step", "reverse_payment", "succeeded")
    findings = audit_inbox([leaked], by_saga)
    assert [f.check for f in findings] == ["side_effects"]
    assert "ended compensated without recording it" in findings[0].message
    # while the saga is still running, an unrecorded success is just a reply in flight
    waiting = run_refund("saga-flight", "waiting")
    update = next(
        e
        for entry in waiting.entries
        for e in entry.events
        if isinstance(e, StepDispatched) and e.step == "update_record"
    )
    row = InboxRow(update.idempotency_key, waiting.saga_id, "step", "update_record", "succeeded")
    assert audit_inbox([row], {waiting.saga_id: waiting.entries[:2]}) == []
