"""SIGKILL the worker and the relay at the exact dangerous points; restart Postgres under load.

Invariants checked against real Kafka and PostgreSQL, with an effects table
(one row per executed effect, no unique key, so a duplicate would show) and
an attempts table (one row per execution start, committed on its own
connection, so executions rolled back by a crash still count):

* every effect exactly once;
* every task answered (at least one reply per task id; duplicates allowed,
  the decider drops them);
* a step whose transaction committed is never executed again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest

from sagaline.consumers.migrations import migrate
from sagaline.consumers.relay import Relay, RelayOptions
from sagaline.consumers.wire import SchemasCodec
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
from sagaline.orchestrator.devenv.postgres import LocalPostgres
from sagaline.schemas.base import Record
from sagaline.schemas.replies import REPLY_TYPES, StepHeartbeat, StepSucceeded
from sagaline.schemas.tasks import ExecuteStep

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from orchestrator_support import read_committed

pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dsn(database_url: str) -> str:
    return database_url


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    return kafka_bootstrap


@pytest.fixture
def topics(bootstrap: str, topic_prefix: str) -> Iterator[TopicNames]:
    names = TopicNames(topic_prefix)
    create_topics(bootstrap, names)
    yield names
    delete_topics(bootstrap, names)


def prepare_schema(dsn: str) -> str:
    name = f"t_wchaos_{uuid.uuid4().hex[:10]}"
    migrate(dsn, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_effect_tables(conn, f"{name}.effects")
    return name


def drop_schema(dsn: str, name: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    name = prepare_schema(dsn)
    yield name
    drop_schema(dsn, name)


def spawn(
    role: str,
    *,
    bootstrap: str,
    dsn: str,
    schema: str,
    topics: TopicNames,
    group: str,
    crash_at: str | None = None,
    crash_skip: int = 0,
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGALINE_CRASH")}
    if crash_at:
        env["SAGALINE_CRASH_AT"] = crash_at
        env["SAGALINE_CRASH_SKIP"] = str(crash_skip)
    argv = [
        sys.executable, "-m", "sagaline.orchestrator.cli", "chaos", role,
        "--bootstrap", bootstrap, "--dsn", dsn, "--schema", schema,
        "--prefix", topics.prefix, "--table", f"{schema}.effects", "--group", group,
        *extra,
    ]  # fmt: skip
    return subprocess.Popen(argv, cwd=ROOT, env=env)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def answered_all(tasks: list[ExecuteStep]) -> object:
    wanted = {t.task_id for t in tasks}

    def check(records: list[Record]) -> bool:
        return wanted <= {getattr(r, "task_id", None) for r in records}

    return check


def counts(dsn: str, schema: str) -> tuple[Counter[str], Counter[str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT idempotency_key FROM {schema}.effects").fetchall()
        tries = conn.execute(f"SELECT idempotency_key FROM {schema}.effects_attempts").fetchall()
    return Counter(r[0] for r in rows), Counter(r[0] for r in tries)


def reruns_after_commit(dsn: str, schema: str) -> int:
    """Executions that started after their step's effect was written (must be 0)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {schema}.effects_attempts a JOIN {schema}.effects e"
            " USING (idempotency_key) WHERE a.at > e.at"
        ).fetchone()
    assert row is not None
    return int(row[0])


def report(name: str, **figures: object) -> None:
    print(f"CHAOS {name} {json.dumps(figures, sort_keys=True)}")


def check_exactly_once(
    dsn: str, schema: str, tasks: list[ExecuteStep], replies: list[Record]
) -> tuple[Counter[str], Counter[str], Counter[str]]:
    finals = [r for r in replies if not isinstance(r, StepHeartbeat)]
    per_task = Counter(getattr(r, "task_id", "") for r in finals)
    assert {t.task_id for t in tasks} <= set(per_task), "a task was never answered"
    assert all(isinstance(r, StepSucceeded) for r in finals)
    done, tries = counts(dsn, schema)
    assert done == Counter({t.idempotency_key: 1 for t in tasks}), "an effect is missing or doubled"
    assert reruns_after_commit(dsn, schema) == 0, "a completed step ran again"
    return per_task, done, tries


def run_relay_thread(dsn: str, bootstrap: str, schema: str, stop: threading.Event) -> Relay:
    relay = Relay(dsn, bootstrap, RelayOptions(schema=schema, poll_interval=0.5))
    threading.Thread(target=relay.run, args=(stop,), daemon=True).start()
    return relay


