"""Rebuild in-memory saga state from the compacted state topic.

For each state partition: snapshot the last stable offset (``high`` of the
read_committed watermarks), read from the beginning with an assign-based
read_committed consumer until the position reaches it, keep the latest
value per key (a null value deletes), and split the sagas into active ones
and terminal ones (kept only until their tombstone is written).
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
from sagaline.orchestrator.runtime.stable_read import next_batch
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
    active: dict[str, Record] = field(default_factory=dict)
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
    latest value is a tombstone.
    """
    parts = sorted(set(partitions))
    ends: dict[int, int] = {}
    values: dict[int, dict[str, bytes]] = {p: {} for p in parts}
    todo: list[TopicPartition] = []
    deadline = time.monotonic() + timeout
    for p in parts:
        low, high = watermarks(reader, TopicPartition(topic, p), deadline)
        ends[p] = high
        if high > low:
            todo.append(TopicPartition(topic, p, OFFSET_BEGINNING))
    if not todo:
        return values, ends, 0
    pending = {tp.partition for tp in todo}
    reader.assign(todo)
    count = 0
    try:
        while pending:
            if time.monotonic() > deadline:
                raise RestoreError(
                    f"restore of {topic} partitions {sorted(pending)} did not reach the "
                    f"last stable offset within {timeout}s (hanging transaction?)"
                )
            for msg in next_batch(reader):
                count += _take(msg, topic, values, ends, pending)
            for tp in reader.position([TopicPartition(topic, p) for p in list(pending)]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
    finally:
        reader.unassign()
    return values, ends, count


def _take(
    msg: Message,
    topic: str,
    values: dict[int, dict[str, bytes]],
    ends: dict[int, int],
    pending: set[int],
) -> int:
    """Fold one consumed message into ``values`` (1 if it was a record, else 0)."""
    err = msg.error()
    if err is not None:
        if err.code() == KafkaError._PARTITION_EOF:
            p = msg.partition() or 0
            if p in pending and (msg.offset() or 0) >= ends[p]:
                pending.discard(p)
            return 0
        if err.fatal():
            raise RestoreError(f"reading {topic}: {err}")
        log.info("reading %s: %s (retrying)", topic, err)
        return 0
    key = msg.key()
    if key is not None and verified_state_record(msg):
        bucket = values[msg.partition() or 0]
        value = msg.value()
        if value is None:
            bucket.pop(key.decode("utf-8"), None)
        else:
            bucket[key.decode("utf-8")] = value
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
    """Read ``partitions`` of the state topic and decode the sagas in them."""
    values, ends, count = read_partition_latest(reader, topic, partitions, timeout=timeout)
    restored: dict[int, RestoredPartition] = {}
    expected = (logic.state_type,)
    for p, latest in values.items():
        part = RestoredPartition(p, end_offset=ends[p])
        for saga_id, raw in latest.items():
            try:
                state = codec.decode(raw, expected)
            except Exception as exc:
                raise RestoreError(
                    f"cannot decode the state of saga {saga_id} in {topic}[{p}]: {exc}"
                ) from exc
            if logic.is_terminal(state):
                part.finished[saga_id] = state
            else:
                part.active[saga_id] = state
        restored[p] = part
    log.info(
        "restored %s partitions %s: %d records, %d active sagas",
        topic,
        sorted(restored),
        count,
        sum(len(r.active) for r in restored.values()),
    )
    return restored
