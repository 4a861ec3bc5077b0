"""Dead letters from workers and the relay: always bounded, every client error sorted.

A worker or relay that cannot use a message writes a
:class:`~sagaline.schemas.deadletter.DeadLetter` and moves on.  The letter is
bounded (``sagaline.schemas.deadletter.bounded``), so its size never depends
on the original.  Delivery errors are sorted deliberately:

* delivered — the caller commits the original's offset (or marks its row sent);
* refused for good (the letter itself: too large, invalid, a topic that does not
  exist; ``transactions.refused_for_good``) — the refusal is logged at ERROR with
  the original's location, length and SHA-256, and the caller skips the original
  all the same (one bad message never stops a partition);
* anything else (a broker outage, an out-of-order sequence, a purge: a delivery
  report's error carries no retriable flag, so only the codes above are refusals)
  — retried until delivered or until ``stopping()`` is true; then
  :meth:`DeadLetterSender.send` returns ``False`` and the caller must not commit
  (the original is redelivered later);
* fatal — :class:`~confluent_kafka.KafkaException` (the process restarts).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from sagaline.consumers.wire import Codec
from sagaline.orchestrator.runtime.metrics import count_dead_letter
from sagaline.orchestrator.runtime.transactions import is_fatal, refused_for_good
from sagaline.schemas.deadletter import DeadLetter, KafkaHeaders, dead_letter_for

__all__ = ["DeadLetterSender", "describe_original"]

log = logging.getLogger("sagaline.deadletter")


def describe_original(topic: str, partition: int, offset: int, value: bytes | None) -> str:
    """``topic[partition]@offset (N bytes, sha256 …)`` for logs."""
    if value is None:
        return f"{topic}[{partition}]@{offset} (no value)"
    digest = hashlib.sha256(value).hexdigest()
    return f"{topic}[{partition}]@{offset} ({len(value)} bytes, sha256 {digest})"


class DeadLetterSender:
    """Writes bounded dead letters with an idempotent producer and waits for each."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        codec: Codec,
        rejected_by: str,
        stopping: Callable[[], bool],
        *,
        flush_timeout: float = 5.0,
    ) -> None:
        self._producer = producer
        self.topic = topic
        self._codec = codec
        self.rejected_by = rejected_by
        self._stopping = stopping
        self._flush_timeout = flush_timeout

    def letter(
        self,
        where: tuple[str, int, int],
        key: bytes | None,
        value: bytes | None,
        headers: KafkaHeaders | None,
        reason: str,
        error_type: str,
    ) -> DeadLetter:
        """The bounded letter of the original at ``where`` (topic, partition, offset)."""
        topic, partition, offset = where
        now = datetime.now(UTC)
        letter = dead_letter_for(
            topic, partition, offset, key, value, headers, reason, self.rejected_by, now
        )
        return letter.model_copy(update={"error_type": error_type})

    def send(
        self, letter: DeadLetter, original: bytes | None = None, topic: str | None = None
    ) -> bool:
        """Deliver ``letter`` (to ``topic``, default :attr:`topic`); ``True`` when the
        original may be committed (see the module)."""
        where = describe_original(
            letter.source_topic, letter.source_partition, letter.source_offset, original
        )
        value = self._codec.encode(letter)
        while True:
            outcome = self._attempt(topic or self.topic, letter.key, value)
            if outcome is None:
                log.warning("dead-lettered %s: %s", where, letter.reason)
                component = "relay" if self.rejected_by == "relay" else "worker"
                count_dead_letter(component, letter.error_type)
                return True
            if is_fatal(outcome):
                raise KafkaException(outcome)
            if refused_for_good(outcome) or outcome.code() == KafkaError._UNKNOWN_TOPIC:
                log.error("dead letter of %s refused (%s): skipping the original", where, outcome)
                return True
            if self._stopping():
                log.warning("dead letter of %s not delivered (%s); stopping", where, outcome)
                return False
            log.warning("dead letter of %s not delivered yet (%s); retrying", where, outcome)
            time.sleep(1.0)

    @property
    def codec(self) -> Codec:
        """The codec letters are encoded with."""
        return self._codec

    def publish(self, topic: str, key: bytes | None, value: bytes, what: str) -> bool:
        """Deliver one small record as :meth:`send` delivers a letter (e.g. the failure reply
        that replaces a refused reply); ``False`` when refused or not delivered before
        stopping (logged at ERROR)."""
        while True:
            outcome = self._attempt(topic, key, value)
            if outcome is None:
                return True
            if is_fatal(outcome):
                raise KafkaException(outcome)
            gone = refused_for_good(outcome) or outcome.code() == KafkaError._UNKNOWN_TOPIC
            if gone or self._stopping():
                log.error("%s not delivered to %s: %s", what, topic, outcome)
                return False
            log.warning("%s not delivered to %s yet (%s); retrying", what, topic, outcome)
            time.sleep(1.0)

    def _attempt(self, topic: str, key: bytes | None, value: bytes) -> KafkaError | None:
        """One produce, flushed until acknowledged or refused (or ``stopping``)."""
        errors: list[KafkaError] = []
        done = threading.Event()

        def on_delivery(err: KafkaError | None, _msg: Message[bytes, bytes]) -> None:
            if err is not None:
                errors.append(err)
            done.set()

        try:
            self._producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        except BufferError:
            self._producer.poll(0.1)
            return KafkaError(KafkaError._QUEUE_FULL, "producer queue full", retriable=True)
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.fatal():
                raise
            return err
        while not done.is_set():
            self._producer.flush(self._flush_timeout)
            if not done.is_set() and self._stopping():
                return KafkaError(KafkaError._MSG_TIMED_OUT, "not acknowledged before stopping")
        return errors[0] if errors else None
