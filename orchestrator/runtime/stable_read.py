"""Read partitions to their last stable offset: the one loop every reader shares.

A ``read_committed`` consumer's end offset of a partition (its high watermark
as :func:`stable_offsets` asks for it) is the *last stable offset*: nothing
of a transaction still open lies before it. :func:`read_to_end` assigns the
partitions it is given, reads each from its start to the end snapshot and
stops when the consumer's *position* reaches it. The position, not the
offset of the last message, decides: the end of a transactional partition is
usually a commit marker, which is never delivered as a message.

The journal reader, the demo's state watcher, the projection's catch-up and
the test kit read through here; configure the consumer with
:func:`~sagaline.orchestrator.runtime.kafka_config.reader_config`.
"""

from __future__ import annotations

import functools
import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from sagaline.orchestrator.core.errors import OrchestratorError

__all__ = [
    "RawRecord",
    "ReadToEndError",
    "next_batch",
    "paused_gc",
    "read_to_end",
    "stable_offsets",
    "topic_partitions",
    "with_retries",
]

log = logging.getLogger("sagaline.orchestrator.read")

T = TypeVar("T")


class ReadToEndError(OrchestratorError):
    """A topic cannot be read to its last stable offset (missing, broker down, open
    transaction holding the last stable offset back)."""


@dataclass(frozen=True)
class RawRecord:
    """One record as read: where it was, its key, value and CreateTime."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def text_key(self) -> str | None:
        """The key as UTF-8 text (``None`` when there is none)."""
        return self.key.decode("utf-8", "replace") if self.key is not None else None


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off while a read builds many records.

    Decoding a journal or a state topic allocates records that all stay alive;
    every collection triggered along the way walks them all again (it cost as
    much CPU as the decoding itself: ``docs/performance.md``).  Nothing a read
    builds forms cycles, so nothing is lost; the collector runs again after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


#: errors a leader election or metadata still propagating gives for a while; the
#: client does not always flag them retriable (``get_watermark_offsets`` does not).
#: A broker that does not answer at all is not among them: that fails at once.
_TRANSIENT = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)


def _transient(error: object) -> bool:
    return isinstance(error, KafkaError) and (error.retriable() or error.code() in _TRANSIENT)


def with_retries(call: Callable[[], T], attempts: int = 10) -> T:
    """``call()``, retried on transient broker errors (a leader moving, a topic whose
    metadata is still propagating): up to ``attempts`` tries, about 10 s in all."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if attempt == attempts or not _transient(error):
                raise
            time.sleep(min(0.2 * attempt, 2.0))
    raise AssertionError("unreachable")


def topic_partitions(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """The partitions of ``topic`` (:class:`ReadToEndError` when it does not exist)."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise ReadToEndError(f"cannot describe topic {topic!r}: {exc}") from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise ReadToEndError(f"topic {topic!r} does not exist")
    return sorted(described.partitions)


def stable_offsets(
    consumer: Consumer, topic: str, partitions: Iterable[int], *, timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """``{partition: (low watermark, last stable offset)}``, asked of the broker now."""
    found: dict[int, tuple[int, int]] = {}
    for p in partitions:
        low, high = with_retries(
            functools.partial(
                consumer.get_watermark_offsets,
                TopicPartition(topic, p),
                timeout=timeout,
                cached=False,
            )
        )
        found[p] = (int(low), int(high))
    return found


def _raw(msg: Message, partition: int, offset: int) -> RawRecord:
    key, value = msg.key(), msg.value()
    headers: list[tuple[str, bytes]] = []
    for header in msg.headers() or ():
        name, data = header[0], header[1]
        headers.append((name, data if isinstance(data, bytes) else (data or "").encode()))
    return RawRecord(
        partition,
        offset,
        msg.timestamp()[1],
        key.encode() if isinstance(key, str) else key,
        value.encode() if isinstance(value, str) else value,
        tuple(headers),
    )


def next_batch(consumer: Consumer, limit: int = 1000, timeout: float = 0.2) -> list[Message]:
    """Up to ``limit`` records: waits up to ``timeout`` for the first only, then takes
    what is already fetched.  (``consume(limit, timeout)`` waits until ``limit``
    records arrived or the whole ``timeout`` passed: a read of a partition whose
    fetched data runs out below ``limit`` would sit out the timeout every round.)"""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, 0)]


def read_to_end(
    consumer: Consumer,
    topic: str,
    ranges: Mapping[int, tuple[int, int]],
    *,
    timeout: float = 60.0,
) -> Iterator[RawRecord]:
    """Every record of ``topic`` with ``start <= offset < end`` for each
    ``partition: (start, end)`` of ``ranges``, in partition order of arrival.

    ``end`` is normally the last stable offset :func:`stable_offsets` returned
    before the read; records written after it are not part of the read. The
    consumer is assigned the partitions (never subscribed) and unassigned
    afterwards. ``timeout`` bounds the whole read.
    """
    pending = {p for p, (start, end) in ranges.items() if start < end}
    if not pending:
        return
    consumer.assign([TopicPartition(topic, p, max(ranges[p][0], 0)) for p in sorted(pending)])
    deadline = time.monotonic() + timeout
    last_error: KafkaError | None = None
    try:
        while pending:
            if time.monotonic() > deadline:
                cause = f" (last error: {last_error})" if last_error is not None else ""
                raise ReadToEndError(
                    f"{topic} partitions {sorted(pending)} did not reach their end offsets "
                    f"within {timeout:.0f}s (an open transaction holds the last stable "
                    f"offset back?){cause}"
                )
            for msg in next_batch(consumer):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if err.fatal() or not err.retriable():
                        raise ReadToEndError(f"reading {topic}: {err}")
                    log.info("reading %s: %s (retrying)", topic, err)
                    last_error = err
                    continue
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if partition not in pending or offset >= ranges[partition][1]:
                    continue  # written after the snapshot: not part of this read
                yield _raw(msg, partition, offset)
            for tp in consumer.position([TopicPartition(topic, p) for p in sorted(pending)]):
                if tp.offset >= ranges[tp.partition][1]:
                    pending.discard(tp.partition)
    except KafkaException as exc:
        raise ReadToEndError(f"reading {topic}: {exc}") from exc
    finally:
        consumer.unassign()
