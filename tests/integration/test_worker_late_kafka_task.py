"""A Kafka-only task delivered after its deadline is not run (issue 17, storm finding 1).

The database path never ran a task past its deadline (it answers ``StepTimeout``);
the Kafka-only path ran it and only then reported the timeout.  By then the
orchestrator has timed the attempt out and dispatched the next one; had the late
attempt succeeded, its success would complete the step while the next attempt was
still queued for a worker - which, without an inbox on this path, ran the step again
after its completion was journaled.  (Before the fix the late task ran: one
execution counted.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sagaline.consumers.runner import RunnerOptions, TaskRunner
from sagaline.consumers.wire import SchemasCodec
from sagaline.orchestrator.chaos.effects import (
    EffectArgs,
    create_effect_tables,
    effects_table,
    execute_task,
)
from sagaline.schemas.replies import StepFailed

pytestmark = pytest.mark.integration


@pytest.fixture
def table(database_url: str) -> Iterator[str]:
    schema = f"t_late_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        create_effect_tables(conn, f"{schema}.effects")
    yield f"{schema}.effects"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_kafka_only_task_past_its_deadline_is_not_run(database_url: str, table: str) -> None:
    codec = SchemasCodec()
    runner = TaskRunner(
        resolver=effects_table(database_url, table),
        codec=codec,
        options=RunnerOptions(replies_topic="late.replies", delivery="kafka"),
        pool=None,
    )
    past = datetime.now(UTC) - timedelta(seconds=1)
    late = runner.run(execute_task("late-1", "echo", EffectArgs(), deadline_at=past))
    future = datetime.now(UTC) + timedelta(seconds=30)
    in_time = runner.run(execute_task("late-2", "echo", EffectArgs(), deadline_at=future))
    assert (late.path, late.outcome) == ("kafka", "retry")
    (delivery,) = late.deliveries
    reply = codec.decode(delivery.value, (StepFailed,))
    assert isinstance(reply, StepFailed)
    assert reply.retryable and reply.error_type == "StepTimeout"
    assert (in_time.path, in_time.outcome) == ("kafka", "succeeded")
    with psycopg.connect(database_url) as conn:
        ran = conn.execute(f"SELECT count(*) FROM {table}_attempts").fetchone()
    assert ran == (1,)  # only the task delivered in time ran
