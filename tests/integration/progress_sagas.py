"""Saga definitions of the live-progress integration tests (issue 15, item 6)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, agent, approval, step

#: what ``Digest.draft`` publishes, in order: (message, fraction, partial)
DRAFT_PROGRESS: list[tuple[str | None, float | None, str | None]] = [
    ("reading sources", 0.0, None),
    ("read source 1 of 3", 1 / 3, None),
    ("read source 2 of 3", 2 / 3, None),
    ("read source 3 of 3", 1.0, None),
    (None, None, "Sagas "),
    (None, None, "survive "),
    (None, None, "crashes."),
]
#: the tokens ``Chat``'s LLM turn streams
TOKENS = ["Kafka ", "keeps ", "the ", "journal."]


class Topic(BaseModel):
    name: str
    text: str = ""


class Text(BaseModel):
    text: str


def _with_text(data: Topic, result: Text) -> Topic:
    return data.model_copy(update={"text": result.text})


class Digest(Saga[Topic]):
    """Two steps; ``draft`` publishes several progress items, ``publish`` one."""

    type_name = "it.progress-digest"

    @step(timeout=timedelta(seconds=30))
    def draft(self, ctx: StepContext, data: Topic) -> Text:
        chunks = []
        for message, fraction, partial in DRAFT_PROGRESS:
            ctx.progress(message, fraction=fraction, partial=partial)
            chunks.append(partial or "")
        return Text(text="".join(chunks))

    @draft.on_result
    def _drafted(self, data: Topic, result: Text) -> Topic:
        return _with_text(data, result)

    @step(uses_db=False, timeout=timedelta(seconds=30))
    def publish(self, ctx: StepContext, data: Topic) -> None:
        ctx.progress(f"publishing {len(data.text)} characters", fraction=1.0)


class Chat(Saga[Topic]):
    """An agent whose LLM turn streams its answer as partial output."""

    type_name = "it.progress-chat"

    think = agent(tools=[], timeout=timedelta(seconds=30))

    @think.llm
    def _llm(self, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
        ctx.progress(f"turn {turn.turn}: asking the model")
        for token in TOKENS:  # a streaming LLM client hands over its tokens as they come
            ctx.progress(partial=token)
        return AgentDecision.final("".join(TOKENS))

    @think.on_answer
    def _answer(self, data: Topic, answer: str) -> Topic:
        return data.model_copy(update={"text": answer})


class Card(Saga[Topic]):
    """A step with progress, then an approval (the stream's reader approves)."""

    type_name = "it.progress-card"

    @step(uses_db=False, timeout=timedelta(seconds=30))
    def write_card(self, ctx: StepContext, data: Topic) -> None:
        ctx.progress(f"writing a card for {data.name}", fraction=0.5)

    manager = approval(timeout=timedelta(hours=1))

    @step(uses_db=False, compensate=None, timeout=timedelta(seconds=30))
    def send_card(self, ctx: StepContext, data: Topic) -> None:
        return None


REGISTRY = SagaRegistry([Digest, Chat, Card])


def registry() -> SagaRegistry:
    return REGISTRY
