"""sagaline orchestrator: saga definitions, the pure decider, the fold, the test kit."""

from typing import TYPE_CHECKING, Any

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
    "SagaAlreadyStarted",
    "SagaClient",
    "SagaDefinitionError",
    "SagaHandle",
    "SagaNotFound",
    "SagaRegistry",
    "SagalineError",
    "SignalInfo",
    "StepContext",
    "StepHandler",
    "TerminalError",
    "ToolInfo",
    "UnknownSagaType",
    "WaitTimeout",
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

# The client needs Kafka: imported on first use so the pure core stays light.
_CLIENT_NAMES = ("SagaAlreadyStarted", "SagaClient", "SagaHandle", "SagaNotFound", "WaitTimeout")

if TYPE_CHECKING:
    from orchestrator.client import (
        SagaAlreadyStarted,
        SagaClient,
        SagaHandle,
        SagaNotFound,
        WaitTimeout,
    )


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from orchestrator import client

        return getattr(client, name)
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
