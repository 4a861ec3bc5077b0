"""The research agent (the seed shape): its LLM picks tools in a loop until it answers.

The LLM handler is a small deterministic planner so the test needs no model.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from pydantic import BaseModel, Field

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.policies import Budget, Retry
from sagaline.orchestrator.core.saga import Saga, agent, step, tool
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.base import Usage
from sagaline.schemas.events import (
    AgentGaveUp,
    AgentObservation,
    AgentTurnRecorded,
    BudgetExceeded,
    InputIgnored,
    SagaPaused,
    ToolCallRequested,
)

pytestmark = pytest.mark.unit

CORPUS = {
    "kafka-eos": "Kafka transactions make consume-process-produce exactly once.",
    "sagas": "A saga undoes completed steps with compensations in reverse order.",
    "outbox": "The outbox pattern commits the message with the business write.",
}


class ResearchData(BaseModel):
    question: str
    answer: str | None = None
    sources: list[str] = Field(default_factory=list)


class SearchArgs(BaseModel):
    query: str = Field(min_length=1)


class SearchResults(BaseModel):
    hits: list[str]


class FetchArgs(BaseModel):
    doc_id: str


class Page(BaseModel):
    doc_id: str
    text: str


class PublishArgs(BaseModel):
    title: str
    body: str


class Published(BaseModel):
    url: str


class ResearchAgent(Saga[ResearchData]):
    """Answer a question from a small corpus, choosing tools turn by turn."""

    type_name = "research"
    version = 1
    deadline = timedelta(hours=2)
    budget = Budget(max_llm_calls=20, max_tokens=50_000, max_retries=20)

    @tool(description="Search the corpus; returns document ids, best first.")
    def search(self, ctx: StepContext, args: SearchArgs) -> SearchResults:
        words = set(args.query.lower().split())
        scored = sorted(
            CORPUS,
            key=lambda d: (-len(words & set(CORPUS[d].lower().split())), d),
        )
        return SearchResults(hits=scored[:2])

    @tool(description="Read one document.", retry=Retry(max_attempts=3))
    def fetch(self, ctx: StepContext, args: FetchArgs) -> Page:
        return Page(doc_id=args.doc_id, text=CORPUS.get(args.doc_id, ""))

    @tool(risky=True, description="Publish the report to the team wiki.")
    def publish(self, ctx: StepContext, args: PublishArgs) -> Published:
        digest = hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:12]
        return Published(url=f"https://wiki.example/reports/{digest}")

    @publish.compensation
    def unpublish(self, ctx: StepContext, args: PublishArgs) -> None:
        ctx.logger.info("unpublishing %s", args.title)

    investigate = agent(tools=[search, fetch, publish], max_turns=6, timeout=timedelta(minutes=2))

    @investigate.llm
    def think(self, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
        data = turn.data_as(ResearchData)
        ctx.report_usage(llm_calls=1, tokens_in=40 * turn.turn, tokens_out=20)
        results = [h for h in turn.history if h.role == "tool"]
        if not results:
            return AgentDecision.call("search", SearchArgs(query=data.question))
        last = results[-1]
        if last.tool == "search":
            hits = json.loads(last.content)["hits"]
            return AgentDecision.call("fetch", FetchArgs(doc_id=hits[0]))
        page = Page.model_validate_json(last.content) if last.tool == "fetch" else None
        return AgentDecision.final(page.text if page else "no answer found")

    @investigate.on_answer
    def _answer(self, data: ResearchData, answer: str) -> ResearchData:
        return data.model_copy(update={"answer": answer})

    @step(retry=Retry(max_attempts=3), uses_db=False)
    def record_answer(self, ctx: StepContext, data: ResearchData) -> None:
        ctx.logger.info("answer to %r: %s", data.question, data.answer)


def kit_started(question: str = "how do sagas undo steps") -> SagaTestKit[ResearchData]:
    kit = SagaTestKit(ResearchAgent, saga_id="research-1")
    kit.start(ResearchData(question=question))
    return kit


def test_the_llm_picks_tools_until_it_answers() -> None:
    kit = kit_started()
    assert kit.run_steps() == 6  # 3 LLM turns, 2 tool calls, record_answer
    kit.expect_status("completed")
    assert kit.data.answer == CORPUS["sagas"]
    tools = [e.tool for e in kit.events if isinstance(e, ToolCallRequested)]
    assert tools == ["search", "fetch"]


def test_a_turn_task_carries_the_transcript_and_tool_schemas() -> None:
    kit = kit_started()
    kit.succeed("investigate#1", AgentDecision.call("search", SearchArgs(query="outbox")))
    kit.succeed("investigate.search#1", SearchResults(hits=["outbox"]))
    task = kit.expect_task("investigate#2")
    turn = AgentTurn.model_validate_json(task.args.data or b"")
    assert turn.turn == 2
    assert [t.name for t in turn.tools] == ["search", "fetch", "publish"]
    assert turn.tools[2].risky
    assert [h.role for h in turn.history] == ["assistant", "tool"]
    assert json.loads(turn.history[1].content) == {"hits": ["outbox"]}


def test_invalid_tool_arguments_go_back_to_the_llm_and_count_as_a_turn() -> None:
    kit = kit_started()
    kit.succeed("investigate#1", AgentDecision.call("search", {"query": ""}))
    kit.expect_event(AgentTurnRecorded, outcome="invalid", tool="search")
    obs = kit.expect_event(AgentObservation, ok=False)
    assert "invalid arguments" in obs.content  # type: ignore[union-attr]
    kit.expect_tasks(["investigate#2"])
    kit.succeed("investigate#2", AgentDecision.call("translate", {"text": "x"}))
    obs = kit.expect_event(AgentObservation, ok=False, turn=2)
    assert "unknown tool 'translate'" in obs.content  # type: ignore[union-attr]
    kit.expect_tasks(["investigate#3"])


def test_a_risky_tool_waits_for_approval() -> None:
    kit = kit_started()
    report = PublishArgs(title="Sagas", body="...")
    kit.succeed("investigate#1", AgentDecision.call("publish", report))
    kit.expect_no_tasks()
    kit.expect_waiting_for("investigate.publish#1")
    kit.expect_status("waiting")
    kit.approve("investigate", by="carol")  # the agent's name finds its open tool approval
    task = kit.expect_task("investigate.publish#1")
    assert PublishArgs.model_validate_json(task.args.data or b"") == report
    kit.succeed("investigate.publish#1", Published(url="https://wiki.example/r/1"))
    kit.succeed("investigate#2", AgentDecision.final("published"))
    kit.succeed("record_answer")
    kit.expect_status("completed")


def test_a_rejected_tool_call_is_reported_to_the_llm() -> None:
    kit = kit_started()
    kit.succeed("investigate#1", AgentDecision.call("publish", PublishArgs(title="t", body="b")))
    kit.reject("investigate.publish#1", by="carol", note="not yet")
    obs = kit.expect_event(AgentObservation, ok=False, tool="publish")
    assert "rejected by carol: not yet" in obs.content  # type: ignore[union-attr]
    kit.expect_tasks(["investigate#2"])


def test_published_report_is_unpublished_when_the_saga_is_cancelled() -> None:
    kit = kit_started()
    kit.succeed("investigate#1", AgentDecision.call("publish", PublishArgs(title="t", body="b")))
    kit.approve("investigate.publish#1")
    kit.succeed("investigate.publish#1", Published(url="u"))
    kit.cancel(by="ops", reason="wrong question")
    # the LLM turn 2 is in flight: compensation waits for it, then undoes the tool call
    kit.expect_status("compensating")
    kit.succeed("investigate#2", AgentDecision.final("done"))
    task = kit.pending_tasks[0]
    assert PublishArgs.model_validate_json(task.args.data or b"").title == "t"
    kit.expect_compensations(["investigate.publish#1"])
    kit.expect_status("cancelled")


def test_the_agent_gives_up_after_max_turns() -> None:
    kit = kit_started()
    for turn in range(1, 7):
        kit.succeed(f"investigate#{turn}", AgentDecision.call("search", {"nope": 1}))
    kit.expect_event(AgentGaveUp, turn=6)
    kit.expect_status("compensated")


def test_token_budget_pauses_the_saga_for_a_person() -> None:
    kit = kit_started()
    kit.succeed(
        "investigate#1",
        AgentDecision.call("search", SearchArgs(query="x")),
        usage=Usage(llm_calls=1, tokens_in=60_000, tokens_out=10),
    )
    kit.expect_event(BudgetExceeded, kind="tokens")
    kit.expect_event(SagaPaused, by="sagaline")
    kit.expect_status("paused")
    kit.expect_no_tasks()  # nothing new is dispatched while paused
    kit.resume(by="dana")
    kit.expect_tasks(["investigate.search#1"])


def test_handler_names_resolve_for_turns_and_tools() -> None:
    turn = ResearchAgent.handler_for("step", "investigate#4")
    assert turn.args_type is AgentTurn and turn.result_type is AgentDecision
    fetch = ResearchAgent.handler_for("step", "investigate.fetch#2")
    assert fetch.args_type is FetchArgs and fetch.result_type is Page
    undo = ResearchAgent.handler_for("compensate", "investigate.publish#3")
    assert undo.args_type is PublishArgs
    assert ResearchAgent.handler_for("step", "record_answer").uses_db is False


def test_operators_retry_the_current_turn_but_not_a_finished_tool_call() -> None:
    kit = kit_started()
    kit.fail("investigate#1", "rate limited")
    kit.retry_step("investigate#1", by="ops")  # do not wait for the backoff
    assert kit.expect_task("investigate#1").attempt == 2
    kit.succeed("investigate#1", AgentDecision.call("fetch", FetchArgs(doc_id="x")))
    kit.fail("investigate.fetch#1", "gone", retryable=False)
    kit.expect_tasks(["investigate#2"])  # the LLM hears about the failure
    kit.retry_step("investigate.fetch#1", by="ops")
    kit.expect_event(InputIgnored, reason="not_applicable")
    kit.expect_tasks(["investigate#2"])
