"""`sagaline worker run` and `sagaline relay run` as processes; both stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sagaline.consumers.migrations import migrate
from sagaline.orchestrator.chaos.effects import (
    EffectArgs,
    create_effect_tables,
    create_topics,
    delete_topics,
    execute_task,
    produce_tasks,
    read_records,
)
from sagaline.orchestrator.config import TopicNames
from sagaline.schemas.replies import REPLY_TYPES, StepSucceeded

pytestmark = pytest.mark.integration

#: the console script installed beside the interpreter running the tests (any venv)
SAGALINE = Path(sys.executable).with_name("sagaline")


@pytest.fixture
def dsn(database_url: str) -> str:
    return database_url


@pytest.fixture
def bootstrap(kafka_bootstrap: str) -> str:
    return kafka_bootstrap


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    name = f"t_wcli_{uuid.uuid4().hex[:10]}"
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


def test_worker_and_relay_commands(
    dsn: str, bootstrap: str, schema: str, topics: TopicNames
) -> None:
    assert SAGALINE.exists(), f"the sagaline script is not installed beside {sys.executable}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": dsn,
        "SAGALINE_TOPIC_PREFIX": topics.prefix,
        "SAGALINE_TESTKIT_TABLE": f"{schema}.effects",
    }
    tasks = [execute_task(f"cli-{i}", "write", EffectArgs(amount=i)) for i in range(10)]
    produce_tasks(bootstrap, topics.tasks, tasks)
    group = f"g-{uuid.uuid4().hex[:8]}"
    worker = subprocess.Popen(
        [str(SAGALINE), "worker", "run", "--app", "sagaline.orchestrator.chaos.effects:app",
         "--schema", schema,
         "--group", group, "--concurrency", "2"],
        env=env,
    )  # fmt: skip
    relay = subprocess.Popen(
        [str(SAGALINE), "relay", "run", "--schema", schema, "--poll-interval", "0.5"], env=env
    )
    try:
        wanted = {t.task_id for t in tasks}
        replies = read_records(
            bootstrap,
            topics.replies,
            REPLY_TYPES,
            until=lambda rs: wanted <= {getattr(r, "task_id", None) for r in rs},
            timeout=60,
        )
    finally:
        for proc in (worker, relay):
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in (worker, relay)]
    assert codes == [0, 0]  # graceful shutdown on SIGTERM
    assert wanted <= {getattr(r, "task_id", None) for r in replies}
    assert all(isinstance(r, StepSucceeded) for r in replies)
