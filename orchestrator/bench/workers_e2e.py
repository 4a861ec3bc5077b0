"""End to end through the real orchestrator: where one step's round trip goes.

``python -m sagaline.orchestrator.bench.workers --e2e`` starts the orchestrator process
(``sagaline.orchestrator.runtime.process``) with two one-step sagas, runs a worker and
a relay in this process, starts sagas one at a time with ``SagaClient`` and
measures, per saga (wall clock, milliseconds):

* ``start_to_orchestrator_commit``   StartSaga sent → first state snapshot committed
  (the transaction that also holds the task)
* ``orchestrator_commit_to_worker_consume``
* ``worker_run_and_commit``          consumed → step ran (+ Postgres commit on the outbox path)
* ``to_reply_published``             → reply produced (relay, or the worker's Kafka transaction)
* ``reply_to_orchestrator_commit``   reply produced → terminal snapshot committed
* ``end_to_end``                     StartSaga sent → terminal snapshot committed

Snapshot commits are seen by a read_committed tail of the state topic, so
each orchestrator hop includes that reader's fetch (a few ms at most).
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from pydantic import BaseModel

from sagaline.consumers.db import validate_schema
from sagaline.consumers.handlers import RegistryResolver
from sagaline.consumers.migrations import migrate
from sagaline.consumers.relay import Relay, RelayOptions
from sagaline.consumers.worker import TaskTrace, Worker, WorkerOptions
from sagaline.orchestrator.bench.run import Proc, StateTail
from sagaline.orchestrator.bench.workers_support import ReplyTail, summary
from sagaline.orchestrator.client import SagaClient
from sagaline.orchestrator.config import Settings, TopicNames
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, step
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics

__all__ = ["E2EData", "E2EEcho", "E2EWrite", "registry", "run_e2e"]

_TIMEOUT = timedelta(seconds=30)


class E2EData(BaseModel):
    """Saga data: the table the write step inserts into."""

    table: str = "public.bench_effects"


class E2EWrite(Saga[E2EData]):
    """One step that writes a row through ``ctx.db`` (outbox path)."""

    type_name = "bench.worker.write"

    @step(compensate=None, timeout=_TIMEOUT)
    def write(self, ctx: StepContext, data: E2EData) -> None:
        table = ".".join(validate_schema(part) for part in data.table.split("."))
        ctx.db.execute(f"INSERT INTO {table} (key) VALUES (%s)", (ctx.idempotency_key,))


class E2EEcho(Saga[E2EData]):
    """One step without database effects (Kafka-transaction path)."""

    type_name = "bench.worker.echo"

    @step(compensate=None, uses_db=False, timeout=_TIMEOUT)
    def echo(self, ctx: StepContext, data: E2EData) -> None:
        return None


_REGISTRY = SagaRegistry([E2EWrite, E2EEcho])


def registry() -> SagaRegistry:
    """The registry of the benchmark's orchestrator (``--app ...bench.workers_e2e:registry``)."""
    return _REGISTRY


def run_e2e(*, bootstrap: str, dsn: str, sagas: int, partitions: int = 3) -> dict[str, Any]:
    """Run ``sagas`` one-step sagas per path, one at a time; returns the hop summaries."""
    prefix = f"bench-e2e-{uuid.uuid4().hex[:8]}"
    schema = f"bench_e2e_{uuid.uuid4().hex[:8]}"
    settings = Settings(
        kafka_bootstrap_servers=bootstrap, database_url=dsn, topics=TopicNames(prefix)
    )
    ensure_topics(bootstrap, settings.topics, TopicLayout(partitions))
    migrate(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {schema}.effects (key text PRIMARY KEY)")
    workdir = Path(tempfile.mkdtemp(prefix="sagaline-bench-e2e-"))
    orchestrator = Proc(
        [
            "sagaline.orchestrator.runtime.process",
            "--app", "sagaline.orchestrator.bench.workers_e2e:registry",
            "--instance-id", f"{prefix}-orch",
            "--group", f"{prefix}-orch",
            "--bootstrap", bootstrap,
            "--prefix", prefix,
            "--log-level", "WARNING",
        ],
        workdir / "orchestrator.log",
    )  # fmt: skip
    traces: dict[str, TaskTrace] = {}
    published: dict[str, float] = {}
    stop = threading.Event()
    worker = Worker(
        bootstrap_servers=bootstrap,
        database_url=dsn,
        topics=settings.topics,
        resolver=RegistryResolver(_REGISTRY),
        options=WorkerOptions(group_id=f"{prefix}-workers", schema=schema, concurrency=8),
        on_task=lambda t: traces.__setitem__(t.saga_id, t),
    )
    relay = Relay(dsn, bootstrap, RelayOptions(schema=schema))
    tail = StateTail(settings)
    replies = ReplyTail(bootstrap, settings.topics.replies, key="saga")
    threads = [
        threading.Thread(target=worker.run, args=(stop,), daemon=True),
        threading.Thread(target=relay.run, args=(stop,), daemon=True),
    ]
    client = SagaClient(settings, client_id="bench-e2e")
    clock = time.time() - time.perf_counter()  # StateTail records perf_counter
    report: dict[str, Any] = {"sagas_per_path": sagas, "partitions": partitions}
    orchestrator.start()
    for t in threads:
        t.start()
    try:
        data = E2EData(table=f"{schema}.effects")
        for kind in (E2EWrite, E2EEcho):  # warm up: group joins, producers, connections
            ids = [f"warm-{kind.type_name}-{i}" for i in range(2)]
            for saga_id in ids:
                client.start(kind, data, saga_id=saga_id, check_existing=False)
            tail.wait_terminal(ids, 90)
        for path, kind in (("outbox", E2EWrite), ("kafka", E2EEcho)):
            hops: dict[str, list[float]] = {
                "start_to_orchestrator_commit": [],
                "orchestrator_commit_to_worker_consume": [],
                "worker_run_and_commit": [],
                "to_reply_published": [],
                "reply_to_orchestrator_commit": [],
                "end_to_end": [],
            }
            for i in range(sagas):
                saga_id = f"{path}-{i}-{uuid.uuid4().hex[:6]}"
                sent = time.time()
                client.start(kind, data, saga_id=saga_id, check_existing=False)
                done = tail.wait_terminal([saga_id], 60) + clock
                deadline = time.monotonic() + 5
                while (saga_id not in traces or saga_id not in replies.arrived) and (
                    time.monotonic() < deadline
                ):
                    time.sleep(0.002)
                first = tail.snapshots[saga_id][0] + clock
                trace = traces[saga_id]
                reply_at = replies.arrived[saga_id][1]
                published[saga_id] = reply_at
                hops["start_to_orchestrator_commit"].append(first - sent)
                hops["orchestrator_commit_to_worker_consume"].append(trace.consumed_at - first)
                hops["worker_run_and_commit"].append(trace.finished_at - trace.consumed_at)
                hops["to_reply_published"].append(max(0.0, reply_at - trace.finished_at))
                hops["reply_to_orchestrator_commit"].append(done - reply_at)
                hops["end_to_end"].append(done - sent)
            report[path] = {name: summary(values) for name, values in hops.items()}
    finally:
        client.close()
        stop.set()
        for t in threads:
            t.join(30)
        orchestrator.stop()
        relay.close()
        replies.close()
        tail.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        _delete_topics(bootstrap, settings.topics.all())
    return report


def _delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    from confluent_kafka.admin import AdminClient

    from sagaline.orchestrator.runtime.kafka_config import admin_config

    admin = AdminClient(admin_config(bootstrap))
    for future in admin.delete_topics(list(names)).values():
        future.result(30)
