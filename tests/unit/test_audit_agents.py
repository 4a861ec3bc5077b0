"""The approval check on agents: a risky tool runs only after a person approved it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.audit_rules import audit_saga
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.journal import entry_hash
from sagaline.orchestrator.core.replay_check import definition_lookup, replay_entries
from sagaline.orchestrator.core.saga import Saga, agent, tool
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.events import StepDispatched, WaitOpened
from sagaline.schemas.journal import JournalEntry

pytestmark = pytest.mark.unit


class Question(BaseModel):
    text: str
    answer: str | None = None


class PublishArgs(BaseModel):
    title: str


class Published(BaseModel):
    url: str


class Writer(Saga[Question]):
    """An agent that may publish (a risky tool) before it answers."""

    type_name = "test.writer"
    version = 1

    @tool(risky=True, description="Publish to the wiki.")
    def publish(self, ctx: StepContext, args: PublishArgs) -> Published:
        return Published(url="https://wiki.example/1")

    @publish.compensation
    def unpublish(self, ctx: StepContext, args: PublishArgs) -> None:
        return None

    write = agent(tools=[publish], max_turns=4, timeout=timedelta(minutes=5))

    @write.llm
    def think(self, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
        return AgentDecision.final("done")

    @write.on_answer
    def _answer(self, data: Question, answer: str) -> Question:
        return data.model_copy(update={"answer": answer})


def started() -> SagaTestKit[Question]:
    kit = SagaTestKit(Writer, saga_id="writer-1")
    kit.start(Question(text="publish the report"))
    kit.succeed("write#1", AgentDecision.call("publish", PublishArgs(title="report")))
    return kit


def approved() -> SagaTestKit[Question]:
    kit = started()
    kit.approve("write.publish#1", by="carol@example.com")
    kit.succeed("write.publish#1", Published(url="u"))
    kit.succeed("write#2", AgentDecision.final("published"))
    return kit


def rejected() -> SagaTestKit[Question]:
    kit = started()
    kit.reject("write.publish#1", by="carol@example.com", note="not yet")
    kit.succeed("write#2", AgentDecision.final("not published"))
    return kit


def cancelled_after_publishing() -> SagaTestKit[Question]:
    kit = started()
    kit.approve("write.publish#1", by="carol@example.com")
    kit.succeed("write.publish#1", Published(url="u"))
    kit.cancel(by="ops@example.com", reason="wrong question")
    kit.succeed("write#2", AgentDecision.final("done"))
    kit.compensated("write.publish#1")
    return kit


SCENARIOS: dict[str, tuple[Callable[[], SagaTestKit[Question]], str]] = {
    "approved": (approved, "completed"),
    "rejected": (rejected, "completed"),
    "cancelled after publishing": (cancelled_after_publishing, "cancelled"),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_agent_journals_are_clean(name: str) -> None:
    scenario, status = SCENARIOS[name]
    kit = scenario()
    kit.expect_status(status)
    assert audit_saga(kit.journal) == []
    report = replay_entries(
        {kit.saga_id: kit.journal}, strict=True, definitions=definition_lookup([Writer])
    )
    assert report.ok, [d.render() for d in report.divergences]


def _resign(entries: Sequence[JournalEntry]) -> list[JournalEntry]:
    out: list[JournalEntry] = []
    prev = "0" * 64
    for entry in entries:
        unsigned = entry.model_copy(update={"prev_hash": prev, "hash": ""})
        signed = unsigned.model_copy(update={"hash": entry_hash(unsigned)})
        out.append(signed)
        prev = signed.hash
    return out


def _publish_dispatch(entries: Sequence[JournalEntry]) -> tuple[int, StepDispatched]:
    for i, entry in enumerate(entries):
        for event in entry.events:
            if isinstance(event, StepDispatched) and event.step == "write.publish#1":
                return i, event
    raise AssertionError("the publish tool was never dispatched")


def test_a_risky_tool_run_before_its_approval_is_found() -> None:
    entries = list(approved().journal)
    index, dispatch = _publish_dispatch(entries)
    opened = next(
        i for i, e in enumerate(entries) if any(isinstance(x, WaitOpened) for x in e.events)
    )
    # move the tool's dispatch into the entry that opened its approval
    entries[opened] = entries[opened].model_copy(
        update={"events": [*entries[opened].events, dispatch]}
    )
    entries[index] = entries[index].model_copy(
        update={"events": [e for e in entries[index].events if e is not dispatch]}
    )
    findings = audit_saga(_resign(entries))
    assert any(
        f.check == "approval" and "write.publish#1 dispatched before it was approved" in f.message
        for f in findings
    )


def test_a_rejected_risky_tool_that_runs_anyway_is_found() -> None:
    _, dispatch = _publish_dispatch(approved().journal)
    entries = list(rejected().journal)
    last = entries[-1]
    entries[-1] = last.model_copy(update={"events": [dispatch, *last.events]})
    findings = audit_saga(_resign(entries))
    assert any(
        f.check == "approval" and "dispatched although it was not approved" in f.message
        for f in findings
    )
