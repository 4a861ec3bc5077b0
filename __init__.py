"""sagaline: durable execution for AI-agent workflows.

The public face.  Everything a user's project needs is importable from here::

    from sagaline import Saga, step, approval, SagaClient, StepContext, SagaTestKit

The repository root is this package: ``sagaline.schemas`` is ``schemas/``,
``sagaline.orchestrator`` is ``orchestrator/``, ``sagaline.consumers`` is
``consumers/`` and ``sagaline.sagas`` is ``sagas/`` (see docs/architecture.md).
The client and the worker need Kafka and PostgreSQL: they are imported on
first use, so ``import sagaline`` stays light.
"""

from typing import TYPE_CHECKING, Any

from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn, ToolInfo
from sagaline.orchestrator.core.audit_rules import audit_entries
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.decider import (
    Decision,
    Input,
    Outgoing,
    decide,
    pending_timers,
    timer_input,
)
from sagaline.orchestrator.core.errors import (
    OrchestratorError,
    RetryableError,
    SagaDefinitionError,
    SagalineError,
    TerminalError,
    UnknownSagaType,
)
from sagaline.orchestrator.core.fold import evolve, fold
from sagaline.orchestrator.core.journal import make_journal_entry, record_decision, verify_chain
from sagaline.orchestrator.core.limit_spec import Limit
from sagaline.orchestrator.core.policies import Budget, Retry
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.replay_check import replay_entries
from sagaline.orchestrator.core.saga import (
    DONE,
    Done,
    Node,
    Saga,
    SignalInfo,
    StepHandler,
    StepSpec,
    agent,
    approval,
    child,
    parallel,
    sleep,
    step,
    tool,
    wait_for_signal,
)
from sagaline.orchestrator.core.schedule import Schedule
from sagaline.orchestrator.core.testing import SagaTestKit
from sagaline.schemas.base import Usage
from sagaline.schemas.personal import ERASED, Personal, Secret

__all__ = [
    "DONE",
    "ERASED",
    "AgentDecision",
    "AgentTurn",
    "Budget",
    "Decision",
    "DeliveryFailed",
    "Done",
    "Input",
    "KafkaUnavailable",
    "Limit",
    "Node",
    "OrchestratorError",
    "Outgoing",
    "Personal",
    "Receipt",
    "Relay",
    "Retry",
    "RetryableError",
    "Saga",
    "SagaAlreadyStarted",
    "SagaClient",
    "SagaDefinitionError",
    "SagaHandle",
    "SagaNotFound",
    "SagaRegistry",
    "SagaRejected",
    "SagaTestKit",
    "SagalineError",
    "Schedule",
    "Secret",
    "Settings",
    "SignalInfo",
    "StepContext",
    "StepHandler",
    "StepSpec",
    "TerminalError",
    "ToolInfo",
    "UnknownSagaType",
    "UnsupportedDataModel",
    "Usage",
    "Verdict",
    "WaitTimeout",
    "Worker",
    "WorkerStepContext",
    "agent",
    "approval",
    "audit",
    "audit_entries",
    "child",
    "decide",
    "evolve",
    "fold",
    "load_definitions",
    "make_journal_entry",
    "parallel",
    "pending_timers",
    "record_decision",
    "replay",
    "replay_entries",
    "sleep",
    "step",
    "timer_input",
    "tool",
    "verify_chain",
    "wait_for_signal",
]

# The client needs Kafka: imported on first use so the pure core stays light.
_CLIENT_NAMES = (
    "DeliveryFailed",
    "KafkaUnavailable",
    "Receipt",
    "SagaAlreadyStarted",
    "SagaClient",
    "SagaHandle",
    "SagaNotFound",
    "SagaRejected",
    "UnsupportedDataModel",
    "Verdict",
    "WaitTimeout",
)
# The worker and the relay need PostgreSQL and Kafka: same.
_WORKER_NAMES = ("Relay", "Worker", "WorkerStepContext")
# Replay and audit read the journal from Kafka (and the inbox from PostgreSQL): same.
_AUDIT_NAMES = ("audit", "load_definitions", "replay")

if TYPE_CHECKING:
    from sagaline.consumers import Relay, Worker, WorkerStepContext
    from sagaline.orchestrator.audit import audit
    from sagaline.orchestrator.client import (
        DeliveryFailed,
        KafkaUnavailable,
        Receipt,
        SagaAlreadyStarted,
        SagaClient,
        SagaHandle,
        SagaNotFound,
        SagaRejected,
        UnsupportedDataModel,
        Verdict,
        WaitTimeout,
    )
    from sagaline.orchestrator.replay import load_definitions, replay


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from sagaline.orchestrator import client

        return getattr(client, name)
    if name in _WORKER_NAMES:
        from sagaline import consumers

        return getattr(consumers, name)
    if name in _AUDIT_NAMES:
        from sagaline.orchestrator import audit as audit_io
        from sagaline.orchestrator import replay as replay_io

        return getattr(audit_io if name == "audit" else replay_io, name)
    raise AttributeError(f"module 'sagaline' has no attribute {name!r}")
