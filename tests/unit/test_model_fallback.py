"""Model fallback recorded as events (issue 15, item 4)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.payloads import from_payload
from sagaline.orchestrator.core.policies import Budget, Retry
from sagaline.orchestrator.core.replay_check import check_saga
from sagaline.orchestrator.core.saga import Saga, agent, tool
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.base import Usage
from sagaline.schemas.events import AgentTurnRecorded, AgentTurnStarted, ModelFallback

pytestmark = pytest.mark.unit

MODELS = ["claude-main", "gpt-backup", "local-llama"]
NO_JITTER = Retry(max_attempts=3, initial=timedelta(seconds=5), jitter=0.0)


class Ask(BaseModel):
    question: str
    answer: str | None = None


class NoArgs(BaseModel):
    pass


class Research(Saga[Ask]):
    type_name = "fallback-test"
    budget = Budget(max_cost_micros=1_000)

    @tool(description="nothing")
    def noop(self, ctx: StepContext, args: NoArgs) -> None:
        return None

    think = agent(
        tools=[noop], models=MODELS, retry=NO_JITTER, timeout=timedelta(seconds=30), max_turns=3
    )

    @think.llm
    def _llm(self, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
        return AgentDecision.final(f"{turn.model} says hi")

    @think.on_answer
    def _answer(self, data: Ask, answer: str) -> Ask:
        return data.model_copy(update={"answer": answer})


def _turn_args(kit: SagaTestKit, step: str) -> AgentTurn:
    return from_payload(kit.expect_task(step).args, AgentTurn)


def _of(kit: SagaTestKit, kind: type[object]) -> list[object]:
    return [e for e in kit.events if isinstance(e, kind)]


def test_the_first_attempt_asks_the_first_model() -> None:
    kit = SagaTestKit(Research, saga_id="f-1")
    kit.start(Ask(question="q"))
    turn = _turn_args(kit, "think#1")
    assert (turn.model, turn.models, turn.attempt) == ("claude-main", MODELS, 1)
    started = _of(kit, AgentTurnStarted)[-1]
    assert isinstance(started, AgentTurnStarted) and started.model == "claude-main"


def test_a_retryable_error_then_a_timeout_fall_back_in_order_and_are_journaled() -> None:
    kit = SagaTestKit(Research, saga_id="f-2")
    kit.start(Ask(question="q"))
    kit.fail("think#1", "503 overloaded", usage=Usage(llm_calls=1, tokens_in=40, cost_micros=300))
    kit.advance(seconds=5)
    turn = _turn_args(kit, "think#1")
    assert (turn.model, turn.attempt) == ("gpt-backup", 2)
    kit.advance(seconds=30)  # the backup model does not answer in time
    kit.advance(seconds=10)  # backoff of attempt 2
    assert _turn_args(kit, "think#1").model == "local-llama"
    fallbacks = [e for e in _of(kit, ModelFallback) if isinstance(e, ModelFallback)]
    assert [(f.previous_model, f.model, f.attempt) for f in fallbacks] == [
        ("claude-main", "gpt-backup", 2),
        ("gpt-backup", "local-llama", 3),
    ]
    assert "503 overloaded" in fallbacks[0].reason
    usage = Usage(llm_calls=1, tokens_in=50, tokens_out=7, cost_micros=400)
    kit.succeed("think#1", AgentDecision.final("local-llama says hi"), usage=usage)
    recorded = _of(kit, AgentTurnRecorded)[-1]
    assert isinstance(recorded, AgentTurnRecorded)
    assert (recorded.model, recorded.attempt, recorded.usage) == ("local-llama", 3, usage)
    kit.expect_status("completed")
    assert kit.state is not None
    assert kit.state.usage.cost_micros == 700  # the budget counts every model used
    assert kit.state.usage.tokens_in == 90


def test_the_budget_counts_the_failed_models_too() -> None:
    kit = SagaTestKit(Research, saga_id="f-3")
    kit.start(Ask(question="q"))
    kit.fail("think#1", "429", usage=Usage(llm_calls=1, cost_micros=800))
    kit.advance(seconds=5)
    kit.succeed("think#1", AgentDecision.final("ok"), usage=Usage(llm_calls=1, cost_micros=300))
    kit.expect_status("paused")  # 1,100 micros over a budget of 1,000


def test_a_fallback_journal_replays_strictly() -> None:
    kit = SagaTestKit(Research, saga_id="f-4")
    kit.start(Ask(question="q"))
    kit.fail("think#1", "timeout talking to provider")
    kit.advance(seconds=5)
    kit.run_steps()  # the real handler answers with the model it was given
    kit.expect_status("completed")
    assert kit.data.answer == "gpt-backup says hi"
    checked, divergences = check_saga(kit.journal, lambda _t, _v: Research)
    assert checked == len(kit.journal) and divergences == []


def test_an_agent_without_models_records_no_model() -> None:
    class Plain(Saga[Ask]):
        type_name = "fallback-plain-test"

        think = agent(tools=[])

        @think.llm
        def _llm(self, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
            return AgentDecision.final(str(turn.model))

    kit = SagaTestKit(Plain, saga_id="f-5")
    kit.start(Ask(question="q"))
    kit.run_steps()
    recorded = _of(kit, AgentTurnRecorded)[-1]
    assert isinstance(recorded, AgentTurnRecorded) and recorded.model is None
    assert not _of(kit, ModelFallback)


def test_models_that_the_retry_policy_never_reaches_are_a_definition_error() -> None:
    with pytest.raises(SagaDefinitionError, match="the last models would never be asked"):
        agent(tools=[], models=MODELS, retry=Retry(max_attempts=2))
    with pytest.raises(SagaDefinitionError, match="distinct"):
        agent(tools=[], models=["a", "a"])
    assert agent(tools=[], models=["a", "b", "c", "d"]).retry.max_attempts == 4
