"""Decision events: what the decider decided, folded into saga state by ``evolve``.

Every event is a :class:`~sagaline.schemas.base.Record` with an ``event`` literal that
names it (so a JSON round trip is unambiguous) and ``at``, the time of the
input that caused it.  Events carry no saga id: the journal entry's envelope
does (only :class:`SagaStarted` names the saga, so a fold needs no envelope).
Folding needs no saga definition: every fact a fold needs is in the events.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sagaline.schemas.base import Payload, Record, Usage
from sagaline.schemas.commands import ParentRef
from sagaline.schemas.limits import LIMIT_EVENT_TYPES, LimitEvent

__all__ = [
    "EVENT_TYPES",
    "AgentAnswered",
    "AgentGaveUp",
    "AgentObservation",
    "AgentTurnRecorded",
    "AgentTurnStarted",
    "BudgetExceeded",
    "ChildSagaRequested",
    "CompensationAttemptFailed",
    "CompensationDispatched",
    "CompensationRetryDue",
    "CompensationStarted",
    "FinalStatus",
    "HeartbeatRecorded",
    "IgnoreReason",
    "InputIgnored",
    "ModelFallback",
    "NodeEntered",
    "SagaEvent",
    "SagaFinished",
    "SagaForked",
    "SagaPaused",
    "SagaResumed",
    "SagaStarted",
    "SignalAccepted",
    "SignalRejected",
    "SleepEnded",
    "SleepStarted",
    "StateTrimmed",
    "StepAttemptFailed",
    "StepCompensated",
    "StepCompleted",
    "StepDispatched",
    "StepRetryDue",
    "StepRetryRequested",
    "StepSkipped",
    "StepTimedOut",
    "ToolCallRequested",
    "UsageRecorded",
    "WaitOpened",
    "WaitTimedOut",
]

FinalStatus = Literal["completed", "compensated", "failed", "cancelled"]
IgnoreReason = Literal[
    "duplicate",
    "stale",
    "late",
    "out_of_order",
    "terminal",
    "not_applicable",
    "conflict",
    "unknown_step",
]
NodeKind = Literal["step", "wait", "sleep", "agent", "parallel", "child"]


class SagaStarted(Record):
    """The saga exists: its type, version, input and deadline."""

    event: Literal["SagaStarted"] = "SagaStarted"
    at: datetime
    saga_id: str
    saga_type: str
    saga_version: int
    data: Payload
    input_sha256: str
    requested_by: str | None = None
    deadline_at: datetime | None = None
    parent: ParentRef | None = None


class NodeEntered(Record):
    """The saga moved to a node of its definition (``node=None``: past the last one)."""

    event: Literal["NodeEntered"] = "NodeEntered"
    at: datetime
    node: str | None
    kind: NodeKind | None = None
    previous: str | None = None
    branches: list[str] = []
    via: str = "sequence"


class StepDispatched(Record):
    """One attempt of a step was sent to a worker (or a participant topic)."""

    event: Literal["StepDispatched"] = "StepDispatched"
    at: datetime
    step: str
    attempt: int
    run: int
    idempotency_key: str
    task_id: str
    destination: str = "tasks"
    compensable: bool = False
    deadline_at: datetime | None = None
    heartbeat_deadline_at: datetime | None = None
    heartbeat_timeout_ms: int | None = None
    args: Payload | None = None


class StepCompleted(Record):
    """A step attempt succeeded; ``data`` is the saga data after folding the result in."""

    event: Literal["StepCompleted"] = "StepCompleted"
    at: datetime
    step: str
    attempt: int
    result: Payload | None = None
    data: Payload


class StepAttemptFailed(Record):
    """A step attempt failed; ``retry_at`` is set when it will be retried, ``final`` when not."""

    event: Literal["StepAttemptFailed"] = "StepAttemptFailed"
    at: datetime
    step: str
    attempt: int
    retryable: bool
    error_type: str
    error_message: str
    retry_at: datetime | None = None
    final: bool = False


class StepTimedOut(Record):
    """A step attempt ran past its deadline or heartbeat deadline."""

    event: Literal["StepTimedOut"] = "StepTimedOut"
    at: datetime
    step: str
    attempt: int
    kind: Literal["step_timeout", "heartbeat_timeout"]


class StepRetryDue(Record):
    """The backoff of a failed attempt elapsed: the step may be dispatched again."""

    event: Literal["StepRetryDue"] = "StepRetryDue"
    at: datetime
    step: str
    attempt: int


class HeartbeatRecorded(Record):
    """A running step heartbeated; its heartbeat deadline moves."""

    event: Literal["HeartbeatRecorded"] = "HeartbeatRecorded"
    at: datetime
    step: str
    attempt: int
    progress: float | None = None
    detail: str | None = None
    heartbeat_deadline_at: datetime | None = None


class UsageRecorded(Record):
    """Resources a step reported (LLM calls, tokens, cost), added to the saga's totals."""

    event: Literal["UsageRecorded"] = "UsageRecorded"
    at: datetime
    step: str
    usage: Usage


