"""Concurrency and rate limits by key: the slot requests, the grant and their events.

A limited step (or saga type) asks a *limiter* for a slot before it runs.
A limiter is named ``limit:<name>:<key>`` and lives, like a saga, on the
partition its id hashes to, so exactly one orchestrator decides for each
key across every saga.  The saga sends :class:`AcquireSlot` and
:class:`ReleaseSlot` (keyed by the limiter id) to the commands topic; the
limiter answers with :class:`SlotGranted` (keyed by the saga id), in FIFO
order, never more than ``max_running`` holders at once and never more than
``max_starts`` grants in any ``per_ms`` window.

The saga journals its side: :class:`StepQueued` when it asks,
:class:`SlotAcquired` when the grant arrives, :class:`SlotReleased` when
the step ends (or the saga leaves the queue); :class:`SlotState` is the
slot in the saga's snapshot.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sagaline.schemas.base import Envelope, Record

__all__ = [
    "LIMITER_SAGA_TYPE",
    "LIMIT_COMMAND_TYPES",
    "LIMIT_EVENT_TYPES",
    "AcquireSlot",
    "LimitEvent",
    "ReleaseSlot",
    "SlotAcquired",
    "SlotGranted",
    "SlotHolder",
    "SlotReleased",
    "SlotState",
    "StepQueued",
]

#: the ``saga_type`` of a limiter's envelope and snapshot
LIMITER_SAGA_TYPE = "sagaline.limiter"


class SlotHolder(Record):
    """Who holds (or waits for) a slot: one run of one step of one saga."""

    holder_id: str
    saga_id: str
    saga_type: str
    saga_version: int
    step: str
    #: when the holder asked (queued) or was granted (holding)
    at: datetime


class AcquireSlot(Record):
    """Saga → limiter: queue ``holder`` for a slot (idempotent by ``holder_id``).

    The limits travel with each request; the limiter applies the latest.
    """

    envelope: Envelope
    name: str
    key: str
    holder: SlotHolder
    max_running: int | None = None
    max_starts: int | None = None
    per_ms: int | None = None


class ReleaseSlot(Record):
    """Saga → limiter: ``holder_id`` is done with its slot, or leaves the queue."""

    envelope: Envelope
    holder_id: str
    reason: str


class SlotGranted(Record):
    """Limiter → saga: the slot ``holder_id`` asked for is the step's now."""

    envelope: Envelope
    limiter_id: str
    holder_id: str
    step: str
    queued_at: datetime


class StepQueued(Record):
    """The step waits for a slot of ``limiter_id`` (asked with :class:`AcquireSlot`)."""

    event: Literal["StepQueued"] = "StepQueued"
    at: datetime
    step: str
    limiter_id: str
    holder_id: str


class SlotAcquired(Record):
    """The limiter granted the slot: the step may run."""

    event: Literal["SlotAcquired"] = "SlotAcquired"
    at: datetime
    step: str
    limiter_id: str
    holder_id: str
    queued_at: datetime


class SlotReleased(Record):
    """The step gave its slot back (or left the queue): ``reason`` says why."""

    event: Literal["SlotReleased"] = "SlotReleased"
    at: datetime
    step: str
    limiter_id: str
    holder_id: str
    reason: str


class SlotState(Record):
    """A slot in a saga's snapshot: asked for (``queued``) or granted (``held``)."""

    step: str
    limiter_id: str
    holder_id: str
    status: Literal["queued", "held"]
    since: datetime


LimitEvent = StepQueued | SlotAcquired | SlotReleased
LIMIT_EVENT_TYPES: tuple[type[Record], ...] = (StepQueued, SlotAcquired, SlotReleased)
LIMIT_COMMAND_TYPES: tuple[type[Record], ...] = (AcquireSlot, ReleaseSlot, SlotGranted)
