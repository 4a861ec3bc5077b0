"""Local steps: the worker's runner, inbox and replies, used inside the orchestrator process.

:class:`LocalStepRunner` implements the orchestrator runtime's
:class:`~sagaline.orchestrator.runtime.local_runs.LocalSteps` port for the steps declared
``@step(local=True)``.  It runs each task as a worker would and returns the reply instead of
publishing it; the orchestrator decides the reply in the Kafka transaction of the batch.

Database step (``uses_db=True``): one PostgreSQL transaction inserts the inbox row (keyed by
the step execution's idempotency key), runs the step in a savepoint with ``ctx.db`` = this
transaction, records the encoded reply in the inbox row and commits, all *before* the
orchestrator's Kafka transaction commits.  If that Kafka transaction aborts (or the process
dies), the re-decided input dispatches the same task again; the re-run finds the inbox row
and returns the recorded reply: the step's writes happen exactly once.  A retryable failure
rolls the whole PostgreSQL transaction back (no inbox row), as on a worker.  No outbox row
is written: the reply reaches Kafka in the orchestrator's transaction.

Step without a database (``uses_db=False``): at-least-once.  A reply that does not commit
(an aborted transaction, a crash) is lost with the batch, and the re-run runs the function
again, like a DBOS step or a Temporal local activity.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta
from queue import SimpleQueue
from typing import Literal

import psycopg
from psycopg_pool import ConnectionPool

from sagaline.consumers.crash import crash_point
from sagaline.consumers.db import describe_dsn
from sagaline.consumers.errors import HandlerNotFound
from sagaline.consumers.handlers import RegistryResolver, StepHandlerLike, handler_uses_db
from sagaline.consumers.migrations import migrate
from sagaline.consumers.replies import failure_reply, restamp, success_reply
from sagaline.consumers.runner import RunnerOptions, TaskRunner, _claim, _RetryLater, classify
from sagaline.orchestrator.core.errors import OrchestratorError, SagalineError
from sagaline.orchestrator.core.nodes.base import parse_task_step
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.runtime.metrics import observe_step
from sagaline.schemas.base import Record, Usage
from sagaline.schemas.codec import RecordCodec, default_codec
from sagaline.schemas.replies import REPLY_TYPES
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = ["DEFAULT_LOCAL_TIMEOUT", "LocalStepRunner", "has_local_steps", "local_steps_for"]

log = logging.getLogger("sagaline.local_steps")

Task = ExecuteStep | CompensateStep
#: how long a local step without a timeout of its own may run
DEFAULT_LOCAL_TIMEOUT = timedelta(seconds=10)


class _DaemonThreads:
    """A fixed set of daemon threads running submitted calls.

    Unlike ``ThreadPoolExecutor`` (whose threads the interpreter joins at exit), a step
    abandoned past its timeout never keeps the orchestrator process from exiting.
    """

    def __init__(self, threads: int, name: str) -> None:
        self._jobs: SimpleQueue[tuple[Future[Record], Callable[[Task], Record], Task] | None]
        self._jobs = SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[Task], Record], task: Task) -> Future[Record]:
        future: Future[Record] = Future()
        self._jobs.put((future, fn, task))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, task = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(task))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


def has_local_steps(registry: SagaRegistry) -> bool:
    """Whether any registered saga declares a ``local=True`` step."""
    return any(getattr(node, "local", False) for cls in registry for node in cls.nodes.values())


class LocalStepRunner(TaskRunner):
    """Runs local steps' tasks in this process (the ``LocalSteps`` port)."""

    def __init__(
        self,
        registry: SagaRegistry,
        *,
        pool: ConnectionPool | None,
        replies_topic: str,
        codec: RecordCodec | None = None,
        schema: str = "sagaline",
        threads: int = 8,
        default_timeout: timedelta = DEFAULT_LOCAL_TIMEOUT,
        own_pool: bool = False,
    ) -> None:
        options = RunnerOptions(
            replies_topic=replies_topic, schema=schema, default_timeout=default_timeout
        )
        resolver = RegistryResolver(registry)
        super().__init__(
            resolver=resolver, codec=codec or default_codec(), options=options, pool=pool
        )
        self._registry = registry
        self._own_pool = own_pool
        self._default_timeout = default_timeout.total_seconds()
        self._local: dict[tuple[str, int, str], bool] = {}
        self._timeouts: dict[tuple[str, int, str], float] = {}
        self._threads = _DaemonThreads(threads, "sagaline-local")

    def close(self) -> None:
        """Stop the threads (a step still running past its timeout is left to finish)."""
        self._threads.shutdown()
        if self._pool is not None and self._own_pool:
            self._pool.close()

    # -- the port ------------------------------------------------------------------

    def is_local(self, task: Task) -> bool:
        key = (task.envelope.saga_type, task.envelope.saga_version, task.step)
        local = self._local.get(key)
        if local is None:
            try:
                definition = self._registry.get(key[0], key[1])
                node = definition.nodes.get(parse_task_step(key[2])[0])
            except (LookupError, OrchestratorError):
                node = None
            local = self._local[key] = bool(getattr(node, "local", False))
            timeout = getattr(node, "timeout", None)
            seconds = timeout.total_seconds() if timeout is not None else self._default_timeout
            self._timeouts[key] = seconds
        return local

    def run_tasks(self, tasks: Sequence[Task], budget_s: float) -> list[Record | None]:
        started = time.monotonic()
        futures = [self._threads.submit(self.run_one, task) for task in tasks]
        return [
            self._wait(task, future, started, budget_s)
            for task, future in zip(tasks, futures, strict=True)
        ]

    def _wait(
        self, task: Task, future: Future[Record], started: float, budget_s: float
    ) -> Record | None:
        limit = min(budget_s, self._timeout_of(task))
        try:
            return future.result(timeout=max(0.0, limit - (time.monotonic() - started)))
        except FutureTimeout:
            # cancelled: it never started (it waited for a thread) and now never will
            if future.cancel():
                log.warning("local step %s found no free thread in time", task.task_id)
                return None  # the workers run it (same inbox, same key)
            log.warning("local step %s passed its timeout (%.1fs)", task.task_id, limit)
            error, message = "StepTimeout", f"local step {task.step!r} passed its timeout"
        except Exception as exc:  # the database unreachable, ...: a retryable failure
            log.warning("local step %s: %s: %s", task.task_id, type(exc).__name__, exc)
            error, message = type(exc).__name__, str(exc)
        return failure_reply(
            task, retryable=True, error_type=error, error_message=message, usage=Usage()
        )

    def _timeout_of(self, task: Task) -> float:
        """The step's own timeout, else the default, counted from this round's start (the
        task's ``deadline_at`` was set moments ago by this same batch: the time since is
        the orchestrator's, not the step's)."""
        key = (task.envelope.saga_type, task.envelope.saga_version, task.step)
        return self._timeouts.get(key, self._default_timeout)

    # -- one task ------------------------------------------------------------------

    def run_one(self, task: Task) -> Record:
        """Run ``task`` once (or find its recorded reply) and return the reply."""
        kind: Literal["step", "compensate"] = (
            "step" if isinstance(task, ExecuteStep) else "compensate"
        )
        handler: StepHandlerLike | None = None
        missing: BaseException | None = None
        try:
            handler = self._resolver.resolve(
                task.envelope.saga_type, task.envelope.saga_version, kind, task.step
            )
        except HandlerNotFound as exc:
            log.error("%s", exc)
            missing = exc
        trace = dict(task.envelope.trace)
        started = time.perf_counter()
        if self._pool is not None and (handler is None or handler_uses_db(handler)):
            reply, outcome = self._run_in_db(task, handler, missing, trace)
        else:
            reply, outcome = self._run_plain(task, handler, missing, trace)
        seconds = time.perf_counter() - started
        observe_step(task.envelope.saga_type, task.step, kind, task.attempt, outcome, seconds)
        return reply

    def _run_plain(
        self,
        task: Task,
        handler: StepHandlerLike | None,
        missing: BaseException | None,
        trace: dict[str, str],
    ) -> tuple[Record, str]:
        ctx = self._context(task, handler, None)
        try:
            if missing is not None or handler is None:
                raise missing or HandlerNotFound(task.step)
            result = self._invoke(handler, ctx, task, self._payloads)
            return success_reply(task, result, ctx.usage, trace=trace), "succeeded"
        except Exception as exc:
            retryable = classify(exc, handler)
            reply = failure_reply(
                task,
                retryable=retryable,
                error_type=type(exc).__name__,
                error_message=str(exc),
                usage=ctx.usage,
                trace=trace,
            )
            return reply, "retry" if retryable else "failed"

    def _run_in_db(
        self,
        task: Task,
        handler: StepHandlerLike | None,
        missing: BaseException | None,
        trace: dict[str, str],
    ) -> tuple[Record, str]:
        assert self._pool is not None
        timings: dict[str, float] = {}
        with self._pool.connection() as conn:
            try:
                with conn.transaction():
                    if not self._store.claim(conn, _claim(task)):
                        recorded = self._store.recorded(conn, task.idempotency_key)
                        if recorded is None:
                            raise psycopg.OperationalError(
                                f"inbox row {task.idempotency_key} has no recorded reply"
                            )
                        original = self._codec.decode(recorded.reply, REPLY_TYPES)
                        return restamp(original, task, trace=trace), "re-emitted"
                    outcome, reply = self._step_in_transaction(
                        conn, task, handler, missing, timings, trace
                    )
                    self._store.complete(
                        conn,
                        task.idempotency_key,
                        outcome=outcome,
                        topic=self.options.replies_topic,
                        reply=self._encode(reply),
                    )
            except _RetryLater as later:
                return later.reply, "retry"
        crash_point("local_after_commit")  # PostgreSQL committed, the Kafka batch not
        return reply, outcome


