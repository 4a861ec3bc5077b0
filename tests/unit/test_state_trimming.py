"""Live state only: finished steps and old transcript items leave the snapshot.

The journal keeps everything (folding it gives the snapshot, the audit and a
strict replay accept it); the snapshot keeps what a later decision can need:
running, failed and compensable steps, steps a loop may run again, and the
latest few finished steps as a summary for ``status``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.bench.long import (
    AGENT_WINDOW,
    LookupArgs,
    LookupResult,
    StepsData,
    agent_saga,
    linear_saga,
)
from sagaline.orchestrator.cli.status_view import summary, text
from sagaline.orchestrator.core.agents import AgentDecision
from sagaline.orchestrator.core.audit_rules import audit_saga
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.fold import fold
from sagaline.orchestrator.core.replay_check import definition_lookup, replay_entries
from sagaline.orchestrator.core.saga import Node, Saga, step
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.orchestrator.core.trimming import trim_plan
from sagaline.sagas import REGISTRY
from sagaline.schemas.codec import default_codec
from sagaline.schemas.events import StateTrimmed, StepDispatched
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.state import RECENT_STEPS, SagaState

pytestmark = pytest.mark.unit


def _clean(kit: SagaTestKit[StepsData], definition: type[Saga[StepsData]]) -> None:
    assert audit_saga(kit.journal) == []
    report = replay_entries(
        {kit.saga_id: kit.journal}, strict=True, definitions=definition_lookup([definition])
    )
    assert report.ok, [d.render() for d in report.divergences]


def test_a_long_linear_saga_keeps_a_small_snapshot() -> None:
    saga = linear_saga(60)
    kit = SagaTestKit(saga, saga_id="long-1")  # checks fold(journal) == snapshot each input
    kit.start(StepsData())
    sizes = []
    for node in saga.sequence:
        kit.succeed(node.name)
        state = kit.state
        assert state is not None
        assert len(state.steps) <= 2
        assert len(state.recent_steps) <= RECENT_STEPS
        sizes.append(len(default_codec().encode(state)))
    kit.expect_status("completed")
    state = kit.state
    assert state is not None
    assert state.steps_retired + len(state.steps) == 60
    assert [s.name for s in state.recent_steps][-1] == "s58"
    assert state.attempts_retired == state.steps_retired  # one attempt each
    assert max(sizes[15:-1]) - min(sizes[15:-1]) <= 4  # flat, not growing per step
    _clean(kit, saga)


def test_status_still_shows_the_finished_steps() -> None:
    saga = linear_saga(12)
    kit = SagaTestKit(saga, saga_id="long-2")
    kit.start(StepsData())
    kit.fail("s0", "flaky")  # retried: s0 takes two attempts
    kit.advance(seconds=20)
    for node in saga.sequence:
        kit.succeed(node.name)
    state = kit.state
    assert state is not None
    assert state.attempts_retired == state.steps_retired + 1  # the projection's total
    doc = summary(state)
    shown = list(doc["steps"])
    assert shown == [f"s{i}" for i in range(12 - RECENT_STEPS - 1, 12)]
    assert all(doc["steps"][n]["status"] == "succeeded" for n in shown)
    assert doc["earlier_steps"] == 12 - RECENT_STEPS - 1
    rendered = text(state)
    assert f"({12 - RECENT_STEPS - 1} earlier steps done" in rendered
    assert "s11  succeeded" in rendered


def test_compensable_steps_stay_and_are_undone_newest_first() -> None:
    saga = linear_saga(30, compensable=True)
    kit = SagaTestKit(saga, saga_id="long-3")
    kit.start(StepsData())
    for node in saga.sequence[:-1]:
        kit.succeed(node.name)
    kit.fail("s29", "no", error_type="Boom", retryable=False)
    expected = [f"s{i}" for i in range(28, -1, -1)]
    kit.expect_compensations(expected)
    kit.expect_status("compensated")
    assert not any(isinstance(e, StateTrimmed) and e.steps for e in kit.events)
    _clean(kit, saga)


class LoopData(BaseModel):
    rounds: int = 0


class Counted(BaseModel):
    by: int


class Loop(Saga[LoopData]):
    """first → again → check, and check routes back to ``again`` twice."""

    type_name = "test.trim-loop"

    @step(compensate=None)
    def first(self, ctx: StepContext, data: LoopData) -> None:
        return None

    @step(compensate=None)
    def again(self, ctx: StepContext, data: LoopData) -> Counted:
        return Counted(by=1)

    @again.on_result
    def _count(self, data: LoopData, result: Counted) -> LoopData:
        return data.model_copy(update={"rounds": data.rounds + result.by})

    @step(compensate=None)
    def check(self, ctx: StepContext, data: LoopData) -> None:
        return None

    @check.route("again", "done")
    def _route(self, data: LoopData) -> Node | None:
        return type(self).again if data.rounds < 3 else None

    @step(compensate=None)
    def done(self, ctx: StepContext, data: LoopData) -> None:
        return None


def test_steps_a_loop_may_run_again_keep_their_runs() -> None:
    assert trim_plan(Loop).once_steps == frozenset({"first"})
    kit = SagaTestKit(Loop, saga_id="loop-1")
    kit.start(LoopData())
    kit.succeed("first")
    for _ in range(3):
        kit.succeed("again", Counted(by=1))
        kit.succeed("check")
    kit.succeed("done")
    kit.expect_status("completed")
    keys = [e.idempotency_key for e in kit.events if isinstance(e, StepDispatched)]
    assert len(keys) == len(set(keys)) == 8  # every run its own key
    state = kit.state
    assert state is not None and "first" not in state.steps and "again" in state.steps


def test_a_long_agent_keeps_its_window_and_retires_old_turns() -> None:
    saga = agent_saga(40)
    kit = SagaTestKit(saga, saga_id="agent-1")
    kit.start(StepsData())
    for turn in range(1, 41):
        kit.succeed(f"think#{turn}", AgentDecision.call("lookup", LookupArgs(query="q")))
        task = kit.expect_task(f"think.lookup#{turn}")
        assert task.step == f"think.lookup#{turn}"
        kit.succeed(f"think.lookup#{turn}", LookupResult(text="r"))
        state = kit.state
        assert state is not None
        assert len(state.agents["think"].history) <= AGENT_WINDOW
        assert len(state.steps) <= 3
    turn_task = kit.expect_task("think#41")
    assert len(json.loads(turn_task.args.data or b"{}")["history"]) == AGENT_WINDOW
    kit.succeed("think#41", AgentDecision.final("done"))
    kit.expect_status("completed")
    _clean(kit, saga)


def test_old_journals_replay_strictly_with_trimming_code() -> None:
    """Journals written before trimming existed have no StateTrimmed: still no divergence."""
    raw = json.loads((Path(__file__).parent / "data" / "journals_v1.json").read_text())
    by_saga = {
        name: [JournalEntry.model_validate_json(json.dumps(e)) for e in entries]
        for name, entries in raw.items()
        if name.startswith(("refund", "research", "enrichment"))
    }
    assert len(by_saga) >= 6
    report = replay_entries(by_saga, strict=True, definitions=definition_lookup(REGISTRY))
    assert report.ok, [d.render() for d in report.divergences]


def test_a_snapshot_written_before_trimming_is_trimmed_by_its_next_decision() -> None:
    saga = linear_saga(8)
    kit = SagaTestKit(saga, saga_id="old-1", check_fold=False)
    kit.start(StepsData())
    for node in saga.sequence[:6]:
        kit.succeed(node.name)
    # the snapshot as the code before trimming kept it: every step still there
    old = fold(e for e in kit.events if not isinstance(e, StateTrimmed))
    assert old is not None and len(old.steps) == 7 and old.steps_retired == 0
    codec = default_codec()
    kit.state = codec.decode(codec.encode(old), SagaState)
    kit.succeed("s6")
    state = kit.state
    assert state is not None
    assert sorted(state.steps) == ["s7"]
    assert state.steps_retired == 7
    assert [s.name for s in state.recent_steps] == [f"s{i}" for i in range(2, 7)]
