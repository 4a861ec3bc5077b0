"""Fork (issue 15, item 3): a new saga copying another's history up to a step."""

from __future__ import annotations

from datetime import timedelta

import pytest
from journal_builders import rehash
from pydantic import BaseModel

from sagaline.orchestrator.core.audit_rules import audit_entries
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import TestKitError
from sagaline.orchestrator.core.fork import ForkError, plan_fork
from sagaline.orchestrator.core.replay_check import check_saga
from sagaline.orchestrator.core.saga import Saga, approval, step
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.events import SagaForked, SignalAccepted, StepCompleted, StepDispatched
from sagaline.schemas.tasks import ExecuteStep

pytestmark = pytest.mark.unit


class Doc(BaseModel):
    topic: str
    notes: list[str] = []


class Note(BaseModel):
    text: str


def _add(data: Doc, result: Note) -> Doc:
    return data.model_copy(update={"notes": [*data.notes, result.text]})


class Pipeline(Saga[Doc]):
    type_name = "fork-test"
    version = 1

    @step
    def research(self, ctx: StepContext, data: Doc) -> Note:
        return Note(text=f"research {ctx.attempt}")

    @research.on_result
    def _r(self, data: Doc, result: Note) -> Doc:
        return _add(data, result)

    ok = approval(timeout=timedelta(days=1))

    @step
    def draft(self, ctx: StepContext, data: Doc) -> Note:
        return Note(text="draft v1")

    @draft.on_result
    def _d(self, data: Doc, result: Note) -> Doc:
        return _add(data, result)

    @step
    def publish(self, ctx: StepContext, data: Doc) -> Note:
        return Note(text="published")

    @publish.on_result
    def _p(self, data: Doc, result: Note) -> Doc:
        return _add(data, result)


class PipelineV2(Pipeline):
    type_name = "fork-test"
    version = 2

    @step
    def draft(self, ctx: StepContext, data: Doc) -> Note:
        return Note(text="draft v2")

    @draft.on_result
    def _d(self, data: Doc, result: Note) -> Doc:
        return _add(data, result)


def _source() -> SagaTestKit[Doc]:
    kit = SagaTestKit(Pipeline, saga_id="src")
    kit.start(Doc(topic="sagas"))
    kit.fail(Pipeline.research, "flaky")  # attempt 1 fails, attempt 2 succeeds
    kit.advance(seconds=2)
    kit.succeed(Pipeline.research, Note(text="research from the web"))
    kit.approve(Pipeline.ok, by="alice")
    kit.succeed(Pipeline.draft, Note(text="a bad draft"))
    kit.succeed(Pipeline.publish, Note(text="published"))
    kit.expect_status("completed")
    return kit


def _dispatched(kit: SagaTestKit[object]) -> list[str]:
    return [o.record.step for o in kit.outgoing if isinstance(o.record, ExecuteStep)]


def test_a_fork_reuses_the_results_before_the_step_and_reruns_from_it() -> None:
    source = _source()
    source.advance(hours=1)
    fork = source.fork(Pipeline.draft, definition=PipelineV2, saga_id="fork-1")
    assert _dispatched(fork) == ["draft"]  # research is not run again
    assert fork.data.notes == ["research from the web"]  # its recorded result reused
    assert fork.expect_task(Pipeline.draft).idempotency_key == "fork-1/draft/1"
    forked = fork.events[-1]
    assert isinstance(forked, SagaForked)
    assert (forked.source_saga_id, forked.from_step, forked.copied) == ("src", "draft", 4)
    accepted = [e for e in fork.events if isinstance(e, SignalAccepted)]
    assert [a.by for a in accepted] == ["alice"]  # the approval is copied, not asked again
    draft = next(e for e in fork.events if isinstance(e, StepDispatched) and e.step == "draft")
    assert draft.at == source.now  # dispatched at the fork's time
    fork.run_steps()  # the current code: draft v2
    fork.expect_status("completed")
    assert fork.data.notes == ["research from the web", "draft v2", "published"]
    assert len(fork.journal) == 3  # one entry for the fork, then draft and publish


def test_a_fork_replays_strictly_and_the_audit_follows_the_link() -> None:
    source = _source()
    fork = source.fork("draft", definition=PipelineV2, saga_id="fork-2")
    fork.run_steps()
    versions = {1: Pipeline, 2: PipelineV2}
    checked, divergences = check_saga(fork.journal, lambda _t, v: versions[v])
    assert checked == 3 and divergences == []
    report = audit_entries({"src": source.journal, "fork-2": fork.journal})
    assert report.findings == []
    alone = audit_entries({"fork-2": fork.journal})
    assert [f.check for f in alone.findings] == ["fork"]
    assert "not in the audited range" in alone.findings[0].message


def test_the_audit_finds_a_fork_whose_copy_is_not_its_source() -> None:
    source = _source()
    fork = source.fork("draft", saga_id="fork-3")
    first = fork.journal[0]
    assert isinstance(first.input, StartSaga) and first.input.fork is not None
    origin = first.input.fork
    forged = origin.model_copy(update={"inputs": origin.inputs[:-2] + origin.inputs[-1:]})
    tampered = first.model_copy(update={"input": first.input.model_copy(update={"fork": forged})})
    findings = audit_entries({"src": source.journal, "fork-3": rehash([tampered])}).findings
    assert [f.message for f in findings] == ["fork of src: the copied inputs are not the source's"]


def test_forking_from_the_first_step_is_a_fresh_start_with_the_same_input() -> None:
    source = _source()
    fork = source.fork(Pipeline.research, saga_id="fork-4")
    assert _dispatched(fork) == ["research"]
    assert not [e for e in fork.events if isinstance(e, StepCompleted)]
    assert fork.data.topic == "sagas"


def test_mistakes_are_one_clear_line() -> None:
    source = _source()
    with pytest.raises(ForkError, match="never dispatched step 'nope'"):
        plan_fork(source.journal, "nope", saga_id="x", version=1, now=source.now)
    fork = source.fork("draft", saga_id="fork-5")
    with pytest.raises(ForkError, match="is itself a fork of 'src'"):
        plan_fork(fork.journal, "draft", saga_id="y", version=1, now=source.now)

    class NoDraft(Saga[Doc]):
        type_name = "fork-test"
        version = 3

        @step
        def research(self, ctx: StepContext, data: Doc) -> Note:
            return Note(text="r")

    with pytest.raises(TestKitError, match="does not dispatch draft where the source did"):
        source.fork("draft", definition=NoDraft, saga_id="fork-6")


def test_a_duplicate_fork_start_is_ignored() -> None:
    source = _source()
    start = plan_fork(source.journal, "draft", saga_id="fork-7", version=1, now=source.now)
    kit = SagaTestKit(Pipeline, saga_id="fork-7", now=source.now)
    kit.deliver(start)
    kit.deliver(start)  # the command read again after a crash
    assert len(_dispatched(kit)) == 1
    assert kit.journal[-1].events[-1].event == "InputIgnored"
