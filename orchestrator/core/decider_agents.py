"""Agent loops in the decider: LLM turns, validated tool calls, tool approvals."""

from __future__ import annotations

import json

from pydantic import ValidationError

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn, HistoryItem
from sagaline.orchestrator.core.decider_base import DeciderBase
from sagaline.orchestrator.core.payloads import (
    PayloadDecodeError,
    from_payload,
    to_payload,
)
from sagaline.orchestrator.core.saga import (
    AgentSpec,
    parse_task_step,
)
from sagaline.schemas.base import Payload
from sagaline.schemas.commands import (
    SignalSaga,
)
from sagaline.schemas.events import (
    AgentAnswered,
    AgentGaveUp,
    AgentObservation,
    AgentTurnRecorded,
    AgentTurnStarted,
    SignalAccepted,
    ToolCallRequested,
    WaitOpened,
)
from sagaline.schemas.state import StepState, WaitState

__all__ = ["AgentDecider"]


class AgentDecider(DeciderBase):
    """Adds the agent node: each turn's recorded decision picks a tool or answers."""

    def drive_agent(self, node: AgentSpec) -> bool:
        agent = self.s.agents.get(node.name)
        if agent is None:
            return False
        if agent.phase == "answered":
            self.enter(self.defn.next_node(node.name), previous=node.name, via="answered")
            return True
        if agent.phase == "idle":
            if agent.turn >= node.max_turns:
                reason = f"agent {node.name} used all {node.max_turns} turns"
                self.emit(AgentGaveUp(at=self.now, agent=node.name, turn=agent.turn, reason=reason))
                self.start_compensation(reason)
                return False
            turn = agent.turn + 1
            step_name = node.turn_step(turn)
            self.emit(AgentTurnStarted(at=self.now, agent=node.name, turn=turn, step=step_name))
            self.dispatch_turn(node, turn)
            return False
        if agent.phase == "thinking":
            st = self.s.steps.get(node.turn_step(agent.turn))
            if st is not None and st.status == "ready":
                self.dispatch_turn(node, agent.turn)
            return False
        if agent.phase == "tool" and agent.pending_tool_step and agent.pending_tool:
            st = self.s.steps.get(agent.pending_tool_step) or StepState(
                name=agent.pending_tool_step, run=1
            )
            if st.status in ("pending", "ready") and agent.pending_args is not None:
                spec = node.tools[agent.pending_tool]
                self.dispatch_task(
                    st,
                    args=agent.pending_args,
                    destination="tasks",
                    compensable=spec.compensable,
                    timeout=spec.timeout,
                    heartbeat=spec.heartbeat_timeout,
                    keep_args=True,
                )
        return False

    def dispatch_turn(self, node: AgentSpec, turn: int) -> None:
        step_name = node.turn_step(turn)
        agent = self.s.agents[node.name]
        args = AgentTurn(
            agent=node.name,
            turn=turn,
            max_turns=node.max_turns,
            data=json.loads(self.s.data.data or b"{}"),
            tools=[t.info() for t in node.tool_specs],
            history=[HistoryItem.model_validate(h.model_dump()) for h in agent.history],
        )
        st = self.s.steps.get(step_name) or StepState(name=step_name, run=1)
        self.dispatch_task(
            st,
            args=to_payload(args),
            destination="tasks",
            compensable=False,
            timeout=node.timeout,
            heartbeat=None,
        )

    def on_agent_decision(self, node: AgentSpec, turn: int, result: Payload | None) -> None:
        try:
            if result is None:
                raise PayloadDecodeError("the LLM step returned no decision")
            decision = from_payload(result, AgentDecision)
        except PayloadDecodeError as exc:
            self.agent_invalid(node, turn, None, None, f"invalid decision: {exc}")
            return
        if decision.answer is not None:
            self.emit(
                AgentTurnRecorded(
                    at=self.now,
                    agent=node.name,
                    turn=turn,
                    outcome="answer",
                    answer=decision.answer,
                    thought=decision.thought,
                )
            )
            data = self.data()
            if node.on_answer_fn is not None:
                data = node.on_answer_fn(self.saga, data, decision.answer)
            self.emit(
                AgentAnswered(
                    at=self.now,
                    agent=node.name,
                    turn=turn,
                    answer=decision.answer,
                    data=to_payload(data),
                )
            )
            return
        tool_name = decision.tool or ""
        arguments = json.dumps(decision.arguments, sort_keys=True)
        spec = node.tools.get(tool_name)
        if spec is None:
            known = ", ".join(node.tools)
            self.agent_invalid(
                node, turn, tool_name, arguments, f"unknown tool {tool_name!r}; tools: {known}"
            )
            return
        try:
            args = spec.args_type.model_validate(decision.arguments)
        except ValidationError as exc:
            self.agent_invalid(node, turn, tool_name, arguments, f"invalid arguments: {exc}")
            return
        self.emit(
            AgentTurnRecorded(
                at=self.now,
                agent=node.name,
                turn=turn,
                outcome="tool",
                tool=tool_name,
                arguments_json=arguments,
                thought=decision.thought,
            )
        )
        step_name = node.tool_step(tool_name, turn)
        self.emit(
            ToolCallRequested(
                at=self.now,
                agent=node.name,
                turn=turn,
                tool=tool_name,
                step=step_name,
                args=to_payload(args),
                needs_approval=spec.risky,
            )
        )
        if spec.risky:
            self.emit(
                WaitOpened(
                    at=self.now,
                    name=step_name,
                    kind="tool_approval",
                    timeout_at=self.now + node.approval_timeout,
                    agent=node.name,
                    tool_step=step_name,
                )
            )

    def agent_invalid(
        self, node: AgentSpec, turn: int, tool: str | None, arguments: str | None, error: str
    ) -> None:
        self.emit(
            AgentTurnRecorded(
                at=self.now,
                agent=node.name,
                turn=turn,
                outcome="invalid",
                tool=tool,
                arguments_json=arguments,
            )
        )
        self.emit(
            AgentObservation(
                at=self.now, agent=node.name, turn=turn, tool=tool, ok=False, content=error
            )
        )

    def on_tool_approval(self, wait: WaitState, sig: SignalSaga) -> None:
        agent_name = wait.agent or ""
        agent = self.s.agents[agent_name]
        self.emit(
            SignalAccepted(
                at=self.now,
                name=wait.name,
                by=sig.by,
                approved=sig.approved,
                note=sig.note,
                payload=sig.payload,
                data=self.s.data,
            )
        )
        _, tool_name, turn = parse_task_step(wait.name)
        if sig.approved:
            assert agent.pending_args is not None and tool_name is not None
            self.emit(
                ToolCallRequested(
                    at=self.now,
                    agent=agent_name,
                    turn=turn or agent.turn,
                    tool=tool_name,
                    step=wait.name,
                    args=agent.pending_args,
                    needs_approval=False,
                )
            )
            return
        note = f": {sig.note}" if sig.note else ""
        self.emit(
            AgentObservation(
                at=self.now,
                agent=agent_name,
                turn=turn or agent.turn,
                tool=tool_name,
                ok=False,
                content=f"the call of {tool_name} was rejected by {sig.by}{note}",
            )
        )
