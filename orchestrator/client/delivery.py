"""The client's producer: every command is confirmed by Kafka or reported as not sent.

Bounds (documented in docs/client.md and ``sagaline --help``):

* before the first write the producer asks the broker for the commands topic's
  metadata; no answer within :data:`KAFKA_TIMEOUT_S` (10 s) raises
  :class:`KafkaUnavailable` ("... nothing was sent"), and so does a missing topic;
* a write is confirmed by its delivery report; one not confirmed within
  :data:`KAFKA_TIMEOUT_S` more is purged from the queue and raises
  :class:`DeliveryFailed` (it may or may not have been written).

librdkafka's own log lines go to the ``sagaline.kafka`` logger and are
filtered out (``log_level`` 0) unless ``debug`` is set.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from sagaline.orchestrator.client.errors import DeliveryFailed, KafkaUnavailable
from sagaline.orchestrator.runtime.kafka_config import KafkaConfig, client_producer_config
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer, client_signer_name

__all__ = ["KAFKA_LOG", "KAFKA_TIMEOUT_S", "CommandProducer", "Receipt", "kafka_log_config"]

#: How long the client waits for Kafka to answer, before a write and for its confirmation.
KAFKA_TIMEOUT_S = 10.0

#: librdkafka's log lines land here (only when ``debug`` is set).
KAFKA_LOG = logging.getLogger("sagaline.kafka")


def kafka_log_config(debug: bool = False) -> KafkaConfig:
    """Route librdkafka's logs to :data:`KAFKA_LOG`; silence them unless ``debug``."""
    logger: Any = KAFKA_LOG  # confluent-kafka takes a logging.Logger here
    return {"logger": logger, "log_level": 7 if debug else 0}


@dataclass(frozen=True)
class Receipt:
    """Where Kafka stored one command (from its delivery report)."""

    saga_id: str
    command: str
    message_id: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "saga_id": self.saga_id,
            "command": self.command,
            "message_id": self.message_id,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }


@dataclass
class _Pending:
    saga_id: str
    command: str
    message_id: str
    receipt: Receipt | None = None
    error: KafkaError | None = None


class CommandProducer:
    """An idempotent producer of commands whose every write is accounted for."""

    def __init__(
        self, bootstrap: str, topic: str, *, timeout: float = KAFKA_TIMEOUT_S, debug: bool = False
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout = timeout
        self._errors: list[KafkaError] = []
        extra: KafkaConfig = {
            **kafka_log_config(debug),
            "error_cb": self._errors.append,
            "allow.auto.create.topics": False,
            "message.timeout.ms": int(timeout * 1000),
            "socket.connection.setup.timeout.ms": int(timeout * 1000),
        }
        # signed by this client's signer (its Kafka user, or SAGALINE_SIGNER) when signing is on
        config, signer = client_producer_config(bootstrap, extra=extra), client_signer_name()
        self._producer: Producer = SignedProducer(config, signer)
        self._partitions: int | None = None
        self._pending: list[_Pending] = []
        self._lock = threading.Lock()

    def unavailable(self, what: str = "nothing was sent") -> KafkaUnavailable:
        """The one-line error for a broker that does not answer."""
        return KafkaUnavailable(
            f"Kafka at {self.bootstrap} did not answer within {self.timeout:g} s; {what}"
        )

    def partitions(self, what: str = "nothing was sent") -> int:
        """The commands topic's partition count; checks the broker answers (cached)."""
        if self._partitions is not None:
            return self._partitions
        try:
            metadata = self._producer.list_topics(topic=self.topic, timeout=self.timeout)
        except KafkaException as exc:
            raise self.unavailable(what) from exc
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise KafkaUnavailable(
                f"topic {self.topic} does not exist at Kafka {self.bootstrap}; "
                f"run `sagaline topics ensure` first; {what}"
            )
        self._partitions = len(topic.partitions)
        return self._partitions

    def produce(
        self,
        *,
        key: bytes,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]] | None,
        saga_id: str,
        command: str,
        message_id: str,
    ) -> None:
        """Queue one command (call :meth:`flush` to confirm it)."""
        self.partitions()
        pending = _Pending(saga_id, command, message_id)

        def delivered(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                pending.error = err
                return
            _kind, timestamp = msg.timestamp()
            pending.receipt = Receipt(
                saga_id, command, message_id, msg.topic(), msg.partition(), msg.offset(), timestamp
            )

        self._producer.produce(
            self.topic, key=key, value=value, headers=headers, on_delivery=delivered
        )
        with self._lock:
            self._pending.append(pending)

    def flush(self) -> list[Receipt]:
        """Confirm every queued command; raise :class:`DeliveryFailed` for any not confirmed."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return []
        remaining = self._producer.flush(self.timeout + 2.0)
        if remaining:
            self._producer.purge()
            self._producer.flush(0)
        failed = [p for p in pending if p.receipt is None]
        if failed:
            first = failed[0]
            why = str(first.error) if first.error is not None else "no confirmation"
            raise DeliveryFailed(
                f"Kafka at {self.bootstrap} did not confirm {len(failed)} of {len(pending)} "
                f"command(s) within {self.timeout:g} s ({first.command} for saga "
                f"{first.saga_id!r}: {why}); they may or may not have been written, "
                "and sending them again is safe"
            )
        return [p.receipt for p in pending if p.receipt is not None]

    def close(self) -> None:
        """Confirm what is queued (raises like :meth:`flush`)."""
        self.flush()
