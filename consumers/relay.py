"""The outbox relay: publishes committed outbox rows to Kafka, then marks them sent.

Design (ADR 0005): rows are split into :data:`~sagaline.consumers.store.OUTBOX_SHARDS`
shards by message key (the saga id).  A relay publishes a shard only while
it holds that shard's session-level advisory lock, so several relays may run
and each shard has one publisher at a time; within a shard rows go out in
id order, which keeps one saga's replies in order.  Rows are found by a
``sent_at IS NULL`` flag, not by an id cursor, so a row whose transaction
commits after a higher id is published when it becomes visible, never
skipped.  The relay sleeps on LISTEN/NOTIFY (workers notify in the
committing transaction) with a slow safety-net poll.  Publishing uses an
idempotent producer and the row is marked only after Kafka acknowledged
it: a crash in between republishes the row (a duplicate reply, dropped by
the orchestrator's decider).

A row Kafka refuses for good (too large for the topic, an invalid record: any
non-retriable, non-fatal client or broker error) can never be published: it
is written to the dead-letter topic as a bounded letter and marked sent, so
it never blocks its shard.  Retriable errors (a broker outage) leave the row
unsent for the next round; a fatal error stops the relay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from sagaline.consumers.crash import crash_point
from sagaline.consumers.db import DEFAULT_SCHEMA, connect, describe_dsn, is_connection_error
from sagaline.consumers.dead_letters import DeadLetterSender
from sagaline.consumers.errors import WorkerError
from sagaline.consumers.refusals import answer_refused_row
from sagaline.consumers.store import OUTBOX_SHARDS, OutboxMessage, WorkerStore
from sagaline.consumers.wire import SchemasCodec
from sagaline.orchestrator.runtime.kafka_config import client_producer_config
from sagaline.orchestrator.runtime.metrics import OUTBOX_BACKLOG, RELAY_DELAY
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.orchestrator.runtime.telemetry import (
    ProducerHeaders,
    carrier_from_context,
    context_from_carrier,
)
from sagaline.orchestrator.runtime.transactions import is_fatal, refused_for_good

__all__ = ["Relay", "RelayOptions", "RelayStats"]

log = logging.getLogger("sagaline.relay")

_LOCK_NAMESPACE = "sagaline.outbox-shard"


@dataclass(frozen=True)
class RelayOptions:
    """How a relay runs."""

    schema: str = DEFAULT_SCHEMA
    #: Rows read and published per round trip.
    batch_size: int = 500
    #: Safety-net poll when no notification arrives (seconds).
    poll_interval: float = 1.0
    #: Sent rows are deleted after this many seconds.
    retention_seconds: float = 3600.0
    #: How often sent rows are cleaned up (seconds).
    cleanup_interval: float = 60.0
    #: At most this many shards are owned by this relay (spread load over several relays).
    max_shards: int = OUTBOX_SHARDS
    #: How long to wait for Kafka to acknowledge a batch (seconds).
    flush_timeout: float = 30.0
    #: Extra librdkafka producer settings.
    producer_config: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    #: Where rows Kafka refuses for good go (None: ``<prefix>.deadletter`` beside the row's topic).
    deadletter_topic: str | None = None


@dataclass
class RelayStats:
    """Counters since start."""

    published: int = 0
    failed: int = 0
    dead_lettered: int = 0
    batches: int = 0
    wakeups: int = 0
    reconnects: int = 0
    cleaned: int = 0


class Relay:
    """Publishes outbox rows of the shards it owns; run it with :meth:`run`."""

    def __init__(
        self, dsn: str, bootstrap_servers: str, options: RelayOptions | None = None
    ) -> None:
        self.options = options or RelayOptions()
        self._dsn = dsn
        self._store = WorkerStore(self.options.schema)
        # shard locks are per schema: relays of different schemas never block each other
        self._lock_namespace = f"{_LOCK_NAMESPACE}:{self._store.schema}"
        self._producer: Producer = SignedProducer(
            client_producer_config(
                bootstrap_servers,
                linger_ms=1,
                extra={"client.id": "sagaline-relay", **self.options.producer_config},
            ),
            "relay",  # signs the replies it publishes (when signing is on)
        )
        self._conn: psycopg.Connection | None = None
        self._owned: list[int] = []
        self._last_cleanup = 0.0
        self._last_acquire = 0.0
        self._last_backlog = 0.0
        self.stats = RelayStats()
        self._letters = DeadLetterSender(self._producer, "", SchemasCodec(), "relay", _never)

    # -- connection and shard ownership -----------------------------------------

    def _connect(self) -> psycopg.Connection:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._drop_connection()
        conn = connect(self._dsn, autocommit=True)
        conn.execute(f"LISTEN {self._store.channel}")
        self._conn = conn
        self.stats.reconnects += 1
        log.info("relay connected to %s", describe_dsn(self._dsn))
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                log.debug("closing a broken relay connection failed", exc_info=True)
        self._conn = None
        self._owned = []  # session advisory locks die with the connection

    def _acquire_shards(self, conn: psycopg.Connection) -> None:
        """Try to lock free shards: at once when owning none, else once per poll interval
        (a shard whose relay died is taken over within ``poll_interval``)."""
        if len(self._owned) >= self.options.max_shards:
            return
        now = time.monotonic()
        if self._owned and now - self._last_acquire < self.options.poll_interval:
            return
        self._last_acquire = now
        for shard in range(OUTBOX_SHARDS):
            if shard in self._owned:
                continue
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s), %s)", (self._lock_namespace, shard)
            ).fetchone()
            if row is not None and row[0]:
                self._owned.append(shard)
                if len(self._owned) >= self.options.max_shards:
                    break
        self._owned.sort()

    @property
    def owned_shards(self) -> tuple[int, ...]:
        """The shards this relay currently publishes."""
        return tuple(self._owned)

    # -- publishing --------------------------------------------------------------

    def _publish(self, rows: list[OutboxMessage]) -> list[int]:
        """Publish ``rows``; the ids to mark sent (delivered, or refused and dead-lettered)."""
        delivered: list[int] = []
        failed: list[tuple[OutboxMessage, KafkaError]] = []

        def on_delivery(
            row: OutboxMessage,
        ) -> Callable[[KafkaError | None, Message[bytes, bytes]], None]:
            def callback(err: KafkaError | None, _msg: Message[bytes, bytes]) -> None:
                if err is None:
                    delivered.append(row.id)
                else:
                    failed.append((row, err))

            return callback

        for row in rows:
            refusal = self._produce(row, on_delivery(row))
            if refusal is not None:
                failed.append((row, refusal))
        remaining = self._producer.flush(self.options.flush_timeout)
        if remaining:
            log.warning("relay: %d messages not acknowledged within the flush timeout", remaining)
        for row, err in failed:
            if _refused_for_good(err) and self._dead_letter(row, err):
                delivered.append(row.id)
            else:
                log.warning("relay: publishing outbox row %d failed: %s", row.id, err)
                self.stats.failed += 1
        return delivered

    def _produce(
        self,
        row: OutboxMessage,
        callback: Callable[[KafkaError | None, Message[bytes, bytes]], None],
    ) -> KafkaError | None:
        """Hand ``row`` to the producer; the client's own refusal, if any (fatal: raised).

        A PRODUCER span, child of the context the row carries, wraps the hand-over;
        the published headers carry that span's context instead.
        """
        attributes = {**_PUBLISH, "messaging.destination.name": row.topic}
        with _TRACER.start_as_current_span(
            f"send {row.topic}",
            context=context_from_carrier(row.headers),
            kind=SpanKind.PRODUCER,
            attributes=attributes,
        ):
            carried = {**row.headers, **carrier_from_context()}
            headers: ProducerHeaders = [(k, v.encode()) for k, v in carried.items()]
            while True:
                try:
                    self._producer.produce(
                        row.topic,
                        key=row.key,
                        value=row.value,
                        headers=headers,
                        on_delivery=callback,
                    )
                    return None
                except BufferError:
                    self._producer.poll(0.05)
                except KafkaException as exc:
                    err: KafkaError = exc.args[0]
                    if is_fatal(err):  # _FATAL: every call on a failed client says so
                        raise
                    return err

    def _dead_letter(self, row: OutboxMessage, err: KafkaError) -> bool:
        """Write the bounded dead letter of a row Kafka refuses for good."""
        topic = self.options.deadletter_topic or _deadletter_topic_for(row.topic)
        reason = f"outbox row {row.id} refused by Kafka: {err}"
        letter = self._letters.letter(
            (row.topic, -1, row.id), row.key, row.value, row.headers, reason, "Refused"
        )
        sent = self._letters.send(letter, row.value, topic)
        if sent:
            self.stats.dead_lettered += 1
            answer_refused_row(self._letters, row.topic, row.key, row.value, err)  # tell the saga
        return sent

    def publish_once(self) -> int:
        """Publish what is unsent in the owned shards now; returns the number published."""
        conn = self._connect()
        self._acquire_shards(conn)
        if not self._owned:
            return 0
        total = 0
        while True:
            rows = self._store.unsent(conn, self._owned, self.options.batch_size)
            if not rows:
                break
            delivered = self._publish(rows)
            crash_point("relay_after_publish")
            for waited in self._store.mark_sent(conn, delivered):
                RELAY_DELAY.observe(waited)
            self.stats.batches += 1
            self.stats.published += len(delivered)
            total += len(delivered)
            if len(delivered) < len(rows):
                break  # failures: back off to the next wake-up instead of spinning
            if len(rows) < self.options.batch_size:
                break
        return total

    def cleanup(self) -> int:
        """Delete rows of the owned shards sent more than ``retention_seconds`` ago."""
        conn = self._connect()
        self._acquire_shards(conn)
        self._last_cleanup = time.monotonic()
        if not self._owned:
            return 0
        deleted = self._store.delete_sent(conn, self._owned, self.options.retention_seconds)
        self.stats.cleaned += deleted
        return deleted

    def _maybe_cleanup(self) -> None:
        if time.monotonic() - self._last_cleanup >= self.options.cleanup_interval:
            self.cleanup()

    def _sample_backlog(self) -> None:
        """Refresh the backlog gauge (at most once a second)."""
        if time.monotonic() - self._last_backlog >= 1.0:
            self._last_backlog = time.monotonic()
            OUTBOX_BACKLOG.set(self._store.unsent_count(self._connect()))

    def _wait(self, conn: psycopg.Connection, timeout: float) -> None:
        for _ in conn.notifies(timeout=timeout, stop_after=1):
            self.stats.wakeups += 1

    def run(self, stop: threading.Event) -> None:
        """Publish until ``stop`` is set; survives database restarts."""
        self._letters = DeadLetterSender(self._producer, "", SchemasCodec(), "relay", stop.is_set)
        backoff = 0.2
        while not stop.is_set():
            try:
                self.publish_once()
                self._maybe_cleanup()
                self._sample_backlog()
                self._wait(self._connect(), self.options.poll_interval)
                backoff = 0.2
            except (psycopg.Error, WorkerError) as exc:
                if not is_connection_error(exc, self._conn):
                    raise
                log.warning("relay: database unavailable (%s); retrying in %.1fs", exc, backoff)
                self._drop_connection()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def close(self) -> None:
        """Flush the producer and release the connection (and the shard locks)."""
        self._producer.flush(self.options.flush_timeout)
        self._drop_connection()


def _refused_for_good(err: KafkaError) -> bool:
    """A client or broker refusal of the row that no retry can change (too large, invalid, a
    topic that does not exist).  A delivery report's error carries no retriable or fatal flag,
    so only these codes count: anything else (an out-of-order sequence, an epoch or producer-id
    error, a purge, a fatal producer, a timeout) leaves the row unsent for the next round."""
    return refused_for_good(err) or (not err.fatal() and err.code() == KafkaError._UNKNOWN_TOPIC)


def _deadletter_topic_for(topic: str) -> str:
    """``<prefix>.deadletter`` beside ``<prefix>.<name>`` (sagaline's topic naming)."""
    prefix, dot, _name = topic.rpartition(".")
    return f"{prefix}.deadletter" if dot else "deadletter"


_TRACER = trace.get_tracer("sagaline.relay")
_PUBLISH = {"messaging.system": "kafka", "messaging.operation": "publish"}


def _never() -> bool:
    return False
