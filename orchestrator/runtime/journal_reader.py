"""Read the journal topic read-only: assigned partitions, read_committed, no commits.

:func:`read_journal` snapshots the end offset of every partition it reads
(the last stable offset, as seen by a read_committed consumer) before it
starts, reads from the beginning (or from the first offset at or after
``since``, keeping only records whose timestamp is at or after it) and
stops when the consumer's *position* reaches that snapshot.
The position, not the offset of the last message, decides: the end of a
journal partition is usually a transaction marker, which is never
delivered as a message.

The reader uses a throwaway group id only because librdkafka wants one; it
never subscribes and never commits, so it leaves no trace on the cluster.
Records that cannot be decoded are returned as :class:`Undecodable`, never
raised: an audit must report a damaged journal, not crash on it.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from sagaline.orchestrator.core.errors import OrchestratorError
from sagaline.orchestrator.core.undecodable import Undecodable
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.schemas.codec import RecordCodec, default_codec
from sagaline.schemas.journal import JournalEntry

__all__ = [
    "JournalRead",
    "JournalReadError",
    "JournalRecord",
    "Progress",
    "Undecodable",
    "journal_codec",
    "read_journal",
    "with_retries",
]

#: called with (records read so far, records to read at most) while reading
Progress = Callable[[int, int], None]


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
) -> JournalRead:
    """Read ``topic`` up to the end-offset snapshot taken at the start.

    ``saga_id`` reads only that saga's partition (sagaline producers key by
    saga id with :func:`~sagaline.orchestrator.runtime.partitioner.partition_for`)
    and keeps only its entries; ``saga_type`` keeps only sagas of that type.
    ``timeout`` bounds the whole read (a transaction left open longer than
    that on the journal holds the last stable offset back).
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
        assignment = _start_positions(consumer, topic, partitions, since, result, timeout)
        total = sum(result.end_offsets[p] - result.start_offsets[p] for p in partitions)
        if assignment:
            consumer.assign(assignment)
            since_ms = int(since.timestamp() * 1000) if since is not None else None
            for partition, offset, timestamp, key, value in _consume_until_end(
                consumer, topic, result.end_offsets, {tp.partition for tp in assignment}, timeout
            ):
                if since_ms is not None and timestamp < since_ms:
                    continue  # a later offset with an earlier time: before --since
                _decode_into(result, codec, partition, offset, timestamp, key, value)
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
    except KafkaException as exc:
        raise JournalReadError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=min(timeout, 10.0))
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise JournalReadError(
            f"journal topic {topic!r} does not exist (wrong --prefix, or nothing ran yet?)"
        )
    return sorted(described.partitions)


T = TypeVar("T")


def with_retries(call: Callable[[], T], attempts: int = 5) -> T:
    """``call()``, retried briefly on retriable broker errors (a leader moving, a topic
    whose metadata is still propagating)."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if attempt == attempts or not isinstance(error, KafkaError) or not error.retriable():
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _start_positions(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    since: datetime | None,
    result: JournalRead,
    timeout: float,
) -> list[TopicPartition]:
    starts: dict[int, int] = {}
    for p in partitions:
        low, high = with_retries(
            functools.partial(
                consumer.get_watermark_offsets,
                TopicPartition(topic, p),
                timeout=min(timeout, 10.0),
                cached=False,
            )
        )
        result.end_offsets[p] = int(high)
        starts[p] = int(low)
    if since is not None:
        wanted = [TopicPartition(topic, p, int(since.timestamp() * 1000)) for p in partitions]
        found = with_retries(lambda: consumer.offsets_for_times(wanted, timeout=min(timeout, 10.0)))
        for tp in found:
            # -1: no record at or after ``since`` in this partition
            starts[tp.partition] = result.end_offsets[tp.partition] if tp.offset < 0 else tp.offset
    assignment: list[TopicPartition] = []
    for p in partitions:
        start = max(starts[p], 0)
        result.start_offsets[p] = min(start, result.end_offsets[p])
        if start < result.end_offsets[p]:
            offset = OFFSET_BEGINNING if since is None else start
            assignment.append(TopicPartition(topic, p, offset))
    return assignment


def _consume_until_end(
    consumer: Consumer,
    topic: str,
    ends: dict[int, int],
    pending: set[int],
    timeout: float,
) -> Iterator[tuple[int, int, int, str | None, bytes | None]]:
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise JournalReadError(
                f"{topic} partitions {sorted(pending)} did not reach their end offsets within "
                f"{timeout:.0f}s (an open transaction holds the last stable offset back?)"
            )
        for msg in consumer.consume(num_messages=1000, timeout=0.2):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise JournalReadError(f"reading {topic}: {err}")
            partition = msg.partition() or 0
            offset = msg.offset() or 0
            if partition not in pending or offset >= ends[partition]:
                continue  # written after the snapshot: not part of this read
            raw_key = msg.key()
            key = raw_key.decode("utf-8", "replace") if raw_key is not None else None
            _, timestamp = msg.timestamp()
            yield partition, offset, timestamp, key, msg.value()
        for tp in consumer.position([TopicPartition(topic, p) for p in sorted(pending)]):
            if tp.offset >= ends[tp.partition]:
                pending.discard(tp.partition)


def _decode_into(
    result: JournalRead,
    codec: RecordCodec,
    partition: int,
    offset: int,
    timestamp: int,
    key: str | None,
    value: bytes | None,
) -> None:
    if value is None:
        result.undecodable.append(Undecodable(partition, offset, key, "null value (tombstone)"))
        return
    try:
        entry = codec.decode(value, (JournalEntry,))
    except Exception as exc:  # any failure is a finding about the journal, not a crash
        result.undecodable.append(Undecodable(partition, offset, key, f"{exc}"))
        return
    if not isinstance(entry, JournalEntry):
        result.undecodable.append(
            Undecodable(partition, offset, key, f"a {type(entry).__name__}, not a journal entry")
        )
        return
    result.records.append(JournalRecord(partition, offset, timestamp, entry))
