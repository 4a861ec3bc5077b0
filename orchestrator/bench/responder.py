"""A worker stand-in that answers every task with a success reply, exactly once.

It consumes the tasks topic (read_committed, consumer group) and, in one
Kafka transaction per batch, produces a ``StepSucceeded`` /
``CompensationSucceeded`` for each task plus the consumed offsets.  Trace
headers are copied from the task to the reply.  It isolates the
orchestrator's cost in benchmarks and tests; the real worker
(``consumers``) adds the Postgres inbox/outbox hop.

``sleep_ms`` simulates step work: each batch of tasks "runs" concurrently
for that long before its replies are written (like a worker with enough
concurrency).  Steps named in ``skip``, and every step of the sagas in
``skip_sagas``, get no reply (to exercise timeouts).

Run standalone: ``sagaline bench responder --prefix P``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from types import FrameType

from confluent_kafka import Consumer

from sagaline.orchestrator.runtime.kafka_config import (
    group_consumer_config,
    transactional_producer_config,
)
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.orchestrator.runtime.telemetry import carrier_from_headers, headers_from_carrier
from sagaline.schemas.base import Record
from sagaline.schemas.codec import RecordCodec, default_codec
from sagaline.schemas.replies import CompensationSucceeded, StepSucceeded
from sagaline.schemas.tasks import TASK_TYPES, CompensateStep, ExecuteStep

__all__ = ["Responder", "serve"]

log = logging.getLogger(__name__)


class Responder:
    """Answers tasks with success replies in Kafka transactions (run in a thread)."""

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        codec: RecordCodec,
        *,
        sleep_ms: float = 0.0,
        skip: Iterable[str] = (),
        skip_sagas: Iterable[str] = (),
        group: str | None = None,
        fetch_wait_max_ms: int = 5,
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.codec = codec
        self.sleep_ms = sleep_ms
        self.skip = set(skip)
        self.skip_sagas = set(skip_sagas)
        self.group = group or f"{prefix}-responder"
        self.fetch_wait_max_ms = fetch_wait_max_ms
        self.answered = 0
        self.seen: list[ExecuteStep | CompensateStep] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Responder:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self._run_safe, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current batch."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run_safe(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # surfaced to the caller through .error
            log.exception("responder failed")
            self.error = exc

    def reply_for(self, task: Record, now: datetime) -> Record | None:
        """The success reply to ``task`` (``None`` for skipped steps)."""
        if isinstance(task, ExecuteStep):
            if task.step in self.skip or task.envelope.saga_id in self.skip_sagas:
                return None
            return StepSucceeded.for_task(task, now=now)
        if isinstance(task, CompensateStep):
            return CompensationSucceeded.for_task(task, now=now)
        return None

    def run(self) -> None:
        """Consume and answer until :meth:`stop`."""
        consumer = Consumer(
            group_consumer_config(
                self.bootstrap,
                self.group,
                fetch_wait_max_ms=self.fetch_wait_max_ms,
                extra={"session.timeout.ms": 6000},
            )
        )
        producer = SignedProducer(  # replies signed as a worker (when signing is on)
            transactional_producer_config(self.bootstrap, f"{self.group}-{uuid.uuid4().hex[:6]}"),
            "worker",
        )
        producer.init_transactions(30)
        consumer.subscribe([f"{self.prefix}.tasks"])
        try:
            while not self._stop.is_set():
                first = consumer.poll(0.1)
                if first is None:
                    continue
                msgs = [first, *consumer.consume(500, 0)]
                msgs = [m for m in msgs if m.error() is None]
                if not msgs:
                    continue
                if self.sleep_ms:
                    time.sleep(self.sleep_ms / 1000)
                now = datetime.now(UTC)
                producer.begin_transaction()
                for msg in msgs:
                    value = msg.value()
                    if value is None:
                        continue
                    task = self.codec.decode(value, TASK_TYPES)
                    if not isinstance(task, ExecuteStep | CompensateStep):
                        continue
                    self.seen.append(task)
                    reply = self.reply_for(task, now)
                    if reply is None:
                        continue
                    carrier = carrier_from_headers(msg.headers())
                    headers = headers_from_carrier(carrier)
                    producer.produce(
                        f"{self.prefix}.replies",
                        key=msg.key(),
                        value=self.codec.encode(reply),
                        headers=headers or None,
                    )
                    self.answered += 1
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()), consumer.consumer_group_metadata()
                )
                producer.commit_transaction()
        finally:
            consumer.close()


def serve(
    bootstrap: str | None, prefix: str | None, *, sleep_ms: float = 0.0, fetch_wait_max_ms: int = 5
) -> int:
    """``sagaline bench responder``: answer the tasks of ``prefix`` until SIGTERM."""
    from sagaline.orchestrator.config import Settings

    settings = Settings.from_env(kafka_bootstrap_servers=bootstrap, topic_prefix=prefix)
    responder = Responder(
        settings.kafka_bootstrap_servers,
        settings.topics.prefix,
        default_codec(),
        sleep_ms=sleep_ms,
        fetch_wait_max_ms=fetch_wait_max_ms,
    )

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        responder._stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    responder.run()
    return 0
