"""What the Kafka runtime needs from the saga logic and the wire codec.

The runtime is written against these two small protocols so that the
exactly-once machinery does not depend on the details of the decider:
:class:`SagaLogic` turns ``(state, input)`` into an :class:`Outcome`, and
:class:`Codec` (the one codec protocol, ``sagaline.schemas.codec.RecordCodec``)
turns records into bytes and back.  ``sagaline.orchestrator.runtime.core`` adapts
the pure decider; ``sagaline.schemas.codec.Codec`` is the codec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sagaline.schemas.base import Record
from sagaline.schemas.codec import RecordCodec

__all__ = ["Codec", "Outcome", "Outgoing", "SagaLogic", "TimerSpec"]


@dataclass(frozen=True)
class Outgoing:
    """A record to publish: ``destination`` is ``"tasks"``, ``"commands"``,
    ``"replies"`` or the name of a participant topic."""

    destination: str
    record: Record


@dataclass(frozen=True)
class TimerSpec:
    """A timer recorded in a saga's state."""

    timer_id: str
    due_at: datetime


@dataclass(frozen=True)
class Outcome:
    """The result of deciding one input: the new state, what to journal, what to send."""

    state: Record
    journal: Sequence[Record] = field(default_factory=tuple)
    outgoing: Sequence[Outgoing] = field(default_factory=tuple)


class SagaLogic(Protocol):
    """Pure saga logic as the runtime sees it (no I/O, no clock)."""

    @property
    def state_type(self) -> type[Record]:
        """The record type of the snapshots on the state topic."""
        ...

    def decide(self, state: Record | None, message: Record) -> Outcome:
        """Decide one input; raise ``InputRejected`` for inputs that must be dead-lettered."""
        ...

    def timers(self, state: Record) -> Sequence[TimerSpec]:
        """The timers pending in ``state`` (rebuilds the timer wheel)."""
        ...

    def timer_input(self, state: Record, timer_id: str, now: datetime) -> Record | None:
        """The input that fires ``timer_id`` at ``now`` (``None`` when it is gone)."""
        ...

    def is_terminal(self, state: Record) -> bool:
        """Whether the saga has finished (completed, compensated, failed, ...)."""
        ...

    def finished_at(self, state: Record) -> datetime | None:
        """When a terminal saga finished (starts the tombstone grace period)."""
        ...


#: Record ⇄ bytes: the one codec protocol (:class:`sagaline.schemas.codec.RecordCodec`)
Codec = RecordCodec
