"""The worker against real Kafka and PostgreSQL: inbox, outbox, relay, both paths."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sagaline.consumers.handlers import StepTable
from sagaline.consumers.migrations import migrate
from sagaline.consumers.relay import Relay, RelayOptions
from sagaline.consumers.runner import RunnerOptions, TaskRunner
from sagaline.consumers.wire import SchemasCodec, load_payload
from sagaline.consumers.worker import Worker, WorkerOptions
from sagaline.orchestrator.chaos.effects import (
    EffectArgs,
    EffectResult,
    compensate_task,
    create_effect_tables,
    create_topics,
    delete_topics,
    effects_table,
    execute_task,
    produce_tasks,
    read_records,
)
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.kafka_config import client_producer_config
from sagaline.schemas.base import Record
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.replies import (
    REPLY_TYPES,
    CompensationSucceeded,
    StepFailed,
    StepHeartbeat,
    StepSucceeded,
)
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

pytestmark = pytest.mark.integration


@pytest.fixture
def dsn(database_url: str) -> str:
    return database_url


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    return kafka_bootstrap


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    name = f"t_worker_{uuid.uuid4().hex[:10]}"
    migrate(dsn, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_effect_tables(conn, f"{name}.effects")
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def topics(bootstrap: str, topic_prefix: str) -> Iterator[TopicNames]:
    names = TopicNames(topic_prefix)
    create_topics(bootstrap, names)
    yield names
    delete_topics(bootstrap, names)


def effects(dsn: str, schema: str) -> tuple[Counter[str], Counter[str]]:
    """(effect rows per key, executions per key)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT idempotency_key FROM {schema}.effects").fetchall()
        tries = conn.execute(f"SELECT idempotency_key FROM {schema}.effects_attempts").fetchall()
    return Counter(r[0] for r in rows), Counter(r[0] for r in tries)


def runner(dsn: str, schema: str, topics: TopicNames) -> tuple[TaskRunner, object]:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(dsn, min_size=1, max_size=4, open=True)
    table = effects_table(dsn, f"{schema}.effects")
    return (
        TaskRunner(
            resolver=table,
            codec=SchemasCodec(),
            options=RunnerOptions(replies_topic=topics.replies, schema=schema),
            pool=pool,
        ),
        pool,
    )


def outbox_replies(dsn: str, schema: str) -> list[Record]:
    codec = SchemasCodec()
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT value FROM {schema}.outbox ORDER BY id").fetchall()
    return [codec.decode(bytes(r[0]), REPLY_TYPES) for r in rows]


def test_redelivered_task_reemits_recorded_reply_without_running(
    dsn: str, schema: str, topics: TopicNames
) -> None:
    run, pool = runner(dsn, schema, topics)
    try:
        task = execute_task("s1", "write", EffectArgs(amount=7))
        assert run.run(task).outcome == "succeeded"
        assert run.run(task).outcome == "re-emitted"  # same task delivered again
        retry = execute_task("s1", "write", EffectArgs(amount=7), attempt=2)
        assert retry.idempotency_key == task.idempotency_key
        assert run.run(retry).outcome == "re-emitted"  # a later attempt of the same execution
    finally:
        pool.close()  # type: ignore[attr-defined]
    done, tries = effects(dsn, schema)
    assert done == {task.idempotency_key: 1}
    assert tries == {task.idempotency_key: 1}
    replies = outbox_replies(dsn, schema)
    assert [type(r) for r in replies] == [StepSucceeded] * 3
    first, again, restamped = replies
    assert isinstance(first, StepSucceeded) and isinstance(restamped, StepSucceeded)
    assert again == first  # the same bytes: a duplicate the decider drops
    assert (restamped.attempt, restamped.task_id) == (2, retry.task_id)
    assert restamped.result == first.result
    assert restamped.envelope.message_id != first.envelope.message_id
    assert first.usage.llm_calls == 1 and first.usage.tokens_out == 7
    assert first.result is not None
    result = load_payload(first.result, EffectResult, None)
    assert isinstance(result, EffectResult) and result.amount == 7


