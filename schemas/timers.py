"""Timer firings: inputs the orchestrator produces for itself from saga state."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sagaline.schemas.base import Envelope, Record

__all__ = ["TimerFired", "TimerKind"]

TimerKind = Literal[
    "retry",
    "step_timeout",
    "heartbeat_timeout",
    "wait_timeout",
    "sleep",
    "saga_deadline",
    "compensation_retry",
    "tombstone",
]


class TimerFired(Record):
    """A timer recorded in saga state came due.

    ``timer_id`` identifies the timer in the state; the decider ignores a
    firing whose timer is no longer in the state (fired already, or
    superseded), so a timer acts at most once.
    """

    envelope: Envelope
    timer_id: str
    kind: TimerKind
    due_at: datetime
    step: str | None = None
    attempt: int | None = None
