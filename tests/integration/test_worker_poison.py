"""Issue 17: workers and the relay never crash-loop on a message they cannot pass on,
and never exit because PostgreSQL is down when they start.

* an oversized record on the tasks topic (about 1 MB, and a zstd-compressed one
  far larger uncompressed) is dead-lettered with a bounded letter, its offset
  committed, and the tasks after it run;
* an outbox row Kafka refuses for good (larger than the topic accepts) is
  dead-lettered and marked sent, and the rows after it are published;
* ``sagaline worker run`` started while PostgreSQL is unreachable waits, logging
  what it waits for, and starts working once the database answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from psycopg import conninfo

from sagaline.consumers.errors import DatabaseUnavailable
from sagaline.consumers.migrations import migrate
from sagaline.consumers.relay import Relay, RelayOptions
from sagaline.consumers.startup import Backoff, wait_for_database
from sagaline.consumers.store import WorkerStore
from sagaline.consumers.worker import Worker, WorkerOptions
from sagaline.orchestrator.chaos.effects import (
    EffectArgs,
    create_effect_tables,
    create_topics,
    delete_topics,
    effects_table,
    execute_task,
    produce_tasks,
    read_records,
)
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.kafka_config import client_producer_config, reader_config
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.schemas.deadletter import MAX_ORIGINAL_VALUE_BYTES, DeadLetter
from sagaline.schemas.replies import REPLY_TYPES, StepSucceeded

pytestmark = pytest.mark.integration

SAGALINE = Path(sys.executable).with_name("sagaline")


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"t_wpoison_{uuid.uuid4().hex[:10]}"
    migrate(database_url, name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_effect_tables(conn, f"{name}.effects")
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def topics(kafka_bootstrap: str, topic_prefix: str) -> Iterator[TopicNames]:
    names = TopicNames(topic_prefix)
    create_topics(kafka_bootstrap, names)
    yield names
    delete_topics(kafka_bootstrap, names)


def letters_of(bootstrap: str, topic: str, count: int) -> list[DeadLetter]:
    records = read_records(
        bootstrap, topic, (DeadLetter,), until=lambda rs: len(rs) >= count, timeout=30
    )
    out = [r for r in records if isinstance(r, DeadLetter)]
    assert len(out) == count, out
    return out


def read_raw(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    """The values of ``topic`` up to its end offsets (all partitions, in offset order)."""
    consumer = Consumer(reader_config(bootstrap, f"verify-{uuid.uuid4().hex[:8]}"))
    try:
        meta = consumer.list_topics(topic, timeout=10)
        ends = {}
        for p in meta.topics[topic].partitions:
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        values: list[bytes] = []
        done: set[int] = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 30
        while len(done) < len(ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            values.append(msg.value() or b"")
            if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                done.add(msg.partition() or 0)
        assert len(done) == len(ends), f"could not read {topic} to its end offsets {ends}"
        assert len(values) == expected, values
        return values
    finally:
        consumer.close()


def assert_bounded(letter: DeadLetter, original: bytes) -> None:
    assert letter.truncated
    assert letter.value == original[:MAX_ORIGINAL_VALUE_BYTES]
    assert letter.value_length == len(original)
    assert letter.value_sha256 == hashlib.sha256(original).hexdigest()


def test_oversized_tasks_are_dead_lettered_and_the_partition_keeps_flowing(
    database_url: str, kafka_bootstrap: str, schema: str, topics: TopicNames
) -> None:
    plain = os.urandom(999_900)
    compressible = b"sagaline" * 655_360  # 5 MB, tiny once compressed
    partition = partition_for("huge", 3)
    big = Producer(
        client_producer_config(
            kafka_bootstrap, extra={"compression.type": "zstd", "message.max.bytes": 8_000_000}
        )
    )
    for value in (plain, compressible):
        big.produce(topics.tasks, key=b"huge", value=value, partition=partition)
    assert big.flush(30) == 0
    tasks = [execute_task("huge", "write", EffectArgs(amount=i)) for i in range(3)]
    produce_tasks(kafka_bootstrap, topics.tasks, tasks)  # same key: after the big ones
    stop = threading.Event()
    worker = Worker(
        bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        topics=topics,
        resolver=effects_table(database_url, f"{schema}.effects"),
        options=WorkerOptions(group_id=f"g-{uuid.uuid4().hex[:8]}", schema=schema),
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:
            errors.append(exc)

    relay = Relay(database_url, kafka_bootstrap, RelayOptions(schema=schema, poll_interval=0.5))
    thread = threading.Thread(target=run)
    relaying = threading.Thread(target=relay.run, args=(stop,))
    thread.start()
    relaying.start()
    wanted = {t.task_id for t in tasks}
    try:
        replies = read_records(
            kafka_bootstrap,
            topics.replies,
            REPLY_TYPES,
            until=lambda rs: wanted <= {getattr(r, "task_id", None) for r in rs},
            timeout=60,
        )
    finally:
        stop.set()
        thread.join(60)
        relaying.join(30)
        relay.close()
    assert errors == []
    assert not thread.is_alive()
    assert wanted <= {getattr(r, "task_id", None) for r in replies}
    assert all(isinstance(r, StepSucceeded) for r in replies)
    letters = letters_of(kafka_bootstrap, topics.deadletter, 2)
    by_length = {letter.value_length: letter for letter in letters}
    assert_bounded(by_length[len(plain)], plain)
    assert_bounded(by_length[len(compressible)], compressible)
    assert {letter.source_partition for letter in letters} == {partition}
    assert worker.stats.dead_lettered == 2


def test_relay_dead_letters_a_row_kafka_refuses_and_publishes_the_rest(
    database_url: str, kafka_bootstrap: str, schema: str, topics: TopicNames
) -> None:
    store = WorkerStore(schema)
    huge = os.urandom(1_500_000)  # over the broker's and the producer's size limits
    with psycopg.connect(database_url) as conn:
        store.enqueue(conn, topic=topics.replies, key=b"saga-x", value=b"before", headers={})
        store.enqueue(conn, topic=topics.replies, key=b"saga-x", value=huge, headers={"h": "1"})
        store.enqueue(conn, topic=topics.replies, key=b"saga-x", value=b"after", headers={})
        conn.commit()
    relay = Relay(database_url, kafka_bootstrap, RelayOptions(schema=schema))
    try:
        assert relay.publish_once() == 3
    finally:
        relay.close()
    assert relay.stats.dead_lettered == 1
    with psycopg.connect(database_url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL").fetchone()
    assert row == (0,)
    published = read_raw(kafka_bootstrap, topics.replies, expected=2)
    assert published == [b"before", b"after"]
    (letter,) = letters_of(kafka_bootstrap, topics.deadletter, 1)
    assert_bounded(letter, huge)
    assert letter.source_topic == topics.replies
    assert "refused by Kafka" in letter.reason


class Forwarder:
    """A TCP port that forwards to PostgreSQL once :meth:`open` is called (closed before)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._server: socket.socket | None = None

    def open(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


def test_worker_started_while_postgres_is_down_waits_then_works(
    database_url: str, kafka_bootstrap: str, schema: str, topics: TopicNames
) -> None:
    assert SAGALINE.exists(), f"the sagaline script is missing beside {sys.executable}"
    parts = conninfo.conninfo_to_dict(database_url)
    host = str(parts.get("host") or "127.0.0.1")
    if host.startswith("/"):
        pytest.fail("this test needs PostgreSQL on TCP")
    forwarder = Forwarder(host, int(parts.get("port") or 5432))
    via = conninfo.make_conninfo(database_url, host="127.0.0.1", port=str(forwarder.port))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABASE_URL": via,
        "SAGALINE_TOPIC_PREFIX": topics.prefix,
        "SAGALINE_TESTKIT_TABLE": f"{schema}.effects",
    }
    tasks = [execute_task(f"late-{i}", "write", EffectArgs(amount=i)) for i in range(3)]
    produce_tasks(kafka_bootstrap, topics.tasks, tasks)
    worker = subprocess.Popen(
        [str(SAGALINE), "worker", "run", "--app", "sagaline.orchestrator.chaos.effects:app",
         "--schema", schema, "--group", f"g-{uuid.uuid4().hex[:8]}"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []

    def drain() -> None:
        assert worker.stderr is not None
        for line in worker.stderr:
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while not any("waiting for PostgreSQL" in x for x in lines):
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        time.sleep(2.0)  # still waiting, not "PostgreSQL ... is unavailable" and exit 2
        assert worker.poll() is None, "".join(lines)
        forwarder.open()
        keys = {t.idempotency_key for t in tasks}
        deadline = time.monotonic() + 60
        done: set[str] = set()
        while done != keys and time.monotonic() < deadline:
            time.sleep(0.5)
            with psycopg.connect(database_url) as conn:
                rows = conn.execute(f"SELECT idempotency_key FROM {schema}.effects").fetchall()
            done = {r[0] for r in rows} & keys
        assert done == keys, "".join(lines[-20:])
        assert worker.poll() is None
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(30)
        finally:
            forwarder.close()
    assert any("waiting for PostgreSQL at 127.0.0.1:" in x for x in lines)
    assert code == 0


class _CountingBackoff(Backoff):
    """The real backoff, counting the retries it was asked to wait for."""

    def __init__(self) -> None:
        super().__init__()
        self.retries = 0

    def next(self) -> float:
        self.retries += 1
        return super().next()


def test_a_database_that_does_not_exist_is_not_waited_for(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Waiting is for outages; a wrong database name is the user's error, reported at once."""
    missing = conninfo.make_conninfo(database_url, dbname=f"nope_{uuid.uuid4().hex[:8]}")
    backoff = _CountingBackoff()
    with (
        caplog.at_level(logging.WARNING, logger="sagaline.startup"),
        pytest.raises(DatabaseUnavailable) as info,
    ):
        wait_for_database(missing, threading.Event(), backoff=backoff)
    assert "does not exist" in str(info.value)
    assert backoff.retries == 0  # no backoff loop: not one retry
    assert not [r for r in caplog.records if "waiting for PostgreSQL" in r.getMessage()]