class WaitOpened(Record):
    """The saga waits for a signal (an approval) until ``timeout_at``."""

    event: Literal["WaitOpened"] = "WaitOpened"
    at: datetime
    name: str
    kind: Literal["approval", "signal", "tool_approval"]
    timeout_at: datetime | None = None
    agent: str | None = None
    tool_step: str | None = None
    shown: Payload | None = None
    shown_sha256: str | None = None
    bound: bool = False


class SignalAccepted(Record):
    """A signal resolved an open wait; ``data`` is the saga data afterwards."""

    event: Literal["SignalAccepted"] = "SignalAccepted"
    at: datetime
    name: str
    by: str
    approved: bool | None = None
    note: str | None = None
    payload: Payload | None = None
    data: Payload
    seen_sha256: str | None = None


class SignalRejected(Record):
    """A signal arrived for a wait the saga is not in: recorded, never dropped."""

    event: Literal["SignalRejected"] = "SignalRejected"
    at: datetime
    name: str
    by: str
    reason: str
    approved: bool | None = None
    message_id: str | None = None


class WaitTimedOut(Record):
    """An open wait's timeout elapsed."""

    event: Literal["WaitTimedOut"] = "WaitTimedOut"
    at: datetime
    name: str


class SleepStarted(Record):
    """A durable sleep began; it ends at ``until``."""

    event: Literal["SleepStarted"] = "SleepStarted"
    at: datetime
    name: str
    until: datetime


class SleepEnded(Record):
    """A durable sleep ended."""

    event: Literal["SleepEnded"] = "SleepEnded"
    at: datetime
    name: str


class BudgetExceeded(Record):
    """A budget limit was passed (``kind``: retries, llm_calls, tokens, cost_micros)."""

    event: Literal["BudgetExceeded"] = "BudgetExceeded"
    at: datetime
    kind: str
    limit: int
    used: int


class SagaPaused(Record):
    """No new work is dispatched until the saga is resumed."""

    event: Literal["SagaPaused"] = "SagaPaused"
    at: datetime
    by: str
    reason: str | None = None


class SagaResumed(Record):
    """A paused saga continues."""

    event: Literal["SagaResumed"] = "SagaResumed"
    at: datetime
    by: str
    reason: str | None = None


class StepSkipped(Record):
    """An operator treated a step as done; ``data`` is the saga data afterwards."""

    event: Literal["StepSkipped"] = "StepSkipped"
    at: datetime
    step: str
    by: str
    reason: str | None = None
    result: Payload | None = None
    data: Payload


class StepRetryRequested(Record):
    """An operator asked for a failed (or backing-off) step to run again now."""

    event: Literal["StepRetryRequested"] = "StepRetryRequested"
    at: datetime
    step: str
    by: str
    reason: str | None = None


class CompensationStarted(Record):
    """The saga undoes its completed compensable steps, in ``steps`` order."""

    event: Literal["CompensationStarted"] = "CompensationStarted"
    at: datetime
    reason: str
    steps: list[str]
    final_status: Literal["compensated", "cancelled"] = "compensated"


class CompensationDispatched(Record):
    """One attempt of a step's compensation was sent to a worker."""

    event: Literal["CompensationDispatched"] = "CompensationDispatched"
    at: datetime
    step: str
    attempt: int
    idempotency_key: str
    task_id: str
    destination: str = "tasks"
    deadline_at: datetime | None = None


class StepCompensated(Record):
    """A step's compensation succeeded."""

    event: Literal["StepCompensated"] = "StepCompensated"
    at: datetime
    step: str
    attempt: int


class CompensationAttemptFailed(Record):
    """A compensation attempt failed; retried at ``retry_at``, or ``final``."""

    event: Literal["CompensationAttemptFailed"] = "CompensationAttemptFailed"
    at: datetime
    step: str
    attempt: int
    retryable: bool
    error_type: str
    error_message: str
    retry_at: datetime | None = None
    final: bool = False


class CompensationRetryDue(Record):
    """The backoff of a failed compensation attempt elapsed."""

    event: Literal["CompensationRetryDue"] = "CompensationRetryDue"
    at: datetime
    step: str
    attempt: int


class InputIgnored(Record):
    """An input changed nothing (duplicate, stale attempt, late, after the end, ...)."""

    event: Literal["InputIgnored"] = "InputIgnored"
    at: datetime
    input_type: str
    reason: IgnoreReason
    detail: str = ""
    message_id: str | None = None


class ChildSagaRequested(Record):
    """A child saga was started for the node ``step``; its outcome replies to it."""

    event: Literal["ChildSagaRequested"] = "ChildSagaRequested"
    at: datetime
    step: str
    child_saga_id: str
    child_type: str
    child_version: int


class SagaForked(Record):
    """This saga is a fork of ``source_saga_id``: its first decision re-decided
    ``copied`` recorded inputs of the source (through journal ``source_seq``,
    where ``from_step`` was dispatched) and continues from there."""

    event: Literal["SagaForked"] = "SagaForked"
    at: datetime
    source_saga_id: str
    source_version: int
    from_step: str
    source_seq: int
    copied: int


