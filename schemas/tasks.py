"""Tasks: written by the orchestrator to the tasks topic, consumed by workers."""

from __future__ import annotations

from datetime import datetime

from sagaline.schemas.base import Envelope, Payload, Record

__all__ = ["TASK_TYPES", "CompensateStep", "ExecuteStep", "Task"]


class ExecuteStep(Record):
    """Run one attempt of a step.

    ``idempotency_key`` is the same for every attempt of the same step
    execution (the inbox is unique on it); ``task_id`` is unique per attempt.
    ``args`` is the step's input (by default the saga data).  ``deadline_at``
    is when the orchestrator stops waiting for this attempt;
    ``heartbeat_timeout_ms`` (when set) is how long the step may go without
    heartbeating.
    """

    envelope: Envelope
    step: str
    attempt: int
    idempotency_key: str
    task_id: str
    args: Payload
    deadline_at: datetime | None = None
    heartbeat_timeout_ms: int | None = None


class CompensateStep(Record):
    """Undo a completed step (one attempt of its compensation)."""

    envelope: Envelope
    step: str
    attempt: int
    idempotency_key: str
    task_id: str
    args: Payload
    step_result: Payload | None = None
    deadline_at: datetime | None = None


Task = ExecuteStep | CompensateStep
TASK_TYPES: tuple[type[Record], ...] = (ExecuteStep, CompensateStep)
