"""Live updates: follow the journal topic, tell every open page what moved (server-sent events).

:class:`JournalFollower` is one thread with an assign-based ``read_committed``
reader over every journal partition, starting at the last stable offsets
(:func:`~sagaline.orchestrator.runtime.stable_read.stable_offsets`), so it sees
each entry the moment the orchestrator's transaction commits.  For each entry
it hands the entry to the saga pages' cache and publishes a ``journal`` event
(the saga page refreshes from that cache), then a
``readmodel`` event once the projection has applied that entry (the inbox and
the list read the read model), or after :data:`READ_MODEL_PATIENCE_S` if the
projection is behind or not running.

:class:`Hub` hands the events to every subscribed page (an ``asyncio.Queue``
each), from the follower's thread to the server's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from sagaline.orchestrator.client.delivery import kafka_log_config
from sagaline.orchestrator.console.readmodel import ReadModel, ReadModelError
from sagaline.orchestrator.core.errors import SagalineError
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.stable_read import stable_offsets, topic_partitions
from sagaline.schemas.codec import default_codec
from sagaline.schemas.errors import MessageError
from sagaline.schemas.journal import JournalEntry

__all__ = ["READ_MODEL_PATIENCE_S", "Hub", "JournalFollower", "LiveEvent", "sse_stream"]

log = logging.getLogger(__name__)

#: how long a ``readmodel`` event waits for the projection before it is sent anyway
READ_MODEL_PATIENCE_S = 5.0
_KEEPALIVE_S = 15.0


@dataclass(frozen=True)
class LiveEvent:
    """``kind`` is ``journal`` or ``readmodel``; ``saga_id`` the saga that moved."""

    kind: str
    saga_id: str
    seq: int

    def sse(self) -> str:
        data = json.dumps({"saga_id": self.saga_id, "seq": self.seq})
        return f"event: {self.kind}\ndata: {data}\n\n"


class Hub:
    """Fan-out of :class:`LiveEvent` to the pages listening (thread-safe publish)."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[LiveEvent]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def subscribe(self) -> asyncio.Queue[LiveEvent]:
        queue: asyncio.Queue[LiveEvent] = asyncio.Queue(maxsize=1000)
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[LiveEvent]) -> None:
        with self._lock:
            self._queues.discard(queue)

    def publish(self, event: LiveEvent) -> None:
        with self._lock:
            loop, queues = self._loop, list(self._queues)
        if loop is None or loop.is_closed():
            return
        for queue in queues:
            loop.call_soon_threadsafe(_offer, queue, event)


def _offer(queue: asyncio.Queue[LiveEvent], event: LiveEvent) -> None:
    if not queue.full():  # a page too slow to read loses events, not the server
        queue.put_nowait(event)


async def sse_stream(hub: Hub, disconnected: asyncio.Event | None = None) -> AsyncIterator[str]:
    """The text/event-stream of one page: events as they come, a comment every 15 s."""
    queue = hub.subscribe()
    try:
        yield "retry: 1000\n\n"
        while disconnected is None or not disconnected.is_set():
            try:
                event = await asyncio.wait_for(queue.get(), timeout=_KEEPALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            yield event.sse()
    finally:
        hub.unsubscribe(queue)


class JournalFollower(threading.Thread):
    """Follows the journal topic and publishes what moved (see the module docstring)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        hub: Hub,
        read_model: ReadModel | None,
        on_entry: Callable[[JournalEntry], None] | None = None,
    ) -> None:
        super().__init__(name="sagaline-console-journal", daemon=True)
        self.on_entry = on_entry
        self.bootstrap = bootstrap
        self.topic = topic
        self.hub = hub
        self.read_model = read_model
        self._stop = threading.Event()
        self._codec = default_codec()
        #: saga id -> (seq, first seen at) waiting for the projection
        self._pending: dict[str, tuple[int, float]] = {}

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        last_problem = ""
        while not self._stop.is_set():
            group = f"sagaline-console-{uuid.uuid4().hex[:8]}"
            consumer = Consumer(reader_config(self.bootstrap, group, extra=kafka_log_config()))
            try:
                self._follow(consumer)
            except (KafkaException, OSError, SagalineError) as exc:
                if str(exc) != last_problem:  # one line per new problem, not one per retry
                    last_problem = str(exc)
                    log.warning("live updates paused: following %s failed: %s", self.topic, exc)
                self._stop.wait(2.0)
            finally:
                consumer.close()

    def _follow(self, consumer: Consumer) -> None:
        partitions = topic_partitions(consumer, self.topic)
        ends = stable_offsets(consumer, self.topic, partitions)
        consumer.assign([TopicPartition(self.topic, p, ends[p][1]) for p in partitions])
        while not self._stop.is_set():
            for msg in consumer.consume(num_messages=500, timeout=0.1):
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF and err.fatal():
                        raise KafkaException(err)
                    continue
                self._entry(msg.value())
            self._check_read_model()

    def _entry(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            entry = self._codec.decode(value, JournalEntry)
        except MessageError:
            return  # the audit reports damaged entries; the console skips them
        saga_id = entry.envelope.saga_id
        if self.on_entry is not None:
            self.on_entry(entry)  # before the pages hear of it, so their refresh sees it
        self.hub.publish(LiveEvent("journal", saga_id, entry.seq))
        self._pending[saga_id] = (entry.seq, time.monotonic())

    def _check_read_model(self) -> None:
        if not self._pending:
            return
        applied: dict[str, int] = {}
        if self.read_model is not None:
            try:
                applied = self.read_model.last_seqs(list(self._pending))
            except ReadModelError:
                applied = {}
        now = time.monotonic()
        for saga_id, (seq, seen) in list(self._pending.items()):
            if applied.get(saga_id, 0) >= seq or now - seen > READ_MODEL_PATIENCE_S:
                del self._pending[saga_id]
                self.hub.publish(LiveEvent("readmodel", saga_id, seq))
