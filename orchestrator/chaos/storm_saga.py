"""The saga type of the storm suite (``sagaline chaos storm``).

``chaos.storm`` has steps on both delivery paths, an approval, compensations
and a permanent failure for the sagas that ask for one:

1. ``reserve`` (PostgreSQL outbox path): writes one effect row in the step's
   transaction; compensated by ``release`` (one ``compensate`` row);
2. ``notify`` (Kafka-transaction path, no database); compensated by ``recall``;
3. ``ok``: a person's approval;
4. ``charge`` (outbox path): writes one effect row, or fails permanently
   (``TerminalError``) when the saga data says ``fail`` - then ``recall`` and
   ``release`` run, in that order;
5. ``finish`` (Kafka path): nothing to undo.

Every execution (step or compensation, whatever its outcome) is first counted
in the attempts table through a separate autocommit connection, so executions
rolled back by a crash still count; its ``at`` is when the step function was
entered (an insert delayed by a PostgreSQL outage keeps that time).  The tables
live in the schema named by ``SAGALINE_STORM_SCHEMA`` (the workers' schema);
:func:`create_storm_tables` creates them.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
from pydantic import BaseModel

from sagaline.consumers.db import validate_schema
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.errors import RetryableError, TerminalError
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, approval, step

__all__ = [
    "DSN_ENV",
    "SCHEMA_ENV",
    "STORM_SAGA",
    "StormData",
    "StormSaga",
    "create_storm_tables",
    "registry",
]

STORM_SAGA = "chaos.storm"
SCHEMA_ENV = "SAGALINE_STORM_SCHEMA"
DSN_ENV = "DATABASE_URL"

#: Transient failures (a worker killed, PostgreSQL down) are retried without end:
#: under a storm only the failures a saga asks for may end it.
_RETRY = Retry(
    max_attempts=None, initial=timedelta(milliseconds=200), max_interval=timedelta(seconds=2)
)
_TIMEOUT = timedelta(seconds=30)


class StormData(BaseModel):
    """The saga data: whether ``charge`` fails permanently."""

    n: int = 0
    fail: bool = False


def _schema() -> str:
    return validate_schema(os.environ.get(SCHEMA_ENV, "sagaline"))


def create_storm_tables(conn: psycopg.Connection, schema: str) -> None:
    """``storm_effects`` (one row per effect, written in the step's transaction; no
    unique key, so a duplicate would show) and ``storm_attempts`` (one row per
    execution start, committed at once)."""
    s = validate_schema(schema)
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {s}.storm_effects (id bigserial PRIMARY KEY,"
        " saga_id text NOT NULL, step text NOT NULL, kind text NOT NULL,"
        " idempotency_key text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {s}.storm_attempts (id bigserial PRIMARY KEY,"
        " saga_id text NOT NULL, step text NOT NULL, kind text NOT NULL,"
        " idempotency_key text NOT NULL, attempt integer NOT NULL,"
        " at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )


class _Attempts:
    """Counts executions through an autocommit connection of its own (per thread)."""

    _local = threading.local()

    @classmethod
    def record(cls, ctx: StepContext, kind: str) -> None:
        # the execution starts now: an insert delayed by a database outage keeps this time
        started = datetime.now(UTC)
        for _ in range(100):
            conn: psycopg.Connection | None = getattr(cls._local, "conn", None)
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(os.environ[DSN_ENV], autocommit=True, connect_timeout=3)
                    cls._local.conn = conn
                conn.execute(
                    f"INSERT INTO {_schema()}.storm_attempts"
                    " (saga_id, step, kind, idempotency_key, attempt, at)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (ctx.saga_id, ctx.step, kind, ctx.idempotency_key, ctx.attempt, started),
                )
                return
            except psycopg.OperationalError:
                cls._local.conn = None
                time.sleep(0.2)
        raise RetryableError("cannot count the attempt: database unavailable")


def _effect(ctx: StepContext, kind: str) -> None:
    ctx.db.execute(
        f"INSERT INTO {_schema()}.storm_effects (saga_id, step, kind, idempotency_key)"
        " VALUES (%s, %s, %s, %s)",
        (ctx.saga_id, ctx.step, kind, ctx.idempotency_key),
    )


class StormSaga(Saga[StormData]):
    """The storm suite's saga (see the module docstring)."""

    type_name = STORM_SAGA

    @step(retry=_RETRY, timeout=_TIMEOUT, compensation_retry=_RETRY)
    def reserve(self, ctx: StepContext, data: StormData) -> None:
        _Attempts.record(ctx, "step")
        _effect(ctx, "step")

    @reserve.compensation
    def release(self, ctx: StepContext, data: StormData) -> None:
        _Attempts.record(ctx, "compensate")
        _effect(ctx, "compensate")

    @step(retry=_RETRY, timeout=_TIMEOUT, uses_db=False, compensation_retry=_RETRY)
    def notify(self, ctx: StepContext, data: StormData) -> None:
        _Attempts.record(ctx, "step")

    @notify.compensation
    def recall(self, ctx: StepContext, data: StormData) -> None:
        _Attempts.record(ctx, "compensate")

    ok = approval(timeout=timedelta(hours=2))

    @step(retry=_RETRY, timeout=_TIMEOUT, compensate=None)
    def charge(self, ctx: StepContext, data: StormData) -> None:
        _Attempts.record(ctx, "step")
        if data.fail:
            raise TerminalError("card declined (a permanent failure the storm asked for)")
        _effect(ctx, "step")

    @step(retry=_RETRY, timeout=_TIMEOUT, uses_db=False, compensate=None)
    def finish(self, ctx: StepContext, data: StormData) -> None:
        _Attempts.record(ctx, "step")


_REGISTRY = SagaRegistry([StormSaga])


def registry() -> SagaRegistry:
    """``--app sagaline.orchestrator.chaos.storm_saga:registry``."""
    return _REGISTRY
