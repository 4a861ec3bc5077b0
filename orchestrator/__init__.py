"""sagaline orchestrator: saga definitions, the pure decider, the fold, the test kit."""

from orchestrator.agents import AgentDecision, AgentTurn, ToolInfo
from orchestrator.context import StepContext
from orchestrator.decider import Decision, Input, Outgoing, decide, pending_timers, timer_input
from orchestrator.errors import (
    OrchestratorError,
    RetryableError,
    SagaDefinitionError,
    SagalineError,
    TerminalError,
    UnknownSagaType,
)
from orchestrator.fold import evolve, fold
from orchestrator.journal import make_journal_entry, record_decision, verify_chain
from orchestrator.policies import Budget, Retry
from orchestrator.registry import SagaRegistry
from orchestrator.saga import (
    DONE,
    Saga,
    SignalInfo,
    StepHandler,
    agent,
    approval,
    child,
    parallel,
    sleep,
    step,
    tool,
    wait_for_signal,
)

__all__ = [
    "DONE",
    "AgentDecision",
    "AgentTurn",
    "Budget",
    "Decision",
    "Input",
    "OrchestratorError",
    "Outgoing",
    "Retry",
    "RetryableError",
    "Saga",
    "SagaDefinitionError",
    "SagaRegistry",
    "SagalineError",
    "SignalInfo",
    "StepContext",
    "StepHandler",
    "TerminalError",
    "ToolInfo",
    "UnknownSagaType",
    "agent",
    "approval",
    "child",
    "decide",
    "evolve",
    "fold",
    "make_journal_entry",
    "parallel",
    "pending_timers",
    "record_decision",
    "sleep",
    "step",
    "timer_input",
    "tool",
    "verify_chain",
    "wait_for_signal",
]