@pytest.mark.parametrize("crash_at", ["worker_after_step", "worker_after_commit"])
def test_worker_sigkill(
    crash_at: str, dsn: str, bootstrap: str, schema: str, topics: TopicNames
) -> None:
    tasks = [
        execute_task(f"saga-{i}", "write", EffectArgs(amount=i, sleep=0.02)) for i in range(60)
    ]
    produce_tasks(bootstrap, topics.tasks, tasks)
    group = f"g-{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    relay = run_relay_thread(dsn, bootstrap, schema, stop)
    common = {
        "bootstrap": bootstrap,
        "dsn": dsn,
        "schema": schema,
        "topics": topics,
        "group": group,
    }
    victim = spawn("worker", crash_at=crash_at, crash_skip=15, **common)  # type: ignore[arg-type]
    try:
        assert victim.wait(60) == -signal.SIGKILL
        survivor = spawn("worker", **common)  # type: ignore[arg-type]
        try:
            replies = read_records(
                bootstrap, topics.replies, REPLY_TYPES, until=answered_all(tasks), timeout=60
            )
        finally:
            stop_process(survivor)
        assert survivor.returncode == 0  # SIGTERM: graceful shutdown
    finally:
        stop_process(victim)
        stop.set()
        relay.close()
    per_task, _done, tries = check_exactly_once(dsn, schema, tasks, replies)
    reexecuted = {k: n - 1 for k, n in tries.items() if n > 1}
    duplicates = sum(n - 1 for n in per_task.values())
    report(
        crash_at,
        tasks=len(tasks),
        reexecutions=sum(reexecuted.values()),
        duplicate_replies=duplicates,
    )
    # only executions killed before their commit ran again (at most one per step thread)
    assert all(n == 1 for n in reexecuted.values()) and len(reexecuted) <= 4
    if crash_at == "worker_after_step":
        assert len(reexecuted) >= 1  # the killed execution ran again after the restart
    else:
        assert duplicates >= 1  # the redelivered committed task re-emitted its reply


def test_relay_sigkill_between_publish_and_mark_sent(
    dsn: str, bootstrap: str, schema: str, topics: TopicNames
) -> None:
    tasks = [execute_task(f"saga-{i}", "write", EffectArgs(amount=i)) for i in range(60)]
    produce_tasks(bootstrap, topics.tasks, tasks)
    stop = threading.Event()
    worker = Worker(
        bootstrap_servers=bootstrap,
        database_url=dsn,
        topics=topics,
        resolver=effects_table(dsn, f"{schema}.effects"),
        options=WorkerOptions(group_id=f"g-{uuid.uuid4().hex[:8]}", schema=schema),
    )
    runner = threading.Thread(target=worker.run, args=(stop,))
    runner.start()
    common = {"bootstrap": bootstrap, "dsn": dsn, "schema": schema, "topics": topics, "group": "-"}
    try:
        # wait until every step committed its outbox row, then let the relay crash mid-way
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with psycopg.connect(dsn) as conn:
                row = conn.execute(f"SELECT count(*) FROM {schema}.outbox").fetchone()
            if row is not None and row[0] >= len(tasks):
                break
            time.sleep(0.2)
        victim = spawn("relay", crash_at="relay_after_publish", crash_skip=0, **common)  # type: ignore[arg-type]
        assert victim.wait(60) == -signal.SIGKILL
        with psycopg.connect(dsn) as conn:
            unsent = conn.execute(
                f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL"
            ).fetchone()
        assert unsent == (len(tasks),)  # published, but not marked
        survivor = spawn("relay", **common)  # type: ignore[arg-type]
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with psycopg.connect(dsn) as conn:
                    unsent = conn.execute(
                        f"SELECT count(*) FROM {schema}.outbox WHERE sent_at IS NULL"
                    ).fetchone()
                if unsent == (0,):
                    break
                time.sleep(0.2)
            replies = read_records(
                bootstrap,
                topics.replies,
                REPLY_TYPES,
                until=lambda records: len(records) >= 2 * len(tasks),
                timeout=30,
            )
        finally:
            stop_process(survivor)
    finally:
        stop.set()
        runner.join(30)
    assert unsent == (0,)
    per_task, _done, tries = check_exactly_once(dsn, schema, tasks, replies)
    duplicates = sum(n - 1 for n in per_task.values())
    report("relay_after_publish", tasks=len(tasks), duplicate_replies=duplicates, reexecutions=0)
    assert all(n == 1 for n in tries.values())
    assert duplicates == len(tasks)  # the whole batch went out twice; the decider drops them


