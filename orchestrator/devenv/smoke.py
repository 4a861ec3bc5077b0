"""A quick end-to-end check that the configured Kafka and PostgreSQL really work.

Kafka: create a throw-away topic, commit one transaction and abort another, and read
the topic back with ``isolation.level=read_committed`` (only the committed record
may appear). PostgreSQL: a transaction that commits and one that rolls back, on a
temporary table. Every step is reported as one line of text.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import psycopg
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.devenv.errors import DevEnvError
from sagaline.orchestrator.runtime.kafka_config import (
    admin_config,
    group_consumer_config,
    transactional_producer_config,
)

__all__ = ["SmokeReport", "run_smoke"]

# librdkafka syslog levels: 3 = errors. Retries such as "coordinator load in
# progress" on a freshly started broker are expected and not worth printing.
_ERRORS_ONLY = 3


@dataclass
class SmokeReport:
    """What the smoke check did, step by step."""

    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, line: str) -> None:
        self.steps.append(line)


def run_smoke(settings: Settings) -> SmokeReport:
    """Run the Kafka and PostgreSQL checks; raises :class:`DevEnvError` on any mismatch."""
    started = time.monotonic()
    report = SmokeReport()
    try:
        _kafka_round_trip(settings.kafka_bootstrap_servers, report)
    except KafkaException as exc:
        raise DevEnvError(f"Kafka smoke check failed: {exc}") from exc
    if settings.database_url is None:
        raise DevEnvError("DATABASE_URL is not set; run `sagaline dev up` first")
    try:
        _postgres_round_trip(settings.database_url, report)
    except psycopg.Error as exc:
        raise DevEnvError(f"PostgreSQL smoke check failed: {exc}") from exc
    report.seconds = time.monotonic() - started
    return report


def _kafka_round_trip(bootstrap: str, report: SmokeReport) -> None:
    topic = f"sagaline-smoke-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(admin_config(bootstrap, extra={"log_level": _ERRORS_ONLY}))
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1)])[topic].result(
        30
    )
    report.add(f"kafka {bootstrap}: created topic {topic}")
    try:
        producer = Producer(
            transactional_producer_config(
                bootstrap, f"{topic}-producer", extra={"log_level": _ERRORS_ONLY}
            )
        )
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(topic, key=b"smoke", value=b"committed")
        producer.commit_transaction(30)
        report.add("kafka: produced 'committed' in a transaction and committed it")
        producer.begin_transaction()
        producer.produce(topic, key=b"smoke", value=b"aborted")
        producer.flush(30)
        producer.abort_transaction(30)
        report.add("kafka: produced 'aborted' in a transaction and aborted it")
        seen = _read_committed(bootstrap, topic)
        if seen != [b"committed"]:
            raise DevEnvError(f"read_committed consumer saw {seen!r}, expected [b'committed']")
        report.add("kafka: a read_committed consumer sees exactly ['committed']")
    finally:
        admin.delete_topics([topic])[topic].result(30)
        report.add(f"kafka: deleted topic {topic}")


def _read_committed(bootstrap: str, topic: str) -> list[bytes]:
    consumer = Consumer(
        group_consumer_config(
            bootstrap,
            f"{topic}-reader",
            extra={"log_level": _ERRORS_ONLY, "enable.partition.eof": True},
        )
    )
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == -191:  # _PARTITION_EOF: everything committed was read
                    return values
                raise KafkaException(error)
            value = message.value()
            if value is not None:
                values.append(value)
    finally:
        consumer.close()
    raise DevEnvError(f"timed out reading {topic}")


def _postgres_round_trip(url: str, report: SmokeReport) -> None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_database()"
        ).fetchone()
        if row is None:
            raise DevEnvError("PostgreSQL returned no row for SELECT current_setting(...)")
        report.add(f"postgres: connected to database {row[1]!r}, server version {row[0]}")
        conn.execute("CREATE TEMPORARY TABLE sagaline_smoke (value text NOT NULL)")
        conn.commit()
        with conn.transaction():
            conn.execute("INSERT INTO sagaline_smoke VALUES ('committed')")
        try:
            with conn.transaction():
                conn.execute("INSERT INTO sagaline_smoke VALUES ('rolled back')")
                raise _Rollback
        except _Rollback:
            pass
        values = [r[0] for r in conn.execute("SELECT value FROM sagaline_smoke").fetchall()]
        if values != ["committed"]:
            raise DevEnvError(f"PostgreSQL kept {values!r}, expected ['committed']")
        report.add(
            "postgres: one transaction committed, one rolled back; the table holds ['committed']"
        )


class _Rollback(Exception):
    """Raised inside a transaction block to roll it back."""
