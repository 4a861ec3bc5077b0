"""Read the journal topic read-only: assigned partitions, read_committed, no commits.

:func:`read_journal` snapshots the end offset of every partition it reads
(the last stable offset, as seen by a read_committed consumer) before it
starts, reads from the beginning (or from the first offset at or after
``since``, keeping only records whose timestamp is at or after it) and
stops when the consumer's *position* reaches that snapshot.
The position, not the offset of the last message, decides: the end of a
journal partition is usually a transaction marker, which is never
delivered as a message.

The loop itself is :func:`~sagaline.orchestrator.runtime.stable_read.read_to_end`,
shared with every other reader. The reader uses a throwaway group id only
because librdkafka wants one; it never subscribes and never commits, so it
leaves no trace on the cluster.
Records that cannot be decoded are returned as :class:`Undecodable`, never
raised: an audit must report a damaged journal, not crash on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

from sagaline.orchestrator.core.errors import OrchestratorError
from sagaline.orchestrator.core.undecodable import Undecodable
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.stable_read import (
    RawRecord,
    ReadToEndError,
    paused_gc,
    read_to_end,
    stable_offsets,
    topic_partitions,
    with_retries,
)
from sagaline.schemas.codec import RecordCodec, default_codec, trusted_decode
from sagaline.schemas.journal import JournalEntry

__all__ = [
    "JournalRead",
    "JournalReadError",
    "JournalRecord",
    "OnRecord",
    "Progress",
    "Undecodable",
    "journal_codec",
    "read_journal",
    "with_retries",
]

#: called with (records read so far, records to read at most) while reading
Progress = Callable[[int, int], None]
#: called with every raw record read (the audit's signature check)
OnRecord = Callable[[RawRecord], None]


class JournalReadError(OrchestratorError):
    """The journal topic cannot be read (missing topic, broker down, stuck transaction)."""


@dataclass(frozen=True)
class JournalRecord:
    """One decoded journal entry and where it was read."""

    partition: int
    offset: int
    timestamp_ms: int
    entry: JournalEntry


@dataclass
class JournalRead:
    """Everything one pass over the journal found, in partition/offset order."""

    topic: str
    records: list[JournalRecord] = field(default_factory=list)
    undecodable: list[Undecodable] = field(default_factory=list)
    #: first offset read and end-offset snapshot, per partition
    start_offsets: dict[int, int] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)

    def by_saga(self) -> dict[str, list[JournalEntry]]:
        """Entries grouped by saga id, each saga's entries in journal (offset) order."""
        grouped: dict[str, list[JournalEntry]] = {}
        for record in sorted(self.records, key=lambda r: (r.partition, r.offset)):
            grouped.setdefault(record.entry.envelope.saga_id, []).append(record.entry)
        return grouped


def journal_codec() -> RecordCodec:
    """The codec journal entries are read with (the shared default codec)."""
    return default_codec()


def read_journal(
    bootstrap_servers: str,
    topic: str,
    *,
    since: datetime | None = None,
    saga_id: str | None = None,
    saga_type: str | None = None,
    codec: RecordCodec | None = None,
    progress: Progress | None = None,
    timeout: float = 60.0,
    on_record: OnRecord | None = None,
) -> JournalRead:
    """Read ``topic`` up to the end-offset snapshot taken at the start.

    ``saga_id`` reads only that saga's partition (sagaline producers key by
    saga id with :func:`~sagaline.orchestrator.runtime.partitioner.partition_for`)
    and keeps only its entries; ``saga_type`` keeps only sagas of that type.
    ``timeout`` bounds the whole read (a transaction left open longer than
    that on the journal holds the last stable offset back).  ``on_record`` sees every
    raw record read (before decoding, whatever its saga).
    """
    codec = codec or journal_codec()
    consumer = Consumer(
        reader_config(
            bootstrap_servers,
            f"sagaline-journal-reader-{uuid.uuid4().hex}",
            extra={"enable.partition.eof": False, "fetch.wait.max.ms": 50},
        )
    )
    try:
        partitions = _partitions(consumer, topic, timeout)
        if saga_id is not None:
            partitions = [partition_for(saga_id, len(partitions))]
        result = JournalRead(topic)
        ranges = _ranges(consumer, topic, partitions, since, result, timeout)
        total = sum(end - start for start, end in ranges.values())
        since_ms = int(since.timestamp() * 1000) if since is not None else None
        with paused_gc():
            for record in read_to_end(consumer, topic, ranges, timeout=timeout):
                if since_ms is not None and record.timestamp_ms < since_ms:
                    continue  # a later offset with an earlier time: before --since
                if on_record is not None:
                    on_record(record)
                _decode_into(result, codec, record)
                if progress is not None:
                    progress(len(result.records) + len(result.undecodable), total)
        result.records = [
            r
            for r in result.records
            if (saga_id is None or r.entry.envelope.saga_id == saga_id)
            and (saga_type is None or r.entry.envelope.saga_type == saga_type)
        ]
        if saga_id is not None:
            result.undecodable = [u for u in result.undecodable if u.key in (None, saga_id)]
        return result
    except (KafkaException, ReadToEndError) as exc:
        message = str(exc) if isinstance(exc, ReadToEndError) else f"reading {topic}: {exc}"
        raise JournalReadError(message) from exc
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    try:
        return topic_partitions(consumer, topic, min(timeout, 10.0))
    except ReadToEndError:
        raise JournalReadError(
            f"journal topic {topic!r} does not exist (wrong --prefix, or nothing ran yet?)"
        ) from None


def _ranges(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    since: datetime | None,
    result: JournalRead,
    timeout: float,
) -> dict[int, tuple[int, int]]:
    """``{partition: (first offset to read, end snapshot)}``; records them in ``result``."""
    offsets = stable_offsets(consumer, topic, partitions, timeout=min(timeout, 10.0))
    starts = {p: low for p, (low, _) in offsets.items()}
    for p, (_, high) in offsets.items():
        result.end_offsets[p] = high
    if since is not None:
        wanted = [TopicPartition(topic, p, int(since.timestamp() * 1000)) for p in partitions]
        found = with_retries(lambda: consumer.offsets_for_times(wanted, timeout=min(timeout, 10.0)))
        for tp in found:
            # -1: no record at or after ``since`` in this partition
            starts[tp.partition] = result.end_offsets[tp.partition] if tp.offset < 0 else tp.offset
    ranges: dict[int, tuple[int, int]] = {}
    for p in partitions:
        start = min(max(starts[p], 0), result.end_offsets[p])
        result.start_offsets[p] = start
        ranges[p] = (start, result.end_offsets[p])
    return ranges


def _decode_into(result: JournalRead, codec: RecordCodec, record: RawRecord) -> None:
    partition, offset, key = record.partition, record.offset, record.text_key
    if record.value is None:
        result.undecodable.append(Undecodable(partition, offset, key, "null value (tombstone)"))
        return
    try:
        # the journal is sagaline's own hash-chained record: built without re-validation
        entry = trusted_decode(codec, record.value, (JournalEntry,))
    except Exception as exc:  # any failure is a finding about the journal, not a crash
        result.undecodable.append(Undecodable(partition, offset, key, f"{exc}"))
        return
    if not isinstance(entry, JournalEntry):
        result.undecodable.append(
            Undecodable(partition, offset, key, f"a {type(entry).__name__}, not a journal entry")
        )
        return
    result.records.append(JournalRecord(partition, offset, record.timestamp_ms, entry))
