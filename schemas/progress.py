"""Progress: what a running step or agent turn says about itself, on the progress topic.

A worker publishes :class:`ProgressReported` records (``ctx.progress(...)``)
with a plain idempotent producer, keyed by saga id, outside any transaction.
Progress is advisory: it is never journaled, never decided on, and losing
it (a full buffer, a missing topic, a refusing broker, retention) loses no
state.  ``seq`` counts the records of one task attempt (from 1), so a reader
can tell when some were lost.
"""

from __future__ import annotations

from datetime import datetime

from sagaline.schemas.base import Record

__all__ = ["MAX_PROGRESS_TEXT", "ProgressReported"]

#: The most characters of ``message`` and of ``partial`` one record carries (cut beyond).
MAX_PROGRESS_TEXT = 16_000


class ProgressReported(Record):
    """One progress item of a running step: a message, a fraction done, partial output.

    ``partial`` is a chunk of output as it is produced (an LLM's tokens, in
    order): a reader appends the chunks of one task to see the text so far.
    """

    avro_doc = "Advisory progress of a running step (never journaled; may be lost)."

    saga_id: str
    saga_type: str
    step: str
    attempt: int
    task_id: str
    seq: int
    at: datetime
    message: str | None = None
    fraction: float | None = None
    partial: str | None = None
