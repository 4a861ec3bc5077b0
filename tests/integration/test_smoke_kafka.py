"""Smoke tests proving the session's Kafka is real: transactions, offsets, compaction."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource

from sagaline.orchestrator.runtime.kafka_config import (
    client_producer_config,
    group_consumer_config,
    transactional_producer_config,
)

pytestmark = pytest.mark.integration


def _producer(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer(transactional_producer_config(bootstrap, transactional_id))
    producer.init_transactions(30)
    return producer


def _read_all(bootstrap: str, topic: str, group: str, isolation: str) -> list[bytes]:
    """Every value of partition 0 up to the end visible at ``isolation``."""
    consumer = Consumer(
        group_consumer_config(
            bootstrap, group, extra={"isolation.level": isolation, "enable.partition.eof": True}
        )
    )
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                return values
            value = message.value()
            assert value is not None
            values.append(value)
    finally:
        consumer.close()
    raise AssertionError(f"did not reach the end of {topic} in 30 s")


def test_committed_transaction_is_visible_and_aborted_is_not(
    kafka_bootstrap: str, topic_prefix: str, create_topics: Callable[..., list[str]]
) -> None:
    (topic,) = create_topics(f"{topic_prefix}.txn")
    producer = _producer(kafka_bootstrap, f"{topic_prefix}-tx")

    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"committed-1")
    producer.produce(topic, key=b"k", value=b"committed-2")
    producer.commit_transaction(30)

    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)

    committed = _read_all(kafka_bootstrap, topic, f"{topic_prefix}-rc", "read_committed")
    everything = _read_all(kafka_bootstrap, topic, f"{topic_prefix}-ru", "read_uncommitted")

    assert committed == [b"committed-1", b"committed-2"]
    # The aborted record did reach the log; only read_committed hides it.
    assert everything == [b"committed-1", b"committed-2", b"aborted"]


def test_send_offsets_to_transaction_moves_committed_offsets_only_on_commit(
    kafka_bootstrap: str, topic_prefix: str, create_topics: Callable[..., list[str]]
) -> None:
    source, sink = create_topics([f"{topic_prefix}.in", f"{topic_prefix}.out"])
    group = f"{topic_prefix}-copier"
    seed = Producer(client_producer_config(kafka_bootstrap))
    for index in range(5):
        seed.produce(source, key=b"k", value=f"m{index}".encode())
    assert seed.flush(30) == 0

    consumer = Consumer(group_consumer_config(kafka_bootstrap, group))
    producer = _producer(kafka_bootstrap, f"{topic_prefix}-copier-tx")
    partition = TopicPartition(source, 0)
    try:
        consumer.assign([TopicPartition(source, 0, 0)])
        batch = consumer.consume(num_messages=3, timeout=30)
        assert [m.value() for m in batch] == [b"m0", b"m1", b"m2"]

        producer.begin_transaction()
        for message in batch:
            producer.produce(sink, key=message.key(), value=message.value())
        producer.send_offsets_to_transaction(
            consumer.position([partition]), consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)
        assert consumer.committed([partition], timeout=30)[0].offset == 3

        rest = consumer.consume(num_messages=2, timeout=30)
        assert [m.value() for m in rest] == [b"m3", b"m4"]
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            consumer.position([partition]), consumer.consumer_group_metadata(), 30
        )
        producer.abort_transaction(30)
        assert consumer.committed([partition], timeout=30)[0].offset == 3
    finally:
        consumer.close()

    copied = _read_all(kafka_bootstrap, sink, f"{topic_prefix}-check", "read_committed")
    assert copied == [b"m0", b"m1", b"m2"]


def test_compacted_topic_reports_its_cleanup_policy(
    kafka_admin: AdminClient, topic_prefix: str, create_topics: Callable[..., list[str]]
) -> None:
    compacted, plain = create_topics(
        [f"{topic_prefix}.state"], partitions=3, config={"cleanup.policy": "compact"}
    ) + create_topics([f"{topic_prefix}.journal"])

    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, compacted),
        ConfigResource(ConfigResource.Type.TOPIC, plain),
    ]
    described = {
        resource.name: future.result(30)
        for resource, future in kafka_admin.describe_configs(resources).items()
    }

    assert described[compacted]["cleanup.policy"].value == "compact"
    assert described[plain]["cleanup.policy"].value == "delete"
    metadata = kafka_admin.list_topics(compacted, timeout=10)
    assert len(metadata.topics[compacted].partitions) == 3
