"""Rebuild in-memory saga state from the compacted state topic.

For each state partition: snapshot the last stable offset (``high`` of the
read_committed watermarks), read from the beginning with an assign-based
read_committed consumer until the position reaches it, keep the latest
value per key (a null value deletes), and split the sagas into active ones
and terminal ones (kept only until their tombstone is written).

A partition counts as read to the end only when no transaction is open on it
either: the committed offsets a new owner starts from become stable when the
previous owner's commit marker reaches ``__consumer_offsets``, which may be
before the marker reaches the state partition.  Until then the snapshots of
that transaction lie beyond the last stable offset, invisible to a
read_committed reader, and a restore that stopped there would miss the sagas
whose inputs the committed offsets already consumed.  So when the high
watermark seen at the end is above the last stable offset, the read waits
(bounded by ``timeout``, logged) until the transaction is resolved and reads
on to the new last stable offset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from sagaline.orchestrator.runtime import metrics
from sagaline.orchestrator.runtime.errors import FatalKafkaError, RestoreError
from sagaline.orchestrator.runtime.ports import Codec, SagaLogic
from sagaline.orchestrator.runtime.signing_inputs import verified_state_record
from sagaline.orchestrator.runtime.snapshots import (
    LazySnapshot,
    Unverified,
    hints_key,
    lazy_snapshot,
    load_snapshot,
)
from sagaline.orchestrator.runtime.stable_read import next_batch, paused_gc
from sagaline.schemas.base import Record

__all__ = [
    "RestoredPartition",
    "read_partition_latest",
    "restore_partitions",
    "stable_committed",
    "watermarks",
]

log = logging.getLogger(__name__)


@dataclass
class RestoredPartition:
    """The sagas of one state partition, as of its last stable offset."""

    partition: int
    #: active sagas: decoded, or kept unread until first use (``LazySnapshot``)
    active: dict[str, Record | LazySnapshot] = field(default_factory=dict)
    finished: dict[str, Record] = field(default_factory=dict)
    end_offset: int = 0


def watermarks(reader: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """``(low, last stable offset)``, retrying while leadership settles."""
    while True:
        try:
            low, high = reader.get_watermark_offsets(tp, timeout=5.0, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise RestoreError(
                    f"cannot read the offsets of {tp.topic}[{tp.partition}]: {exc}"
                ) from exc
            log.info("offsets of %s[%s] not available yet: %s", tp.topic, tp.partition, exc)
            time.sleep(0.2)


def stable_committed(
    consumer: Consumer, partitions: list[TopicPartition], timeout: float
) -> list[TopicPartition]:
    """The group's committed offsets of ``partitions``, once stable (retried up to ``timeout``).

    Committed offsets under read_committed are "stable": this waits until any
    transaction of a previous owner that touches them is resolved.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result: list[TopicPartition] = consumer.committed(partitions, timeout=10.0)
            return result
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise FatalKafkaError(f"cannot read committed offsets: {exc}") from exc
            log.info("committed offsets not stable yet (%s); retrying", exc)


def read_partition_latest(
    reader: Consumer,
    topic: str,
    partitions: Iterable[int],
    *,
    timeout: float = 60.0,
) -> tuple[dict[int, dict[str, bytes]], dict[int, int], int]:
    """Latest value per key of each partition up to its last stable offset.

    Returns ``(values, ends, records_read)``; ``values[p]`` omits keys whose
    latest value is a tombstone.  Every record is verified (signing on).
    """
    latest, ends, count = read_latest_messages(reader, topic, partitions, timeout=timeout)
    values = {p: {k: m.value() or b"" for k, m in found.items()} for p, found in latest.items()}
    return values, ends, count


def read_latest_messages(
    reader: Consumer,
    topic: str,
    partitions: Iterable[int],
    *,
    timeout: float = 60.0,
    verify_values: bool = True,
    only: _Only | None = None,
) -> tuple[dict[int, dict[str, Message]], dict[int, int], int]:
    """:func:`read_partition_latest`, keeping each key's latest message.

    With signing on a tombstone is always verified (an unverified one is skipped);
    a value only with ``verify_values`` (else whoever uses it verifies it).
    ``only``: just these keys, passing over the records already refused.
    """
    parts = sorted(set(partitions))
    ends: dict[int, int] = {}
    values: dict[int, dict[str, Message]] = {p: {} for p in parts}
    deadline = time.monotonic() + timeout
    for p in parts:
        ends[p] = watermarks(reader, TopicPartition(topic, p), deadline)[1]
    if not parts:
        return values, ends, 0
    # every partition, even an empty one: an open transaction may be all it holds
    pending = set(parts)
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    tail = _Tail(reader, topic, ends, deadline)
    count = 0
    try:
        while pending:
            if time.monotonic() > deadline:
                raise RestoreError(
                    f"restore of {topic} partitions {sorted(pending)} did not reach the "
                    f"last stable offset within {timeout}s (hanging transaction?)"
                )
            for msg in next_batch(reader):
                count += _take(msg, topic, values, tail, verify_values, only)
            for tp in reader.position([TopicPartition(topic, p) for p in list(pending)]):
                if tail.done(tp.partition, tp.offset):
                    pending.discard(tp.partition)
    finally:
        reader.unassign()
    return values, ends, count


@dataclass(frozen=True)
class _Only:
    """The keys a second read looks for, and the offsets of their records already refused."""

    keys: frozenset[bytes]
    refused: frozenset[int]

    def wants(self, key: bytes, offset: int | None) -> bool:
        return key in self.keys and offset not in self.refused


