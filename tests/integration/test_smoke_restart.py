"""Smoke tests for the killable private servers chaos tests use: SIGKILL, restart, recover."""

from __future__ import annotations

import time

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from sagaline.orchestrator.devenv.kafka import LocalKafka
from sagaline.orchestrator.devenv.postgres import LocalPostgres
from sagaline.orchestrator.runtime.kafka_config import (
    admin_config,
    group_consumer_config,
    transactional_producer_config,
)
from sagaline.orchestrator.runtime.release import release

pytestmark = pytest.mark.chaos


def _create_topic(bootstrap: str, topic: str, replication_factor: int) -> None:
    admin = AdminClient(admin_config(bootstrap))
    spec = NewTopic(topic, 1, replication_factor)
    admin.create_topics([spec], operation_timeout=30)[topic].result(60)


def _read_committed(bootstrap: str, topic: str) -> list[bytes]:
    consumer = Consumer(
        group_consumer_config(bootstrap, f"{topic}-reader", extra={"enable.partition.eof": True})
    )
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return values
                continue  # transient errors while partitions move leaders
            value = message.value()
            assert value is not None
            values.append(value)
    finally:
        consumer.close()
    raise AssertionError(f"did not reach the end of {topic}")


def _transactional(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer(
        transactional_producer_config(bootstrap, transactional_id, transaction_timeout_ms=60_000)
    )
    producer.init_transactions(60)
    return producer


def test_killed_broker_restarts_with_commits_kept_and_open_transaction_aborted(
    private_kafka: LocalKafka,
) -> None:
    bootstrap = private_kafka.bootstrap_servers
    _create_topic(bootstrap, "events", 1)
    producer = _transactional(bootstrap, "writer")
    producer.begin_transaction()
    producer.produce("events", value=b"committed")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce("events", value=b"in-flight")
    assert producer.flush(30) == 0
    pid = private_kafka.pid(0)

    private_kafka.kill(0)
    assert not private_kafka.is_running()
    private_kafka.start_node(0)

    assert private_kafka.pid(0) not in (None, pid)
    # A new producer with the same transactional.id fences the old one and aborts its
    # open transaction, so read_committed readers can reach the end of the log.
    fencing = [_transactional(bootstrap, "writer")]
    assert _read_committed(bootstrap, "events") == [b"committed"]
    # the fenced producer lived through its broker's SIGKILL: freeing it is a C call
    # that a test's timeout cannot break into, so it is let go with a bounded wait
    fenced = [producer]
    del producer
    release(fenced)
    release(fencing)


def test_three_broker_cluster_keeps_committing_with_one_broker_killed(
    private_kafka_cluster: LocalKafka,
) -> None:
    cluster = private_kafka_cluster
    bootstrap = cluster.bootstrap_servers
    _create_topic(bootstrap, "replicated", 3)
    producer = _transactional(bootstrap, "writer")

    cluster.kill(1)
    assert cluster.is_running(0) and not cluster.is_running(1) and cluster.is_running(2)
    producer.begin_transaction()
    producer.produce("replicated", value=b"while-one-broker-is-down")
    producer.commit_transaction(60)

    cluster.start_node(1)
    assert cluster.is_running()
    producer.begin_transaction()
    producer.produce("replicated", value=b"after-restart")
    producer.commit_transaction(60)
    assert _read_committed(bootstrap, "replicated") == [
        b"while-one-broker-is-down",
        b"after-restart",
    ]
    survivor = [producer]
    del producer
    release(survivor)


def test_killed_postgres_recovers_committed_rows_and_loses_uncommitted(
    private_postgres: LocalPostgres,
) -> None:
    url = private_postgres.url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE effects (key text PRIMARY KEY)")
        conn.execute("INSERT INTO effects VALUES ('committed')")
    in_flight = psycopg.connect(url)
    in_flight.execute("INSERT INTO effects VALUES ('uncommitted')")
    old_pid = private_postgres.pid()

    private_postgres.kill()
    assert not private_postgres.is_running()
    with pytest.raises(psycopg.OperationalError):
        in_flight.commit()
    in_flight.close()
    private_postgres.restart(crash=True)

    assert private_postgres.pid() not in (None, old_pid)
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT key FROM effects ORDER BY key").fetchall()
    assert rows == [("committed",)]
