"""End to end through the real orchestrator: where one step's round trip goes.

``sagaline bench e2e`` starts the orchestrator process
(``sagaline orchestrator run``) with two one-step sagas, runs a worker and
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


_HOPS = (
    "start_to_orchestrator_commit",
    "orchestrator_commit_to_worker_consume",
    "worker_run_and_commit",
    "to_reply_published",
    "reply_to_orchestrator_commit",
    "end_to_end",
)


class _E2ERun:
    """The orchestrator subprocess, a worker and a relay in threads, and the tails."""

    def __init__(self, bootstrap: str, dsn: str, partitions: int) -> None:
        prefix = f"bench-e2e-{uuid.uuid4().hex[:8]}"
        self.bootstrap, self.dsn = bootstrap, dsn
        self.schema = f"bench_e2e_{uuid.uuid4().hex[:8]}"
        self.settings = Settings(
            kafka_bootstrap_servers=bootstrap, database_url=dsn, topics=TopicNames(prefix)
        )
        ensure_topics(bootstrap, self.settings.topics, TopicLayout(partitions))
        migrate(dsn, self.schema)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {self.schema}.effects (key text PRIMARY KEY)")
        workdir = Path(tempfile.mkdtemp(prefix="sagaline-bench-e2e-"))
        self.orchestrator = Proc(
            [
                "sagaline.orchestrator.cli", "orchestrator", "run",
                "--app", "sagaline.orchestrator.bench.workers_e2e:registry",
                "--instance-id", f"{prefix}-orch",
                "--group", f"{prefix}-orch",
                "--bootstrap", bootstrap,
                "--prefix", prefix,
                "--log-level", "WARNING",
            ],
            workdir / "orchestrator.log",
        )  # fmt: skip
        self.traces: dict[str, TaskTrace] = {}
        self.stop = threading.Event()
        worker = Worker(
            bootstrap_servers=bootstrap,
            database_url=dsn,
            topics=self.settings.topics,
            resolver=RegistryResolver(_REGISTRY),
            options=WorkerOptions(group_id=f"{prefix}-workers", schema=self.schema, concurrency=8),
            on_task=lambda t: self.traces.__setitem__(t.saga_id, t),
        )
        self.relay = Relay(dsn, bootstrap, RelayOptions(schema=self.schema))
        self.tail = StateTail(self.settings)
        self.replies = ReplyTail(bootstrap, self.settings.topics.replies, key="saga")
        self.threads = [
            threading.Thread(target=worker.run, args=(self.stop,), daemon=True),
            threading.Thread(target=self.relay.run, args=(self.stop,), daemon=True),
        ]
        self.client = SagaClient(self.settings, client_id="bench-e2e")
        self.clock = time.time() - time.perf_counter()  # StateTail records perf_counter
        self.data = E2EData(table=f"{self.schema}.effects")

    def start(self) -> None:
        self.orchestrator.start()
        for t in self.threads:
            t.start()
        for kind in (E2EWrite, E2EEcho):  # warm up: group joins, producers, connections
            ids = [f"warm-{kind.type_name}-{i}" for i in range(2)]
            for saga_id in ids:
                self.client.start(kind, self.data, saga_id=saga_id, check_existing=False)
            self.tail.wait_terminal(ids, 90)

    def one_saga(self, path: str, kind: type[Saga[E2EData]], hops: dict[str, list[float]]) -> None:
        saga_id = f"{path}-{uuid.uuid4().hex[:10]}"
        sent = time.time()
        self.client.start(kind, self.data, saga_id=saga_id, check_existing=False)
        done = self.tail.wait_terminal([saga_id], 60) + self.clock
        deadline = time.monotonic() + 5
        while (saga_id not in self.traces or saga_id not in self.replies.arrived) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.002)
        first = self.tail.snapshots[saga_id][0] + self.clock
        trace = self.traces[saga_id]
        reply_at = self.replies.arrived[saga_id][1]
        hops["start_to_orchestrator_commit"].append(first - sent)
        hops["orchestrator_commit_to_worker_consume"].append(trace.consumed_at - first)
        hops["worker_run_and_commit"].append(trace.finished_at - trace.consumed_at)
        hops["to_reply_published"].append(max(0.0, reply_at - trace.finished_at))
        hops["reply_to_orchestrator_commit"].append(done - reply_at)
        hops["end_to_end"].append(done - sent)

    def close(self) -> None:
        self.client.close()
        self.stop.set()
        for t in self.threads:
            t.join(30)
        self.orchestrator.stop()
        self.relay.close()
        self.replies.close()
        self.tail.close()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        _delete_topics(self.bootstrap, self.settings.topics.all())


def run_e2e(*, bootstrap: str, dsn: str, sagas: int, partitions: int = 3) -> dict[str, Any]:
    """Run ``sagas`` one-step sagas per path, one at a time; returns the hop summaries."""
    run = _E2ERun(bootstrap, dsn, partitions)
    report: dict[str, Any] = {"sagas_per_path": sagas, "partitions": partitions}
    try:
        run.start()
        for path, kind in (("outbox", E2EWrite), ("kafka", E2EEcho)):
            hops: dict[str, list[float]] = {name: [] for name in _HOPS}
            for _ in range(sagas):
                run.one_saga(path, kind, hops)
            report[path] = {name: summary(values) for name, values in hops.items()}
    finally:
        run.close()
    return report


def _delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    from confluent_kafka.admin import AdminClient

    from sagaline.orchestrator.runtime.kafka_config import admin_config

    admin = AdminClient(admin_config(bootstrap))
    for future in admin.delete_topics(list(names)).values():
        future.result(30)
