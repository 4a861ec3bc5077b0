"""The agent node and its tools: an LLM picks the next tool in a loop until it answers.

Each LLM turn is a task (``"<agent>#<turn>"``) whose recorded
:class:`~sagaline.orchestrator.core.agents.AgentDecision` names a tool or
answers; a tool call is a task (``"<agent>.<tool>#<turn>"``) whose outcome
is the next turn's observation.  Risky tools wait for an approval first.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn, ToolInfo
from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.limit_spec import Limit
from sagaline.orchestrator.core.nodes.agent_turns import (
    observe,
    on_tool_approval,
    on_turn_succeeded,
)
from sagaline.orchestrator.core.nodes.base import (
    FunctionNode,
    Node,
    NodeKind,
    StepHandler,
    TaskKind,
    check_arity,
    mermaid_label,
    parse_task_step,
    register,
    resolve_hints,
)
from sagaline.orchestrator.core.nodes.step import model_or_none
from sagaline.orchestrator.core.payloads import to_payload
from sagaline.orchestrator.core.policies import NO_RETRY, Retry
from sagaline.schemas.events import AgentGaveUp, AgentTurnStarted, ModelFallback
from sagaline.schemas.state import AgentHistoryItem, AgentState, StepState
from sagaline.schemas.trusted import make

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.orchestrator.core.saga import Saga
    from sagaline.schemas.commands import SignalSaga
    from sagaline.schemas.replies import StepSucceeded
    from sagaline.schemas.state import WaitState

__all__ = ["AgentKind", "AgentSpec", "ToolKind", "ToolSpec", "agent", "tool"]

D = TypeVar("D")
#: An LLM hook: ``llm(self, ctx, turn) -> AgentDecision`` (or ``async def``).
LlmFn = TypeVar(
    "LlmFn",
    bound=Callable[[Any, Any, AgentTurn], AgentDecision | Coroutine[Any, Any, AgentDecision]],
)
#: A tool compensation: ``undo(self, ctx, args) -> None``.
UndoFn = TypeVar("UndoFn", bound=Callable[[Any, Any, Any], object])


class ToolSpec(FunctionNode):
    """A tool an agent may call: ``fn(self, ctx, args: ArgsModel) -> Result``."""

    kind = "tool"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None,
        description: str | None,
        risky: bool,
        retry: Retry,
        timeout: timedelta | None,
        heartbeat_timeout: timedelta | None,
    ) -> None:
        super().__init__(fn, name)
        self.description = description or inspect.getdoc(fn) or ""
        self.risky = risky
        self.retry = retry
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.args_type: type[BaseModel] = BaseModel
        self.result_type: type[BaseModel] | None = None
        self.compensate_fn: Callable[..., Any] | None = None
        self._info: tuple[tuple[object, ...], ToolInfo] | None = None

    @property
    def compensable(self) -> bool:
        return self.compensate_fn is not None

    def compensation(self, fn: UndoFn) -> UndoFn:
        """Register ``fn(self, ctx, args) -> None`` that undoes a call of this tool."""
        self.compensate_fn = fn
        return fn

    def info(self) -> ToolInfo:
        """What the LLM is told about this tool (built once: the JSON schema is costly)."""
        key = (self.name, self.description, self.args_type, self.risky)
        if self._info is None or self._info[0] != key:
            info = ToolInfo(
                name=self.name,
                description=self.description,
                parameters=self.args_type.model_json_schema(),
                risky=self.risky,
            )
            self._info = (key, info)
        return self._info[1]


def tool(
    *,
    risky: bool = False,
    description: str | None = None,
    retry: Retry | None = None,
    timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    name: str | None = None,
) -> Callable[[Callable[..., Any]], ToolSpec]:
    """Declare a tool for agents; ``risky=True`` tools wait for an approval before running."""

    def build(fn: Callable[..., Any]) -> ToolSpec:
        return ToolSpec(
            fn,
            name=name,
            description=description,
            risky=risky,
            retry=retry or Retry(),
            timeout=timeout,
            heartbeat_timeout=heartbeat_timeout,
        )

    return build


class AgentSpec(Node):
    """An LLM loop: each turn's recorded :class:`AgentDecision` picks a tool or answers."""

    kind = "agent"

    def __init__(
        self,
        *,
        tools: list[ToolSpec],
        max_turns: int,
        retry: Retry,
        timeout: timedelta | None,
        approval_timeout: timedelta,
        name: str | None,
        history_window: int | None = None,
        models: list[str] | None = None,
        limit: Limit[Any] | None = None,
    ) -> None:
        super().__init__(name)
        self.models = list(models or [])
        self.limit = limit
        self.tool_specs = list(tools)
        self.max_turns = max_turns
        self.history_window = history_window
        self.retry = retry
        self.timeout = timeout
        self.approval_timeout = approval_timeout
        self.llm_fn: Callable[..., Any] | None = None
        self.on_answer_fn: Callable[..., Any] | None = None

    @property
    def tools(self) -> dict[str, ToolSpec]:
        """The agent's tools by name."""
        return {t.name: t for t in self.tool_specs}

    def llm(self, fn: LlmFn) -> LlmFn:
        """Register the LLM handler ``fn(self, ctx, turn: AgentTurn) -> AgentDecision``."""
        self.llm_fn = fn
        return fn

    def on_answer(self, fn: Callable[[Any, D, str], D]) -> Callable[[Any, D, str], D]:
        """Register ``fn(self, data, answer: str) -> data`` folding the final answer in."""
        self.on_answer_fn = fn
        return fn

    def model_for(self, attempt: int) -> str | None:
        """The model attempt ``attempt`` of a turn asks: the next one after each failure."""
        if not self.models:
            return None
        return self.models[min(attempt, len(self.models)) - 1]

    def turn_step(self, turn: int) -> str:
        """The task step name of LLM turn ``turn`` (``"investigate#3"``)."""
        return f"{self.name}#{turn}"

    def tool_step(self, tool_name: str, turn: int) -> str:
        """The task step name of the tool call decided in ``turn`` (``"investigate.search#3"``)."""
        return f"{self.name}.{tool_name}#{turn}"