def test_failures_are_classified_and_retryable_ones_leave_no_trace(
    dsn: str, schema: str, topics: TopicNames
) -> None:
    run, pool = runner(dsn, schema, topics)
    try:
        flaky = execute_task("s2", "write", EffectArgs(fail="retry", fail_until_attempt=1))
        assert run.run(flaky).outcome == "retry"
        flaky2 = execute_task(
            "s2", "write", EffectArgs(fail="retry", fail_until_attempt=1), attempt=2
        )
        assert run.run(flaky2).outcome == "succeeded"
        terminal = execute_task("s3", "write", EffectArgs(fail="terminal"))
        assert run.run(terminal).outcome == "failed"
        funds = execute_task("s4", "write", EffectArgs(fail="funds"))
        assert run.run(funds).outcome == "failed"
        bug = execute_task("s5", "write", EffectArgs(fail="crash"))
        assert run.run(bug).outcome == "retry"
        # a terminal failure is recorded: a retry re-emits it without running
        assert run.run(execute_task("s3", "write", EffectArgs(), attempt=2)).outcome == (
            "re-emitted"
        )
    finally:
        pool.close()  # type: ignore[attr-defined]
    done, tries = effects(dsn, schema)
    # failed attempts rolled back their writes; only the successful attempt's write remains
    assert done == {flaky.idempotency_key: 1}
    assert tries[flaky.idempotency_key] == 2
    assert tries[terminal.idempotency_key] == 1
    failures = [r for r in outbox_replies(dsn, schema) if isinstance(r, StepFailed)]
    by_saga = {f.envelope.saga_id: f for f in failures}
    assert by_saga["s2"].retryable and by_saga["s2"].error_type == "RetryableError"
    assert not by_saga["s3"].retryable and by_saga["s3"].error_type == "TerminalError"
    assert not by_saga["s4"].retryable and by_saga["s4"].error_type == "InsufficientFunds"
    assert by_saga["s5"].retryable and by_saga["s5"].error_type == "RuntimeError"


def test_timeouts_roll_back_and_report_retryable(dsn: str, schema: str, topics: TopicNames) -> None:
    run, pool = runner(dsn, schema, topics)
    try:
        slow = execute_task("s6", "slow", EffectArgs(sleep=0.6))  # handler timeout 300 ms
        assert run.run(slow).outcome == "retry"
        late = execute_task(
            "s7", "write", EffectArgs(), deadline_at=datetime.now(UTC) - timedelta(seconds=1)
        )
        assert run.run(late).outcome == "retry"
        async_slow = execute_task(
            "s8",
            "write_async",
            EffectArgs(sleep=5),
            deadline_at=datetime.now(UTC) + timedelta(milliseconds=300),
        )
        assert run.run(async_slow).outcome == "retry"
    finally:
        pool.close()  # type: ignore[attr-defined]
    done, _ = effects(dsn, schema)
    assert done == {}
    failures = [r for r in outbox_replies(dsn, schema) if isinstance(r, StepFailed)]
    assert {f.error_type for f in failures} == {"StepTimeout"}
    assert all(f.retryable for f in failures) and len(failures) == 3


