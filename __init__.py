"""sagaline: durable execution for AI-agent workflows.

The public face.  Everything a user's project needs is importable from here::

    from sagaline import Saga, step, approval, SagaClient, StepContext, SagaTestKit

The repository root is this package: ``sagaline.schemas`` is ``schemas/``,
``sagaline.orchestrator`` is ``orchestrator/``, ``sagaline.consumers`` is
``consumers/`` and ``sagaline.sagas`` is ``sagas/`` (see docs/architecture.md).

Every name is imported on first use (PEP 562): ``import sagaline`` (which every
``sagaline.…`` import runs first, the command line included) loads nothing
else, and ``from sagaline import Saga`` loads the core but not Kafka,
PostgreSQL or the settings.  Type checkers see the names through the
``TYPE_CHECKING`` imports below.
"""

from typing import TYPE_CHECKING

from sagaline._lazy import LazyExports

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
    from sagaline.orchestrator.replay import load_definitions, replay
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

_CORE = "sagaline.orchestrator.core"
_CLIENT = "sagaline.orchestrator.client"
#: where each public name lives (imported on first use)
_HOMES: dict[str, tuple[str, ...]] = {
    "sagaline.consumers": ("Relay", "Worker", "WorkerStepContext"),
    "sagaline.orchestrator.audit": ("audit",),
    _CLIENT: (
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
    ),
    "sagaline.orchestrator.config": ("Settings",),
    f"{_CORE}.agents": ("AgentDecision", "AgentTurn", "ToolInfo"),
    f"{_CORE}.audit_rules": ("audit_entries",),
    f"{_CORE}.context": ("StepContext",),
    f"{_CORE}.decider": (
        "Decision",
        "Input",
        "Outgoing",
        "decide",
        "pending_timers",
        "timer_input",
    ),
    f"{_CORE}.errors": (
        "OrchestratorError",
        "RetryableError",
        "SagaDefinitionError",
        "SagalineError",
        "TerminalError",
        "UnknownSagaType",
    ),
    f"{_CORE}.fold": ("evolve", "fold"),
    f"{_CORE}.journal": ("make_journal_entry", "record_decision", "verify_chain"),
    f"{_CORE}.limit_spec": ("Limit",),
    f"{_CORE}.policies": ("Budget", "Retry"),
    f"{_CORE}.registry": ("SagaRegistry",),
    f"{_CORE}.replay_check": ("replay_entries",),
    f"{_CORE}.saga": (
        "DONE",
        "Done",
        "Node",
        "Saga",
        "SignalInfo",
        "StepHandler",
        "StepSpec",
        "agent",
        "approval",
        "child",
        "parallel",
        "sleep",
        "step",
        "tool",
        "wait_for_signal",
    ),
    f"{_CORE}.schedule": ("Schedule",),
    f"{_CORE}.testing": ("SagaTestKit",),
    "sagaline.orchestrator.replay": ("load_definitions", "replay"),
    "sagaline.schemas.base": ("Usage",),
    "sagaline.schemas.personal": ("ERASED", "Personal", "Secret"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


if not TYPE_CHECKING:  # a type checker sees the names above, and flags any other
    _EXPORTS = LazyExports(globals(), _HOME_OF)
    __getattr__ = _EXPORTS.attribute
    __dir__ = _EXPORTS.names
