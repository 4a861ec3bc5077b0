"""Running one task exactly once: the Postgres path and the Kafka-only path.

Postgres path (one transaction):
    1. insert the inbox row (``ON CONFLICT DO NOTHING``); when the key is
       already recorded, re-emit the recorded reply through the outbox and stop;
    2. run the step inside a savepoint with ``ctx.db`` = this transaction;
    3. record the reply in the inbox row and add it to the outbox (NOTIFY);
    4. commit.
A retryable failure rolls the whole transaction back (no inbox row, no
writes) and writes only the failure reply to the outbox, so the retry runs
the step again; a terminal failure is recorded like a success.

Kafka-only path: run the step without a database; the reply is returned to
the worker loop, which publishes it in the Kafka transaction that commits
the task's offset.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind, Tracer
from psycopg_pool import ConnectionPool
from pydantic import BaseModel

from sagaline.consumers.context import HeartbeatSink, ProgressSink, WorkerStepContext
from sagaline.consumers.crash import crash_point
from sagaline.consumers.db import is_connection_error
from sagaline.consumers.errors import HandlerNotFound, StepTimeout
from sagaline.consumers.handlers import HandlerResolver, StepHandlerLike, handler_uses_db
from sagaline.consumers.payload_store import PostgresPayloadStore
from sagaline.consumers.replies import failure_reply, restamp, success_reply
from sagaline.consumers.store import InboxClaim, WorkerStore
from sagaline.consumers.wire import Codec, dump_payload, load_payload
from sagaline.orchestrator.core.errors import TerminalError
from sagaline.orchestrator.runtime.data_keys import saga_scope
from sagaline.orchestrator.runtime.metrics import observe_step
from sagaline.orchestrator.runtime.telemetry import (
    TRACE_HEADERS,
    carrier_from_context,
    context_from_carrier,
)
from sagaline.schemas.base import Payload, Record
from sagaline.schemas.errors import SchemaError
from sagaline.schemas.personal import saga_keys
from sagaline.schemas.replies import REPLY_TYPES
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = ["Delivery", "DeliveryMode", "RunnerOptions", "TaskResult", "TaskRunner", "classify"]

log = logging.getLogger("sagaline.worker")
_TRACER = otel_trace.get_tracer("sagaline.worker")
_DB = {"db.system": "postgresql", "db.operation": "transaction"}

Task = ExecuteStep | CompensateStep
DeliveryMode = Literal["auto", "outbox", "kafka"]


@dataclass(frozen=True)
class Delivery:
    """A message the worker loop publishes in its offset-committing Kafka transaction."""

    topic: str
    key: bytes
    value: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class TaskResult:
    """What running a task produced.

    ``outcome``: ``succeeded``, ``failed``, ``retry`` (retryable failure),
    ``re-emitted`` (found in the inbox), or ``abandoned`` (the worker is
    stopping and the database was unreachable: the offset must not advance).
    """

    outcome: str
    path: Literal["outbox", "kafka"]
    deliveries: tuple[Delivery, ...] = ()
    #: Seconds spent in phases (``step``, ``pg_commit``, ``inbox_hit``, ``total``).
    timings: dict[str, float] = field(default_factory=dict)
    #: Wall-clock time (``time.time()``) when the task finished (after the Postgres commit).
    finished_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class RunnerOptions:
    """Settings of :class:`TaskRunner`."""

    replies_topic: str
    schema: str = "sagaline"
    delivery: DeliveryMode = "auto"
    #: Payloads whose encoding is larger go to the payload store (bytes).
    payload_threshold: int = 64 * 1024
    #: Upper bound on any step's run time when neither task nor handler sets one.
    default_timeout: timedelta | None = None
    #: Minimum seconds between two heartbeats of one step.
    heartbeat_interval: float = 2.0

    @property
    def tasks_topic(self) -> str:
        """The tasks topic beside ``replies_topic`` (``<prefix>.tasks``; a span attribute)."""
        return self.replies_topic.removesuffix(".replies") + ".tasks"


class _RetryLater(Exception):
    def __init__(self, reply: Record) -> None:
        super().__init__("retryable failure")
        self.reply = reply


def classify(exc: BaseException, handler: StepHandlerLike | None) -> bool:
    """True when ``exc`` is retryable: not a ``TerminalError``, not an undecodable
    payload (``SchemaError``), not one of the handler's non-retryable types."""
    if isinstance(exc, TerminalError | SchemaError):
        return False
    return not (
        handler is not None and handler.non_retryable and isinstance(exc, handler.non_retryable)
    )


