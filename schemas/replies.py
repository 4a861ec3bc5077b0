"""Replies: step outcomes, written by workers (through the outbox relay or a
Kafka transaction) to the replies topic, consumed by the orchestrator.

Each reply record builds itself from the task it answers
(``StepSucceeded.for_task(task, result=...)``): the envelope then has a
message id derived from the task id (every reply to one task attempt has the
same id, so duplicates are dropped), is caused by the task and carries its
correlation id and trace context.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Self

from sagaline.schemas.base import Envelope, Payload, Record, Usage
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = [
    "REPLY_TYPES",
    "CompensationFailed",
    "CompensationSucceeded",
    "Reply",
    "StepFailed",
    "StepHeartbeat",
    "StepSucceeded",
    "reply_envelope",
]

_NAMESPACE = uuid.UUID("6f1f3c1e-6d0b-4d43-9a39-5b1a8f0e2c11")

#: the most of an error message a failure reply carries
MAX_ERROR_MESSAGE = 4000


def reply_envelope(
    task: ExecuteStep | CompensateStep,
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
        message_id=str(uuid.uuid5(_NAMESPACE, f"{suffix}/{task.task_id}")),
        saga_id=env.saga_id,
        saga_type=env.saga_type,
        saga_version=env.saga_version,
        occurred_at=now or datetime.now(UTC),
        causation_id=env.message_id,
        correlation_id=env.correlation_id,
        trace=dict(trace) if trace else dict(env.trace),
    )


class StepSucceeded(Record):
    """A step attempt finished; ``result`` is the step's return value."""

    envelope: Envelope
    step: str
    attempt: int
    idempotency_key: str
    task_id: str
    result: Payload | None = None
    usage: Usage = Usage()

    @classmethod
    def for_task(
        cls,
        task: ExecuteStep,
        *,
        result: Payload | None = None,
        usage: Usage | None = None,
        envelope: Envelope | None = None,
        now: datetime | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Self:
        """The success of ``task`` (``envelope`` overrides :func:`reply_envelope`)."""
        return cls(
            envelope=envelope or reply_envelope(task, now=now, trace=trace),
            step=task.step,
            attempt=task.attempt,
            idempotency_key=task.idempotency_key,
            task_id=task.task_id,
            result=result,
            usage=usage or Usage(),
        )


class StepFailed(Record):
    """A step attempt failed.

    ``retryable`` is the worker's classification (False for the saga's
    non-retryable error types and for ``TerminalError``).
    """

    envelope: Envelope
    step: str
    attempt: int
    idempotency_key: str
    task_id: str
    retryable: bool
    error_type: str
    error_message: str
    usage: Usage = Usage()

    @classmethod
    def for_task(
        cls,
        task: ExecuteStep,
        *,
        retryable: bool,
        error_type: str,
        error_message: str,
        usage: Usage | None = None,
        envelope: Envelope | None = None,
        now: datetime | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Self:
        """The failure of ``task`` (the message is cut to :data:`MAX_ERROR_MESSAGE`)."""
        return cls(
            envelope=envelope or reply_envelope(task, now=now, trace=trace),
            step=task.step,
            attempt=task.attempt,
            idempotency_key=task.idempotency_key,
            task_id=task.task_id,
            retryable=retryable,
            error_type=error_type,
            error_message=error_message[:MAX_ERROR_MESSAGE],
            usage=usage or Usage(),
        )


class StepHeartbeat(Record):
    """A long step is alive; optionally reports progress (0..1) and usage so far."""

    envelope: Envelope
    step: str
    attempt: int
    task_id: str
    progress: float | None = None
    detail: str | None = None

    @classmethod
    def for_task(
        cls,
        task: ExecuteStep,
        *,
        sequence: int,
        progress: float | None = None,
        detail: str | None = None,
        now: datetime | None = None,
    ) -> Self:
        """Beat number ``sequence`` of ``task`` (its own message id per beat)."""
        return cls(
            envelope=reply_envelope(task, now=now, suffix=f"heartbeat-{sequence}"),
            step=task.step,
            attempt=task.attempt,
            task_id=task.task_id,
            progress=progress,
            detail=detail,
        )


class CompensationSucceeded(Record):
    """A compensation attempt finished."""

    envelope: Envelope
    step: str
    attempt: int
    idempotency_key: str
    task_id: str

    @classmethod
    def for_task(
        cls,
        task: CompensateStep,
        *,
        envelope: Envelope | None = None,
        now: datetime | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Self:
        """The success of the compensation ``task``."""
        return cls(
            envelope=envelope or reply_envelope(task, now=now, trace=trace),
            step=task.step,
            attempt=task.attempt,
            idempotency_key=task.idempotency_key,
            task_id=task.task_id,
        )


class CompensationFailed(Record):
    """A compensation attempt failed."""

    envelope: Envelope
    step: str
    attempt: int
    idempotency_key: str
    task_id: str
    retryable: bool
    error_type: str
    error_message: str

    @classmethod
    def for_task(
        cls,
        task: CompensateStep,
        *,
        retryable: bool,
        error_type: str,
        error_message: str,
        envelope: Envelope | None = None,
        now: datetime | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Self:
        """The failure of the compensation ``task``."""
        return cls(
            envelope=envelope or reply_envelope(task, now=now, trace=trace),
            step=task.step,
            attempt=task.attempt,
            idempotency_key=task.idempotency_key,
            task_id=task.task_id,
            retryable=retryable,
            error_type=error_type,
            error_message=error_message[:MAX_ERROR_MESSAGE],
        )


Reply = StepSucceeded | StepFailed | StepHeartbeat | CompensationSucceeded | CompensationFailed
REPLY_TYPES: tuple[type[Record], ...] = (
    StepSucceeded,
    StepFailed,
    StepHeartbeat,
    CompensationSucceeded,
    CompensationFailed,
)
