"""The orchestrator's verdict on one command: accepted, ignored, unknown saga, dead-lettered.

A command decided by the orchestrator leaves exactly one trace: a journal
entry whose ``causation_id`` is the command's message id (in the journal
partition of the saga, the same partition number as the command), or a dead
letter that names the command's topic, partition and offset.  Both topics are
read from a little before the command's timestamp (clock skew up to
:data:`LOOKBACK_MS` between the client and the orchestrator is tolerated).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaException, TopicPartition

from sagaline.orchestrator.client.delivery import Receipt, kafka_log_config
from sagaline.orchestrator.client.errors import WaitTimeout
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.orchestrator.runtime.stable_read import with_retries
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.errors import MessageError
from sagaline.schemas.events import InputIgnored, SignalRejected
from sagaline.schemas.journal import JournalEntry

__all__ = ["LOOKBACK_MS", "Outcome", "Verdict", "await_verdict", "start_offset"]

#: How far before a command's timestamp the journal and dead letters are read.
LOOKBACK_MS = 5 * 60 * 1000

Outcome = Literal["accepted", "ignored", "unknown_saga", "dead_lettered"]


@dataclass(frozen=True)
class Verdict:
    """What the orchestrator did with one command."""

    outcome: Outcome
    detail: str
    events: tuple[str, ...] = field(default=())

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "detail": self.detail, "events": list(self.events)}


def verdict_of_entry(entry: JournalEntry) -> Verdict:
    """The verdict a journal entry records for its input."""
    names = tuple(type(e).__name__ for e in entry.events)
    for event in entry.events:
        if isinstance(event, SignalRejected):
            return Verdict("ignored", event.reason, names)
    ignored = [e for e in entry.events if isinstance(e, InputIgnored)]
    if ignored and len(ignored) == len(entry.events):
        first = ignored[0]
        detail = f"{first.reason}: {first.detail}" if first.detail else first.reason
        return Verdict("ignored", detail, names)
    return Verdict("accepted", ", ".join(names), names)


def verdict_of_letter(letter: DeadLetter) -> Verdict:
    """The verdict a dead letter records for the command it carries."""
    if letter.error_type == "UnknownSaga":
        return Verdict("unknown_saga", letter.reason)
    return Verdict("dead_lettered", f"{letter.error_type}: {letter.reason}")


def start_offset(reader: Consumer, tp: TopicPartition, since_ms: int | None, timeout: float) -> int:
    """The first offset at or after ``since_ms`` (the end when none; the start for ``None``)."""
    low, high = with_retries(
        lambda: reader.get_watermark_offsets(tp, timeout=timeout, cached=False)
    )
    if since_ms is None:
        return int(low)
    found = reader.offsets_for_times([TopicPartition(tp.topic, tp.partition, since_ms)], timeout)
    offset = found[0].offset
    return int(offset) if offset >= 0 else int(high)


def await_verdict(
    bootstrap: str,
    names: TopicNames,
    codec: Codec,
    receipt: Receipt,
    timeout: float,
    *,
    debug: bool = False,
) -> Verdict:
    """Block until the orchestrator has decided ``receipt``'s command (or ``timeout``)."""
    config = reader_config(
        bootstrap, f"sagaline-verdict-{uuid.uuid4().hex}", extra=kafka_log_config(debug)
    )
    reader = Consumer(config)
    deadline = time.monotonic() + timeout
    try:
        since = max(0, receipt.timestamp_ms - LOOKBACK_MS)
        parts = [
            TopicPartition(names.journal, receipt.partition),
            TopicPartition(names.deadletter, 0),
        ]
        reader.assign(
            [
                TopicPartition(tp.topic, tp.partition, start_offset(reader, tp, since, 10.0))
                for tp in parts
            ]
        )
        while time.monotonic() < deadline:
            for msg in reader.consume(500, 0.1):
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                try:
                    found = _match(msg.topic(), value, names, codec, receipt)
                except MessageError:
                    continue  # not ours to judge: someone else's undecodable record
                if found is not None:
                    return found
    except KafkaException as exc:
        raise WaitTimeout(f"could not read the orchestrator's verdict: {exc}") from exc
    finally:
        reader.close()
    raise WaitTimeout(
        f"no verdict from the orchestrator on {receipt.command} for saga {receipt.saga_id!r} "
        f"within {timeout:g} s (the command is stored at {receipt.topic}[{receipt.partition}]"
        f"@{receipt.offset}); is `sagaline orchestrator run` running?"
    )


def _match(
    topic: str | None, value: bytes, names: TopicNames, codec: Codec, receipt: Receipt
) -> Verdict | None:
    if topic == names.journal:
        entry = codec.decode(value, (JournalEntry,))
        if isinstance(entry, JournalEntry) and entry.envelope.causation_id == receipt.message_id:
            return verdict_of_entry(entry)
        return None
    letter = codec.decode(value, (DeadLetter,))
    if (
        isinstance(letter, DeadLetter)
        and letter.source_topic == receipt.topic
        and letter.source_partition == receipt.partition
        and letter.source_offset == receipt.offset
    ):
        return verdict_of_letter(letter)
    return None