def agent(
    *,
    tools: list[ToolSpec],
    max_turns: int = 8,
    retry: Retry | None = None,
    timeout: timedelta | None = None,
    approval_timeout: timedelta = timedelta(days=1),
    name: str | None = None,
    history_window: int | None = None,
    models: list[str] | None = None,
    limit: Limit[Any] | None = None,
) -> AgentSpec:
    """Declare an agent loop over ``tools``; register its LLM with ``@<agent>.llm``.

    ``history_window``: the transcript keeps (and the LLM sees) only its last
    *n* items, so a long agent's snapshot and turns stay the same size; the
    journal keeps every item.  ``None`` (the default) keeps the whole transcript.
    ``models``: the models (or providers) to ask, in order; a turn's attempt
    that fails retryably or times out is retried on the next one
    (``ModelFallback`` in the journal), and each recorded turn names the
    model that answered.  The retry policy then defaults to one attempt per model.
    ``limit``: each LLM turn takes a slot of this ``Limit`` (a provider's
    concurrency or rate limit shared by every saga); tool calls do not.
    """
    if max_turns < 1:
        raise SagaDefinitionError("agent max_turns must be at least 1")
    if history_window is not None and history_window < 1:
        raise SagaDefinitionError("agent history_window must be at least 1")
    models = list(models or [])
    if any(not m or not isinstance(m, str) for m in models) or len(set(models)) != len(models):
        raise SagaDefinitionError("agent models must be distinct, non-empty names")
    if retry is None:
        retry = Retry(max_attempts=max(len(models), 3))
    elif retry.max_attempts is not None and retry.max_attempts < len(models):
        raise SagaDefinitionError(
            f"agent retry allows {retry.max_attempts} attempts but lists {len(models)} "
            "models: the last models would never be asked"
        )
    return AgentSpec(
        tools=list(tools),
        max_turns=max_turns,
        models=models,
        retry=retry,
        timeout=timeout,
        approval_timeout=approval_timeout,
        name=name,
        history_window=history_window,
        limit=limit,
    )


def _window(node: AgentSpec, agent_state: AgentState) -> list[AgentHistoryItem]:
    """The transcript the LLM sees: the last ``history_window`` items (all without one)."""
    if node.history_window is None:
        return list(agent_state.history)
    return agent_state.history[-node.history_window :]


