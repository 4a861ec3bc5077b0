"""From consumed messages to decidable inputs: offsets, decoding and the checks.

An input is decided only when it decodes to a record of its topic's types,
carries an envelope saga id equal to its message key (when it has a key),
and arrived on the partition that saga id hashes to.  Anything else raises
:class:`~sagaline.orchestrator.runtime.errors.InputRejected` (or the codec's
own error) and is dead-lettered by the engine.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Set
from datetime import UTC, datetime

from confluent_kafka import Consumer, Message, TopicPartition
from opentelemetry.context import Context

from sagaline.orchestrator.runtime.errors import FatalKafkaError, InputRejected
from sagaline.orchestrator.runtime.layout import wrong_partition
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.orchestrator.runtime.telemetry import context_from_carrier, context_from_headers
from sagaline.schemas.base import Record

__all__ = [
    "accept_new",
    "commit_offsets",
    "decode_input",
    "gather",
    "saga_id_of",
    "utc",
    "with_trace",
]

log = logging.getLogger(__name__)

TP = tuple[str, int]


def utc(ts: float) -> datetime:
    """``ts`` (seconds since the epoch) as an aware UTC datetime."""
    return datetime.fromtimestamp(ts, tz=UTC)


def with_trace(record: Record, carrier: dict[str, str]) -> Record:
    """``record`` with ``carrier`` as its envelope's trace context (if it has an envelope)."""
    envelope = getattr(record, "envelope", None)
    if envelope is None or not carrier:
        return record
    return record.model_copy(update={"envelope": envelope.model_copy(update={"trace": carrier})})


def gather(consumer: Consumer, limit: int, timeout: float, linger_ms: float) -> list[Message]:
    """Wait up to ``timeout`` for one message, then take up to ``limit`` (linger ``linger_ms``)."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    messages = [first]
    deadline = time.monotonic() + linger_ms / 1000
    while len(messages) < limit:
        more = consumer.consume(limit - len(messages), 0)
        messages.extend(more)
        if not more:
            if time.monotonic() >= deadline:
                break
            time.sleep(0.0005)
    return messages


def saga_id_of(record: Record) -> str:
    """The envelope saga id of ``record``; ``InputRejected("NoEnvelope")`` without one."""
    envelope = getattr(record, "envelope", None)
    saga_id = getattr(envelope, "saga_id", None)
    if not isinstance(saga_id, str):
        raise InputRejected("NoEnvelope", f"{type(record).__name__} carries no envelope saga id")
    return saga_id


def accept_new(
    messages: list[Message], assigned: Set[TP], positions: Mapping[TP, int]
) -> tuple[list[Message], dict[TP, int]]:
    """The messages to decide, in order, and the offsets that consume them.

    Client errors delivered as messages are sorted deliberately: fatal ones
    raise :class:`FatalKafkaError`, the others (transient) are logged and skipped.
    """
    accepted: list[Message] = []
    offsets: dict[TP, int] = {}
    for msg in messages:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise FatalKafkaError(f"consumer: {err}")
            log.warning("consumer: %s", err)
            continue
        tp = (msg.topic() or "", msg.partition() or 0)
        if tp not in assigned:
            continue
        offset = msg.offset() or 0
        if offset < offsets.get(tp, positions.get(tp, 0)):
            continue  # already decided (a redelivery after a rewind): never twice
        offsets[tp] = offset + 1
        accepted.append(msg)
    return accepted, offsets


def commit_offsets(
    positions: Mapping[TP, int], offsets: Mapping[TP, int], assigned: Set[TP]
) -> list[TopicPartition]:
    """Every assigned partition's position (KIP-447 fencing even for timer-only batches)."""
    merged = dict(positions)
    merged.update(offsets)
    return [
        TopicPartition(t, p, o) for (t, p), o in merged.items() if (t, p) in assigned and o >= 0
    ]


def decode_input(
    msg: Message, codec: Codec, types: tuple[type[Record], ...], partitions: int
) -> tuple[str, Record, Context | None]:
    """``(saga_id, record, trace parent)`` of an input, or raise why it cannot be decided."""
    value = msg.value()
    if value is None:
        raise InputRejected("EmptyValue", "input message has no value")
    record = codec.decode(value, types)
    saga_id = saga_id_of(record)
    key = msg.key()
    if key is not None and key != saga_id.encode("utf-8"):
        shown = key if len(key) <= 200 else key[:200] + b"..."
        raise InputRejected(
            "KeyMismatch", f"message key {shown!r} differs from envelope saga id {saga_id!r}"
        )
    if partitions > 0:
        wrong_partition(saga_id, msg.topic() or "", msg.partition() or 0, partitions)
    parent = context_from_headers(msg.headers())
    if parent is None:
        parent = context_from_carrier(getattr(record, "envelope").trace)  # noqa: B009
    return saga_id, record, parent
