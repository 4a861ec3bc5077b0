"""Publishing advisory progress: :class:`ProgressPublisher`.

Progress (``ctx.progress(...)`` in a step or an agent turn) goes to the
``{prefix}.progress`` topic, keyed by saga id, through a plain idempotent
producer of its own, outside every transaction.  Publishing is
fire-and-forget with a bounded buffer:

* ``publish`` never blocks and never raises: a full buffer drops the record,
  a fatal producer error replaces the producer, and a record the broker
  refuses (missing topic, ACL, too large) is counted when its delivery
  report says so;
* ``flush(timeout)`` waits at most ``timeout`` (the worker calls it before a
  step's reply is recorded, so a reader sees a step's progress before the
  state that follows it); after a failed delivery it is skipped for a while,
  so a broken progress topic costs a step no time.

Nothing reads progress to decide anything: losing it loses no state.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from sagaline.orchestrator.runtime.kafka_config import ConfigValue, client_producer_config
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.schemas.progress import ProgressReported

__all__ = ["PROGRESS_BUFFER", "ProgressPublisher", "ProgressStats"]

log = logging.getLogger("sagaline.progress")

#: Progress records buffered at most per publisher (more are dropped).
PROGRESS_BUFFER = 1000
#: After a failed delivery, flushes are skipped for this long (seconds).
DEGRADED_S = 30.0
#: At most one warning about lost progress per this many seconds.
WARN_EVERY_S = 30.0


class ProgressStats:
    """Counters of one publisher (thread-safe increments)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        self.failed = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


class ProgressPublisher:
    """A fire-and-forget, bounded, idempotent producer of :class:`ProgressReported`."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        codec: Codec,
        *,
        buffer: int = PROGRESS_BUFFER,
        extra: Mapping[str, ConfigValue] | None = None,
        client_id: str = "sagaline-progress",
    ) -> None:
        self.topic = topic
        self.stats = ProgressStats()
        self._codec = codec
        self._config = client_producer_config(
            bootstrap_servers,
            linger_ms=5,
            extra={
                **(extra or {}),
                "client.id": client_id,
                "queue.buffering.max.messages": buffer,
                "queue.buffering.max.kbytes": 8192,
                # a missing topic must stay missing (never auto-created with the
                # broker's default partition count)
                "allow.auto.create.topics": False,
                "message.timeout.ms": 10_000,
            },
        )
        self._lock = threading.Lock()
        self._producer: Producer | None = None
        self._failed_at = float("-inf")
        self._warned_at = float("-inf")
        self._closed = False

    def _current(self) -> Producer | None:
        with self._lock:
            if self._closed:
                return None
            if self._producer is None:
                self._producer = Producer(self._config)
            return self._producer

    def publish(self, record: ProgressReported) -> bool:
        """Queue ``record`` (keyed by its saga id); ``False`` when it was dropped."""
        producer = self._current()
        if producer is None:
            return False
        try:
            value = self._codec.encode(record)
            producer.produce(
                self.topic,
                key=record.saga_id.encode("utf-8"),
                value=value,
                on_delivery=self._delivered,
            )
        except BufferError:
            self._lost("dropped", "the progress buffer is full")
            return False
        except KafkaException as exc:
            self._lost("dropped", str(exc))
            if exc.args and isinstance(exc.args[0], KafkaError) and exc.args[0].fatal():
                self._replace(producer)
            return False
        finally:
            producer.poll(0)
        self.stats.add("published")
        return True

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.stats.add("delivered")
            return
        self._failed_at = time.monotonic()
        self._lost("failed", err.str())

    def _lost(self, counter: str, why: str) -> None:
        self.stats.add(counter)
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning("progress to %s lost (advisory, no state is lost): %s", self.topic, why)

    def warm(self, timeout: float = 10.0) -> bool:
        """Connect now and learn the topic's leaders (the first progress of a step then
        does not wait for a TLS handshake and a metadata round trip); ``False`` when
        the broker did not answer within ``timeout`` s (publishing still works later)."""
        producer = self._current()
        if producer is None:
            return False
        try:
            producer.list_topics(self.topic, timeout=timeout)
        except KafkaException as exc:
            log.info("progress producer not warmed up (%s); it connects on first use", exc)
            return False
        return True

    def _replace(self, broken: Producer) -> None:
        with self._lock:
            if self._producer is broken:
                self._producer = None

    @property
    def degraded(self) -> bool:
        """Whether a delivery failed recently (flushes are skipped meanwhile)."""
        return time.monotonic() - self._failed_at < DEGRADED_S

    def flush(self, timeout: float) -> int:
        """Wait at most ``timeout`` s for queued records (none when degraded); how many remain."""
        producer = self._current()
        if producer is None:
            return 0
        if self.degraded:
            producer.poll(0)
            return len(producer)
        try:
            return int(producer.flush(timeout))
        except KafkaException:
            return len(producer)

    def close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued within ``timeout`` s and stop (idempotent)."""
        producer = self._current()
        with self._lock:
            self._closed = True
            self._producer = None
        if producer is not None:
            with contextlib.suppress(KafkaException):
                producer.flush(0 if self.degraded else timeout)