class ToolKind(NodeKind[ToolSpec]):
    """Tools are declared in the class body but run only inside an agent."""

    kind = "tool"
    in_sequence = False

    def validate(self, cls: type[Saga[Any]], node: ToolSpec, localns: dict[str, Any]) -> None:
        where = f"{cls.__qualname__}.{node.name}"
        check_arity(node.fn, "self, ctx, args", where)
        hints = resolve_hints(node.fn, localns)
        params = list(inspect.signature(node.fn).parameters)
        args_annotation = hints.get(params[2]) if len(params) >= 3 else None
        args_type = model_or_none(args_annotation, f"{where} arguments")
        if args_type is None:
            raise SagaDefinitionError(f"{where}: annotate the tool's arguments model")
        node.args_type = args_type
        node.result_type = model_or_none(hints.get("return"), f"{where} result")
        if node.compensate_fn is not None:
            check_arity(node.compensate_fn, "self, ctx, args", f"{where} compensation")


class AgentKind(NodeKind[AgentSpec]):
    kind = "agent"

    def validate(self, cls: type[Saga[Any]], node: AgentSpec, localns: dict[str, Any]) -> None:
        where = f"{cls.__qualname__}.{node.name}"
        if node.llm_fn is None:
            raise SagaDefinitionError(f"{where}: register the LLM with @{node.name}.llm")
        for t in node.tool_specs:
            if not isinstance(t, ToolSpec):
                raise SagaDefinitionError(f"{where}: {t!r} is not a @tool")
        check_arity(node.llm_fn, "self, ctx, turn", f"{where} llm hook")
        if node.on_answer_fn is not None:
            check_arity(node.on_answer_fn, "self, data, answer", f"{where} on_answer hook")

    def claim(self, cls: type[Saga[Any]], node: AgentSpec, nodes: list[Node]) -> list[str]:
        for t in node.tool_specs:
            if t not in nodes:
                raise SagaDefinitionError(
                    f"{cls.__qualname__}.{node.name}: tool {t!r} is not declared"
                )
        return []

    # -- the decider ----------------------------------------------------------

    def drive(self, ctx: DecisionContext, node: AgentSpec) -> bool:
        agent_state = ctx.s.agents.get(node.name)
        if agent_state is None:
            return False
        if agent_state.phase == "answered":
            ctx.enter(ctx.defn.next_node(node.name), previous=node.name, via="answered")
            return True
        if agent_state.phase == "idle":
            if agent_state.turn >= node.max_turns:
                reason = f"agent {node.name} used all {node.max_turns} turns"
                ctx.emit(
                    make(
                        AgentGaveUp,
                        at=ctx.now,
                        agent=node.name,
                        turn=agent_state.turn,
                        reason=reason,
                    )
                )
                ctx.start_compensation(reason)
                return False
            turn = agent_state.turn + 1
            step_name = node.turn_step(turn)
            ctx.emit(
                make(
                    AgentTurnStarted,
                    at=ctx.now,
                    agent=node.name,
                    turn=turn,
                    step=step_name,
                    model=node.model_for(1),
                )
            )
            self.dispatch_turn(ctx, node, turn)
            return False
        if agent_state.phase == "thinking":
            st = ctx.s.steps.get(node.turn_step(agent_state.turn))
            if st is None or st.status in ("pending", "ready"):  # None: it waited for a slot
                self.dispatch_turn(ctx, node, agent_state.turn)
            return False
        pending = agent_state.pending_tool_step
        if agent_state.phase == "tool" and pending and agent_state.pending_tool:
            st = ctx.s.steps.get(pending) or StepState(name=pending, run=1)
            if st.status in ("pending", "ready") and agent_state.pending_args is not None:
                spec = node.tools[agent_state.pending_tool]
                ctx.dispatch_task(
                    st,
                    args=agent_state.pending_args,
                    destination="tasks",
                    compensable=spec.compensable,
                    timeout=spec.timeout,
                    heartbeat=spec.heartbeat_timeout,
                    keep_args=True,
                )
        return False

    def dispatch_turn(self, ctx: DecisionContext, node: AgentSpec, turn: int) -> None:
        step_name = node.turn_step(turn)
        state = ctx.s.agents[node.name]
        st = ctx.s.steps.get(step_name) or StepState(name=step_name, run=1)
        attempt = st.attempt + 1
        model, previous = node.model_for(attempt), node.model_for(attempt - 1)
        if attempt > 1 and model is not None and previous is not None and model != previous:
            ctx.emit(
                make(
                    ModelFallback,
                    at=ctx.now,
                    agent=node.name,
                    turn=turn,
                    step=step_name,
                    attempt=attempt,
                    model=model,
                    previous_model=previous,
                    reason=st.last_error or "the previous attempt failed",
                )
            )
        args = AgentTurn(
            agent=node.name,
            turn=turn,
            max_turns=node.max_turns,
            data=json.loads(ctx.s.data.data or b"{}"),
            tools=[t.info() for t in node.tool_specs],
            # the transcript's items as dicts: validated in pydantic's core, 2-3x faster
            # than building each HistoryItem here (16 items a turn: ~40 us)
            history=[h.__dict__ for h in _window(node, state)],
            model=model,
            models=list(node.models),
            attempt=attempt,
        )
        ctx.dispatch_task(
            st,
            args=to_payload(args),
            destination="tasks",
            compensable=False,
            timeout=node.timeout,
            heartbeat=None,
        )

    def on_succeeded(
        self, ctx: DecisionContext, node: AgentSpec, reply: StepSucceeded, st: StepState
    ) -> None:
        _, tool_name, turn = parse_task_step(reply.step)
        if turn is None:
            super().on_succeeded(ctx, node, reply, st)
        else:
            on_turn_succeeded(ctx, node, reply, st, turn, tool_name)

    def on_permanent_failure(
        self, ctx: DecisionContext, node: AgentSpec, step: str, error: str
    ) -> None:
        _, tool_name, turn = parse_task_step(step)
        reason = f"step {step} failed: {error}"
        if turn is None:
            ctx.start_compensation(reason)
        elif tool_name is not None:
            observe(ctx, node, turn, tool_name, ok=False, content=error)
        else:
            ctx.emit(make(AgentGaveUp, at=ctx.now, agent=node.name, turn=turn, reason=reason))
            ctx.start_compensation(reason)

    def on_signal(
        self, ctx: DecisionContext, node: AgentSpec, wait: WaitState, sig: SignalSaga
    ) -> None:
        on_tool_approval(ctx, wait, sig)

    def on_wait_timeout(self, ctx: DecisionContext, node: AgentSpec, name: str) -> None:
        _, tool_name, turn = parse_task_step(name)
        content = f"the call of {tool_name} was not approved in time"
        observe(ctx, node, turn or 0, tool_name, ok=False, content=content)

    def retry_policy(self, node: AgentSpec, step: str) -> Retry:
        _, tool_name, turn = parse_task_step(step)
        if turn is None:
            return NO_RETRY
        if tool_name is None:
            return node.retry
        found = node.tools.get(tool_name)
        return found.retry if found is not None else NO_RETRY

    # -- workers --------------------------------------------------------------

    def handler(
        self, cls: type[Saga[Any]], saga: Saga[Any], node: AgentSpec, kind: TaskKind, step: str
    ) -> StepHandler:
        _, tool_name, turn = parse_task_step(step)
        if turn is None:
            return super().handler(cls, saga, node, kind, step)
        if tool_name is None:
            if kind != "step" or node.llm_fn is None:
                raise SagaDefinitionError(f"agent turn {step!r} has no {kind} handler")
            return StepHandler(
                name=step,
                kind="step",
                fn=node.llm_fn.__get__(saga, cls),
                args_type=AgentTurn,
                result_type=AgentDecision,
                retry=node.retry,
                timeout=node.timeout,
                heartbeat_timeout=None,
                non_retryable=node.retry.non_retryable,
            )
        spec = node.tools.get(tool_name)
        if spec is None:
            raise SagaDefinitionError(f"agent {node.name!r} has no tool {tool_name!r}")
        if kind == "step":
            fn, retry, result_type = spec.fn, spec.retry, spec.result_type
        else:
            if spec.compensate_fn is None:
                raise SagaDefinitionError(f"tool {spec.name!r} has no compensation")
            fn, retry, result_type = spec.compensate_fn, cls.compensation_retry, None
        return StepHandler(
            name=step,
            kind=kind,
            fn=fn.__get__(saga, cls),
            args_type=spec.args_type,
            result_type=result_type,
            retry=retry,
            timeout=spec.timeout,
            heartbeat_timeout=spec.heartbeat_timeout if kind == "step" else None,
            non_retryable=retry.non_retryable,
        )

    # -- the diagram ----------------------------------------------------------

    def mermaid_nodes(self, node: AgentSpec) -> list[str]:
        tools = ", ".join(t.name + ("!" if t.risky else "") for t in node.tool_specs)
        detail = f"tools: {tools}; max {node.max_turns} turns"
        return [f'{node.name}[["agent: {mermaid_label(node.name)}<br/><small>{detail}</small>"]]']


register(ToolKind())
register(AgentKind())
