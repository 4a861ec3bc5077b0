"""The agent node's replies: recorded LLM decisions, tool results, tool approvals.

Part of the agent node kind (:mod:`sagaline.orchestrator.core.nodes.agent`),
kept apart so each module stays small.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from sagaline.orchestrator.core.agents import AgentDecision
from sagaline.orchestrator.core.nodes.base import parse_task_step
from sagaline.orchestrator.core.payloads import PayloadDecodeError, from_payload, to_payload
from sagaline.schemas.base import Usage
from sagaline.schemas.events import (
    AgentAnswered,
    AgentObservation,
    AgentTurnRecorded,
    SignalAccepted,
    StepCompleted,
    ToolCallRequested,
    WaitOpened,
)
from sagaline.schemas.trusted import make

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.orchestrator.core.nodes.agent import AgentSpec
    from sagaline.schemas.base import Payload
    from sagaline.schemas.commands import SignalSaga
    from sagaline.schemas.replies import StepSucceeded
    from sagaline.schemas.state import StepState, WaitState

__all__ = ["on_decision", "on_tool_approval", "on_turn_succeeded"]


def on_turn_succeeded(
    ctx: DecisionContext,
    node: AgentSpec,
    reply: StepSucceeded,
    st: StepState,
    turn: int,
    tool_name: str | None,
) -> None:
    """An LLM turn or a tool call of the agent succeeded."""
    ctx.emit(
        make(
            StepCompleted,
            at=ctx.now,
            step=reply.step,
            attempt=reply.attempt,
            result=reply.result,
            data=ctx.s.data,
        )
    )
    if ctx.compensating or st.status == "abandoned":
        return
    if tool_name is None:
        on_decision(ctx, node, turn, reply.result, reply)
        return
    content = reply.result.data.decode() if reply.result and reply.result.data else "ok"
    observe(ctx, node, turn, tool_name, ok=True, content=content)


def observe(
    ctx: DecisionContext, node: AgentSpec, turn: int, tool: str | None, *, ok: bool, content: str
) -> None:
    """Record what a tool call of turn ``turn`` gave the agent (its result, or its error)."""
    ctx.emit(
        make(
            AgentObservation,
            at=ctx.now,
            agent=node.name,
            turn=turn,
            tool=tool,
            ok=ok,
            content=content,
        )
    )


def _answered_by(node: AgentSpec, reply: StepSucceeded | None) -> dict[str, Any]:
    """Which model answered the turn, on which attempt, with what usage (for the record)."""
    if reply is None or not node.models:
        return {}
    usage = reply.usage if reply.usage != Usage() else None
    return {"model": node.model_for(reply.attempt), "attempt": reply.attempt, "usage": usage}


def on_decision(
    ctx: DecisionContext,
    node: AgentSpec,
    turn: int,
    result: Payload | None,
    reply: StepSucceeded | None = None,
) -> None:
    """Record the LLM's decision of ``turn``: an answer, a valid tool call, or an invalid one."""
    by = _answered_by(node, reply)
    try:
        if result is None:
            raise PayloadDecodeError("the LLM step returned no decision")
        decision = from_payload(result, AgentDecision)
    except PayloadDecodeError as exc:
        _invalid(ctx, node, turn, None, None, f"invalid decision: {exc}", by)
        return
    if decision.answer is not None:
        _answer(ctx, node, turn, decision, decision.answer, by)
        return
    tool_name = decision.tool or ""
    arguments = json.dumps(decision.arguments, sort_keys=True)
    spec = node.tools.get(tool_name)
    if spec is None:
        known = ", ".join(node.tools)
        error = f"unknown tool {tool_name!r}; tools: {known}"
        _invalid(ctx, node, turn, tool_name, arguments, error, by)
        return
    try:
        args = spec.args_type.model_validate(decision.arguments)
    except ValidationError as exc:
        _invalid(ctx, node, turn, tool_name, arguments, f"invalid arguments: {exc}", by)
        return
    ctx.emit(
        make(
            AgentTurnRecorded,
            at=ctx.now,
            agent=node.name,
            turn=turn,
            outcome="tool",
            tool=tool_name,
            arguments_json=arguments,
            thought=decision.thought,
            **by,
        )
    )
    _request_tool(ctx, node, turn, tool_name, to_payload(args), spec.risky)


def _answer(
    ctx: DecisionContext,
    node: AgentSpec,
    turn: int,
    decision: AgentDecision,
    answer: str,
    by: dict[str, Any],
) -> None:
    ctx.emit(
        make(
            AgentTurnRecorded,
            at=ctx.now,
            agent=node.name,
            turn=turn,
            outcome="answer",
            answer=answer,
            thought=decision.thought,
            **by,
        )
    )
    data = ctx.data()
    if node.on_answer_fn is not None:
        data = node.on_answer_fn(ctx.saga, data, answer)
    ctx.emit(
        make(
            AgentAnswered,
            at=ctx.now,
            agent=node.name,
            turn=turn,
            answer=answer,
            data=to_payload(data),
        )
    )


def _request_tool(
    ctx: DecisionContext, node: AgentSpec, turn: int, tool_name: str, args: Payload, risky: bool
) -> None:
    step_name = node.tool_step(tool_name, turn)
    ctx.emit(
        make(
            ToolCallRequested,
            at=ctx.now,
            agent=node.name,
            turn=turn,
            tool=tool_name,
            step=step_name,
            args=args,
            needs_approval=risky,
        )
    )
    if risky:
        ctx.emit(
            make(
                WaitOpened,
                at=ctx.now,
                name=step_name,
                kind="tool_approval",
                timeout_at=ctx.now + node.approval_timeout,
                agent=node.name,
                tool_step=step_name,
            )
        )


def _invalid(
    ctx: DecisionContext,
    node: AgentSpec,
    turn: int,
    tool: str | None,
    arguments: str | None,
    error: str,
    by: dict[str, Any],
) -> None:
    ctx.emit(
        make(
            AgentTurnRecorded,
            at=ctx.now,
            agent=node.name,
            turn=turn,
            outcome="invalid",
            tool=tool,
            arguments_json=arguments,
            **by,
        )
    )
    ctx.emit(
        make(
            AgentObservation,
            at=ctx.now,
            agent=node.name,
            turn=turn,
            tool=tool,
            ok=False,
            content=error,
        )
    )


def on_tool_approval(ctx: DecisionContext, wait: WaitState, sig: SignalSaga) -> None:
    """A person approved or rejected a risky tool call."""
    agent_name = wait.agent or ""
    agent_state = ctx.s.agents[agent_name]
    ctx.emit(
        make(
            SignalAccepted,
            at=ctx.now,
            name=wait.name,
            by=sig.by,
            approved=sig.approved,
            note=sig.note,
            payload=sig.payload,
            data=ctx.s.data,
        )
    )
    _, tool_name, turn = parse_task_step(wait.name)
    if sig.approved:
        assert agent_state.pending_args is not None and tool_name is not None
        ctx.emit(
            make(
                ToolCallRequested,
                at=ctx.now,
                agent=agent_name,
                turn=turn or agent_state.turn,
                tool=tool_name,
                step=wait.name,
                args=agent_state.pending_args,
                needs_approval=False,
            )
        )
        return
    note = f": {sig.note}" if sig.note else ""
    ctx.emit(
        make(
            AgentObservation,
            at=ctx.now,
            agent=agent_name,
            turn=turn or agent_state.turn,
            tool=tool_name,
            ok=False,
            content=f"the call of {tool_name} was rejected by {sig.by}{note}",
        )
    )
