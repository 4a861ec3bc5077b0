"""Reading a saga's snapshot from the compacted state topic (and its rejected start).

The snapshot of a saga is the latest value for its key in partition
``partition_for(saga_id, partitions)`` of the state topic; the read is exact
(read_committed, to the last stable offset).  While a saga has no snapshot,
:func:`follow` also watches the dead-letter topic, so that a start the
orchestrator refused is reported (:class:`SagaRejected`) instead of waited for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from sagaline.orchestrator.client.delivery import kafka_log_config
from sagaline.orchestrator.client.errors import SagaRejected, WaitTimeout
from sagaline.orchestrator.client.verdicts import LOOKBACK_MS, start_offset
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.errors import MessageError
from sagaline.schemas.state import SagaState

__all__ = ["StateReader"]

Done = Callable[[SagaState], bool]


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
            low, high = reader.get_watermark_offsets(tp, timeout=timeout, cached=False)
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

    def follow(
        self,
        saga_id: str,
        partition: int,
        timeout: float,
        done: Done,
        *,
        since_ms: int | None = None,
    ) -> SagaState:
        """The first snapshot for which ``done`` holds; :class:`SagaRejected` for a refused start.

        Dead letters are read from ``since_ms`` minus a margin (the time the
        start was sent), or from the beginning when it is not known.
        """
        key = saga_id.encode("utf-8")
        latest: SagaState | None = None
        deadline = time.monotonic() + timeout
        with self._reader() as reader:
            letters = TopicPartition(self.names.deadletter, 0)
            since = None if since_ms is None else max(0, since_ms - LOOKBACK_MS)
            reader.assign(
                [
                    TopicPartition(self.names.state, partition, OFFSET_BEGINNING),
                    TopicPartition(letters.topic, 0, start_offset(reader, letters, since, timeout)),
                ]
            )
            while time.monotonic() < deadline:
                for msg in reader.consume(1000, 0.05):
                    err = msg.error()
                    if err is not None:
                        _check(err)
                    elif msg.key() != key:
                        continue
                    elif msg.topic() == self.names.state:
                        value = msg.value()
                        latest = self._decode(value) if value is not None else None
                    elif latest is None:
                        self._raise_if_start_rejected(saga_id, msg.value())
                if latest is not None and done(latest):
                    return latest
        raise WaitTimeout(
            f"saga {saga_id!r} not done within {timeout:g} s "
            f"(last status: {latest.status if latest else 'no snapshot'})"
        )

    def _raise_if_start_rejected(self, saga_id: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            letter = self.codec.decode(value, (DeadLetter,))
            if not isinstance(letter, DeadLetter) or letter.source_topic != self.names.commands:
                return
            if letter.value is None:
                return
            command = self.codec.decode(letter.value, (StartSaga,))
        except MessageError:
            return  # a dead-lettered signal or garbage under this key: not a start
        if isinstance(command, StartSaga):
            raise SagaRejected(saga_id, letter.error_type, letter.reason)
