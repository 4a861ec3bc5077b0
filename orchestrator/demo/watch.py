"""Follow the state topic: the latest snapshot of every saga, as the orchestrator commits it.

One assign-based ``read_committed`` reader over all partitions of the
compacted state topic (it commits nothing and joins no group), so the demo
sees exactly what a restarted orchestrator would restore.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from sagaline.orchestrator.core.errors import SagalineError
from sagaline.orchestrator.runtime.core import AvroCodec
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.schemas.state import SagaState

__all__ = ["StateWatcher", "WatchTimeout"]


class WatchTimeout(SagalineError):
    """The sagas did not reach the expected state in time."""


class StateWatcher:
    """The latest committed :class:`SagaState` of every saga on one state topic."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = topic
        self._codec = AvroCodec()
        self._consumer = Consumer(
            reader_config(bootstrap_servers, f"sagaline-demo-watch-{uuid.uuid4().hex[:8]}")
        )
        metadata = self._consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.states: dict[str, SagaState] = {}

    def poll(self, seconds: float = 0.2) -> None:
        """Read what arrived within ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for msg in self._consumer.consume(500, min(left, 0.1)):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                key = msg.key()
                value = msg.value()
                if key is None:
                    continue
                saga_id = key.decode("utf-8")
                if value is None:
                    continue
                state = self._codec.decode(value, (SagaState,))
                assert isinstance(state, SagaState)
                self.states[saga_id] = state

    def get(self, saga_id: str) -> SagaState | None:
        return self.states.get(saga_id)

    def wait_until(
        self,
        saga_ids: Iterable[str],
        done: Callable[[SagaState], bool],
        *,
        timeout: float,
        what: str,
        tick: Callable[[], None] | None = None,
    ) -> None:
        """Poll until ``done`` holds for every saga in ``saga_ids`` (``tick`` runs each round)."""
        ids = list(saga_ids)
        deadline = time.monotonic() + timeout
        while True:
            self.poll(0.2)
            if tick is not None:
                tick()
            pending = [i for i in ids if (s := self.states.get(i)) is None or not done(s)]
            if not pending:
                return
            if time.monotonic() > deadline:
                shown = ", ".join(
                    f"{i}={s.status if (s := self.states.get(i)) else 'not started'}"
                    for i in pending[:8]
                )
                raise WatchTimeout(
                    f"{len(pending)} saga(s) not {what} after {timeout:.0f}s: {shown}"
                )

    def close(self) -> None:
        self._consumer.close()
