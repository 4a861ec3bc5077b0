"""The outbox relay against real PostgreSQL and Kafka."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from sagaline.consumers.errors import DatabaseUnavailable, SchemaTooNew
from sagaline.consumers.migrations import LATEST_VERSION, current_version, migrate
from sagaline.consumers.relay import Relay, RelayOptions
from sagaline.consumers.store import OUTBOX_SHARDS, WorkerStore
from sagaline.orchestrator.runtime.kafka_config import admin_config, group_consumer_config

pytestmark = pytest.mark.integration


@pytest.fixture
def dsn(database_url: str) -> str:
    return database_url


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    return kafka_bootstrap


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    name = f"t_relay_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def topic(bootstrap: str, topic_prefix: str) -> Iterator[str]:
    name = f"{topic_prefix}-relay"
    admin = AdminClient(admin_config(bootstrap))
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(30)
    yield name
    admin.delete_topics([name])[name].result(30)


def read_all(
    bootstrap: str, topic: str, expected: int, timeout: float = 20.0
) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(group_consumer_config(bootstrap, f"verify-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    out: list[tuple[bytes, bytes]] = []
    import time

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < expected:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append((msg.key() or b"", msg.value() or b""))
        # a little longer to catch duplicates beyond the expected count
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append((msg.key() or b"", msg.value() or b""))
    finally:
        consumer.close()
    return out


def test_migrate_is_idempotent_and_concurrent(dsn: str, schema: str) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(dsn, schema).version)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [LATEST_VERSION] * 4
    again = migrate(dsn, schema)
    assert again.applied == ()
    with psycopg.connect(dsn) as conn:
        assert current_version(conn, schema) == LATEST_VERSION


def test_schema_newer_than_code_is_refused(dsn: str, schema: str) -> None:
    migrate(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema}.schema_version (version, name) VALUES (%s, 'future')",
            (LATEST_VERSION + 1,),
        )
    with pytest.raises(SchemaTooNew) as info:
        migrate(dsn, schema)
    assert info.value.found == LATEST_VERSION + 1


def test_unreachable_database_names_host_not_password() -> None:
    with pytest.raises(DatabaseUnavailable) as info:
        migrate("postgresql://bob:s3cret@127.0.0.1:1/nowhere", "t_unreachable")
    assert "127.0.0.1:1" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_relay_publishes_in_order_and_marks_sent(
    dsn: str, bootstrap: str, schema: str, topic: str
) -> None:
    migrate(dsn, schema)
    store = WorkerStore(schema)
    with psycopg.connect(dsn) as conn:
        for i in range(30):
            saga = f"saga-{i % 3}".encode()
            store.enqueue(conn, topic=topic, key=saga, value=f"{i}".encode(), headers={"n": str(i)})
        conn.commit()
    relay = Relay(dsn, bootstrap, RelayOptions(schema=schema))
    try:
        assert relay.publish_once() == 30
        assert len(relay.owned_shards) == OUTBOX_SHARDS
    finally:
        relay.close()
    got = read_all(bootstrap, topic, 30)
    assert len(got) == 30
    for saga in (b"saga-0", b"saga-1", b"saga-2"):
        values = [int(v) for k, v in got if k == saga]
        assert values == sorted(values) and len(values) == 10
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL").fetchone()
        assert row == (0,)
    keeper = Relay(dsn, bootstrap, RelayOptions(schema=schema, retention_seconds=3600))
    sweeper = Relay(dsn, bootstrap, RelayOptions(schema=schema, retention_seconds=0))
    try:
        assert keeper.cleanup() == 0  # sent rows are kept for the retention
        assert len(keeper.owned_shards) == OUTBOX_SHARDS
        keeper.close()  # releases its shards
        assert sweeper.cleanup() == 30  # and deleted after it
    finally:
        keeper.close()
        sweeper.close()


def test_lower_id_committed_after_higher_id_is_not_skipped(
    dsn: str, bootstrap: str, schema: str, topic: str
) -> None:
    migrate(dsn, schema)
    store = WorkerStore(schema)
    stop = threading.Event()
    relay = Relay(dsn, bootstrap, RelayOptions(schema=schema, poll_interval=0.2))
    runner = threading.Thread(target=relay.run, args=(stop,))
    runner.start()
    try:
        with psycopg.connect(dsn) as early, psycopg.connect(dsn) as late:
            low = store.enqueue(early, topic=topic, key=b"a", value=b"low")
            high = store.enqueue(late, topic=topic, key=b"b", value=b"high")
            assert low < high
            late.commit()  # the higher id becomes visible first
            got = read_all(bootstrap, topic, 1, timeout=10)
            assert [v for _, v in got] == [b"high"]
            early.commit()  # then the lower id commits
        got = read_all(bootstrap, topic, 2, timeout=10)
        assert sorted(v for _, v in got) == [b"high", b"low"]
    finally:
        stop.set()
        runner.join(10)
        relay.close()


def test_two_relays_split_the_shards(dsn: str, bootstrap: str, schema: str, topic: str) -> None:
    migrate(dsn, schema)
    half = OUTBOX_SHARDS // 2
    first = Relay(dsn, bootstrap, RelayOptions(schema=schema, max_shards=half))
    second = Relay(dsn, bootstrap, RelayOptions(schema=schema))
    store = WorkerStore(schema)
    try:
        with psycopg.connect(dsn) as conn:
            for i in range(40):
                store.enqueue(conn, topic=topic, key=f"k{i}".encode(), value=f"{i}".encode())
            conn.commit()
        published = first.publish_once() + second.publish_once()
        assert set(first.owned_shards).isdisjoint(second.owned_shards)
        assert len(first.owned_shards) == half
        assert len(second.owned_shards) == OUTBOX_SHARDS - half
        assert published == 40
    finally:
        first.close()
        second.close()
    got = read_all(bootstrap, topic, 40)
    assert sorted(int(v) for _, v in got) == list(range(40))
