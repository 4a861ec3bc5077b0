"""Follow the state topic: the latest snapshot of every saga, as the orchestrator commits it.

One assign-based ``read_committed`` reader over all partitions of the
compacted state topic (it commits nothing and joins no group), each poll a
:func:`~sagaline.orchestrator.runtime.stable_read.read_to_end` from where the
last one stopped, so the demo sees exactly what a restarted orchestrator
would restore.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer

from sagaline.orchestrator.core.errors import SagalineError
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.stable_read import read_to_end, stable_offsets, topic_partitions
from sagaline.schemas.codec import default_codec
from sagaline.schemas.state import SagaState

__all__ = ["StateWatcher", "WatchTimeout"]


class WatchTimeout(SagalineError):
    """The sagas did not reach the expected state in time."""


class StateWatcher:
    """The latest committed :class:`SagaState` of every saga on one state topic."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = topic
        self._codec = default_codec()
        self._consumer = Consumer(
            reader_config(bootstrap_servers, f"sagaline-demo-watch-{uuid.uuid4().hex[:8]}")
        )
        self._next = dict.fromkeys(topic_partitions(self._consumer, topic), 0)
        self.states: dict[str, SagaState] = {}

    def poll(self, seconds: float = 0.2) -> None:
        """Read every partition to its last stable offset; wait up to ``seconds`` for news."""
        deadline = time.monotonic() + seconds
        while True:
            offsets = stable_offsets(self._consumer, self.topic, self._next)
            ranges = {p: (self._next[p], high) for p, (_, high) in offsets.items()}
            for record in read_to_end(self._consumer, self.topic, ranges, timeout=30.0):
                saga_id = record.text_key
                if saga_id is None or record.value is None:
                    continue
                state = self._codec.decode(record.value, SagaState)
                self.states[saga_id] = state
            news = any(start < end for start, end in ranges.values())
            self._next.update({p: end for p, (_, end) in ranges.items()})
            if news or time.monotonic() >= deadline:
                return
            time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))

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
