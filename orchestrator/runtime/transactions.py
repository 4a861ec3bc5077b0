"""The orchestrator's transactional producer: one batch = one Kafka transaction.

:meth:`TransactionalProducer.commit_batch` runs begin → produce every record
→ ``send_offsets_to_transaction`` → commit, and sorts librdkafka's errors
(rdkafka.h "Transactional producer API"):

* retriable — the same call is retried with the same arguments;
* abortable — the transaction is aborted and ``commit_batch`` returns
  ``False`` (the caller rewinds and discards the batch);
* fatal, or none of the flags — :class:`FatalKafkaError` (exit, restart).

A record refused locally by ``produce()`` (too large, ...) aborts the batch
the same way.  Delivery callbacks only log: an exception raised there would
replace the commit's own result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from orchestrator.runtime.errors import FatalKafkaError
from orchestrator.runtime.kafka_config import KafkaConfig
from orchestrator.telemetry import ProducerHeaders

__all__ = ["Produce", "TransactionalProducer"]

log = logging.getLogger(__name__)


@dataclass
class Produce:
    """One record of a batch (``value=None`` is a tombstone)."""

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None
    headers: ProducerHeaders | None = None


_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


def _on_delivery(err: KafkaError | None, msg: Message) -> None:
    if err is None:
        return
    if err.code() in _PURGED:  # an aborted transaction's records: expected
        log.debug("delivery to %s purged by the abort", msg.topic())
    else:
        log.warning("delivery to %s failed: %s", msg.topic(), err)


class TransactionalProducer:
    """A librdkafka transactional producer used one batch at a time."""

    def __init__(self, config: KafkaConfig) -> None:
        self.fatal_error: KafkaError | None = None
        #: why the last batch was aborted (for dead letters of inputs that never commit)
        self.last_abort = ""
        self._producer = Producer({**config, "error_cb": self._on_error})

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal_error = err
        log.warning("producer error: %s", err)

    def init(self, timeout: float = 60.0) -> None:
        """Fence earlier producers with the same transactional id (aborts their open txn)."""
        self._call(lambda: self._producer.init_transactions(timeout), "init_transactions")

    def flush(self, timeout: float) -> None:
        self._producer.flush(timeout)

    def _call(self, fn: Callable[[], object], what: str, attempts: int = 5) -> None:
        """Run a transactional call, retrying retriable errors with the same arguments."""
        for attempt in range(attempts):
            try:
                fn()
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal():
                    raise FatalKafkaError(f"{what}: {err}") from exc
                if err.txn_requires_abort():
                    raise
                if err.retriable() and attempt + 1 < attempts:
                    log.info("%s: retriable %s, retrying", what, err)
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise FatalKafkaError(f"{what}: {err}") from exc

    def _produce(self, item: Produce) -> None:
        while True:
            try:
                self._producer.produce(
                    item.topic,
                    value=item.value,
                    key=item.key,
                    partition=item.partition if item.partition is not None else -1,
                    headers=item.headers,
                    on_delivery=_on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def _abort(self, reason: str) -> bool:
        self.last_abort = reason
        self._call(self._producer.abort_transaction, "abort_transaction")
        return False

    def commit_batch(
        self,
        records: Sequence[Produce],
        offsets: list[TopicPartition],
        group_metadata: Callable[[], object],
    ) -> bool:
        """Produce ``records`` and commit ``offsets`` atomically; ``False`` if aborted."""
        try:
            self._call(self._producer.begin_transaction, "begin_transaction")
            for item in records:
                try:
                    self._produce(item)
                except KafkaException as exc:
                    refusal: KafkaError = exc.args[0]
                    if refusal.fatal():
                        raise FatalKafkaError(f"produce: {refusal}") from exc
                    log.warning("aborting batch, %s refused a record: %s", item.topic, refusal)
                    return self._abort(str(refusal))
            if offsets:
                metadata = group_metadata()
                self._call(
                    lambda: self._producer.send_offsets_to_transaction(offsets, metadata),
                    "send_offsets_to_transaction",
                )
            self._call(self._producer.commit_transaction, "commit_transaction")
            return True
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if not err.txn_requires_abort():
                raise FatalKafkaError(f"transaction: {err}") from exc
            log.warning("aborting batch: %s", err)
            return self._abort(str(err))
