"""Dead-letter records: a message someone refused, with the reason."""

from __future__ import annotations

from datetime import datetime

from schemas.base import Record

__all__ = ["DeadLetter"]


class DeadLetter(Record):
    """The original bytes of a rejected message and why it was rejected."""

    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: dict[str, bytes] = {}
    reason: str
    error_type: str
    rejected_by: str
    rejected_at: datetime
