"""How the agent events fold into ``SagaState.agents`` (used by ``fold.evolve``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sagaline.schemas.events import (
    AgentAnswered,
    AgentGaveUp,
    AgentObservation,
    AgentTurnRecorded,
    AgentTurnStarted,
    ToolCallRequested,
)
from sagaline.schemas.state import AgentHistoryItem, AgentState, SagaState
from sagaline.schemas.trusted import make, replace

__all__ = ["AGENT_FOLDS", "agent_of", "with_agent"]

Updates = dict[str, Any]


def agent_of(state: SagaState, name: str) -> AgentState:
    found = state.agents.get(name)
    return found if found is not None else make(AgentState, name=name)


def with_agent(state: SagaState, agent: AgentState) -> dict[str, AgentState]:
    agents = dict(state.agents)
    agents[agent.name] = agent
    return agents


def _agent_turn_started(s: SagaState, e: AgentTurnStarted) -> Updates:
    agent = replace(agent_of(s, e.agent), {"turn": e.turn, "phase": "thinking"})
    return {"agents": with_agent(s, agent)}


def _agent_turn_recorded(s: SagaState, e: AgentTurnRecorded) -> Updates:
    agent = agent_of(s, e.agent)
    if e.outcome == "tool":
        content = f"call {e.tool} {e.arguments_json or '{}'}"
    elif e.outcome == "answer":
        content = e.answer or ""
    else:
        content = f"invalid decision: call {e.tool} {e.arguments_json or '{}'}"
    item = make(AgentHistoryItem, turn=e.turn, role="assistant", tool=e.tool, content=content)
    phase = {"tool": "tool", "answer": "answered", "invalid": "idle"}[e.outcome]
    agent = replace(
        agent,
        {
            "history": [*agent.history, item],
            "phase": phase,
            "pending_tool": e.tool if e.outcome == "tool" else None,
        },
    )
    return {"agents": with_agent(s, agent)}


def _tool_requested(s: SagaState, e: ToolCallRequested) -> Updates:
    agent = replace(
        agent_of(s, e.agent),
        {
            "phase": "approval" if e.needs_approval else "tool",
            "pending_tool": e.tool,
            "pending_tool_step": e.step,
            "pending_args": e.args,
        },
    )
    return {"agents": with_agent(s, agent)}


def _observation(s: SagaState, e: AgentObservation) -> Updates:
    agent = agent_of(s, e.agent)
    item = make(
        AgentHistoryItem,
        turn=e.turn,
        role="tool" if e.ok else "error",
        tool=e.tool,
        content=e.content,
    )
    agent = replace(
        agent,
        {
            "history": [*agent.history, item],
            "phase": "idle",
            "pending_tool": None,
            "pending_tool_step": None,
            "pending_args": None,
        },
    )
    return {"agents": with_agent(s, agent)}


def _answered(s: SagaState, e: AgentAnswered) -> Updates:
    agent = replace(agent_of(s, e.agent), {"phase": "answered", "answer": e.answer})
    return {"agents": with_agent(s, agent), "data": e.data}


def _gave_up(s: SagaState, e: AgentGaveUp) -> Updates:
    agent = replace(agent_of(s, e.agent), {"phase": "gave_up"})
    return {"agents": with_agent(s, agent)}


AGENT_FOLDS: dict[type[Any], Callable[[SagaState, Any], Updates]] = {
    AgentTurnStarted: _agent_turn_started,
    AgentTurnRecorded: _agent_turn_recorded,
    ToolCallRequested: _tool_requested,
    AgentObservation: _observation,
    AgentAnswered: _answered,
    AgentGaveUp: _gave_up,
}
