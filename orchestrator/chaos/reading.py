"""Reading whole topics to their end (read_committed), and tailing the state topic."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.schemas.codec import RecordCodec
from sagaline.schemas.errors import SchemaError
from sagaline.schemas.state import SagaState

__all__ = ["Raw", "StateTail", "read_topic"]


@dataclass(frozen=True)
class Raw:
    """One committed record as read."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _assign_all(consumer: Consumer, topic: str) -> dict[int, int]:
    """Assign every partition of ``topic`` from its start; the end offsets."""
    meta = consumer.list_topics(topic, timeout=30)
    ends: dict[int, int] = {}
    assign: list[TopicPartition] = []
    for p in sorted(meta.topics[topic].partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        ends[p] = high
        if high > low:
            assign.append(TopicPartition(topic, p, low))
    consumer.assign(assign)
    return {tp.partition: ends[tp.partition] for tp in assign}


def read_topic(bootstrap: str, topic: str, timeout: float = 300.0) -> list[Raw]:
    """Every committed record of ``topic``, read to the end offsets taken at the start."""
    consumer = Consumer(
        reader_config(
            bootstrap, f"storm-read-{uuid.uuid4().hex[:8]}", extra={"fetch.max.bytes": 52428800}
        )
    )
    out: list[Raw] = []
    try:
        pending = _assign_all(consumer, topic)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF and err.fatal():
                        raise KafkaException(err)
                    continue
                out.append(Raw(msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value()))
            done = [
                tp.partition
                for tp in consumer.position([TopicPartition(topic, p) for p in pending])
                if tp.offset >= pending[tp.partition]
            ]
            for p in done:
                pending.pop(p, None)
        if pending:
            raise RuntimeError(f"could not read {topic} partitions {sorted(pending)} to the end")
    finally:
        consumer.close()
    return out


class StateTail:
    """Follows the state topic: the latest snapshot of every saga seen so far."""

    def __init__(self, bootstrap: str, topic: str, codec: RecordCodec) -> None:
        self.topic = topic
        self.codec = codec
        self.states: dict[str, SagaState] = {}
        self.undecodable = 0
        self._consumer = Consumer(
            reader_config(
                bootstrap,
                f"storm-tail-{uuid.uuid4().hex[:8]}",
                extra={"enable.partition.eof": False},
            )
        )
        meta = self._consumer.list_topics(topic, timeout=30)
        self._consumer.assign(
            [TopicPartition(topic, p, 0) for p in sorted(meta.topics[topic].partitions)]
        )

    def poll(self, seconds: float) -> list[str]:
        """Read for up to ``seconds``; the saga ids whose snapshot changed."""
        changed: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for msg in self._consumer.consume(1000, max(0.0, deadline - time.monotonic())):
                if msg.error() is not None or msg.key() is None:
                    continue
                key = (msg.key() or b"").decode(errors="replace")
                value = msg.value()
                if value is None:
                    continue
                try:
                    state = self.codec.decode(value, (SagaState,))
                except SchemaError:
                    self.undecodable += 1
                    continue
                assert isinstance(state, SagaState)
                self.states[key] = state
                changed.append(key)
        return changed

    def close(self) -> None:
        self._consumer.close()
