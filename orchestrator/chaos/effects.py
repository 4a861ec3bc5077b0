"""Real step functions and task builders for worker tests, chaos runs and benchmarks.

The ``effects`` saga type has steps whose side effects are observable:
``write`` inserts a row into an effects table through ``ctx.db`` (Postgres
path) and counts every execution in an attempts table through a separate
autocommit connection (so executions rolled back by a crash still count);
``echo`` runs on the Kafka-only path and only counts its executions.
``sagaline chaos worker|relay ...`` runs a worker or a relay with these steps
(the chaos tests start it as a subprocess).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

import psycopg
from confluent_kafka import Consumer
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
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.schemas.base import Envelope, Record
from sagaline.schemas.codec import RecordCodec, default_codec
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = [
    "EFFECTS_SAGA",
    "EffectArgs",
    "EffectResult",
    "InsufficientFunds",
    "ProcessOptions",
    "app",
    "compensate_task",
    "create_effect_tables",
    "create_topics",
    "delete_topics",
    "effects_table",
    "execute_task",
    "produce_tasks",
    "read_records",
    "serve",
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


class _EffectSteps:
    """The ``effects`` saga's step functions over one effects table."""

    def __init__(self, dsn: str, table: str) -> None:
        self.table = table
        self.counter = _Counter(dsn, table)

    def _insert(self, ctx: WorkerStepContext, amount: int) -> None:
        ctx.db.execute(
            f"INSERT INTO {self.table} (idempotency_key, saga_id, step, amount)"
            " VALUES (%s, %s, %s, %s)",
            (ctx.idempotency_key, ctx.saga_id, ctx.step, amount),
        )

    def write(self, ctx: WorkerStepContext, args: EffectArgs) -> EffectResult:
        self.counter.record(ctx)
        for i in range(args.heartbeats):
            ctx.heartbeat(progress=(i + 1) / args.heartbeats, detail=f"beat {i + 1}")
        self._insert(ctx, args.amount)
        if args.sleep:
            time.sleep(args.sleep)
        _fail(args, ctx)
        ctx.report_usage(llm_calls=1, tokens_in=10, tokens_out=args.amount)
        return EffectResult(
            key=ctx.idempotency_key, amount=args.amount, padding="x" * args.result_bytes
        )

    async def write_async(self, ctx: WorkerStepContext, args: EffectArgs) -> EffectResult:
        import asyncio

        self.counter.record(ctx)
        self._insert(ctx, args.amount)
        await asyncio.sleep(args.sleep)
        _fail(args, ctx)
        return EffectResult(key=ctx.idempotency_key, amount=args.amount)

    def echo(self, ctx: WorkerStepContext, args: EffectArgs) -> EffectResult:
        self.counter.record(ctx)
        if args.sleep:
            time.sleep(args.sleep)
        _fail(args, ctx)
        return EffectResult(
            key=ctx.idempotency_key, amount=args.amount, padding="x" * args.result_bytes
        )

    def undo(self, ctx: WorkerStepContext, args: EffectArgs) -> None:
        self.counter.record(ctx)
        ctx.db.execute(
            f"INSERT INTO {self.table} (idempotency_key, saga_id, step, amount, kind)"
            " VALUES (%s, %s, %s, %s, 'compensate')",
            (ctx.idempotency_key, ctx.saga_id, ctx.step, -args.amount),
        )


def effects_table(dsn: str, table: str) -> StepTable:
    """The ``effects`` saga's steps writing to ``table`` (create it with
    :func:`create_effect_tables` first)."""
    fns = _EffectSteps(dsn, _table_name(table))
    steps = StepTable()
    common: dict[str, Any] = {
        "args_type": EffectArgs,
        "result_type": EffectResult,
        "non_retryable": (InsufficientFunds,),
    }
    steps.add(EFFECTS_SAGA, "write", Handler(fn=fns.write, **common))
    steps.add(EFFECTS_SAGA, "write_async", Handler(fn=fns.write_async, **common))
    steps.add(
        EFFECTS_SAGA, "slow", Handler(fn=fns.write, timeout=timedelta(milliseconds=300), **common)
    )
    steps.add(EFFECTS_SAGA, "echo", Handler(fn=fns.echo, uses_db=False, **common))
    steps.add(EFFECTS_SAGA, "write", Handler(fn=fns.undo, args_type=EffectArgs), kind="compensate")
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
    producer = SignedProducer(client_producer_config(bootstrap), "orchestrator")
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


@dataclass(frozen=True)
class ProcessOptions:
    """What ``sagaline chaos worker|relay`` runs."""

    bootstrap: str
    dsn: str
    schema: str
    prefix: str
    table: str
    group: str = "sagaline-testkit"
    instance_id: str | None = None
    session_timeout_ms: int = 6000
    concurrency: int = 4
    delivery: Literal["auto", "outbox", "kafka"] = "auto"


def serve(role: str, options: ProcessOptions) -> int:
    """``sagaline chaos worker|relay``: run a worker with the effects steps, or a relay,
    until SIGTERM (the chaos tests start it as a subprocess)."""
    from sagaline.consumers.worker import Worker, WorkerOptions

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if role == "relay":
        relay = Relay(
            options.dsn, options.bootstrap, RelayOptions(schema=options.schema, poll_interval=0.5)
        )
        try:
            relay.run(stop)
        finally:
            relay.close()
        return 0
    worker = Worker(
        bootstrap_servers=options.bootstrap,
        database_url=options.dsn,
        topics=TopicNames(options.prefix),
        resolver=effects_table(options.dsn, options.table),
        options=WorkerOptions(
            group_id=options.group,
            instance_id=options.instance_id,
            schema=options.schema,
            concurrency=options.concurrency,
            delivery=options.delivery,
            consumer_config={
                "session.timeout.ms": options.session_timeout_ms,
                "heartbeat.interval.ms": max(500, options.session_timeout_ms // 5),
            },
        ),
    )
    print("ready", flush=True)
    worker.run(stop)
    return 0
