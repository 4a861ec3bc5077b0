"""Journal entries: one per decided input, hash-chained per saga.

The journal topic is append-only.  An entry records the input as received
(``input``; ``input_type`` names its record type so a JSON round trip is
unambiguous), the events decided from it, its position ``seq`` (1, 2, ...
per saga) and a SHA-256 chain: ``hash = sha256(prev_hash + canonical JSON of
the entry without hash)`` (see ``sagaline.orchestrator.core.journal``).
"""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from sagaline.schemas.base import Envelope, Record
from sagaline.schemas.commands import (
    CancelSaga,
    PauseSaga,
    ResumeSaga,
    RetryStep,
    SignalSaga,
    SkipStep,
    StartSaga,
)
from sagaline.schemas.events import SagaEvent
from sagaline.schemas.limits import SlotGranted
from sagaline.schemas.replies import (
    CompensationFailed,
    CompensationSucceeded,
    StepFailed,
    StepHeartbeat,
    StepSucceeded,
)
from sagaline.schemas.timers import TimerFired

__all__ = ["GENESIS_HASH", "JOURNAL_INPUT_TYPES", "JournalEntry", "JournalInput"]

GENESIS_HASH = "0" * 64

JournalInput = (
    StartSaga
    | SignalSaga
    | CancelSaga
    | PauseSaga
    | ResumeSaga
    | RetryStep
    | SkipStep
    | StepSucceeded
    | StepFailed
    | StepHeartbeat
    | CompensationSucceeded
    | CompensationFailed
    | TimerFired
    | SlotGranted
)
JOURNAL_INPUT_TYPES: dict[str, type[Record]] = {
    t.__name__: t
    for t in (
        StartSaga,
        SignalSaga,
        CancelSaga,
        PauseSaga,
        ResumeSaga,
        RetryStep,
        SkipStep,
        StepSucceeded,
        StepFailed,
        StepHeartbeat,
        CompensationSucceeded,
        CompensationFailed,
        TimerFired,
        SlotGranted,
    )
}


class JournalEntry(Record):
    """One decided input of one saga, with its events and the hash chain."""

    envelope: Envelope
    seq: int
    input_type: str | None = None
    input: JournalInput | None = None
    events: list[SagaEvent]
    prev_hash: str
    hash: str

    @model_validator(mode="before")
    @classmethod
    def _typed_input(cls, values: Any) -> Any:
        """Validate ``input`` as the record ``input_type`` names (PauseSaga and
        ResumeSaga, for example, have the same fields)."""
        if not isinstance(values, dict):
            return values
        raw = values.get("input")
        name = values.get("input_type")
        if isinstance(raw, dict) and isinstance(name, str) and name in JOURNAL_INPUT_TYPES:
            values = dict(values)
            values["input"] = JOURNAL_INPUT_TYPES[name].model_validate(raw)
        return values
