"""Reading a saga's snapshot from the compacted state topic.

The snapshot of a saga is the latest value for its key in partition
``partition_for(saga_id, partitions)`` of the state topic; the read is exact
(read_committed, to the last stable offset).  Waiting for a snapshot (and
for a rejected start) is :mod:`sagaline.orchestrator.client.watch`'s: one
reader per client, shared by every wait.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from sagaline.orchestrator.client.delivery import kafka_log_config
from sagaline.orchestrator.client.errors import WaitTimeout
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.orchestrator.runtime.stable_read import with_retries
from sagaline.schemas.state import SagaState

__all__ = ["StateReader"]


def _check(err: KafkaError) -> None:
    """Raise for a fatal consumer error; transient ones (EOF, leader moves) are retried."""
    if err.fatal():
        raise KafkaException(err)


class StateReader:
    """Reads one saga's snapshots (and dead-lettered start) from Kafka."""

    def __init__(
        self, bootstrap: str, names: TopicNames, codec: Codec, client_id: str, *, debug: bool
    ) -> None:
        self.bootstrap = bootstrap
        self.names = names
        self.codec = codec
        self.client_id = client_id
        self.debug = debug

    @contextmanager
    def _reader(self) -> Iterator[Consumer]:
        group = f"{self.client_id}-read-{uuid.uuid4().hex}"
        reader = Consumer(reader_config(self.bootstrap, group, extra=kafka_log_config(self.debug)))
        try:
            yield reader
        finally:
            reader.close()

    def _decode(self, value: bytes) -> SagaState:
        state = self.codec.decode(value, (SagaState,))
        assert isinstance(state, SagaState)
        return state

    def latest(self, saga_id: str, partition: int, timeout: float) -> SagaState | None:
        """The saga's latest committed snapshot, or ``None`` if it has none."""
        key = saga_id.encode("utf-8")
        latest: bytes | None = None
        tp = TopicPartition(self.names.state, partition)
        with self._reader() as reader:
            low, high = with_retries(
                lambda: reader.get_watermark_offsets(tp, timeout=timeout, cached=False)
            )
            if high <= low:
                return None
            reader.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)])
            deadline = time.monotonic() + timeout
            while reader.position([tp])[0].offset < high:
                for msg in reader.consume(1000, 0.1):
                    err = msg.error()
                    if err is not None:
                        _check(err)
                    elif msg.key() == key:
                        latest = msg.value()
                if time.monotonic() > deadline:
                    raise WaitTimeout(f"reading the state of {saga_id!r} took over {timeout:g} s")
        return self._decode(latest) if latest is not None else None
