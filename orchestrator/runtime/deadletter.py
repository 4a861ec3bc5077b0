"""Dead letters for inputs the orchestrator cannot decide."""

from __future__ import annotations

from datetime import datetime

from confluent_kafka import Message

from sagaline.schemas.deadletter import DeadLetter, bounded, dead_letter_for

__all__ = ["dead_letter_from_message", "timer_dead_letter"]


def dead_letter_from_message(
    msg: Message, *, reason: str, error_type: str, rejected_by: str, now: datetime
) -> DeadLetter:
    """A ``DeadLetter`` with the original bytes, headers and position of ``msg``.

    Bounded (``sagaline.schemas.deadletter.bounded``): it always fits, whatever
    the size of ``msg``.
    """
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


def timer_dead_letter(
    source: str,
    partition: int,
    saga_id: str,
    value: bytes,
    *,
    reason: str,
    error_type: str,
    rejected_by: str,
    now: datetime,
) -> DeadLetter:
    """The bounded ``DeadLetter`` of a due timer whose input could not be decided."""
    return bounded(
        DeadLetter(
            source_topic=source,
            source_partition=partition,
            source_offset=-1,
            key=saga_id.encode("utf-8"),
            value=value,
            reason=reason,
            error_type=error_type,
            rejected_by=rejected_by,
            rejected_at=now,
        )
    )
