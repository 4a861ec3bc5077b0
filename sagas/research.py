"""The research agent: an LLM chooses tools in a loop until it can answer.

Each turn is a recorded step: the LLM handler turns the transcript into a
chat request, asks the model (:func:`sagaline.sagas.llm.model_from_env`; the
deterministic :func:`research_policy` when no endpoint is configured),
reports the tokens to the saga's budget, writes the call to the LLM ledger
and returns an :class:`~sagaline.orchestrator.core.agents.AgentDecision`.  A redelivered
or replayed turn reuses the recorded decision: the LLM is not asked again.

The tools (``search_web``, ``read_document``, ``calculator``) work over the
local corpus of :mod:`sagaline.sagas.corpus` (no network).  The saga has a token
budget (:data:`TOKEN_BUDGET`): a question that needs more reading than the
budget allows pauses the saga for a person, who may resume it.  The agent
has at most :data:`MAX_TURNS` turns; when it runs out, the saga compensates.

Each turn asks the first of :data:`MODELS`; a turn whose attempt fails
retryably or times out asks the next (``ModelFallback`` in the journal, and
each recorded turn names the model that answered).  Every LLM turn takes a
slot of :data:`PROVIDER_LIMIT`, keyed by the saga's ``provider``: at most
:data:`PROVIDER_CONCURRENCY` turns of all research sagas ask one provider
at once; the others wait in order (``StepQueued`` in the journal).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import timedelta

from pydantic import BaseModel, Field

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import TerminalError
from sagaline.orchestrator.core.limit_spec import Limit
from sagaline.orchestrator.core.policies import Budget, Retry
from sagaline.orchestrator.core.saga import Saga, agent, step, tool
from sagaline.sagas import corpus
from sagaline.sagas.ledger import record_llm_call
from sagaline.sagas.llm import (
    ChatMessage,
    ChatModel,
    ChatResponse,
    OpenAIChatModel,
    ScriptedModel,
    ToolCall,
    ToolSpec,
    model_from_env,
)
from sagaline.sagas.tables import Tables

__all__ = [
    "MAX_TURNS",
    "MODELS",
    "PROVIDER_CONCURRENCY",
    "PROVIDER_LIMIT",
    "TOKEN_BUDGET",
    "CalcArgs",
    "CalcResult",
    "DocumentText",
    "ReadArgs",
    "ResearchAgent",
    "ResearchData",
    "SearchArgs",
    "SearchHit",
    "SearchResults",
    "research_model",
    "research_policy",
    "transcript",
]

#: Tokens (in + out) a research saga may spend before it pauses for a person.
TOKEN_BUDGET = 2500
#: LLM turns before the agent gives up.
MAX_TURNS = 10
#: The models a turn asks, in order: the next one after a retryable failure or a timeout.
MODELS = ["gpt-4o-mini", "gpt-4.1-mini"]
#: LLM turns of every research saga that ask one provider at once.
PROVIDER_CONCURRENCY = 4

SYSTEM_PROMPT = (
    "You are a research assistant. Use the tools to find and read sources, use the"
    " calculator for arithmetic, and answer briefly, citing the documents you read."
)


class ResearchData(BaseModel):
    """The saga data: the question, and the answer once the agent gave it."""

    question: str = Field(min_length=3)
    answer: str | None = None
    report_id: str | None = None
    #: the LLM provider the turns ask (the key of :data:`PROVIDER_LIMIT`); absent from
    #: the JSON at its default, so sagas started before the field keep their bytes
    provider: str = Field("default", exclude_if=lambda v: v == "default")


#: Every LLM turn holds a slot of its provider's limit while it runs.
PROVIDER_LIMIT: Limit[ResearchData] = Limit(
    "llm-provider", key=lambda d: d.provider, max_running=PROVIDER_CONCURRENCY
)


class SearchArgs(BaseModel):
    query: str = Field(min_length=1)
    limit: int = Field(default=3, ge=1, le=8)


class SearchHit(BaseModel):
    doc_id: str
    title: str
    snippet: str


class SearchResults(BaseModel):
    hits: list[SearchHit]


class ReadArgs(BaseModel):
    doc_id: str


class DocumentText(BaseModel):
    doc_id: str
    title: str
    body: str


class CalcArgs(BaseModel):
    expression: str = Field(min_length=1, max_length=200)


class CalcResult(BaseModel):
    expression: str
    value: float


class ReportFiled(BaseModel):
    report_id: str


# -- the scripted model's policy -------------------------------------------------

_ARITHMETIC = re.compile(r"\d[\d.\s]*(?:[-+*/%][\d.\s(]*\d[\d.\s)]*)+")


def _tool_results(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    return [
        (names.get(m.tool_call_id or "", "?"), m.content or "")
        for m in messages
        if m.role == "tool"
    ]


def _call(name: str, arguments: dict[str, object], turn: int) -> ChatResponse:
    return ChatResponse(tool_calls=[ToolCall(id=f"call_{turn}", name=name, arguments=arguments)])


def research_policy(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> ChatResponse:
    """A deterministic researcher: search, read the best hits, calculate, answer.

    It reads two documents, or every hit when the question asks for an
    answer "in depth" (which costs more tokens than the budget allows).
    """
    question = next((m.content or "" for m in messages if m.role == "user"), "")
    deep = "in depth" in question.lower()
    results = _tool_results(messages)
    turn = sum(1 for m in messages if m.role == "assistant") + 1
    searches = [json.loads(c) for n, c in results if n == "search_web" and c.startswith("{")]
    if not searches:
        return _call("search_web", {"query": question, "limit": 5 if deep else 3}, turn)
    read: dict[str, str] = {}
    for name, content in results:
        if name == "read_document" and content.startswith("{"):
            doc = json.loads(content)
            read[doc["doc_id"]] = doc["body"]
    hits = [h["doc_id"] for h in searches[-1].get("hits", [])]
    wanted = hits if deep else hits[:2]
    unread = [h for h in wanted if h not in read]
    if unread:
        return _call("read_document", {"doc_id": unread[0]}, turn)
    expression = _ARITHMETIC.search(question)
    calculated = [json.loads(c) for n, c in results if n == "calculator" and c.startswith("{")]
    if expression and not calculated:
        return _call("calculator", {"expression": expression.group(0).strip()}, turn)
    parts = [body.split(". ")[0].rstrip(".") + f" [{doc_id}]." for doc_id, body in read.items()]
    if calculated:
        value = calculated[-1]["value"]
        shown = int(value) if float(value).is_integer() else round(value, 4)
        parts.append(f"{calculated[-1]['expression']} = {shown}.")
    if not parts:
        parts.append("The corpus has nothing on this question.")
    return ChatResponse(content=" ".join(parts))


_MODEL: ChatModel | None = None


def research_model(name: str | None = None) -> ChatModel:
    """The model of this process: an OpenAI-compatible endpoint if configured, else scripted.

    ``name`` (a turn's model, from :data:`MODELS`) is the model the endpoint is asked for.
    """
    global _MODEL
    if _MODEL is None:
        _MODEL = model_from_env(ScriptedModel(research_policy, name="scripted-research"))
    if name is not None and isinstance(_MODEL, OpenAIChatModel):
        return _MODEL.for_model(name)
    return _MODEL


def transcript(turn: AgentTurn) -> list[ChatMessage]:
    """The chat messages of an agent turn: system prompt, question, then the history."""
    question = str(turn.data.get("question", ""))
    messages = [
        ChatMessage(role="system", content=SYSTEM_PROMPT),
        ChatMessage(role="user", content=question),
    ]
    open_calls: dict[int, str] = {}
    for item in turn.history:
        if item.role == "assistant":
            prefix = f"call {item.tool} "
            if item.tool and item.content.startswith(prefix):
                call_id = f"call_{item.turn}"
                arguments = json.loads(item.content[len(prefix) :] or "{}")
                open_calls[item.turn] = call_id
                messages.append(
                    ChatMessage(
                        role="assistant",
                        tool_calls=[ToolCall(id=call_id, name=item.tool, arguments=arguments)],
                    )
                )
            else:
                messages.append(ChatMessage(role="assistant", content=item.content))
        elif item.turn in open_calls:
            content = item.content if item.role == "tool" else f"error: {item.content}"
            messages.append(
                ChatMessage(role="tool", tool_call_id=open_calls.pop(item.turn), content=content)
            )
        else:
            messages.append(ChatMessage(role="user", content=f"error: {item.content}"))
    return messages


def decision_from(response: ChatResponse) -> AgentDecision:
    """The recorded decision of a model response: its first tool call, or its answer."""
    if response.tool_calls:
        call = response.tool_calls[0]
        return AgentDecision.call(call.name, call.arguments, thought=response.content)
    return AgentDecision.final(response.content or "")


_TOOL_RETRY = Retry(max_attempts=3, initial=timedelta(milliseconds=200))


class ResearchAgent(Saga[ResearchData]):
    """Answer a question from the corpus; the LLM picks the tools."""

    type_name = "research"
    #: 2: model fallback and the provider's limit (version 1: :class:`ResearchAgentV1`)
    version = 2
    budget = Budget(max_tokens=TOKEN_BUDGET)
    #: The model this instance asks (``None``: :func:`research_model`); tests set it.
    model: ChatModel | None = None

    @tool(description="Search the document corpus; returns the best hits.", retry=_TOOL_RETRY)
    def search_web(self, ctx: StepContext, args: SearchArgs) -> SearchResults:
        hits = corpus.search(args.query, limit=args.limit)
        return SearchResults(
            hits=[SearchHit(doc_id=d.doc_id, title=d.title, snippet=d.body[:80]) for d in hits]
        )

    @tool(description="Read a document of the corpus by id.", retry=_TOOL_RETRY)
    def read_document(self, ctx: StepContext, args: ReadArgs) -> DocumentText:
        try:
            doc = corpus.read(args.doc_id)
        except corpus.UnknownDocument as exc:
            raise TerminalError(str(exc)) from exc
        return DocumentText(doc_id=doc.doc_id, title=doc.title, body=doc.body)

    @tool(description="Evaluate an arithmetic expression.", retry=_TOOL_RETRY)
    def calculator(self, ctx: StepContext, args: CalcArgs) -> CalcResult:
        try:
            value = corpus.calculate(args.expression)
        except ValueError as exc:
            raise TerminalError(str(exc)) from exc
        return CalcResult(expression=args.expression, value=value)

    investigate = agent(
        tools=[search_web, read_document, calculator],
        max_turns=MAX_TURNS,
        retry=Retry(max_attempts=4, initial=timedelta(milliseconds=500)),
        timeout=timedelta(minutes=2),
        models=MODELS,
        limit=PROVIDER_LIMIT,
    )

    @investigate.llm
    def think(self, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
        """One LLM turn: ask the model what to do next, record the call and its cost."""
        specs = [
            ToolSpec(name=t.name, description=t.description, parameters=t.parameters)
            for t in turn.tools
        ]
        ctx.progress(f"turn {turn.turn}: asking {turn.model or 'the model'}")
        response = (self.model or research_model(turn.model)).complete(
            transcript(turn),
            specs,
            idempotency_key=ctx.idempotency_key,
            on_partial=lambda chunk: ctx.progress(partial=chunk),  # sagaline watch shows it live
        )
        record_llm_call(ctx, response)
        return decision_from(response)

    @investigate.on_answer
    def _answered(self, data: ResearchData, answer: str) -> ResearchData:
        return data.model_copy(update={"answer": answer})

    @step(compensate=None, retry=_TOOL_RETRY)
    def file_report(self, ctx: StepContext, data: ResearchData) -> ReportFiled:
        """Store the answer where people read reports."""
        t = Tables.current()
        ctx.db.execute(
            f"INSERT INTO {t.research_reports} (saga_id, idempotency_key, question, answer)"
            " VALUES (%s, %s, %s, %s)",
            (ctx.saga_id, ctx.idempotency_key, data.question, data.answer or ""),
        )
        return ReportFiled(report_id=ctx.saga_id)

    @file_report.on_result
    def _filed(self, data: ResearchData, result: ReportFiled) -> ResearchData:
        return data.model_copy(update={"report_id": result.report_id})


class ResearchAgentV1(ResearchAgent):
    """Version 1 of the research agent: one model, no provider limit.

    Version 2 (:class:`ResearchAgent`) asks :data:`MODELS` in order and holds a slot of
    the provider's limit for every turn: it decides differently, so it is a new version.
    This one stays registered so that research sagas started before the upgrade finish,
    replay and audit under the decisions they started with (a saga keeps its version).
    """

    type_name = "research"
    version = 1

    investigate = agent(
        tools=[ResearchAgent.search_web, ResearchAgent.read_document, ResearchAgent.calculator],
        max_turns=MAX_TURNS,
        retry=Retry(max_attempts=4, initial=timedelta(milliseconds=500)),
        timeout=timedelta(minutes=2),
    )
    investigate.llm(ResearchAgent.think)
    investigate.on_answer(ResearchAgent._answered)