class _Tail:
    """When a partition is read to the end: at its last stable offset, with no
    transaction open beyond it (the high watermark known once the read first
    reached the end is not above the last stable offset)."""

    def __init__(self, reader: Consumer, topic: str, ends: dict[int, int], deadline: float):
        self.reader, self.topic, self.ends, self.deadline = reader, topic, ends, deadline
        self.eof: dict[int, int] = {}  # partition -> offset of its last end-of-partition event
        self.high: dict[int, int] = {}  # partition -> high watermark when first at the end
        self._asked: dict[int, float] = {}

    def at_end(self, partition: int, offset: int) -> None:
        """An end-of-partition event (raised by a fetch of this read: it told the high
        watermark, which the consumer caches)."""
        self.eof[partition] = max(offset, self.eof.get(partition, offset))

    def _high(self, partition: int) -> int | None:
        if partition not in self.high and partition in self.eof:
            tp = TopicPartition(self.topic, partition)
            try:
                high = int(self.reader.get_watermark_offsets(tp, cached=True)[1])
            except KafkaException:
                return None
            if high >= 0:
                self.high[partition] = high
        return self.high.get(partition)

    def done(self, partition: int, position: int) -> bool:
        """Whether ``partition`` is read to the end (asks the broker again, at most every
        0.2 s, while a transaction is open beyond the last stable offset)."""
        position = max(position, self.eof.get(partition, -1))
        end = self.ends[partition]
        if position < end:
            return False
        high = self._high(partition)
        if high is None:
            return False  # no end-of-partition event yet: the tail is not known
        if high <= end:
            return True
        now = time.monotonic()
        if now - self._asked.get(partition, 0.0) < 0.2:
            return False
        if partition not in self._asked:
            log.info(
                "restore of %s[%d]: a transaction is open at its end (last stable offset %d, "
                "high watermark %d); waiting until it is resolved",
                self.topic,
                partition,
                end,
                high,
            )
        self._asked[partition] = now
        tp = TopicPartition(self.topic, partition)
        self.ends[partition] = max(end, watermarks(self.reader, tp, self.deadline)[1])
        return False


def _take(
    msg: Message,
    topic: str,
    values: dict[int, dict[str, Message]],
    tail: _Tail,
    verify_values: bool,
    only: _Only | None = None,
) -> int:
    """Fold one consumed message into ``values`` (1 if it was a record, else 0)."""
    err = msg.error()
    if err is not None:
        if err.code() == KafkaError._PARTITION_EOF:
            tail.at_end(msg.partition() or 0, msg.offset() or 0)
            return 0
        if err.fatal():
            raise RestoreError(f"reading {topic}: {err}")
        log.info("reading %s: %s (retrying)", topic, err)
        return 0
    key = msg.key()
    if key is None or (only is not None and not only.wants(key, msg.offset())):
        return 1
    tombstone = msg.value() is None
    if (tombstone or verify_values) and not verified_state_record(msg):
        return 1
    bucket = values[msg.partition() or 0]
    if tombstone:
        bucket.pop(key.decode("utf-8"), None)
    else:
        bucket[key.decode("utf-8")] = msg
    return 1


@metrics.restore_timer()
def restore_partitions(
    reader: Consumer,
    topic: str,
    partitions: Iterable[int],
    codec: Codec,
    logic: SagaLogic,
    *,
    timeout: float = 60.0,
) -> dict[int, RestoredPartition]:
    """Read ``partitions`` of the state topic: the finished sagas and the active ones,
    each active saga decoded, or kept unread when its snapshot carries the hints
    (``snapshots.LazySnapshot``: authenticated now, decoded at first use)."""
    restored: dict[int, RestoredPartition] = {}
    mac_key = hints_key()
    with paused_gc():  # many records that all stay alive: no collection along the way
        latest, ends, count = read_latest_messages(
            reader, topic, partitions, timeout=timeout, verify_values=False
        )
        for p, found in latest.items():
            part = restored[p] = RestoredPartition(p, end_offset=ends[p])
            refused = _sort_partition(part, found, topic, codec, logic, mac_key)
            if refused:  # the latest snapshot fails verification: the last one that does not
                again = _last_verified(reader, topic, p, refused, timeout)
                _sort_partition(part, again, topic, codec, logic, mac_key)
    log.info(
        "restored %s partitions %s: %d records, %d active sagas (%d unread until first use)",
        topic,
        sorted(restored),
        count,
        sum(len(r.active) for r in restored.values()),
        sum(isinstance(s, LazySnapshot) for r in restored.values() for s in r.active.values()),
    )
    return restored


def _sort_partition(
    part: RestoredPartition,
    latest: dict[str, Message],
    topic: str,
    codec: Codec,
    logic: SagaLogic,
    mac_key: bytes | None,
) -> list[Message]:
    """Put each saga of ``latest`` in ``part``: active (maybe unread) or finished.
    Returns the snapshots that failed verification (left out)."""
    refused: list[Message] = []
    for saga_id, msg in latest.items():
        lazy = lazy_snapshot(msg, mac_key)
        if lazy is not None:
            part.active[saga_id] = lazy
            continue
        try:
            state = load_snapshot(msg, codec, logic)
        except Unverified:
            refused.append(msg)
            continue
        if logic.is_terminal(state):
            part.finished[saga_id] = state
        else:
            part.active[saga_id] = state
    return refused


def _last_verified(
    reader: Consumer, topic: str, partition: int, refused: list[Message], timeout: float
) -> dict[str, Message]:
    """The latest record that verifies of each saga whose ``refused`` snapshot did not,
    read again from ``partition`` (a tombstone deletes; none: the saga is left out)."""
    only = _Only(
        frozenset(m.key() or b"" for m in refused),
        frozenset(m.offset() or 0 for m in refused),
    )
    latest = read_latest_messages(reader, topic, [partition], timeout=timeout, only=only)[0]
    return latest[partition]
