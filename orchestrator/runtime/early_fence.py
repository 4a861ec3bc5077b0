"""Fence a restarted orchestrator's predecessor while the process is still starting.

A replacement orchestrator (same ``--instance-id``, so the same ``transactional.id``)
must fence the killed one before it decides anything: ``init_transactions`` bumps
the producer epoch and aborts the transaction the dead process left open.  The
coordinator answers ``CONCURRENT_TRANSACTIONS`` until the abort's markers are
written, and librdkafka retries that every 500 ms, so the fence alone took about
a second of the replacement's start (``bench recovery``).

:class:`EarlyFence` does it on a thread with a throw-away transactional producer of
the same ``transactional.id``, started as soon as the settings are known, while the
process loads the sagas, builds its codec and checks the topics.  The engine's own
producer then fences again at its start (``init_transactions`` always does), which
is immediate since nothing is open any more.  Fencing twice changes nothing the
guarantees rely on: the engine's producer is the last to initialise, so it is the
one that may write; the early producer writes nothing and is destroyed before the
engine's producer initialises (:meth:`EarlyFence.wait`).  If the early fence fails
(Kafka not reachable yet), the engine's fence does the whole job, as before.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import KafkaException, Producer

from sagaline.orchestrator.runtime.kafka_config import transactional_producer_config

__all__ = ["EarlyFence"]

log = logging.getLogger(__name__)


class EarlyFence:
    """``init_transactions`` for ``transactional_id`` on a thread (see the module)."""

    def __init__(
        self,
        bootstrap_servers: str,
        transactional_id: str,
        *,
        transaction_timeout_ms: int,
        timeout_s: float = 30.0,
    ) -> None:
        self._config = transactional_producer_config(
            bootstrap_servers,
            transactional_id,
            transaction_timeout_ms=transaction_timeout_ms,
            extra={"client.id": f"{transactional_id}-fence"},
        )
        self._timeout_s = timeout_s
        #: seconds the fence took, ``None`` until it succeeded
        self.took_s: float | None = None
        self._thread = threading.Thread(target=self._run, name="sagaline-early-fence", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            producer = Producer(self._config)
            producer.init_transactions(self._timeout_s)
            self.took_s = time.monotonic() - started
        except (KafkaException, RuntimeError) as exc:
            log.info("early fence failed (the engine fences at its start): %s", exc)
            return
        # the producer is destroyed here (its last reference): it never writes
        del producer

    def wait(self) -> float | None:
        """Wait until the early producer is gone; the seconds the fence took (``None``:
        it failed, the engine's own ``init_transactions`` fences)."""
        self._thread.join()
        return self.took_s
