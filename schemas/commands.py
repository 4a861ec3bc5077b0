"""Commands: written to the commands topic by clients, operators and the orchestrator."""

from __future__ import annotations

from datetime import datetime

from sagaline.schemas.base import Envelope, Payload, Record
from sagaline.schemas.limits import LIMIT_COMMAND_TYPES, AcquireSlot, ReleaseSlot, SlotGranted

__all__ = [
    "COMMAND_TYPES",
    "CancelSaga",
    "Command",
    "CopiedInput",
    "ForkOrigin",
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
    fork: ForkOrigin | None = None


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


class CopiedInput(Record):
    """One input of a forked saga's history as it was recorded: its record type's
    name and its JSON (kept as text, so a fork never nests the input records)."""

    input_type: str
    record_json: str

    @classmethod
    def of(cls, record: Record) -> CopiedInput:
        return cls(input_type=type(record).__name__, record_json=record.model_dump_json())


class ForkOrigin(Record):
    """Set on the start of a fork: the saga it copies and where it continues.

    ``inputs`` are the source's recorded inputs after its start, up to and
    including the one (journal ``source_seq``) that dispatched ``from_step``;
    the fork decides them again under its own definition, reusing their
    results, and continues from ``from_step`` with the current code.
    ``started_at`` is when the source started.
    """

    saga_id: str
    from_step: str
    source_seq: int
    source_version: int
    started_at: datetime
    inputs: list[CopiedInput] = []


StartSaga.model_rebuild()


Command = (
    StartSaga
    | SignalSaga
    | CancelSaga
    | PauseSaga
    | ResumeSaga
    | RetryStep
    | SkipStep
    | AcquireSlot
    | ReleaseSlot
    | SlotGranted
)
COMMAND_TYPES: tuple[type[Record], ...] = (
    StartSaga,
    SignalSaga,
    CancelSaga,
    PauseSaga,
    ResumeSaga,
    RetryStep,
    SkipStep,
    *LIMIT_COMMAND_TYPES,
)
