"""Real step functions and task builders for worker tests, chaos runs and benchmarks.

The ``effects`` saga type has steps whose side effects are observable:
``write`` inserts a row into an effects table through ``ctx.db`` (Postgres
path) and counts every execution in an attempts table through a separate
autocommit connection (so executions rolled back by a crash still count);
``echo`` runs on the Kafka-only path and only counts its executions.
``python -m sagaline.orchestrator.chaos.effects worker|relay ...`` runs a worker or a relay
with these steps (the chaos tests start it as a subprocess).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import psycopg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pydantic import BaseModel

from sagaline.consumers.context import WorkerStepContext
from sagaline.consumers.db import validate_schema
from sagaline.consumers.handlers import Handler, StepTable
from sagaline.consumers.relay import Relay, RelayOptions
from sagaline.consumers.wire import dump_payload
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.core.errors import RetryableError, TerminalError
from sagaline.orchestrator.runtime.kafka_config import (
    admin_config,
    client_producer_config,
    group_consumer_config,
)
from sagaline.schemas.base import Envelope, Record
from sagaline.schemas.codec import RecordCodec, default_codec
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = [
    "EFFECTS_SAGA",
    "EffectArgs",
    "EffectResult",
    "InsufficientFunds",
    "app",
    "compensate_task",
    "create_effect_tables",
    "create_topics",
    "delete_topics",
    "effects_table",
    "execute_task",
    "main",
    "produce_tasks",
    "read_records",
]

EFFECTS_SAGA = "effects"


class EffectArgs(BaseModel):
    """Arguments of the ``effects`` steps."""

    payload_type: ClassVar[str] = "sagaline.testkit.EffectArgs"

    amount: int = 1
    #: ``retry`` raises RetryableError, ``terminal`` TerminalError, ``funds`` a non-retryable type.
    fail: str | None = None
    #: Fail only while the attempt is at most this number (then succeed).
    fail_until_attempt: int = 1_000_000
    sleep: float = 0.0
    #: Size of the padding in the result (to exercise large payloads).
    result_bytes: int = 0
    heartbeats: int = 0


class EffectResult(BaseModel):
    """Result of the ``effects`` steps."""

    payload_type: ClassVar[str] = "sagaline.testkit.EffectResult"

    key: str
    amount: int
    padding: str = ""


class InsufficientFunds(Exception):
    """A domain error the ``effects`` saga declares non-retryable."""


def create_effect_tables(conn: psycopg.Connection, table: str) -> None:
    """``{table}`` (one row per executed effect, no unique key: duplicates would show)
    and ``{table}_attempts`` (one row per execution start, committed at once).

    An attempt that started after the effect row of its key was written
    (``attempts.at > effects.at``) would be a completed step running again."""
    table = _table_name(table)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY,"
        " idempotency_key text NOT NULL, saga_id text NOT NULL, step text NOT NULL,"
        " amount integer NOT NULL, kind text NOT NULL DEFAULT 'step',"
        " at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {table}_attempts (id bigserial PRIMARY KEY,"
        " idempotency_key text NOT NULL, task_id text NOT NULL, attempt integer NOT NULL,"
        " at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )


def _table_name(name: str) -> str:
    """A table name, optionally schema-qualified, made of safe identifiers."""
    return ".".join(validate_schema(part) for part in name.split("."))


class _Counter:
    """Counts executions through its own autocommit connection (one per thread)."""

    def __init__(self, dsn: str, table: str) -> None:
        self._dsn = dsn
        self._table = _table_name(table)
        self._local = threading.local()

    def record(self, ctx: WorkerStepContext) -> None:
        for _ in range(50):
            conn: psycopg.Connection | None = getattr(self._local, "conn", None)
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=3)
                    self._local.conn = conn
                conn.execute(
                    f"INSERT INTO {self._table}_attempts (idempotency_key, task_id, attempt)"
                    " VALUES (%s, %s, %s)",
                    (ctx.idempotency_key, ctx.task_id, ctx.attempt),
                )
                return
            except psycopg.OperationalError:
                self._local.conn = None
                time.sleep(0.2)
        raise RetryableError("cannot record the attempt: database unavailable")


def _fail(args: EffectArgs, ctx: WorkerStepContext) -> None:
    if args.fail is None or ctx.attempt > args.fail_until_attempt:
        return
    if args.fail == "retry":
        raise RetryableError(f"transient failure on attempt {ctx.attempt}")
    if args.fail == "terminal":
        raise TerminalError("permanent failure")
    if args.fail == "funds":
        raise InsufficientFunds("not enough money")
    if args.fail == "crash":
        raise RuntimeError("unexpected bug")


def effects_table(dsn: str, table: str) -> StepTable:
    """The ``effects`` saga's steps writing to ``table`` (create it with
    :func:`create_effect_tables` first)."""
    table = _table_name(table)
    counter = _Counter(dsn, table)

    def write(ctx: WorkerStepContext, args: EffectArgs) -> EffectResult:
        counter.record(ctx)
        for i in range(args.heartbeats):
            ctx.heartbeat(progress=(i + 1) / args.heartbeats, detail=f"beat {i + 1}")
        ctx.db.execute(
            f"INSERT INTO {table} (idempotency_key, saga_id, step, amount) VALUES (%s, %s, %s, %s)",
            (ctx.idempotency_key, ctx.saga_id, ctx.step, args.amount),
        )
        if args.sleep:
            time.sleep(args.sleep)
        _fail(args, ctx)
        ctx.report_usage(llm_calls=1, tokens_in=10, tokens_out=args.amount)
        return EffectResult(
            key=ctx.idempotency_key, amount=args.amount, padding="x" * args.result_bytes
        )

    async def write_async(ctx: WorkerStepContext, args: EffectArgs) -> EffectResult:
        import asyncio

        counter.record(ctx)
        ctx.db.execute(
            f"INSERT INTO {table} (idempotency_key, saga_id, step, amount) VALUES (%s, %s, %s, %s)",
            (ctx.idempotency_key, ctx.saga_id, ctx.step, args.amount),
        )
        await asyncio.sleep(args.sleep)
        _fail(args, ctx)
        return EffectResult(key=ctx.idempotency_key, amount=args.amount)

    def echo(ctx: WorkerStepContext, args: EffectArgs) -> EffectResult:
        counter.record(ctx)
        if args.sleep:
            time.sleep(args.sleep)
        _fail(args, ctx)
        return EffectResult(
            key=ctx.idempotency_key, amount=args.amount, padding="x" * args.result_bytes
        )

    def undo(ctx: WorkerStepContext, args: EffectArgs) -> None:
        counter.record(ctx)
        ctx.db.execute(
            f"INSERT INTO {table} (idempotency_key, saga_id, step, amount, kind)"
            " VALUES (%s, %s, %s, %s, 'compensate')",
            (ctx.idempotency_key, ctx.saga_id, ctx.step, -args.amount),
        )

    steps = StepTable()
    common: dict[str, Any] = {
        "args_type": EffectArgs,
        "result_type": EffectResult,
        "non_retryable": (InsufficientFunds,),
    }
    steps.add(EFFECTS_SAGA, "write", Handler(fn=write, **common))
    steps.add(EFFECTS_SAGA, "write_async", Handler(fn=write_async, **common))
    steps.add(
        EFFECTS_SAGA, "slow", Handler(fn=write, timeout=timedelta(milliseconds=300), **common)
    )
    steps.add(EFFECTS_SAGA, "echo", Handler(fn=echo, uses_db=False, **common))
    steps.add(EFFECTS_SAGA, "write", Handler(fn=undo, args_type=EffectArgs), kind="compensate")
    return steps


def app() -> StepTable:
    """The ``effects`` steps for ``sagaline worker run --app ...chaos.effects:app``
    (table from ``SAGALINE_TESTKIT_TABLE``, database from ``DATABASE_URL``)."""
    import os

    return effects_table(os.environ["DATABASE_URL"], os.environ["SAGALINE_TESTKIT_TABLE"])


def _envelope(saga_id: str) -> Envelope:
    return Envelope(
        message_id=str(uuid.uuid4()),
        saga_id=saga_id,
        saga_type=EFFECTS_SAGA,
        occurred_at=datetime.now(UTC),
        correlation_id=saga_id,
    )


def execute_task(
    saga_id: str,
    step: str,
    args: EffectArgs,
    *,
    attempt: int = 1,
    idempotency_key: str | None = None,
    deadline_at: datetime | None = None,
) -> ExecuteStep:
    """An ``ExecuteStep`` of the ``effects`` saga (inline payload)."""
    return ExecuteStep(
        envelope=_envelope(saga_id),
        step=step,
        attempt=attempt,
        idempotency_key=idempotency_key or f"{saga_id}/{step}",
        task_id=f"{saga_id}/{step}/{attempt}/{uuid.uuid4().hex[:8]}",
        args=dump_payload(args, None, 1 << 30),
        deadline_at=deadline_at,
    )


def compensate_task(
    saga_id: str, step: str, args: EffectArgs, *, attempt: int = 1
) -> CompensateStep:
    """A ``CompensateStep`` of the ``effects`` saga."""
    return CompensateStep(
        envelope=_envelope(saga_id),
        step=step,
        attempt=attempt,
        idempotency_key=f"{saga_id}/{step}/compensate",
        task_id=f"{saga_id}/{step}/compensate/{attempt}/{uuid.uuid4().hex[:8]}",
        args=dump_payload(args, None, 1 << 30),
    )


def create_topics(bootstrap: str, topics: TopicNames, partitions: int = 3) -> None:
    """Create the tasks, replies and dead-letter topics of ``topics``."""
    admin = AdminClient(admin_config(bootstrap))
    names = (topics.tasks, topics.replies, topics.deadletter)
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    )
    for future in futures.values():
        future.result(30)


def delete_topics(bootstrap: str, topics: TopicNames) -> None:
    """Delete the topics :func:`create_topics` made."""
    admin = AdminClient(admin_config(bootstrap))
    names = [topics.tasks, topics.replies, topics.deadletter]
    for future in admin.delete_topics(names).values():
        future.result(30)


def produce_tasks(
    bootstrap: str,
    topic: str,
    tasks: Sequence[ExecuteStep | CompensateStep],
    codec: RecordCodec | None = None,
) -> None:
    """Publish tasks keyed by saga id (as the orchestrator does)."""
    codec = codec or default_codec()
    producer = Producer(client_producer_config(bootstrap))
    for task in tasks:
        producer.produce(topic, key=task.envelope.saga_id.encode(), value=codec.encode(task))
    if producer.flush(30):
        raise RuntimeError("tasks were not delivered")


def read_records(
    bootstrap: str,
    topic: str,
    expected: tuple[type[Record], ...],
    *,
    until: Any = None,
    timeout: float = 30.0,
    codec: RecordCodec | None = None,
) -> list[Record]:
    """Read ``topic`` from the beginning (read_committed) until ``until(records)`` is
    true or ``timeout`` passes; returns every decoded record."""
    codec = codec or default_codec()
    consumer = Consumer(group_consumer_config(bootstrap, f"testkit-reader-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None and msg.value() is not None:
                records.append(codec.decode(msg.value() or b"", expected))
            if until is not None and until(records):
                break
    finally:
        consumer.close()
    return records


def main(argv: list[str] | None = None) -> int:
    """``python -m sagaline.orchestrator.chaos.effects worker|relay`` (used by the chaos tests)."""
    from sagaline.consumers.worker import Worker, WorkerOptions

    parser = argparse.ArgumentParser(prog="python -m sagaline.orchestrator.chaos.effects")
    parser.add_argument("role", choices=("worker", "relay"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--group", default="sagaline-testkit")
    parser.add_argument("--instance-id")
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--delivery", default="auto", choices=("auto", "outbox", "kafka"))
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if ns.role == "relay":
        relay = Relay(ns.dsn, ns.bootstrap, RelayOptions(schema=ns.schema, poll_interval=0.5))
        try:
            relay.run(stop)
        finally:
            relay.close()
        return 0
    worker = Worker(
        bootstrap_servers=ns.bootstrap,
        database_url=ns.dsn,
        topics=TopicNames(ns.prefix),
        resolver=effects_table(ns.dsn, ns.table),
        options=WorkerOptions(
            group_id=ns.group,
            instance_id=ns.instance_id,
            schema=ns.schema,
            concurrency=ns.concurrency,
            delivery=ns.delivery,
            consumer_config={
                "session.timeout.ms": ns.session_timeout_ms,
                "heartbeat.interval.ms": max(500, ns.session_timeout_ms // 5),
            },
        ),
    )
    print("ready", flush=True)
    worker.run(stop)
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so payload models keep their import name.
    from sagaline.orchestrator.chaos.effects import main as _main

    raise SystemExit(_main())