def _error_type(exc: BaseException) -> str:
    return type(exc).__name__


def _claim(task: Task) -> InboxClaim:
    """The inbox row that records one execution of ``task``."""
    return InboxClaim(
        idempotency_key=task.idempotency_key,
        saga_id=task.envelope.saga_id,
        saga_type=task.envelope.saga_type,
        kind="step" if isinstance(task, ExecuteStep) else "compensate",
        step=task.step,
        attempt=task.attempt,
        task_id=task.task_id,
    )


def _headers(task: Task, trace: Mapping[str, str]) -> dict[str, str]:
    headers = {k: v for k, v in trace.items() if k in TRACE_HEADERS}
    headers["sagaline-saga-id"] = task.envelope.saga_id
    return headers


class TaskRunner:
    """Runs tasks; thread-safe (each call uses its own pooled connection)."""

    def __init__(
        self,
        *,
        resolver: HandlerResolver,
        codec: Codec,
        options: RunnerOptions,
        pool: ConnectionPool | None,
        heartbeat: Callable[[Task], HeartbeatSink] | None = None,
        stopping: threading.Event | None = None,
        tracer: Tracer | None = None,
        progress: Callable[[Task], ProgressSink] | None = None,
    ) -> None:
        self._tracer = tracer or _TRACER
        self._resolver = resolver
        self._codec = codec
        self.options = options
        self._pool = pool
        self._store = WorkerStore(options.schema)
        self._payloads = PostgresPayloadStore(pool, options.schema) if pool is not None else None
        self._heartbeat = heartbeat
        self._progress = progress  # ctx.progress(): advisory, see consumers/progress.py
        self._stopping = stopping or threading.Event()

    # -- helpers -----------------------------------------------------------------

    def _deadline(self, task: Task, handler: StepHandlerLike | None) -> datetime | None:
        now = datetime.now(UTC)
        candidates = [task.deadline_at] if task.deadline_at is not None else []
        timeout = handler.timeout if handler is not None else None
        timeout = timeout or self.options.default_timeout
        if timeout is not None:
            candidates.append(now + timeout)
        return min(candidates) if candidates else None

    def _context(
        self,
        task: Task,
        handler: StepHandlerLike | None,
        conn: psycopg.Connection | None,
    ) -> WorkerStepContext:
        interval = self.options.heartbeat_interval
        hb_timeout_ms = task.heartbeat_timeout_ms if isinstance(task, ExecuteStep) else None
        if hb_timeout_ms:
            interval = min(interval, hb_timeout_ms / 3000.0)
        return WorkerStepContext(
            saga_id=task.envelope.saga_id,
            saga_type=task.envelope.saga_type,
            step=task.step,
            attempt=task.attempt,
            idempotency_key=task.idempotency_key,
            task_id=task.task_id,
            kind="step" if isinstance(task, ExecuteStep) else "compensate",
            deadline=self._deadline(task, handler),
            db=conn,
            heartbeat_sink=self._heartbeat(task) if self._heartbeat else None,
            heartbeat_interval=interval,
            step_result=task.step_result if isinstance(task, CompensateStep) else None,
            progress_sink=self._progress(task) if self._progress else None,
        )

    def _invoke(
        self,
        handler: StepHandlerLike,
        ctx: WorkerStepContext,
        task: Task,
        store: PostgresPayloadStore | None,
    ) -> Payload | None:
        # personal fields: this saga's key, for this task only (never left set for the next)
        with saga_keys(saga_scope(task.envelope.saga_id)):
            args: Any = task.args
            if handler.args_type is not None:
                args = load_payload(task.args, handler.args_type, store)
            try:
                result = handler.fn(ctx, args)
                if inspect.isawaitable(result):
                    left = ctx.remaining()
                    try:
                        result = asyncio.run(_await(result, left))
                    except TimeoutError as exc:
                        raise StepTimeout(f"step {task.step!r} passed its deadline") from exc
            finally:
                ctx.settle_progress()  # its progress reaches Kafka before its reply (bounded)
            ctx.check_deadline()
            return self._result_payload(handler, result, store)

    def _result_payload(
        self, handler: StepHandlerLike, result: Any, store: PostgresPayloadStore | None
    ) -> Payload | None:
        if result is None:
            return None
        if handler.result_type is not None and not isinstance(result, handler.result_type):
            result = handler.result_type.model_validate(result)
        if not isinstance(result, BaseModel):
            raise TerminalError(
                f"step returned {type(result).__name__}; return a pydantic model or None"
            )
        return dump_payload(result, store, self.options.payload_threshold)

    def _encode(self, reply: Record) -> bytes:
        return self._codec.encode(reply)

    def _uses_db(self, handler: StepHandlerLike | None) -> bool:
        if self.options.delivery == "outbox":
            return True
        if self.options.delivery == "kafka":
            return False
        return handler is None or handler_uses_db(handler)

    # -- entry point ---------------------------------------------------------------

    def run(self, task: Task) -> TaskResult:
        """Run ``task`` and deliver its reply (outbox) or return it (Kafka path)."""
        kind: Literal["step", "compensate"] = (
            "step" if isinstance(task, ExecuteStep) else "compensate"
        )
        handler: StepHandlerLike | None
        try:
            handler = self._resolver.resolve(
                task.envelope.saga_type, task.envelope.saga_version, kind, task.step
            )
        except HandlerNotFound as exc:
            log.error("%s", exc)
            handler = None
            missing: BaseException | None = exc
        else:
            missing = None
        parent = context_from_carrier(task.envelope.trace)
        started = time.perf_counter()
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation": "process",
            "messaging.destination.name": self.options.tasks_topic,
            "sagaline.saga_id": task.envelope.saga_id,
            "sagaline.saga_type": task.envelope.saga_type,
            "sagaline.step": task.step,
            "sagaline.attempt": task.attempt,
            "sagaline.task_id": task.task_id,
        }
        with self._tracer.start_as_current_span(
            f"{kind} {task.step}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            # replies carry the step span's context (or the task's, without an SDK)
            trace = carrier_from_context() or dict(task.envelope.trace)
            if self._uses_db(handler) and self._pool is not None:
                result = self._run_db_until_done(task, handler, missing, trace)
            else:
                result = self._run_kafka(task, handler, missing, trace)
            span.set_attribute("sagaline.outcome", result.outcome)
            span.set_attribute("sagaline.path", result.path)
            seconds = time.perf_counter() - started
            saga_type = task.envelope.saga_type
            observe_step(saga_type, task.step, kind, task.attempt, result.outcome, seconds)
            return result

    # -- Kafka-only path -------------------------------------------------------------

    def _run_kafka(
        self,
        task: Task,
        handler: StepHandlerLike | None,
        missing: BaseException | None,
        trace: Mapping[str, str],
    ) -> TaskResult:
        started = time.perf_counter()
        ctx = self._context(task, handler, None)
        reply: Record
        outcome = "succeeded"
        try:
            if missing is not None or handler is None:
                raise missing or HandlerNotFound(task.step)
            left = ctx.remaining()
            if left is not None and left <= 0:
                # as on the database path: a task past its deadline is not run (the
                # orchestrator has timed it out; a later attempt may already be on its way)
                raise StepTimeout(f"step {task.step!r} was delivered after its deadline")
            result = self._invoke(handler, ctx, task, self._payloads)
            crash_point("worker_after_step")
            reply = success_reply(task, result, ctx.usage, trace=trace)
        except Exception as exc:
            retryable = classify(exc, handler)
            outcome = "retry" if retryable else "failed"
            reply = failure_reply(
                task,
                retryable=retryable,
                error_type=_error_type(exc),
                error_message=str(exc),
                usage=ctx.usage,
                trace=trace,
            )
        step_done = time.perf_counter()
        delivery = Delivery(
            topic=self.options.replies_topic,
            key=task.envelope.saga_id.encode(),
            value=self._encode(reply),
            headers=_headers(task, trace),
        )
        return TaskResult(
            outcome=outcome,
            path="kafka",
            deliveries=(delivery,),
            timings={"step": step_done - started},
        )

    # -- Postgres path ------------------------------------------------------------------

    def _run_db_until_done(
        self,
        task: Task,
        handler: StepHandlerLike | None,
        missing: BaseException | None,
        trace: Mapping[str, str],
    ) -> TaskResult:
        backoff = 0.1
        while True:
            try:
                return self._run_db(task, handler, missing, trace)
            except psycopg.Error as exc:
                if not is_connection_error(exc):
                    raise
                if self._stopping.is_set():
                    return TaskResult(outcome="abandoned", path="outbox")
                log.warning(
                    "database unavailable while running %s (%s); retrying in %.1fs",
                    task.task_id,
                    exc,
                    backoff,
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _run_db(
        self,
        task: Task,
        handler: StepHandlerLike | None,
        missing: BaseException | None,
        trace: Mapping[str, str],
    ) -> TaskResult:
        assert self._pool is not None
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        saga_id = task.envelope.saga_id
        topic = self.options.replies_topic
        headers = _headers(task, trace)
        claim = _claim(task)
        db_span = self._tracer.start_as_current_span("sagaline db transaction", attributes=_DB)
        with db_span, self._pool.connection() as conn:
            try:
                with conn.transaction():
                    if not self._store.claim(conn, claim):
                        recorded = self._store.recorded(conn, task.idempotency_key)
                        if recorded is None:
                            raise psycopg.OperationalError(
                                f"inbox row {task.idempotency_key} has no recorded reply"
                            )
                        original = self._codec.decode(recorded.reply, REPLY_TYPES)
                        value = self._encode(restamp(original, task, trace=trace))
                        self._store.enqueue(
                            conn, topic=topic, key=saga_id.encode(), value=value, headers=headers
                        )
                        timings["inbox_hit"] = time.perf_counter() - t0
                        outcome = "re-emitted"
                    else:
                        outcome, reply = self._step_in_transaction(
                            conn, task, handler, missing, timings, trace
                        )
                        value = self._encode(reply)
                        self._store.complete(
                            conn, task.idempotency_key, outcome=outcome, topic=topic, reply=value
                        )
                        self._store.enqueue(
                            conn, topic=topic, key=saga_id.encode(), value=value, headers=headers
                        )
                    t_commit = time.perf_counter()
                timings["pg_commit"] = time.perf_counter() - t_commit
            except _RetryLater as later:
                t_commit = time.perf_counter()
                with conn.transaction():
                    self._store.enqueue(
                        conn,
                        topic=topic,
                        key=saga_id.encode(),
                        value=self._encode(later.reply),
                        headers=headers,
                    )
                timings["pg_commit"] = time.perf_counter() - t_commit
                outcome = "retry"
        crash_point("worker_after_commit")
        timings["total"] = time.perf_counter() - t0
        return TaskResult(outcome=outcome, path="outbox", timings=timings)

    def _step_in_transaction(
        self,
        conn: psycopg.Connection,
        task: Task,
        handler: StepHandlerLike | None,
        missing: BaseException | None,
        timings: dict[str, float],
        trace: Mapping[str, str],
    ) -> tuple[str, Record]:
        ctx = self._context(task, handler, conn)
        started = time.perf_counter()
        try:
            if missing is not None or handler is None:
                raise missing or HandlerNotFound(task.step)
            left = ctx.remaining()
            if left is not None:
                if left <= 0:
                    raise StepTimeout(f"step {task.step!r} was delivered after its deadline")
                conn.execute(f"SET LOCAL statement_timeout = {max(1, int(left * 1000))}")
            try:
                with conn.transaction():  # savepoint: a failed step leaves no writes
                    result = self._invoke(handler, ctx, task, self._payloads_for(conn))
                    crash_point("worker_after_step")
            finally:
                if left is not None and not conn.broken:
                    conn.execute("SET LOCAL statement_timeout = 0")
            reply = success_reply(task, result, ctx.usage, trace=trace)
            outcome = "succeeded"
        except Exception as exc:
            if is_connection_error(exc, conn):
                raise
            if isinstance(exc, psycopg.errors.QueryCanceled) and ctx.remaining() is not None:
                exc = StepTimeout(f"step {task.step!r} passed its deadline: {exc}")
            retryable = classify(exc, handler)
            reply = failure_reply(
                task,
                retryable=retryable,
                error_type=_error_type(exc),
                error_message=str(exc),
                usage=ctx.usage,
                trace=trace,
            )
            if retryable:
                raise _RetryLater(reply) from exc
            outcome = "failed"
        timings["step"] = time.perf_counter() - started
        return outcome, reply

    def _payloads_for(self, conn: psycopg.Connection) -> PostgresPayloadStore | None:
        return self._payloads.bound(conn) if self._payloads is not None else None


async def _await(awaitable: Any, timeout: float | None) -> Any:
    return await asyncio.wait_for(awaitable, timeout)
