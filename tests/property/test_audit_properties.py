"""Property: whatever the decider records, the audit accepts and a strict replay agrees.

The random definitions and input sequences of ``test_decider_properties``
(duplicates, stale attempts, timers, wrong signals, cancels, pauses, crashes,
parallel branches, agents with risky tools) are journaled with
``sagaline.orchestrator.core.journal.record_decision``.  The audit must find nothing (no
false alarm on any behaviour the decider allows), and re-deciding every
recorded input on the folded state must give the recorded events.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_decider_properties import (
    DECISIONS,
    Run,
    build,
    build_mix,
    drive,
    finish,
    mix_shapes,
    results,
    shapes,
)

from sagaline.orchestrator.core.audit_rules import audit_saga
from sagaline.orchestrator.core.journal import record_decision
from sagaline.orchestrator.core.payloads import to_payload
from sagaline.orchestrator.core.replay_check import check_saga, definition_lookup
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import ExecuteStep

pytestmark = pytest.mark.unit


def journal_of(run: Run) -> list[JournalEntry]:
    entries: list[JournalEntry] = []
    stamped: SagaState | None = None
    for _, inp, decision in run.history:
        entry, after = record_decision(stamped, inp, decision)
        if entry is not None:
            entries.append(entry)
            stamped = after
    return entries


def assert_clean(run: Run) -> None:
    entries = journal_of(run)
    findings = audit_saga(entries)
    assert findings == [], [f.render() for f in findings]
    checked, divergences = check_saga(entries, definition_lookup(run.definition))
    assert divergences == [], [d.render() for d in divergences]
    assert checked == len(entries)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(shape=shapes, data=st.data(), actions=st.integers(0, 14))
def test_random_sagas_pass_the_audit(shape: Any, data: st.DataObject, actions: int) -> None:
    run = Run(build(shape), llm=results)
    drive(run, data, actions)
    finish(run)
    assert_clean(run)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(shape=mix_shapes, data=st.data(), actions=st.integers(0, 16))
def test_parallel_sleep_and_agents_pass_the_audit(
    shape: Any, data: st.DataObject, actions: int
) -> None:
    run = Run(build_mix(shape))

    def llm(task: ExecuteStep) -> Any:
        if "#" not in task.step or "." in task.step:
            return None
        return to_payload(data.draw(st.sampled_from(DECISIONS), label="llm"))

    run.llm = llm
    drive(run, data, actions)
    finish(run)
    assert_clean(run)