class AgentTurnStarted(Record):
    """An agent asks its LLM for turn ``turn`` (the task's step is ``step``)."""

    event: Literal["AgentTurnStarted"] = "AgentTurnStarted"
    at: datetime
    agent: str
    turn: int
    step: str
    model: str | None = None


class ModelFallback(Record):
    """An agent's LLM turn falls back to the next model of its list.

    ``previous_model`` failed ``attempt - 1`` (``reason``); attempt ``attempt``
    of ``step`` asks ``model``.
    """

    event: Literal["ModelFallback"] = "ModelFallback"
    at: datetime
    agent: str
    turn: int
    step: str
    attempt: int
    model: str
    previous_model: str
    reason: str


class AgentTurnRecorded(Record):
    """The LLM's recorded decision for a turn: a tool call, an answer, or invalid."""

    event: Literal["AgentTurnRecorded"] = "AgentTurnRecorded"
    at: datetime
    agent: str
    turn: int
    outcome: Literal["tool", "answer", "invalid"]
    tool: str | None = None
    arguments_json: str | None = None
    answer: str | None = None
    thought: str | None = None
    model: str | None = None
    attempt: int | None = None
    usage: Usage | None = None


class ToolCallRequested(Record):
    """A validated tool call (``step``: its task's step name; risky tools need approval)."""

    event: Literal["ToolCallRequested"] = "ToolCallRequested"
    at: datetime
    agent: str
    turn: int
    tool: str
    step: str
    args: Payload
    needs_approval: bool = False


class AgentObservation(Record):
    """What the agent learns before its next turn: a tool result, an error, a rejection."""

    event: Literal["AgentObservation"] = "AgentObservation"
    at: datetime
    agent: str
    turn: int
    tool: str | None = None
    ok: bool
    content: str


class AgentAnswered(Record):
    """The agent's final answer; ``data`` is the saga data after folding it in."""

    event: Literal["AgentAnswered"] = "AgentAnswered"
    at: datetime
    agent: str
    turn: int
    answer: str
    data: Payload


class AgentGaveUp(Record):
    """The agent used all its turns (or its LLM step failed for good)."""

    event: Literal["AgentGaveUp"] = "AgentGaveUp"
    at: datetime
    agent: str
    turn: int
    reason: str


class SagaFinished(Record):
    """The saga ended; nothing happens after this event."""

    event: Literal["SagaFinished"] = "SagaFinished"
    at: datetime
    status: FinalStatus
    reason: str | None = None


class StateTrimmed(Record):
    """Bookkeeping: what the snapshot no longer needs leaves it (the journal keeps it).

    ``steps``: finished steps that can never run again leave ``SagaState.steps``
    (the latest few stay summarised in ``recent_steps``, the count in
    ``steps_retired``); ``agent_history``: each named agent keeps only the last
    *n* items of its transcript (its ``history_window``).  Nothing is decided
    from it: a strict replay leaves it out of the comparison.
    """

    event: Literal["StateTrimmed"] = "StateTrimmed"
    at: datetime
    steps: list[str] = []
    agent_history: dict[str, int] = {}


SagaEvent = (
    SagaStarted
    | NodeEntered
    | StepDispatched
    | StepCompleted
    | StepAttemptFailed
    | StepTimedOut
    | StepRetryDue
    | HeartbeatRecorded
    | UsageRecorded
    | WaitOpened
    | SignalAccepted
    | SignalRejected
    | WaitTimedOut
    | SleepStarted
    | SleepEnded
    | BudgetExceeded
    | SagaPaused
    | SagaResumed
    | StepSkipped
    | StepRetryRequested
    | CompensationStarted
    | CompensationDispatched
    | StepCompensated
    | CompensationAttemptFailed
    | CompensationRetryDue
    | InputIgnored
    | ChildSagaRequested
    | AgentTurnStarted
    | AgentTurnRecorded
    | ModelFallback
    | SagaForked
    | ToolCallRequested
    | AgentObservation
    | AgentAnswered
    | AgentGaveUp
    | SagaFinished
    | StateTrimmed
    | LimitEvent
)

EVENT_TYPES: tuple[type[Record], ...] = (
    SagaStarted,
    NodeEntered,
    StepDispatched,
    StepCompleted,
    StepAttemptFailed,
    StepTimedOut,
    StepRetryDue,
    HeartbeatRecorded,
    UsageRecorded,
    WaitOpened,
    SignalAccepted,
    SignalRejected,
    WaitTimedOut,
    SleepStarted,
    SleepEnded,
    BudgetExceeded,
    SagaPaused,
    SagaResumed,
    StepSkipped,
    StepRetryRequested,
    CompensationStarted,
    CompensationDispatched,
    StepCompensated,
    CompensationAttemptFailed,
    CompensationRetryDue,
    InputIgnored,
    ChildSagaRequested,
    AgentTurnStarted,
    AgentTurnRecorded,
    ToolCallRequested,
    AgentObservation,
    AgentAnswered,
    AgentGaveUp,
    SagaFinished,
    StateTrimmed,
    ModelFallback,
    SagaForked,
    *LIMIT_EVENT_TYPES,
)
