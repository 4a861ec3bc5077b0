"""Building the replies a worker sends for a task (pure: no I/O)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from sagaline.schemas.base import Envelope, Payload, Record, Usage
from sagaline.schemas.replies import (
    CompensationFailed,
    CompensationSucceeded,
    StepFailed,
    StepHeartbeat,
    StepSucceeded,
)
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = [
    "failure_reply",
    "heartbeat_reply",
    "reply_envelope",
    "restamp",
    "success_reply",
]

_NAMESPACE = uuid.UUID("6f1f3c1e-6d0b-4d43-9a39-5b1a8f0e2c11")

Task = ExecuteStep | CompensateStep


def _message_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def reply_envelope(
    task: Task,
    *,
    now: datetime | None = None,
    suffix: str = "reply",
    trace: Mapping[str, str] | None = None,
) -> Envelope:
    """Envelope of a reply to ``task``: a message id derived from the task id (so
    every reply for one task attempt has the same id and duplicates are dropped),
    caused by the task, carrying its correlation id and the trace context
    ``trace`` (the worker's step span; default: the task's own)."""
    env = task.envelope
    return Envelope(
        message_id=_message_id(suffix, task.task_id),
        saga_id=env.saga_id,
        saga_type=env.saga_type,
        saga_version=env.saga_version,
        occurred_at=now or datetime.now(UTC),
        causation_id=env.message_id,
        correlation_id=env.correlation_id,
        trace=dict(trace) if trace else dict(env.trace),
    )


def success_reply(
    task: Task, result: Payload | None, usage: Usage, *, trace: Mapping[str, str] | None = None
) -> Record:
    """``StepSucceeded`` or ``CompensationSucceeded``."""
    if isinstance(task, ExecuteStep):
        return StepSucceeded(
            envelope=reply_envelope(task, trace=trace),
            step=task.step,
            attempt=task.attempt,
            idempotency_key=task.idempotency_key,
            task_id=task.task_id,
            result=result,
            usage=usage,
        )
    return CompensationSucceeded(
        envelope=reply_envelope(task, trace=trace),
        step=task.step,
        attempt=task.attempt,
        idempotency_key=task.idempotency_key,
        task_id=task.task_id,
    )


def failure_reply(
    task: Task,
    *,
    retryable: bool,
    error_type: str,
    error_message: str,
    usage: Usage,
    trace: Mapping[str, str] | None = None,
) -> Record:
    """``StepFailed`` or ``CompensationFailed``."""
    if isinstance(task, ExecuteStep):
        return StepFailed(
            envelope=reply_envelope(task, trace=trace),
            step=task.step,
            attempt=task.attempt,
            idempotency_key=task.idempotency_key,
            task_id=task.task_id,
            retryable=retryable,
            error_type=error_type,
            error_message=error_message[:4000],
            usage=usage,
        )
    return CompensationFailed(
        envelope=reply_envelope(task, trace=trace),
        step=task.step,
        attempt=task.attempt,
        idempotency_key=task.idempotency_key,
        task_id=task.task_id,
        retryable=retryable,
        error_type=error_type,
        error_message=error_message[:4000],
    )


def heartbeat_reply(
    task: ExecuteStep, sequence: int, progress: float | None, detail: str | None
) -> StepHeartbeat:
    """A ``StepHeartbeat`` (its own message id per beat)."""
    return StepHeartbeat(
        envelope=reply_envelope(task, suffix=f"heartbeat-{sequence}"),
        step=task.step,
        attempt=task.attempt,
        task_id=task.task_id,
        progress=progress,
        detail=detail,
    )


def restamp(recorded: Record, task: Task, *, trace: Mapping[str, str] | None = None) -> Record:
    """A recorded reply addressed to ``task``.

    A redelivery of the same task gets the recorded reply unchanged (same
    message id: a duplicate the decider drops).  A later attempt of the same
    step execution (same idempotency key, new task id) gets the recorded
    outcome under its own attempt, task id and message id, so the
    orchestrator, which waits for that attempt, accepts it.
    """
    task_id = getattr(recorded, "task_id", None)
    if task_id == task.task_id:
        return recorded
    return recorded.model_copy(
        update={
            "envelope": reply_envelope(task, trace=trace),
            "attempt": task.attempt,
            "task_id": task.task_id,
        }
    )
