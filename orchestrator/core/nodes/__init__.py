"""Node kinds: one module per kind, each registered with :func:`~.base.register`.

=============  ================================================================
``step``       a Python function a worker runs (:mod:`.step`)
``wait``       a durable wait for an approval or a signal (:mod:`.wait`)
``sleep``      a durable sleep (:mod:`.sleep`)
``agent``      an LLM loop over tools (:mod:`.agent`, :mod:`.agent_turns`)
``tool``       a tool an agent may call (:mod:`.agent`)
``parallel``   steps that run at once (:mod:`.parallel`)
``child``      a child saga (:mod:`.child`)
=============  ================================================================

Compensation, the path every saga can take, is :mod:`.compensation`.
Importing this package registers every kind.
"""

from sagaline.orchestrator.core.nodes.agent import AgentSpec, ToolSpec, agent, tool
from sagaline.orchestrator.core.nodes.base import (
    DONE,
    Done,
    Node,
    NodeKind,
    OutcomeAction,
    StepHandler,
    kind_of,
    parse_task_step,
    register,
    resolve_hints,
)
from sagaline.orchestrator.core.nodes.child import ChildSpec, child
from sagaline.orchestrator.core.nodes.parallel import ParallelSpec, parallel
from sagaline.orchestrator.core.nodes.sleep import SleepSpec, sleep
from sagaline.orchestrator.core.nodes.step import StepSpec, step
from sagaline.orchestrator.core.nodes.wait import SignalInfo, WaitSpec, approval, wait_for_signal

__all__ = [
    "DONE",
    "AgentSpec",
    "ChildSpec",
    "Done",
    "Node",
    "NodeKind",
    "OutcomeAction",
    "ParallelSpec",
    "SignalInfo",
    "SleepSpec",
    "StepHandler",
    "StepSpec",
    "ToolSpec",
    "WaitSpec",
    "agent",
    "approval",
    "child",
    "kind_of",
    "parallel",
    "parse_task_step",
    "register",
    "resolve_hints",
    "sleep",
    "step",
    "tool",
    "wait_for_signal",
]
