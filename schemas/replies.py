"""Replies: step outcomes, written by workers (through the outbox relay or a
Kafka transaction) to the replies topic, consumed by the orchestrator."""

from __future__ import annotations

from sagaline.schemas.base import Envelope, Payload, Record, Usage

__all__ = [
    "REPLY_TYPES",
    "CompensationFailed",
    "CompensationSucceeded",
    "Reply",
    "StepFailed",
    "StepHeartbeat",
    "StepSucceeded",
]


class StepSucceeded(Record):
    """A step attempt finished; ``result`` is the step's return value."""

    envelope: Envelope
    step: str
    attempt: int
    idempotency_key: str
    task_id: str
    result: Payload | None = None
    usage: Usage = Usage()


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


class StepHeartbeat(Record):
    """A long step is alive; optionally reports progress (0..1) and usage so far."""

    envelope: Envelope
    step: str
    attempt: int
    task_id: str
    progress: float | None = None
    detail: str | None = None


class CompensationSucceeded(Record):
    """A compensation attempt finished."""

    envelope: Envelope
    step: str
    attempt: int
    idempotency_key: str
    task_id: str


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


Reply = StepSucceeded | StepFailed | StepHeartbeat | CompensationSucceeded | CompensationFailed
REPLY_TYPES: tuple[type[Record], ...] = (
    StepSucceeded,
    StepFailed,
    StepHeartbeat,
    CompensationSucceeded,
    CompensationFailed,
)
