"""Live state only: what a decision trims from the snapshot (``StateTrimmed``).

A snapshot that kept every step would grow with the saga, and so would the
cost of every decision (each one folds, stamps and encodes the whole
snapshot).  At the end of a decision, :func:`trim` lets go of what no later
decision can need, the journal keeping it all:

* a finished step (succeeded or skipped) with nothing to undo (not
  compensable) that can never run again: a step of the saga's top-level
  sequence that no ``route`` or wait outcome names and that is not the
  current node, or an agent's LLM turn or tool call of an earlier turn (or
  of an agent the saga has left).  Its run counter is never needed again, so
  a loop cannot reuse an idempotency key; steps that may run again, parallel
  branches and child sagas stay;
* the oldest items of an agent's transcript past its ``history_window``.

Which steps may run again is the definition's business, so the decider
decides it and journals the decision; the fold applies it without the
definition, like every other event.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sagaline.orchestrator.core.nodes.agent import AgentSpec
from sagaline.orchestrator.core.nodes.base import parse_task_step
from sagaline.schemas.events import StateTrimmed
from sagaline.schemas.state import SagaState, StepState
from sagaline.schemas.trusted import make

if TYPE_CHECKING:
    from sagaline.orchestrator.core.decision import DecisionContext
    from sagaline.orchestrator.core.saga import Saga

__all__ = ["TrimPlan", "trim", "trim_plan"]

_FINISHED = frozenset({"succeeded", "skipped"})


@dataclass(frozen=True)
class TrimPlan:
    """What a definition lets a decision trim."""

    #: top-level step nodes that never run twice (no route or wait names them)
    once_steps: frozenset[str]
    #: agents that never run twice
    once_agents: frozenset[str]
    #: each agent's transcript window (agents that declare one)
    windows: dict[str, int]


def trim_plan(definition: type[Saga[Any]]) -> TrimPlan:
    """The :class:`TrimPlan` of ``definition`` (computed once per class)."""
    plan = _PLANS.get(definition)
    if plan is None:
        plan = _PLANS[definition] = _plan(definition)
    return plan


_PLANS: weakref.WeakKeyDictionary[type[Saga[Any]], TrimPlan] = weakref.WeakKeyDictionary()


def _plan(definition: type[Saga[Any]]) -> TrimPlan:
    once = definition.sequence[: _loop_start(definition)]
    agents = [n for n in definition.sequence if isinstance(n, AgentSpec)]
    return TrimPlan(
        once_steps=frozenset(n.name for n in once if n.kind == "step"),
        once_agents=frozenset(n.name for n in once if isinstance(n, AgentSpec)),
        windows={a.name: a.history_window for a in agents if a.history_window is not None},
    )


def _loop_start(definition: type[Saga[Any]]) -> int:
    """The first position of the sequence a backward jump (a loop) can reach again.

    A ``route`` or a wait outcome that names a node at or before its own
    position makes every node from the target on runnable again (the saga
    continues in order from the target).  Nodes before the first such target
    run at most once.  A reference from, or to, a node outside the top-level
    sequence counts as a loop back to the start (conservative).
    """
    position = {n.name: i for i, n in enumerate(definition.sequence)}
    start = len(definition.sequence)
    for node in definition.nodes.values():
        source = position.get(node.name, len(definition.sequence))
        for target in node.references():
            at = position.get(target, 0)
            if at <= source:
                start = min(start, at)
    return start


def trim(ctx: DecisionContext) -> None:
    """Emit ``StateTrimmed`` for what the saga's snapshot no longer needs."""
    s = ctx.state
    if s is None or s.is_terminal:
        return
    plan = trim_plan(ctx.defn)
    steps = [name for name, st in s.steps.items() if _retires(plan, s, name, st)]
    history = {
        name: plan.windows[name]
        for name, agent in s.agents.items()
        if name in plan.windows and len(agent.history) > plan.windows[name]
    }
    if steps or history:
        ctx.emit(make(StateTrimmed, at=ctx.now, steps=steps, agent_history=history))


def _retires(plan: TrimPlan, s: SagaState, name: str, st: StepState) -> bool:
    if st.status not in _FINISHED or st.compensable or name == s.node or name in s.branches:
        return False
    if name in plan.once_steps:
        return True
    node, _, turn = parse_task_step(name)
    if turn is None or node not in plan.once_agents:
        return False
    agent = s.agents.get(node)
    return s.node != node or agent is None or turn < agent.turn
