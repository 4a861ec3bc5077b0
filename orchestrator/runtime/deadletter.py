"""Build dead letters for inputs the orchestrator cannot decide."""

from __future__ import annotations

from datetime import datetime

from confluent_kafka import Message

from schemas.deadletter import DeadLetter

__all__ = ["dead_letter_from_message"]


def dead_letter_from_message(
    msg: Message, *, reason: str, error_type: str, rejected_by: str, now: datetime
) -> DeadLetter:
    """A ``DeadLetter`` carrying the original bytes, headers and position of ``msg``."""
    headers: dict[str, bytes] = {}
    raw = msg.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    for key, value in items:
        if value is None:
            continue
        headers[key] = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return DeadLetter(
        source_topic=msg.topic() or "",
        source_partition=msg.partition() or 0,
        source_offset=msg.offset() or 0,
        key=msg.key(),
        value=msg.value(),
        headers=headers,
        reason=reason[:4000],
        error_type=error_type,
        rejected_by=rejected_by,
        rejected_at=now,
    )
