"""Property tests of fork: random definitions, random histories, a random fork point.

For every random run of the decider's property test (retries, timeouts,
approvals, loops, pivots, cancels, pauses, operator commands) and every step
the run dispatched, a fork from that step:

* starts (nothing in these definitions makes a fork impossible);
* replays strictly: re-deciding its journal entry gives the same events;
* folds: the fork's journal folds to its state;
* reuses, in order, exactly the results the source recorded before the fork point;
* dispatches the step it forked from, and only tasks still in flight.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_decider_properties import Run, build, drive, results, shapes

from sagaline.orchestrator.core.decider import decide
from sagaline.orchestrator.core.fold import fold
from sagaline.orchestrator.core.fork import plan_fork
from sagaline.orchestrator.core.journal import record_decision
from sagaline.orchestrator.core.replay_check import check_saga
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.events import SagaForked, StepCompleted, StepDispatched
from sagaline.schemas.tasks import ExecuteStep

pytestmark = pytest.mark.unit


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(shape=shapes, data=st.data(), actions=st.integers(0, 14))
def test_a_fork_from_any_dispatched_step_replays_strictly(
    shape: st.SearchStrategy[object], data: st.DataObject, actions: int
) -> None:
    definition = build(shape)  # type: ignore[arg-type]
    run = Run(definition, llm=results)
    drive(run, data, actions)
    kit = SagaTestKit(definition, saga_id="s-1", check_fold=False)
    for _, inp, _ in run.history:  # the run's inputs, journaled
        kit.deliver(inp)
    journal = kit.journal
    steps = sorted({e.step for x in journal for e in x.events if isinstance(e, StepDispatched)})
    if not steps:
        return
    from_step = data.draw(st.sampled_from(steps))
    start = plan_fork(
        journal, from_step, saga_id="f-1", version=1, now=run.now + timedelta(hours=1)
    )
    decision = decide(definition, None, start)
    assert decision.rejected is None, decision.rejected
    entry, state = record_decision(None, start, decision)
    assert entry is not None and state is not None
    assert fold(entry.events) == decision.state
    checked, divergences = check_saga([entry], lambda _t, _v: definition)
    assert checked == 1 and divergences == []
    forked = entry.events[-1]
    assert isinstance(forked, SagaForked) and forked.source_seq == start.fork.source_seq  # type: ignore[union-attr]
    before = [x for x in journal if x.seq <= forked.source_seq]
    reused = [(e.step, e.result) for e in entry.events if isinstance(e, StepCompleted)]
    recorded = [
        (e.step, e.result) for x in before for e in x.events if isinstance(e, StepCompleted)
    ]
    assert reused == recorded
    sent = [o.record for o in decision.outgoing]
    assert all(isinstance(r, ExecuteStep) for r in sent)
    assert from_step in {r.step for r in sent if isinstance(r, ExecuteStep)}
    running = {s.task_id for s in state.steps.values() if s.status == "running"}
    assert {r.task_id for r in sent if isinstance(r, ExecuteStep)} == running
