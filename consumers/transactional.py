"""The worker's transactional producer (the Kafka-only path), re-created after a fatal error.

One ``transactional.id`` per worker process (``<group>-worker-<instance id>``, a random
instance id when none is given), kept for the life of the process.  After a fatal error
of the client (fenced by an epoch bump, the coordinator timing out a transaction, ...)
:meth:`WorkerTransactions.recreate` drops the failed client; the next
:meth:`WorkerTransactions.producer` creates a new one with the same id, whose
``init_transactions`` fences the old one and completes or aborts its last transaction,
and the caller consumes again from the committed offsets.  As for the orchestrator
(``transactions.RecreateBudget``): at most 3 re-creations in 5 minutes, never for an
error of configuration; beyond that the error is raised and the process exits.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import suppress
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from sagaline.orchestrator.runtime.release import release
from sagaline.orchestrator.runtime.signing_runtime import WorkerProducer
from sagaline.orchestrator.runtime.transactions import RecreateBudget, init_fencing

__all__ = ["WorkerTransactions", "abort_transaction", "commit_transaction"]

log = logging.getLogger("sagaline.worker")


class WorkerTransactions:
    """Creates (lazily) and re-creates the worker's transactional producer."""

    def __init__(self, base_config: dict[str, Any], group_id: str, instance_id: str | None) -> None:
        self._base = base_config
        self._group_id = group_id
        self.transactional_id = f"{group_id}-worker-{instance_id or uuid.uuid4().hex[:12]}"
        self._producer: Producer | None = None
        self._budget = RecreateBudget()
        #: how many times a fatal error re-created the producer
        self.recreated = 0

    def producer(self) -> Producer:
        """The transactional producer, created and initialised on first use."""
        if self._producer is None:
            producer = self._new_client()
            while True:
                try:
                    init_fencing(producer, 30)
                    break
                except KafkaException as exc:
                    if not exc.args[0].retriable():
                        raise
                    log.warning("init_transactions: %s; retrying", exc)
            self._producer = producer
        return self._producer

    def _new_client(self) -> WorkerProducer:
        return WorkerProducer(
            {
                **self._base,
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": 10_000,
                "client.id": f"{self._group_id}-txn",
            }
        )

    def recreate(self, err: KafkaError) -> None:
        """After a fatal error: drop the failed client (the next :meth:`producer` makes a
        new one with the same id); raises the error when the budget does not allow it."""
        if not self._budget.allows(err):
            raise KafkaException(err)
        self.recreated += 1
        log.warning("transactional producer failed (%s): re-creating it", err)
        failed: list[Producer] = []
        if self._producer is not None:
            failed.append(self._producer)
            self._producer = None
            with suppress(KafkaException, RuntimeError):
                failed[0].purge()
                failed[0].poll(0)
        release(failed)  # its broker may be gone: freed off this thread, bounded

    def flush(self, timeout: float) -> None:
        if self._producer is not None:
            self._producer.flush(timeout)


def commit_transaction(producer: Producer, attempts: int = 10) -> None:
    """``commit_transaction``, retried while the error is retriable (it is resumable)."""
    for attempt in range(attempts):
        try:
            producer.commit_transaction()
            return
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (isinstance(error, KafkaError) and error.retriable()):
                raise
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def abort_transaction(producer: Producer) -> None:
    """``abort_transaction``, retried while the error is retriable (a broker outage)."""
    delay = 0.1
    while True:
        try:
            producer.abort_transaction(30)
            return
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not (isinstance(error, KafkaError) and error.retriable()):
                raise
            log.warning("abort_transaction: %s; retrying", exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
