"""A journal record that is not a valid journal entry (a finding, never a crash)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Undecodable"]


@dataclass(frozen=True)
class Undecodable:
    """A journal record that is not a valid :class:`~sagaline.schemas.journal.JournalEntry`."""

    partition: int
    offset: int
    key: str | None
    error: str
