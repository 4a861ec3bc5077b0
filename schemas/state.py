"""The saga snapshot written to the compacted state topic.

:class:`SagaState` holds everything the decider needs to decide the next
input, with no external lookups: the saga data, the position in the
definition, the live steps' attempts and deadlines, open waits, the timers
(as data, so a restored orchestrator can rebuild its timer wheel), usage and
budgets, and the journal position (``journal_seq``/``journal_hash``).

It holds live state only, so its size (and the cost of a decision) does not
grow with the saga's length: a finished step that can never run again and
has nothing to undo leaves ``steps`` (``StateTrimmed``); ``steps_retired``
counts them and ``recent_steps`` summarises the latest :data:`RECENT_STEPS`.
Steps that are running, waiting, failed, compensable or may run again (a
route or wait target, a parallel branch) stay.  The journal keeps all history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sagaline.schemas.base import Payload, Record, Usage
from sagaline.schemas.commands import ParentRef
from sagaline.schemas.limits import SlotState
from sagaline.schemas.timers import TimerKind

__all__ = [
    "RECENT_STEPS",
    "TERMINAL_STATUSES",
    "AgentHistoryItem",
    "AgentState",
    "CompensationStatus",
    "SagaState",
    "SagaStatus",
    "StepState",
    "StepStatus",
    "StepSummary",
    "Timer",
    "WaitState",
    "is_terminal",
]

SagaStatus = Literal[
    "running",
    "waiting",
    "paused",
    "compensating",
    "completed",
    "compensated",
    "failed",
    "cancelled",
]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "compensated", "failed", "cancelled"})
#: how many retired steps ``SagaState.recent_steps`` summarises
RECENT_STEPS = 5

StepStatus = Literal[
    "pending",
    "running",
    "retry_wait",
    "ready",
    "succeeded",
    "failed",
    "skipped",
    "abandoned",
]
CompensationStatus = Literal["none", "ready", "running", "retry_wait", "compensated", "failed"]


class Timer(Record):
    """A durable timer: when ``due_at`` passes, the runtime feeds a ``TimerFired``."""

    timer_id: str
    kind: TimerKind
    due_at: datetime
    step: str | None = None
    attempt: int | None = None


class StepState(Record):
    """One step's progress (steps of loops keep their latest run)."""

    name: str
    status: StepStatus = "pending"
    run: int = 0
    attempt: int = 0
    idempotency_key: str | None = None
    task_id: str | None = None
    destination: str = "tasks"
    compensable: bool = False
    result: Payload | None = None
    dispatched_at: datetime | None = None
    deadline_at: datetime | None = None
    heartbeat_deadline_at: datetime | None = None
    heartbeat_timeout_ms: int | None = None
    args: Payload | None = None
    progress: float | None = None
    last_error: str | None = None
    completed_at: datetime | None = None
    compensation_status: CompensationStatus = "none"
    compensation_attempt: int = 0
    compensation_task_id: str | None = None
    compensation_idempotency_key: str | None = None


class StepSummary(Record):
    """A finished step that left ``SagaState.steps`` (its full record is in the journal)."""

    name: str
    status: StepStatus
    attempt: int = 0
    completed_at: datetime | None = None


class WaitState(Record):
    """An open wait for a signal (approval)."""

    name: str
    kind: Literal["approval", "signal", "tool_approval"]
    opened_at: datetime
    timeout_at: datetime | None = None
    agent: str | None = None
    tool_step: str | None = None
    shown: Payload | None = None
    shown_sha256: str | None = None
    bound: bool = False


class AgentHistoryItem(Record):
    """One entry of an agent's transcript, shown to its LLM on the next turn."""

    turn: int
    role: Literal["assistant", "tool", "error"]
    tool: str | None = None
    content: str


class AgentState(Record):
    """An agent node's loop: the turn counter, transcript and current phase."""

    name: str
    turn: int = 0
    phase: Literal["idle", "thinking", "tool", "approval", "answered", "gave_up"] = "idle"
    history: list[AgentHistoryItem] = []
    pending_tool: str | None = None
    pending_tool_step: str | None = None
    pending_args: Payload | None = None
    answer: str | None = None


class SagaState(Record):
    """The snapshot of one saga (the value on the compacted state topic)."""

    saga_id: str
    saga_type: str
    saga_version: int
    status: SagaStatus = "running"
    data: Payload
    node: str | None = None
    node_kind: str | None = None
    branches: list[str] = []
    steps: dict[str, StepState] = {}
    #: finished steps that left ``steps`` (never to run again, nothing to undo)
    steps_retired: int = 0
    #: the attempts those steps took, together
    attempts_retired: int = 0
    #: the latest of them, oldest first (at most ``RECENT_STEPS`` of them)
    recent_steps: list[StepSummary] = []
    waits: list[WaitState] = []
    sleeping_until: datetime | None = None
    agents: dict[str, AgentState] = {}
    timers: list[Timer] = []
    completed_compensable: list[str] = []
    compensation_plan: list[str] = []
    compensation_reason: str | None = None
    final_status: Literal["compensated", "cancelled"] | None = None
    paused_from: SagaStatus | None = None
    pause_reason: str | None = None
    usage: Usage = Usage()
    retries_used: int = 0
    budget_exceeded: list[str] = []
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    deadline_at: datetime | None = None
    outcome_reason: str | None = None
    input_sha256: str
    requested_by: str | None = None
    parent: ParentRef | None = None
    journal_seq: int = 0
    journal_hash: str = ""
    #: slots of concurrency/rate limits this saga waits for or holds
    slots: list[SlotState] = []

    @property
    def is_terminal(self) -> bool:
        """Whether the saga has ended (completed, compensated, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES

    def step(self, name: str) -> StepState | None:
        """The state of step ``name``, if it ever started."""
        return self.steps.get(name)


def is_terminal(state: SagaState | None) -> bool:
    """Whether ``state`` exists and has ended."""
    return state is not None and state.is_terminal
