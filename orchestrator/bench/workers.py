"""Where a step's time goes: ``sagaline bench workers`` prints one JSON document.

Runs a real worker (and, for the outbox path, a real relay) against the
Kafka and PostgreSQL of ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` on
fresh topics and a fresh schema.  A transactional producer stands in for the
orchestrator (it commits each task in its own Kafka transaction, as the
orchestrator does) and a read_committed consumer stands in for the
orchestrator's reply consumer.  Per-hop latencies (milliseconds, wall clock
of this one machine) for both delivery paths:

* ``commit_to_consume``   task transaction committed → worker consumed it
* ``step_and_pg_commit``  consumed → step ran and its Postgres transaction committed
  (outbox path), or consumed → step ran (Kafka path)
* ``pg_commit``           the Postgres COMMIT alone (outbox path)
* ``to_publish``          finished → reply produced to Kafka: relay woken by NOTIFY, read
  the row, produced (outbox); reply + offsets Kafka transaction committed (Kafka path)
* ``publish_to_consume``  reply produced → received by the read_committed consumer
* ``end_to_end``          task committed → reply received

``relay_backlog_drain``: one relay publishing a backlog of outbox rows.

plus a throughput run (a burst of tasks, tasks per second until every reply
arrived).  ``--e2e N`` adds N sagas per path through the real orchestrator
process (see :mod:`sagaline.orchestrator.bench.workers_e2e`).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from sagaline.consumers.migrations import migrate
from sagaline.consumers.relay import Relay, RelayOptions
from sagaline.consumers.store import OUTBOX_SHARDS
from sagaline.consumers.worker import TaskTrace, Worker, WorkerOptions
from sagaline.orchestrator.bench.workers_support import ReplyTail, summary
from sagaline.orchestrator.chaos.effects import (
    EffectArgs,
    create_effect_tables,
    create_topics,
    delete_topics,
    effects_table,
    execute_task,
)
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.kafka_config import admin_config, transactional_producer_config
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.schemas.codec import default_codec
from sagaline.schemas.tasks import ExecuteStep

__all__ = ["STEP_FOR_PATH", "run_bench"]

STEP_FOR_PATH = {"outbox": "write", "kafka": "echo"}


class _TaskProducer:
    """Commits tasks in Kafka transactions, like the orchestrator."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._topic = topic
        self._codec = default_codec()
        self._producer = SignedProducer(  # tasks signed as the orchestrator it stands in for
            transactional_producer_config(
                bootstrap, f"bench-orchestrator-{uuid.uuid4().hex[:8]}", linger_ms=0
            ),
            "orchestrator",
        )
        self._producer.init_transactions(30)

    def commit(self, tasks: Sequence[ExecuteStep]) -> float:
        self._producer.begin_transaction()
        for task in tasks:
            self._producer.produce(
                self._topic, key=task.envelope.saga_id.encode(), value=self._codec.encode(task)
            )
        self._producer.commit_transaction()
        return time.time()


def _latency_run(
    path: str,
    n: int,
    interval: float,
    producer: _TaskProducer,
    replies: ReplyTail,
    traces: dict[str, TaskTrace],
) -> dict[str, Any]:
    committed: dict[str, float] = {}
    ids: list[str] = []
    for i in range(n):
        task = execute_task(
            f"lat-{path}-{i}-{uuid.uuid4().hex[:6]}", STEP_FOR_PATH[path], EffectArgs()
        )
        committed[task.task_id] = producer.commit([task])
        ids.append(task.task_id)
        time.sleep(interval)
    if not replies.wait_for(ids, 30):
        raise RuntimeError(f"{path}: not every task was answered within 30 s")
    deadline = time.monotonic() + 5
    while not all(t in traces for t in ids) and time.monotonic() < deadline:
        time.sleep(0.01)
    hops: dict[str, list[float]] = {
        "commit_to_consume": [],
        "step_and_pg_commit" if path == "outbox" else "step": [],
        "to_publish": [],
        "publish_to_consume": [],
        "end_to_end": [],
    }
    pg_commit: list[float] = []
    for task_id in ids:
        trace = traces.get(task_id)
        received, created = replies.arrived[task_id]
        hops["end_to_end"].append(received - committed[task_id])
        if trace is None:
            continue
        hops["commit_to_consume"].append(trace.consumed_at - committed[task_id])
        run_key = "step_and_pg_commit" if path == "outbox" else "step"
        hops[run_key].append(trace.finished_at - trace.consumed_at)
        if path == "outbox":
            hops["to_publish"].append(max(0.0, created - trace.finished_at))
            hops["publish_to_consume"].append(received - created)
            pg_commit.append(trace.timings.get("pg_commit", 0.0))
        else:
            hops["to_publish"].append(trace.committed_at - trace.finished_at)
            hops["publish_to_consume"].append(received - trace.committed_at)
    result = {name: summary(values) for name, values in hops.items()}
    if pg_commit:
        result["pg_commit"] = summary(pg_commit)
    return result


