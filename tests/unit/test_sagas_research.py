"""The research agent: the scripted LLM picks tools until it answers; the token budget pauses."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from sagaline.orchestrator.core.agents import AgentTurn, HistoryItem, ToolInfo
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.sagas import corpus
from sagaline.sagas.llm import ChatMessage, ChatResponse, ScriptedModel, ToolCall, ToolSpec
from sagaline.sagas.research import (
    MAX_TURNS,
    TOKEN_BUDGET,
    ReportFiled,
    ResearchAgent,
    ResearchData,
    research_policy,
    transcript,
)
from sagaline.schemas.events import AgentGaveUp, BudgetExceeded

pytestmark = pytest.mark.unit

DEEP_QUESTION = (
    "Explain in depth how idempotency keys, the outbox and Kafka transactions work together"
)
QUESTION = "How do Kafka transactions give exactly-once processing, and what is 3 * 12 + 4?"


def _run_agent(kit: SagaTestKit[ResearchData]) -> int:
    """Run tasks in-process until only ``file_report`` (a database step) is left."""
    ran = 0
    while kit.pending_tasks and kit.pending_tasks[0].step != "file_report" and ran < 50:
        ran += kit.run_steps(max_tasks=1)
    return ran


def test_agent_searches_reads_calculates_and_answers() -> None:
    kit = SagaTestKit(ResearchAgent, saga_id="research-1")
    kit.start(ResearchData(question=QUESTION))
    _run_agent(kit)
    kit.expect_tasks(["file_report"])
    steps = [o.record.step for o in kit.outgoing if hasattr(o.record, "step")]
    assert steps[:3] == ["investigate#1", "investigate.search_web#1", "investigate#2"]
    assert "investigate.read_document#2" in steps
    assert "investigate.calculator#4" in steps
    answer = kit.data.answer or ""
    assert "[kafka-transactions]" in answer
    assert "3 * 12 + 4 = 40" in answer
    state = kit.state
    assert state is not None
    assert state.usage.llm_calls == 5
    assert 0 < state.usage.tokens_in + state.usage.tokens_out <= TOKEN_BUDGET
    kit.succeed("file_report", ReportFiled(report_id="research-1"))
    kit.expect_status("completed")


def test_in_depth_question_exceeds_the_token_budget_and_pauses() -> None:
    kit = SagaTestKit(ResearchAgent)
    kit.start(ResearchData(question=DEEP_QUESTION))
    _run_agent(kit)
    kit.expect_status("paused")
    exceeded = kit.expect_event(BudgetExceeded, kind="tokens")
    assert isinstance(exceeded, BudgetExceeded)
    assert exceeded.used > exceeded.limit == TOKEN_BUDGET
    assert kit.data.answer is None
    # A person decides to let it finish: the agent continues where it stopped.
    kit.resume(by="lead@research.example", reason="worth the tokens")
    _run_agent(kit)
    kit.expect_tasks(["file_report"])
    assert "[outbox]" in (kit.data.answer or "")


def test_unknown_document_goes_back_to_the_llm_as_an_error() -> None:
    model = ScriptedModel(research_policy)
    turn = AgentTurn(
        agent="investigate",
        turn=3,
        max_turns=MAX_TURNS,
        data={"question": "What is a saga?"},
        tools=[ToolInfo(name="read_document")],
        history=[
            HistoryItem(turn=1, role="assistant", tool="search_web", content="call search_web {}"),
            HistoryItem(turn=1, role="tool", tool="search_web", content='{"hits": []}'),
            HistoryItem(
                turn=2,
                role="assistant",
                tool="read_document",
                content='call read_document {"doc_id": "x"}',
            ),
            HistoryItem(turn=2, role="error", tool="read_document", content="no document 'x'"),
        ],
    )
    messages = transcript(turn)
    assert [m.role for m in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    assert messages[-1].content == "error: no document 'x'"
    assert messages[-1].tool_call_id == messages[-2].tool_calls[0].id
    answer = model.complete(messages)
    assert answer.content == "The corpus has nothing on this question."
    assert answer.tokens_in > 0 and answer.tokens_out > 0


def test_same_conversation_same_decision() -> None:
    kit_a = SagaTestKit(ResearchAgent, saga_id="a")
    kit_b = SagaTestKit(ResearchAgent, saga_id="b")
    for kit in (kit_a, kit_b):
        kit.start(ResearchData(question=QUESTION))
        _run_agent(kit)
    assert kit_a.data == kit_b.data


def test_corpus_tools() -> None:
    assert corpus.search("kafka transactions exactly once")[0].doc_id == "kafka-transactions"
    assert corpus.calculate("(2 + 3) * 4 - 10 / 4") == 17.5
    for bad in ("__import__('os')", "1/0", "2 ** 1000", "a + 1"):
        with pytest.raises(ValueError):
            corpus.calculate(bad)
    with pytest.raises(corpus.UnknownDocument):
        corpus.read("nope")


def test_an_llm_that_never_answers_gives_up_after_max_turns() -> None:
    def stubborn(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> ChatResponse:
        return ChatResponse(
            tool_calls=[ToolCall(id="c", name="search_web", arguments={"query": "more"})]
        )

    saga = ResearchAgent()
    saga.model = ScriptedModel(stubborn)
    kit = SagaTestKit(ResearchAgent)
    kit.start(ResearchData(question=QUESTION))
    ran = 0
    while kit.pending_tasks and ran < 100:
        ran += kit.run_steps(max_tasks=1, instance=saga)
    kit.expect_status("compensated")
    kit.expect_event(AgentGaveUp)
    assert saga.model.calls == MAX_TURNS
    state = kit.state
    assert state is not None and state.usage.llm_calls == MAX_TURNS