def local_steps_for(
    app: object,
    database_url: str | None,
    replies_topic: str,
    codec: RecordCodec | None = None,
    *,
    schema: str = "sagaline",
) -> LocalStepRunner | None:
    """The local-step runner ``sagaline orchestrator run`` wires in, or ``None``.

    ``None`` when ``app`` is not a saga registry with local steps.  A local step that uses
    the database needs ``DATABASE_URL``: without it this raises one clear
    :class:`SagalineError`.
    """
    registry = getattr(app, "registry", app)
    if not isinstance(registry, SagaRegistry) or not has_local_steps(registry):
        return None
    needs_db = any(
        getattr(node, "local", False) and getattr(node, "uses_db", True)
        for cls in registry
        for node in cls.nodes.values()
    )
    pool: ConnectionPool | None = None
    if needs_db:
        if not database_url:
            raise SagalineError(
                "these sagas have local steps that use the database: set DATABASE_URL "
                "or --database-url (or run `sagaline dev up`)"
            )
        try:
            migrate(database_url, schema)
        except psycopg.Error as exc:
            where = describe_dsn(database_url)
            raise SagalineError(
                f"local steps: cannot prepare the inbox at {where}: {exc}"
            ) from None
        pool = ConnectionPool(
            database_url, min_size=1, max_size=9, open=True, name="sagaline-local-steps"
        )
    return LocalStepRunner(
        registry, pool=pool, replies_topic=replies_topic, codec=codec, schema=schema, own_pool=True
    )
