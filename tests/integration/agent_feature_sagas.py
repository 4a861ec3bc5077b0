"""Saga definitions of the issue 15 integration tests (importable by an
orchestrator subprocess: ``--app agent_feature_sagas:registry``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import RetryableError
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, agent, approval, step


class Refund(BaseModel):
    order: str
    amount_cents: int = 0
    quotes: int = 0


class Shown(BaseModel):
    order: str
    amount_cents: int


class Quote(BaseModel):
    amount_cents: int


class BoundRefund(Saga[Refund]):
    type_name = "it.bound-refund"

    @step(uses_db=False, timeout=timedelta(seconds=30))
    def quote(self, ctx: StepContext, data: Refund) -> Quote:
        return Quote(amount_cents=700 + 200 * data.quotes)  # each quote is another amount

    @quote.on_result
    def _quoted(self, data: Refund, result: Quote) -> Refund:
        return data.model_copy(
            update={"amount_cents": result.amount_cents, "quotes": data.quotes + 1}
        )

    manager_ok = approval(timeout=timedelta(minutes=5), on_reject=quote)

    @manager_ok.shows
    def _shown(self, data: Refund) -> Shown:
        return Shown(order=data.order, amount_cents=data.amount_cents)


class Question(BaseModel):
    text: str
    answer: str | None = None


class Research(Saga[Question]):
    type_name = "it.fallback"

    think = agent(
        tools=[],
        models=["flaky-model", "steady-model"],
        retry=Retry(max_attempts=2, initial=timedelta(milliseconds=200), jitter=0.0),
        timeout=timedelta(seconds=30),
    )

    @think.llm
    def _llm(self, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
        ctx.report_usage(llm_calls=1, tokens_in=10, cost_micros=5)
        if turn.model == "flaky-model":
            raise RetryableError("503 from the flaky provider")
        return AgentDecision.final(f"answered by {turn.model}")

    @think.on_answer
    def _answer(self, data: Question, answer: str) -> Question:
        return data.model_copy(update={"answer": answer})


class Doc(BaseModel):
    topic: str
    notes: list[str] = []


class Note(BaseModel):
    text: str


def _noted(data: Doc, result: Note) -> Doc:
    return data.model_copy(update={"notes": [*data.notes, result.text]})


class ForkPipe(Saga[Doc]):
    """Three steps; a fork from ``draft`` reuses ``research``'s recorded result."""

    type_name = "it.fork-pipe"

    @step(uses_db=False, timeout=timedelta(seconds=30))
    def research(self, ctx: StepContext, data: Doc) -> Note:
        return Note(text=f"research by {ctx.saga_id}")

    @research.on_result
    def _r(self, data: Doc, result: Note) -> Doc:
        return _noted(data, result)

    @step(uses_db=False, timeout=timedelta(seconds=30))
    def draft(self, ctx: StepContext, data: Doc) -> Note:
        return Note(text=f"draft by {ctx.saga_id}")

    @draft.on_result
    def _d(self, data: Doc, result: Note) -> Doc:
        return _noted(data, result)

    @step(uses_db=False, timeout=timedelta(seconds=30))
    def publish(self, ctx: StepContext, data: Doc) -> None:
        return None


REGISTRY = SagaRegistry([BoundRefund, Research, ForkPipe])


def registry() -> SagaRegistry:
    return REGISTRY
