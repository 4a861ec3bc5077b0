"""The orchestrator's transactional producer: one batch = one Kafka transaction.

:meth:`TransactionalProducer.commit_batch` runs begin → produce every record
→ ``send_offsets_to_transaction`` → commit, and sorts librdkafka's errors
(rdkafka.h "Transactional producer API"):

* retriable — the same call is retried with the same arguments;
* abortable — the transaction is aborted and ``commit_batch`` returns
  ``False`` (the caller rewinds and discards the batch);
* fatal, or none of the flags — :class:`FatalKafkaError` (exit, restart).

:meth:`TransactionalProducer.begin` sends the consumed offsets on a helper
thread while the caller decides the batch (the two round trips of
``send_offsets_to_transaction`` overlap the CPU work); :meth:`finish` joins
it before the commit.  librdkafka allows ``produce()`` concurrently with the
transactional calls.

A record refused locally by ``produce()`` (too large, ...) aborts the batch
the same way.  Delivery callbacks only log: an exception raised there would
replace the commit's own result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from sagaline.orchestrator.runtime.errors import FatalKafkaError
from sagaline.orchestrator.runtime.kafka_config import KafkaConfig
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer, signer_for
from sagaline.orchestrator.runtime.telemetry import ProducerHeaders

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
        # signs every record as the orchestrator (tasks, state, tombstones, ...) when signing is on
        signer = signer_for("orchestrator")
        self._producer: Producer = SignedProducer({**config, "error_cb": self._on_error}, signer)
        self._offsets_thread: threading.Thread | None = None
        self._offsets_error: BaseException | None = None

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

    def begin(self, offsets: list[TopicPartition], group_metadata: Callable[[], object]) -> None:
        """Begin a transaction; send ``offsets`` to it in the background.

        ``send_offsets_to_transaction`` takes two round trips to the brokers;
        running it while the caller decides the batch hides them.  Finish with
        :meth:`finish`.
        """
        self._call(self._producer.begin_transaction, "begin_transaction")
        self._offsets_error = None
        self._offsets_thread = None
        if not offsets:
            return
        metadata = group_metadata()

        def send() -> None:
            try:
                self._call(
                    lambda: self._producer.send_offsets_to_transaction(offsets, metadata),
                    "send_offsets_to_transaction",
                )
            except BaseException as exc:  # re-raised by finish() in the caller's thread
                self._offsets_error = exc

        self._offsets_thread = threading.Thread(target=send, name="send-offsets", daemon=True)
        self._offsets_thread.start()

    def _join_offsets(self) -> None:
        thread, self._offsets_thread = self._offsets_thread, None
        if thread is not None:
            thread.join()
        error, self._offsets_error = self._offsets_error, None
        if error is not None:
            raise error

    def finish(self, records: Sequence[Produce]) -> bool:
        """Produce ``records`` into the transaction begun by :meth:`begin` and commit it.

        Returns ``False`` when the transaction was aborted (abortable error or a
        record refused locally); raises :class:`FatalKafkaError` otherwise.
        """
        try:
            try:
                for item in records:
                    self._produce(item)
            except KafkaException as exc:
                refusal: KafkaError = exc.args[0]
                if refusal.fatal():
                    raise FatalKafkaError(f"produce: {refusal}") from exc
                log.warning("aborting batch, %s refused a record: %s", item.topic, refusal)
                self._join_offsets_quietly()
                return self._abort(str(refusal))
            self._join_offsets()
            self._call(self._producer.commit_transaction, "commit_transaction")
            return True
        except KafkaException as exc:
            self._join_offsets_quietly()
            err: KafkaError = exc.args[0]
            if not err.txn_requires_abort():
                raise FatalKafkaError(f"transaction: {err}") from exc
            log.warning("aborting batch: %s", err)
            return self._abort(str(err))

    def _join_offsets_quietly(self) -> None:
        """Wait for the offsets call before aborting; its own error no longer matters."""
        try:
            self._join_offsets()
        except KafkaException as exc:
            log.debug("send_offsets_to_transaction of an aborted batch: %s", exc)

    def commit_batch(
        self,
        records: Sequence[Produce],
        offsets: list[TopicPartition],
        group_metadata: Callable[[], object],
    ) -> bool:
        """Produce ``records`` and commit ``offsets`` atomically; ``False`` if aborted."""
        self.begin(offsets, group_metadata)
        return self.finish(records)