def _throughput_run(
    path: str, n: int, producer: _TaskProducer, replies: ReplyTail
) -> dict[str, float]:
    tasks = [
        execute_task(f"tp-{path}-{i}-{uuid.uuid4().hex[:6]}", STEP_FOR_PATH[path], EffectArgs())
        for i in range(n)
    ]
    started = time.time()
    for start in range(0, n, 500):
        producer.commit(tasks[start : start + 500])
    ids = [t.task_id for t in tasks]
    if not replies.wait_for(ids, 60):
        raise RuntimeError(f"{path}: the burst was not answered within 60 s")
    elapsed = max(replies.arrived[t][0] for t in ids) - started
    return {"tasks": n, "seconds": round(elapsed, 3), "tasks_per_s": round(n / elapsed, 1)}


def _relay_throughput(
    bootstrap: str, dsn: str, schema: str, topic: str, rows: int
) -> dict[str, float]:
    """A backlog of ``rows`` outbox rows (300-byte values) drained by one relay."""
    admin = AdminClient(admin_config(bootstrap))
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {schema}.outbox (shard, topic, key, value) VALUES (%s, %s, %s, %s)",
                [(i % OUTBOX_SHARDS, topic, f"r{i}".encode(), b"x" * 300) for i in range(rows)],
            )
        conn.commit()
    relay = Relay(dsn, bootstrap, RelayOptions(schema=schema, batch_size=1000))
    try:
        started = time.perf_counter()
        published = relay.publish_once()
        elapsed = time.perf_counter() - started
    finally:
        relay.close()
        admin.delete_topics([topic])[topic].result(30)
    return {
        "rows": published,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(published / elapsed, 1),
    }


@dataclass
class _Participants:
    """The worker and relay threads a worker benchmark measures."""

    worker: Worker
    relay: Relay
    stop: threading.Event
    traces: dict[str, TaskTrace]
    threads: list[threading.Thread]

    def halt(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        self.relay.close()


def _participants(
    bootstrap: str, dsn: str, schema: str, topics: TopicNames, concurrency: int
) -> _Participants:
    traces: dict[str, TaskTrace] = {}
    worker = Worker(
        bootstrap_servers=bootstrap,
        database_url=dsn,
        topics=topics,
        resolver=effects_table(dsn, f"{schema}.effects"),
        options=WorkerOptions(
            group_id=f"bench-{uuid.uuid4().hex[:8]}", schema=schema, concurrency=concurrency
        ),
        on_task=lambda trace: traces.__setitem__(trace.task_id, trace),
    )
    relay = Relay(dsn, bootstrap, RelayOptions(schema=schema))
    stop = threading.Event()
    threads = [
        threading.Thread(target=worker.run, args=(stop,), daemon=True),
        threading.Thread(target=relay.run, args=(stop,), daemon=True),
    ]
    for t in threads:
        t.start()
    return _Participants(worker, relay, stop, traces, threads)


def _warm_up(paths: Sequence[str], producer: _TaskProducer, replies: ReplyTail) -> None:
    """Group join, producer init, first connections: not part of any figure."""
    for path in paths:
        warm = [
            execute_task(f"warm-{path}-{i}", STEP_FOR_PATH[path], EffectArgs()) for i in range(3)
        ]
        producer.commit(warm)
        if not replies.wait_for([w.task_id for w in warm], 60):
            raise RuntimeError("warm-up tasks were not answered")


def run_bench(
    *,
    bootstrap: str,
    dsn: str,
    paths: Sequence[str],
    latency_tasks: int,
    interval: float,
    burst: int,
    concurrency: int,
    relay_rows: int = 20_000,
) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-ready report."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    topics = TopicNames(f"bench-worker-{uuid.uuid4().hex[:8]}")
    migrate(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_effect_tables(conn, f"{schema}.effects")
    create_topics(bootstrap, topics, partitions=3)
    running = _participants(bootstrap, dsn, schema, topics, concurrency)
    replies = ReplyTail(bootstrap, topics.replies)
    producer = _TaskProducer(bootstrap, topics.tasks)
    report: dict[str, Any] = {
        "benchmark": "sagaline bench workers",
        "concurrency": concurrency,
        "partitions": 3,
        "latency_interval_ms": interval * 1000,
    }
    try:
        _warm_up(paths, producer, replies)
        for path in paths:
            report[path] = {
                "latency": _latency_run(
                    path, latency_tasks, interval, producer, replies, running.traces
                ),
                "throughput": _throughput_run(path, burst, producer, replies),
            }
        running.halt()  # the relay thread must not take the backlog below
        if relay_rows > 0:
            report["relay_backlog_drain"] = _relay_throughput(
                bootstrap, dsn, schema, f"{topics.prefix}.relaybench", relay_rows
            )
    finally:
        running.halt()
        replies.close()
        delete_topics(bootstrap, topics)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return report
