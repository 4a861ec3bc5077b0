"""The replies a worker sends for a task (pure: no I/O).

The constructors live with the reply records (``StepSucceeded.for_task`` …,
:func:`~sagaline.schemas.replies.reply_envelope`); these helpers pick the
record for a step or a compensation task.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sagaline.schemas.base import Payload, Record, Usage
from sagaline.schemas.replies import (
    MAX_ERROR_MESSAGE,
    CompensationFailed,
    CompensationSucceeded,
    StepFailed,
    StepHeartbeat,
    StepSucceeded,
    reply_envelope,
)
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = [
    "failure_reply",
    "heartbeat_reply",
    "refusal_reply",
    "reply_envelope",
    "restamp",
    "success_reply",
]

Task = ExecuteStep | CompensateStep


def success_reply(
    task: Task, result: Payload | None, usage: Usage, *, trace: Mapping[str, str] | None = None
) -> Record:
    """``StepSucceeded`` or ``CompensationSucceeded`` (the records' ``for_task``)."""
    if isinstance(task, ExecuteStep):
        return StepSucceeded.for_task(task, result=result, usage=usage, trace=trace)
    return CompensationSucceeded.for_task(task, trace=trace)


def failure_reply(
    task: Task,
    *,
    retryable: bool,
    error_type: str,
    error_message: str,
    usage: Usage,
    trace: Mapping[str, str] | None = None,
) -> Record:
    """``StepFailed`` or ``CompensationFailed`` (the records' ``for_task``)."""
    if isinstance(task, ExecuteStep):
        return StepFailed.for_task(
            task,
            retryable=retryable,
            error_type=error_type,
            error_message=error_message,
            usage=usage,
            trace=trace,
        )
    return CompensationFailed.for_task(
        task,
        retryable=retryable,
        error_type=error_type,
        error_message=error_message,
        trace=trace,
    )


def refusal_reply(refused: Record, error_type: str, error_message: str) -> Record:
    """The non-retryable failure that replaces ``refused``, a reply Kafka refused for good.

    Built from the refused reply itself (same saga, step, attempt, task id and message id:
    the refused one never reached the orchestrator), so it needs no task and always fits.
    """
    if not isinstance(
        refused, StepSucceeded | StepFailed | CompensationSucceeded | CompensationFailed
    ):
        raise TypeError(f"{type(refused).__name__} is not a step or compensation reply")
    fields: dict[str, Any] = {
        "envelope": refused.envelope.model_copy(update={"occurred_at": datetime.now(UTC)}),
        "step": refused.step,
        "attempt": refused.attempt,
        "idempotency_key": refused.idempotency_key,
        "task_id": refused.task_id,
        "retryable": False,
        "error_type": error_type,
        "error_message": error_message[:MAX_ERROR_MESSAGE],
    }
    if isinstance(refused, StepSucceeded | StepFailed):
        return StepFailed(**fields, usage=refused.usage)
    return CompensationFailed(**fields)


def heartbeat_reply(
    task: ExecuteStep, sequence: int, progress: float | None, detail: str | None
) -> StepHeartbeat:
    """A ``StepHeartbeat`` (its own message id per beat)."""
    return StepHeartbeat.for_task(task, sequence=sequence, progress=progress, detail=detail)


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
