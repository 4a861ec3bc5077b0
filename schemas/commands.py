"""Commands: written to the commands topic by clients, operators and the orchestrator."""

from __future__ import annotations

from datetime import datetime

from sagaline.schemas.base import Envelope, Payload, Record

__all__ = [
    "COMMAND_TYPES",
    "CancelSaga",
    "Command",
    "ParentRef",
    "PauseSaga",
    "ResumeSaga",
    "RetryStep",
    "SignalSaga",
    "SkipStep",
    "StartSaga",
]


class ParentRef(Record):
    """Set on a child saga's start: where its outcome is reported."""

    saga_id: str
    saga_type: str
    saga_version: int
    step: str


class StartSaga(Record):
    """Start a saga; idempotent by ``envelope.saga_id``.

    ``input_sha256`` is the SHA-256 of ``data`` (its type name, version and
    bytes); a second start with the same id and a different hash is rejected.
    """

    envelope: Envelope
    data: Payload
    input_sha256: str
    requested_by: str | None = None
    deadline_at: datetime | None = None
    parent: ParentRef | None = None


class SignalSaga(Record):
    """Deliver a signal (for example a human approval) to a waiting saga.

    ``name`` is the wait's name; ``approved`` is set for approvals
    (True = approve, False = reject) and ``by`` names the person or system.
    ``seen_sha256`` is the SHA-256 of the data shown to the approver (the
    wait's ``shown_sha256``); an approval bound to it is refused when the
    saga's shown data has changed since.
    """

    envelope: Envelope
    name: str
    by: str
    approved: bool | None = None
    note: str | None = None
    payload: Payload | None = None
    seen_sha256: str | None = None


class CancelSaga(Record):
    """Cancel a saga: the completed compensable steps are compensated."""

    envelope: Envelope
    by: str
    reason: str | None = None


class PauseSaga(Record):
    """Operator: stop dispatching new work until resumed."""

    envelope: Envelope
    by: str
    reason: str | None = None


class ResumeSaga(Record):
    """Operator: resume a paused saga."""

    envelope: Envelope
    by: str
    reason: str | None = None


class RetryStep(Record):
    """Operator: run a failed step again (a new attempt, same idempotency key)."""

    envelope: Envelope
    step: str
    by: str
    reason: str | None = None


class SkipStep(Record):
    """Operator: treat a step as done without running it, with an optional result."""

    envelope: Envelope
    step: str
    by: str
    reason: str | None = None
    result: Payload | None = None


Command = StartSaga | SignalSaga | CancelSaga | PauseSaga | ResumeSaga | RetryStep | SkipStep
COMMAND_TYPES: tuple[type[Record], ...] = (
    StartSaga,
    SignalSaga,
    CancelSaga,
    PauseSaga,
    ResumeSaga,
    RetryStep,
    SkipStep,
)
