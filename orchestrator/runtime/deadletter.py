"""Dead letters for inputs the orchestrator cannot decide."""

from __future__ import annotations

from datetime import datetime

from confluent_kafka import Message

from sagaline.schemas.deadletter import DeadLetter, dead_letter_for

__all__ = ["dead_letter_from_message"]


def dead_letter_from_message(
    msg: Message, *, reason: str, error_type: str, rejected_by: str, now: datetime
) -> DeadLetter:
    """A ``DeadLetter`` carrying the original bytes, headers and position of ``msg``."""
    letter = dead_letter_for(
        msg.topic() or "",
        msg.partition() or 0,
        msg.offset() or 0,
        msg.key(),
        msg.value(),
        msg.headers(),
        reason,
        rejected_by,
        now,
    )
    return letter.model_copy(update={"error_type": error_type})