def test_postgres_restarts_under_load(
    bootstrap: str, topics: TopicNames, private_postgres: LocalPostgres
) -> None:
    server = private_postgres  # a server of this test's own: never the shared dev Postgres
    dsn = server.url
    schema = prepare_schema(dsn)
    tasks = [
        execute_task(f"saga-{i}", "write", EffectArgs(amount=i, sleep=0.01)) for i in range(150)
    ]
    stop = threading.Event()
    relay = run_relay_thread(dsn, bootstrap, schema, stop)
    worker = Worker(
        bootstrap_servers=bootstrap,
        database_url=dsn,
        topics=topics,
        resolver=effects_table(dsn, f"{schema}.effects"),
        options=WorkerOptions(group_id=f"g-{uuid.uuid4().hex[:8]}", schema=schema, concurrency=4),
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:  # reported below: a worker must survive the restarts
            errors.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    restarts = 0
    try:
        produce_tasks(bootstrap, topics.tasks, tasks[:20])
        deadline = time.monotonic() + 30
        while worker.stats.succeeded == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the worker joined its group and runs steps
        assert worker.stats.succeeded > 0, "the worker ran no step within 30 s (warm-up failed)"
        for round_ in range(4):
            batch = tasks[20 + round_ * 30 : 20 + (round_ + 1) * 30]
            produce_tasks(bootstrap, topics.tasks, batch)
            time.sleep(0.3)
            server.restart(crash=round_ % 2 == 0)  # SIGKILL and clean stops, alternately
            restarts += 1
        produce_tasks(bootstrap, topics.tasks, tasks[140:])
        replies = read_records(
            bootstrap, topics.replies, REPLY_TYPES, until=answered_all(tasks), timeout=90
        )
    finally:
        stop.set()
        runner.join(30)
        relay.close()
    assert errors == [] and not runner.is_alive()
    per_task, _done, tries = check_exactly_once(dsn, schema, tasks, replies)
    reexecuted = sum(n - 1 for n in tries.values())
    report(
        "postgres_restarts",
        tasks=len(tasks),
        restarts=restarts,
        reexecutions=reexecuted,
        duplicate_replies=sum(n - 1 for n in per_task.values()),
    )
    # the restarts landed on transactions in flight: their attempts ran again, once each
    assert reexecuted >= 1


@pytest.mark.parametrize("crash_at", ["worker_after_step", "worker_in_kafka_transaction"])
def test_kafka_path_sigkill_answers_every_task_exactly_once(
    crash_at: str, dsn: str, bootstrap: str, schema: str, topics: TopicNames
) -> None:
    """Steps without database effects: reply and offset commit in one Kafka transaction,
    so a read_committed reader sees exactly one reply per task across a SIGKILL."""
    tasks = [execute_task(f"saga-{i}", "echo", EffectArgs(amount=i, sleep=0.02)) for i in range(60)]
    produce_tasks(bootstrap, topics.tasks, tasks)
    common = {
        "bootstrap": bootstrap,
        "dsn": dsn,
        "schema": schema,
        "topics": topics,
        "group": f"g-{uuid.uuid4().hex[:8]}",
        "extra": ("--instance-id", "w1"),  # the restart fences the killed transaction
    }
    # one transaction may carry many tasks: crash in the second one, or after the 6th step
    skip = 1 if crash_at == "worker_in_kafka_transaction" else 5
    victim = spawn("worker", crash_at=crash_at, crash_skip=skip, **common)  # type: ignore[arg-type]
    try:
        assert victim.wait(60) == -signal.SIGKILL
        survivor = spawn("worker", **common)  # type: ignore[arg-type]
        try:
            read_records(
                bootstrap, topics.replies, REPLY_TYPES, until=answered_all(tasks), timeout=60
            )
        finally:
            stop_process(survivor)
    finally:
        stop_process(victim)
    # the whole topic, read_committed, up to its end offsets, after everything settled
    codec = SchemasCodec()
    replies = [
        codec.decode(rec.value, REPLY_TYPES)
        for rec in read_committed(bootstrap, topics.replies)
        if rec.value is not None
    ]
    per_task = Counter(getattr(r, "task_id", "") for r in replies)
    assert set(per_task) == {t.task_id for t in tasks}
    duplicates = sum(n - 1 for n in per_task.values())
    _done, tries = counts(dsn, schema)
    reexecuted = sum(n - 1 for n in tries.values())
    report(
        f"kafka_path_{crash_at}",
        tasks=len(tasks),
        reexecutions=reexecuted,
        duplicate_replies=duplicates,
    )
    assert duplicates == 0  # aborted replies are invisible, committed ones are not redone
    assert reexecuted >= 1  # the killed, uncommitted tasks ran again (same idempotency key)