def test_late_first_attempt_and_retry_cannot_both_take_effect(
    dsn: str, schema: str, topics: TopicNames
) -> None:
    run, pool = runner(dsn, schema, topics)
    try:
        first = execute_task("s9", "write", EffectArgs(sleep=0.5))
        retry = execute_task("s9", "write", EffectArgs(sleep=0.5), attempt=2)
        outcomes: list[str] = []
        threads = [
            threading.Thread(target=lambda t=t: outcomes.append(run.run(t).outcome))
            for t in (first, retry)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        pool.close()  # type: ignore[attr-defined]
    assert sorted(outcomes) == ["re-emitted", "succeeded"]
    done, tries = effects(dsn, schema)
    assert done == {first.idempotency_key: 1}
    assert tries == {first.idempotency_key: 1}  # the second attempt waited and never ran


def test_worker_and_relay_answer_every_task_once(
    dsn: str, bootstrap: str, schema: str, topics: TopicNames
) -> None:
    table: StepTable = effects_table(dsn, f"{schema}.effects")
    tasks: list[ExecuteStep | CompensateStep] = [
        execute_task(f"saga-{i}", "write", EffectArgs(amount=i)) for i in range(40)
    ]
    tasks += [execute_task(f"saga-{i}", "echo", EffectArgs(amount=i)) for i in range(40, 60)]
    tasks += [execute_task("saga-hb", "write", EffectArgs(heartbeats=3, sleep=0.1))]
    tasks += [compensate_task("saga-1", "write", EffectArgs(amount=1))]
    tasks += [execute_task("saga-big", "write", EffectArgs(result_bytes=200_000))]
    produce_tasks(bootstrap, topics.tasks, tasks)
    from confluent_kafka import Producer

    junk = Producer(client_producer_config(bootstrap))
    junk.produce(topics.tasks, key=b"junk", value=b"not a task")
    junk.flush(10)

    stop = threading.Event()
    worker = Worker(
        bootstrap_servers=bootstrap,
        database_url=dsn,
        topics=topics,
        resolver=table,
        options=WorkerOptions(
            group_id=f"g-{uuid.uuid4().hex[:8]}",
            schema=schema,
            concurrency=4,
            heartbeat_interval=0.0,
            payload_threshold=50_000,
        ),
    )
    relay = Relay(dsn, bootstrap, RelayOptions(schema=schema, poll_interval=0.5))
    threads = [
        threading.Thread(target=worker.run, args=(stop,)),
        threading.Thread(target=relay.run, args=(stop,)),
    ]
    for t in threads:
        t.start()
    answered = {t.task_id for t in tasks}

    def complete(records: list[Record]) -> bool:
        seen = {r.task_id for r in records if not isinstance(r, StepHeartbeat)}  # type: ignore[attr-defined]
        return answered <= seen

    try:
        replies = read_records(bootstrap, topics.replies, REPLY_TYPES, until=complete, timeout=60)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        relay.close()
    final = [r for r in replies if not isinstance(r, StepHeartbeat)]
    assert {r.task_id for r in final} == answered  # type: ignore[attr-defined]
    assert Counter(r.task_id for r in final).most_common(1)[0][1] == 1  # type: ignore[attr-defined]
    assert all(isinstance(r, StepSucceeded | CompensationSucceeded) for r in final)
    beats = [r for r in replies if isinstance(r, StepHeartbeat)]
    assert len(beats) == 3 and beats[-1].progress == 1.0
    big = next(r for r in final if r.envelope.saga_id == "saga-big")  # type: ignore[attr-defined]
    assert isinstance(big, StepSucceeded) and big.result is not None
    assert big.result.ref is not None and big.result.data is None  # travelled by reference
    from sagaline.consumers.payload_store import PostgresPayloadStore

    with psycopg.connect(dsn) as conn:
        value = load_payload(big.result, EffectResult, PostgresPayloadStore(conn, schema))
    assert isinstance(value, EffectResult) and len(value.padding) == 200_000
    done, tries = effects(dsn, schema)
    expected = {t.idempotency_key for t in tasks if t.step == "write"}
    assert done == Counter(dict.fromkeys(expected, 1))
    assert all(v == 1 for v in tries.values()) and len(tries) == len(tasks)
    letters = read_records(
        bootstrap, topics.deadletter, (DeadLetter,), until=lambda r: len(r) >= 1, timeout=10
    )
    assert len(letters) == 1 and isinstance(letters[0], DeadLetter)
    assert letters[0].value == b"not a task" and "undecodable" in letters[0].reason
    assert worker.stats.dead_lettered == 1
    assert worker.stats.kafka_transactions >= 1


def test_arguments_stored_by_reference_are_fetched_transparently(
    dsn: str, schema: str, topics: TopicNames
) -> None:
    from psycopg_pool import ConnectionPool

    from sagaline.consumers.payload_store import PostgresPayloadStore
    from sagaline.consumers.wire import dump_payload

    pool = ConnectionPool(dsn, min_size=1, max_size=2, open=True)
    try:
        store = PostgresPayloadStore(pool, schema)
        args = EffectArgs(amount=3, fail=None, result_bytes=10)
        payload = dump_payload(args, store, threshold=16)  # tiny threshold: by reference
        assert payload.ref is not None and payload.data is None
        again = dump_payload(args, store, threshold=16)
        assert again.ref == payload.ref  # content-addressed: stored once
        task = execute_task("s-ref", "write", EffectArgs()).model_copy(update={"args": payload})
        run = TaskRunner(
            resolver=effects_table(dsn, f"{schema}.effects"),
            codec=SchemasCodec(),
            options=RunnerOptions(replies_topic=topics.replies, schema=schema),
            pool=pool,
        )
        assert run.run(task).outcome == "succeeded"
    finally:
        pool.close()
    with psycopg.connect(dsn) as conn:
        amount = conn.execute(f"SELECT amount FROM {schema}.effects").fetchall()
        stored = conn.execute(f"SELECT count(*) FROM {schema}.payloads").fetchone()
    assert amount == [(3,)] and stored == (1,)


def test_step_span_continues_the_task_trace_into_the_reply(
    dsn: str, schema: str, topics: TopicNames
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from psycopg_pool import ConnectionPool

    from sagaline.orchestrator.runtime.telemetry import carrier_from_context

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("orchestrator decide") as decide:
        carrier = carrier_from_context()
    task = execute_task("s-trace", "write", EffectArgs())
    task = task.model_copy(update={"envelope": task.envelope.model_copy(update={"trace": carrier})})
    pool = ConnectionPool(dsn, min_size=1, max_size=2, open=True)
    try:
        run = TaskRunner(
            resolver=effects_table(dsn, f"{schema}.effects"),
            codec=SchemasCodec(),
            options=RunnerOptions(replies_topic=topics.replies, schema=schema),
            pool=pool,
            tracer=tracer,
        )
        assert run.run(task).outcome == "succeeded"
    finally:
        pool.close()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "step write"]
    assert span.parent is not None
    assert span.parent.span_id == decide.get_span_context().span_id
    (reply,) = outbox_replies(dsn, schema)
    assert isinstance(reply, StepSucceeded)
    traceparent = reply.envelope.trace["traceparent"]
    assert f"{span.context.trace_id:032x}" in traceparent  # same trace
    assert f"{span.context.span_id:016x}" in traceparent  # parented on the step span
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT headers FROM {schema}.outbox").fetchone()
    assert row is not None and row[0]["traceparent"] == traceparent  # Kafka header too


def test_parallel_steps_overlap_but_a_compensation_waits_for_its_step(
    dsn: str, bootstrap: str, schema: str, topics: TopicNames
) -> None:
    slow = EffectArgs(sleep=0.5)
    tasks: list[ExecuteStep | CompensateStep] = [
        execute_task("par", "write", slow),  # two parallel branches of one saga
        execute_task("par", "write_async", EffectArgs()),
        execute_task("seq", "write", slow),  # a step, then its compensation
        compensate_task("seq", "write", EffectArgs()),
    ]
    produce_tasks(bootstrap, topics.tasks, tasks)
    stop = threading.Event()
    worker = Worker(
        bootstrap_servers=bootstrap,
        database_url=dsn,
        topics=topics,
        resolver=effects_table(dsn, f"{schema}.effects"),
        options=WorkerOptions(group_id=f"g-{uuid.uuid4().hex[:8]}", schema=schema, concurrency=4),
    )
    runner_thread = threading.Thread(target=worker.run, args=(stop,))
    runner_thread.start()
    try:
        deadline = time.monotonic() + 60
        while worker.stats.succeeded < len(tasks) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        runner_thread.join(30)
    assert worker.stats.succeeded == len(tasks)
    with psycopg.connect(dsn) as conn:

        def started(key: str) -> datetime:
            row = conn.execute(
                f"SELECT at FROM {schema}.effects_attempts WHERE idempotency_key = %s", (key,)
            ).fetchone()
            assert row is not None
            return row[0]  # type: ignore[no-any-return]

        def finished(saga: str) -> datetime:  # when the step's reply was written (pre-commit)
            row = conn.execute(
                f"SELECT min(created_at) FROM {schema}.outbox WHERE key = %s", (saga.encode(),)
            ).fetchone()
            assert row is not None
            return row[0]  # type: ignore[no-any-return]

        # the second branch started while the first one was still running
        assert started(tasks[1].idempotency_key) < finished("par")
        # the compensation started only after its step had finished
        assert started(tasks[3].idempotency_key) > finished("seq")
