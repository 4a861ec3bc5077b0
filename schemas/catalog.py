"""The catalogue of top-level wire records, grouped by where they travel.

Every record that is ever encoded on its own (a Kafka message value, a
journal entry, a state snapshot, a dead letter) is listed here.  Each gets a
generated ``schemas/avro/<Name>.avsc`` and an entry in the codec's
fingerprint table.  Adding a record type is a one-line change below followed
by ``sagaline schemas generate``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sagaline.schemas.base import Envelope, Payload, Record
from sagaline.schemas.commands import COMMAND_TYPES
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.events import EVENT_TYPES
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.progress import ProgressReported
from sagaline.schemas.replies import REPLY_TYPES
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import TASK_TYPES
from sagaline.schemas.timers import TimerFired

__all__ = ["ALL_RECORDS", "RECORDS_BY_TOPIC", "records_for"]

RECORDS_BY_TOPIC: Mapping[str, tuple[type[Record], ...]] = MappingProxyType(
    {
        # topic (suffix after the prefix) -> the record types its values may hold
        "commands": COMMAND_TYPES,
        "replies": REPLY_TYPES,
        "tasks": TASK_TYPES,
        "state": (SagaState,),
        "journal": (JournalEntry,),
        "deadletter": (DeadLetter,),
        # advisory progress of running steps (never journaled)
        "progress": (ProgressReported,),
        # the decision events (inside journal entries; published on their own too)
        "events": EVENT_TYPES,
        # inputs the orchestrator makes for itself (journaled, never on a topic)
        "timers": (TimerFired,),
        # shared building blocks, published so other languages can use them alone
        "shared": (Envelope, Payload),
    }
)


def _unique(groups: Mapping[str, tuple[type[Record], ...]]) -> tuple[type[Record], ...]:
    seen: dict[type[Record], None] = {}
    for records in groups.values():
        for record in records:
            seen.setdefault(record, None)
    return tuple(seen)


ALL_RECORDS: tuple[type[Record], ...] = _unique(RECORDS_BY_TOPIC)


def records_for(topic: str) -> tuple[type[Record], ...]:
    """The record types a topic may carry: ``records_for("replies")`` (or a full name
    such as ``"sagaline.replies"``: the part after the last dot is used)."""
    return RECORDS_BY_TOPIC[topic.rsplit(".", 1)[-1]]
