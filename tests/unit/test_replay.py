"""Replay without Kafka: timelines and the strict re-decide over real decider journals."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from journal_builders import Refund, RefundData, RefundShorterTimeout, refund_saga, run_refund

from sagaline.orchestrator.core.replay_check import (
    ReplayError,
    check_saga,
    definition_lookup,
    event_diff,
    replay_entries,
)
from sagaline.orchestrator.core.saga import Saga, step
from sagaline.orchestrator.core.timeline import build_timeline, render_timeline
from sagaline.orchestrator.replay import load_definitions

pytestmark = pytest.mark.unit


#: the refund as a careless deploy changed it: a new step before the approval
RefundV1Changed = refund_saga(with_fraud_check=True)


class RefundExploding(Saga[RefundData]):
    """A deploy that dropped the later steps and whose routing hook crashes on recorded
    results (every later input diverges too)."""

    type_name = "test.refund"
    version = 1

    @step(compensate=None)
    def check_eligibility(self, ctx: Any, data: RefundData) -> None:
        return None

    @check_eligibility.route("update_record")
    def after_check(self, data: RefundData) -> str:
        raise RuntimeError("routing broke")

    @step
    def update_record(self, ctx: Any, data: RefundData) -> None:
        return None

    @update_record.compensation
    def undo_update_record(self, ctx: Any, data: RefundData) -> None:
        return None


def test_timeline_of_an_approved_refund() -> None:
    run = run_refund("saga-t1", "approved", approver="alice@example.com")
    t = build_timeline(run.entries)
    assert (t.saga_id, t.saga_type, t.status) == ("saga-t1", "test.refund", "completed")
    assert [i.seq for i in t.items] == [1, 2, 3, 4, 5, 6]
    assert t.items[1].since_previous_s == 1.0
    assert t.duration_s == 5.0
    assert [(a.step, a.outcome) for a in t.attempts] == [
        ("check_eligibility", "succeeded"),
        ("update_record", "succeeded"),
        ("reverse_payment", "succeeded"),
        ("notify", "succeeded"),
    ]
    assert [(w.name, w.outcome, w.by) for w in t.approvals] == [
        ("manager_ok", "approved", "alice@example.com")
    ]
    assert t.compensations == []
    text = render_timeline(t)
    assert "manager_ok (approval): approved by alice@example.com" in text
    assert "SignalSaga(name=manager_ok, by=alice@example.com, approved=True)" in text
    data = t.to_dict()
    assert data["partial"] is False
    assert data["items"][0]["at"].startswith("2026-03-15T09:00")


def test_timeline_of_a_failed_refund_lists_compensations_in_order() -> None:
    t = build_timeline(run_refund("saga-t2", "failed_notify").entries)
    assert t.status == "compensated"
    assert [(c.step, c.outcome, c.attempts) for c in t.compensations] == [
        ("reverse_payment", "compensated", 1),
        ("update_record", "compensated", 1),
    ]
    assert t.attempts[-1].outcome == "failed (final)"
    assert t.attempts[-1].error == "Declined: declined by the bank"


def test_timeline_of_timeout_and_waiting() -> None:
    t = build_timeline(run_refund("saga-t3", "timeout").entries)
    assert [(w.name, w.outcome) for w in t.approvals] == [("manager_ok", "timed out")]
    assert t.approvals[0].waited_s is not None and t.approvals[0].waited_s > 7 * 86400
    waiting = build_timeline(run_refund("saga-t4", "waiting").entries)
    assert waiting.status == "waiting"
    assert waiting.approvals[0].outcome == "open"


def test_strict_replay_of_unchanged_code_is_clean() -> None:
    runs = [run_refund(f"saga-{o}", o) for o in ("approved", "rejected", "timeout", "cancelled")]
    report = replay_entries(
        {r.saga_id: r.entries for r in runs},
        strict=True,
        definitions=definition_lookup([Refund]),
    )
    assert report.ok
    assert report.divergences == []
    assert report.checked_inputs == sum(len(r.entries) for r in runs)
    assert report.to_dict()["ok"] is True


def test_strict_replay_reports_where_changed_code_diverges() -> None:
    run = run_refund("saga-div", "approved")
    checked, divergences = check_saga(run.entries, definition_lookup([RefundV1Changed]))
    assert checked == len(run.entries)
    first = divergences[0]
    assert (first.saga_id, first.seq, first.input_type) == ("saga-div", 2, "StepSucceeded")
    assert first.problem == "current code decides differently"
    assert any("recorded 'update_record', now 'fraud_check'" in line for line in first.diff)
    assert "StepDispatched(step=fraud_check, attempt=1)" in first.redecided
    # later entries are judged from the recorded state: update_record's completion
    # leads to the approval under both versions, so only seq 2 diverges
    assert [d.seq for d in divergences] == [2]


def test_strict_replay_detects_a_changed_timeout() -> None:
    run = run_refund("saga-timeout-change", "approved")
    _, divergences = check_saga(run.entries, definition_lookup([RefundShorterTimeout]))
    assert [d.seq for d in divergences] == [3]
    assert any("WaitOpened.timeout_at" in line for line in divergences[0].diff)


def test_strict_replay_without_the_definition() -> None:
    run = run_refund("saga-nodef", "approved")
    report = replay_entries(
        {run.saga_id: run.entries}, strict=True, definitions=definition_lookup([])
    )
    assert not report.ok
    assert "no definition of test.refund version 1" in report.divergences[0].problem


def test_strict_replay_when_current_code_raises() -> None:
    run = run_refund("saga-boom", "approved")
    _, divergences = check_saga(run.entries, definition_lookup([RefundExploding]))
    # the crash is reported at the input that triggered it, and replay goes on
    assert (divergences[0].seq, divergences[0].problem) == (
        2,
        "current code raised RuntimeError: routing broke",
    )
    assert len(divergences) > 1
    assert divergences[0].diff[0].startswith("the recorded decision was: StepCompleted")


def test_non_strict_report_is_always_ok_and_unreadable_records_fail_strict() -> None:
    from sagaline.orchestrator.core.undecodable import Undecodable

    bad = Undecodable(0, 3, "k", "garbage")
    assert replay_entries({}, undecodable=[bad]).ok
    strict = replay_entries({}, strict=True, definitions=definition_lookup([]), undecodable=[bad])
    assert not strict.ok


def test_partial_histories_are_not_re_decided() -> None:
    run = run_refund("saga-part", "approved")
    report = replay_entries(
        {run.saga_id: run.entries[2:]}, strict=True, definitions=definition_lookup([Refund])
    )
    assert report.unverified == ["saga-part"]
    assert report.sagas[0].partial


def test_event_diff_is_empty_for_equal_lists() -> None:
    events = run_refund("saga-eq", "approved").entries[0].events
    assert event_diff(events, list(events)) == []
    assert event_diff(events, events[:-1])[0].startswith("event 2: recorded StepDispatched")


def test_definition_lookups() -> None:
    assert definition_lookup(Refund)("test.refund", 1) is Refund
    assert definition_lookup({("test.refund", 1): Refund})("test.refund", 1) is Refund
    assert definition_lookup({"test.refund": Refund})("test.refund", 2) is None

    class Registry:
        def get(self, type_name: str, version: int) -> type[Refund]:
            if type_name != "test.refund":
                raise KeyError(type_name)
            return Refund

    lookup = definition_lookup(Registry())
    assert lookup("test.refund", 1) is Refund
    assert lookup("other", 1) is None
    with pytest.raises(ReplayError):
        definition_lookup(42)


def test_load_definitions_from_a_module(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("replay_test_sagas")
    module.REGISTRY = [Refund]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "replay_test_sagas", module)
    assert load_definitions("replay_test_sagas:REGISTRY")("test.refund", 1) is Refund
    with pytest.raises(ReplayError, match="module:attribute"):
        load_definitions("no-colon")
    with pytest.raises(ReplayError, match="no module named 'no_such_module_here'"):
        load_definitions("no_such_module_here:REGISTRY")
    with pytest.raises(ReplayError, match="no attribute"):
        load_definitions("replay_test_sagas:MISSING")
