"""The step worker: a consumer group on the tasks topic that runs steps exactly once.

One thread owns the Kafka consumer (and the transactional producer of the Kafka-only path); a
thread pool runs the steps.  The tasks of one step of one saga (its attempts, redeliveries and its
compensation) run one after another in arrival order (a lane per saga and step); everything else
(other sagas, parallel branches of one saga) runs concurrently up to ``concurrency``.  Offsets are
committed only for the contiguous prefix of finished tasks, after their Postgres transaction
committed (outbox path) or inside the Kafka transaction that publishes their replies (Kafka-only
path).  A task that cannot be decoded, or (signing on) was not signed by the orchestrator, goes to
the dead-letter topic with the reason and its offset moves on; every record it writes is signed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from queue import Empty, SimpleQueue

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from opentelemetry.trace import Tracer
from psycopg_pool import ConnectionPool

from sagaline.consumers.context import HeartbeatSink
from sagaline.consumers.crash import crash_point
from sagaline.consumers.db import connections_allowed, describe_dsn, warn_if_pool_exceeds_server
from sagaline.consumers.dead_letters import DeadLetterSender
from sagaline.consumers.handlers import HandlerResolver
from sagaline.consumers.migrations import migrate
from sagaline.consumers.offsets import OffsetTracker, Ready
from sagaline.consumers.progress import ProgressSinks
from sagaline.consumers.refusals import RefusedReplies
from sagaline.consumers.replies import heartbeat_reply
from sagaline.consumers.runner import Delivery, TaskResult, TaskRunner
from sagaline.consumers.transactional import (
    WorkerTransactions,
    abort_transaction,
    commit_transaction,
)
from sagaline.consumers.wire import Codec, SchemasCodec
from sagaline.consumers.worker_options import (
    TaskTrace,
    WorkerOptions,
    WorkerStats,
    consumer_config,
    producer_config,
    runner_options,
)
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.signing_runtime import WorkerProducer, verify_task
from sagaline.orchestrator.runtime.transactions import is_fatal, refused_for_good
from sagaline.schemas.tasks import TASK_TYPES, CompensateStep, ExecuteStep

__all__ = ["TaskTrace", "Worker", "WorkerOptions", "WorkerStats"]

log = logging.getLogger("sagaline.worker")

Task = ExecuteStep | CompensateStep
TP = tuple[str, int]


@dataclass
class _Job:
    tp: TP
    offset: int
    epoch: int
    task: Task
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    consumed_at: float = field(default_factory=time.time)
    future: Future[TaskResult] | None = None
    result: TaskResult | None = None


class Worker:
    """Runs step and compensation tasks from ``topics.tasks``; see :meth:`run`."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        database_url: str | None,
        topics: TopicNames,
        resolver: HandlerResolver,
        options: WorkerOptions | None = None,
        codec: Codec | None = None,
        on_task: Callable[[TaskTrace], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.options = options or WorkerOptions()
        self._on_task = on_task
        self._traced: list[_Job] = []
        self.topics = topics
        self.stats = WorkerStats()
        self._bootstrap = bootstrap_servers
        self._codec: Codec = codec or SchemasCodec()
        self._stopping = threading.Event()
        self._pool = _open_pool(database_url, self.options)
        self._progress = ProgressSinks(bootstrap_servers, topics, self._codec, self.options)
        self._runner = TaskRunner(
            resolver=resolver,
            codec=self._codec,
            options=runner_options(topics.replies, self.options),
            pool=self._pool,
            heartbeat=self._heartbeat_sink,
            stopping=self._stopping,
            tracer=tracer,
            progress=self._progress,
        )
        self._producer_base = producer_config(bootstrap_servers, self.options)
        self._plain = WorkerProducer(
            {**self._producer_base, "client.id": f"{self.options.group_id}-plain"}
        )
        self._txns = WorkerTransactions(
            self._producer_base, self.options.group_id, self.options.instance_id
        )
        self._consumer = Consumer(consumer_config(bootstrap_servers, self.options))
        self._executor = ThreadPoolExecutor(
            max_workers=self.options.concurrency, thread_name_prefix="sagaline-step"
        )
        self._completions: SimpleQueue[tuple[_Job, TaskResult | BaseException]] = SimpleQueue()
        self._tracker: OffsetTracker[TP, Delivery] = OffsetTracker()
        self._epochs: dict[TP, int] = {}
        self._lanes: dict[tuple[str, str], deque[_Job]] = {}
        self._paused = False
        self._closed = False
        self._stop_requested: threading.Event | None = None
        self._letters = DeadLetterSender(
            self._plain,
            topics.deadletter,
            self._codec,
            f"worker:{self.options.group_id}",
            self._should_stop,
        )
        self._refusals = RefusedReplies(
            self._runner.run, self._codec, self._letters, self._producer_base
        )

    def _should_stop(self) -> bool:
        requested = self._stop_requested
        return self._stopping.is_set() or (requested is not None and requested.is_set())

    # -- heartbeats and dead letters (plain idempotent producer) ------------------------

    def _heartbeat_sink(self, task: Task) -> HeartbeatSink:
        sequence = 0
        lock = threading.Lock()

        def send(progress: float | None, detail: str | None) -> None:
            nonlocal sequence
            if not isinstance(task, ExecuteStep):
                return
            with lock:
                sequence += 1
                n = sequence
            record = heartbeat_reply(task, n, progress, detail)
            self._plain.produce(
                self.topics.replies,
                key=task.envelope.saga_id.encode(),
                value=self._codec.encode(record),
            )
            self._plain.poll(0)

        return send

    def _dead_letter(
        self,
        where: tuple[str, int, int],
        key: bytes | None,
        value: bytes | None,
        headers: dict[str, bytes],
        reason: str,
        error_type: str,
    ) -> bool:
        """Write a bounded dead letter; ``True`` when the original's offset may be committed."""
        letter = self._letters.letter(where, key, value, headers, reason, error_type)
        sent = self._letters.send(letter, value)
        if sent:
            self.stats.dead_lettered += 1
        return sent

    # -- rebalancing -------------------------------------------------------------------

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            tp = (p.topic, p.partition)
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
            self._tracker.forget([tp])
        log.info("worker assigned %s", [(p.topic, p.partition) for p in partitions])

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drain_completions()
        try:
            self._commit_ready()
        except KafkaException as exc:
            log.warning("commit on revoke failed: %s", exc)
        self._release([(p.topic, p.partition) for p in partitions])

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._release([(p.topic, p.partition) for p in partitions])

    def _release(self, tps: list[TP]) -> None:
        """Forget partitions: their queued tasks are dropped (the next owner gets them);
        running ones finish, and their completions are ignored."""
        for tp in tps:
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
        self._tracker.forget(tps)
        revoked = set(tps)
        for lane in self._lanes.values():
            if len(lane) > 1 and lane[0].tp in revoked:
                head = lane[0]
                lane.clear()
                lane.append(head)

    # -- scheduling ----------------------------------------------------------------------

    def _submit(self, job: _Job) -> None:
        future = self._executor.submit(self._refusals.run, job.task)
        job.future = future

        def done(fut: Future[TaskResult]) -> None:
            self._completions.put((job, _outcome(fut)))

        future.add_done_callback(done)

    def _accept(self, msg: Message) -> None:
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        tp = (topic, partition)
        self.stats.consumed += 1
        headers = _headers(msg)
        value = msg.value()
        self._tracker.add(tp, offset)
        try:
            if value is None:
                raise ValueError("task message has no value")
            record = verify_task(msg, self._codec.decode(value, TASK_TYPES))
            if not isinstance(record, ExecuteStep | CompensateStep):
                raise TypeError(f"{type(record).__name__} is not a task")
        except Exception as exc:
            where = (topic, partition, offset)
            reason = f"{getattr(exc, 'refusal', 'undecodable')} task: {exc}"
            if self._dead_letter(where, msg.key(), value, headers, reason, type(exc).__name__):
                self._tracker.done(tp, offset)
            return
        job = _Job(tp, offset, self._epochs.get(tp, 0), record, msg.key(), value, headers)
        lane = self._lanes.get(_lane_key(record))
        if lane:
            lane.append(job)
        else:
            self._lanes[_lane_key(record)] = deque([job])
            self._submit(job)

    def _drain_completions(self, timeout: float = 0.0) -> int:
        handled = 0
        while True:
            try:
                job, outcome = self._completions.get(timeout=timeout if handled == 0 else 0)
            except Empty:
                return handled
            handled += 1
            self._complete(job, outcome)

    def _complete(self, job: _Job, outcome: TaskResult | BaseException) -> None:
        key = _lane_key(job.task)
        lane = self._lanes.get(key)
        if lane and lane[0] is job:
            lane.popleft()
            if lane and not self._stopping.is_set():
                self._submit(lane[0])
            else:  # empty, or stopping: queued tasks are redelivered to the next owner
                del self._lanes[key]
        current = self._epochs.get(job.tp) == job.epoch
        if isinstance(outcome, BaseException):
            log.error("task %s failed in the worker: %r", job.task.task_id, outcome)
            where = (*job.tp, job.offset)
            reason, error_type = f"worker error: {outcome!r}", type(outcome).__name__
            if current and self._dead_letter(
                where, job.key, job.value, job.headers, reason, error_type
            ):
                self._tracker.done(job.tp, job.offset)
            return
        if outcome.outcome == "abandoned":
            return
        self._count(outcome)
        if current:
            self._tracker.done(job.tp, job.offset, outcome.deliveries)
            if self._on_task is not None:
                job.result = outcome
                self._traced.append(job)

    def _count(self, result: TaskResult) -> None:
        if result.outcome == "succeeded":
            self.stats.succeeded += 1
        elif result.outcome == "failed":
            self.stats.failed += 1
        elif result.outcome == "retry":
            self.stats.retried += 1
        elif result.outcome == "re-emitted":
            self.stats.re_emitted += 1

    # -- committing --------------------------------------------------------------------

    def _commit_ready(self) -> None:
        ready = self._tracker.pop_ready()
        if ready:
            self._commit(ready)
        if self._traced:
            self._report_traces()

    def _report_traces(self) -> None:
        assert self._on_task is not None
        now = time.time()
        keep: list[_Job] = []
        for job in self._traced:
            if self._tracker.is_pending(job.tp, job.offset):
                keep.append(job)
                continue
            assert job.result is not None
            self._on_task(
                TaskTrace(
                    task_id=job.task.task_id,
                    saga_id=job.task.envelope.saga_id,
                    path=job.result.path,
                    outcome=job.result.outcome,
                    consumed_at=job.consumed_at,
                    finished_at=job.result.finished_at,
                    committed_at=now,
                    timings=job.result.timings,
                )
            )
        self._traced = keep

    def _commit(self, ready: dict[TP, Ready[Delivery]]) -> None:
        offsets = [TopicPartition(t, p, r.next_offset) for (t, p), r in ready.items()]
        deliveries = [d for r in ready.values() for d in r.items]
        if not deliveries:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                # Harmless: the tasks are redelivered after a restart and answered from the inbox.
                log.warning("offset commit failed (%s); a later commit covers these offsets", exc)
                return
            self.stats.commits += 1
            return
        producer = self._txns.producer()
        try:
            producer.begin_transaction()
            for d in deliveries:
                self._produce_delivery(producer, d)
            producer.send_offsets_to_transaction(offsets, self._consumer.consumer_group_metadata())
            crash_point("worker_in_kafka_transaction")
            commit_transaction(producer)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            # not fatal (abortable, retriable, produce() after the transaction failed): abort and
            # consume again from the committed offsets; fatal: a new producer with the same
            # transactional id (fences this one), then the same (consumers/transactional.py)
            if not isinstance(error, KafkaError):
                raise
            self._abort(producer, error)
            self._rewind([(t, p) for (t, p) in ready])
            return
        self.stats.kafka_transactions += 1
        self.stats.commits += 1

    def _abort(self, producer: Producer, error: KafkaError) -> None:
        """End a failed transaction: abort it, or replace a producer that failed for good;
        either way the replies the broker refused in it are remembered (no re-run loop)."""
        fatal = error if is_fatal(error) else None
        if fatal is None:
            log.warning("Kafka transaction aborted (%s); rewinding to committed offsets", error)
            try:
                abort_transaction(producer)
            except KafkaException as exc:  # fenced while aborting, or no transaction open
                failed = exc.args[0] if exc.args else None
                if isinstance(failed, KafkaError) and is_fatal(failed):
                    fatal = failed
                else:
                    log.warning("abort_transaction: %s (nothing to abort)", exc)
        if fatal is None:
            self.stats.dead_lettered += self._refusals.after_abort(producer)
            return
        with suppress(KafkaException):  # the refusals reported before the failure
            self.stats.dead_lettered += self._refusals.after_abort(producer)
        self._txns.recreate(fatal)

    def _produce_delivery(self, producer: Producer, d: Delivery) -> None:
        """Produce one reply into the transaction; a reply refused for good is dead-lettered
        and answered by a non-retryable failure reply (consumers/refusals.py): in place when
        the client refuses it, on the re-delivery after the abort when the broker does."""
        headers: list[tuple[str, str | bytes | None]] = list(d.headers.items())
        watch = self._refusals.watch(d)
        try:
            producer.produce(d.topic, d.value, d.key, headers=headers, on_delivery=watch)
            return
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if not refused_for_good(err):  # e.g. _STATE: the transaction failed, abort it
                raise
        answer = self._refusals.refuse(d, err, by_client=True)
        producer.produce(d.topic, answer.value, d.key, headers=headers)
        self.stats.dead_lettered += 1

    def _rewind(self, tps: list[TP]) -> None:
        """After an aborted transaction: consume these partitions again from the last commit."""
        self._release(tps)
        wanted = [TopicPartition(t, p) for t, p in tps]
        while True:
            try:
                committed = self._consumer.committed(wanted, timeout=30)
                break
            except KafkaException as exc:
                # never skip the aborted tasks: wait for the group coordinator
                if exc.args[0].fatal():
                    raise
                log.warning("reading committed offsets failed (%s); retrying", exc)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    # -- the loop ----------------------------------------------------------------------

    def _buffered(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def _flow_control(self) -> None:
        full = self._buffered() >= self.options.max_buffered
        if full and not self._paused:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
        elif not full and self._paused:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False

    def _fetch(self, timeout: float) -> list[Message]:
        """Wait up to ``timeout`` for one message, then take what else is buffered.

        (``consume(n, timeout)`` waits for ``n`` messages or the whole timeout,
        which would add up to ``timeout`` of latency to every quiet hop.)
        """
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        return [first, *self._consumer.consume(499, timeout=0)]

    def run(self, stop: threading.Event) -> None:
        """Consume and run tasks until ``stop`` is set, then shut down gracefully:
        running steps finish (up to ``shutdown_grace``), offsets are committed,
        the consumer leaves the group."""
        self._stop_requested = stop
        self._consumer.subscribe(
            [self.topics.tasks],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not stop.is_set():
                busy = bool(self._lanes)
                messages = self._fetch(0.002 if busy else 0.1)
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        if err.fatal():
                            raise KafkaException(err)
                        log.warning("consumer error: %s", err)
                        continue
                    self._accept(msg)
                self._drain_completions(timeout=0.002 if busy and not messages else 0.0)
                self._commit_ready()
                self._flow_control()
                self._plain.poll(0)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._stopping.set()
        deadline = time.monotonic() + self.options.shutdown_grace
        for lane in self._lanes.values():
            head = lane[0]
            if head.future is not None and head.future.cancel():
                lane.clear()
        self._lanes = {k: v for k, v in self._lanes.items() if v}
        while self._lanes and time.monotonic() < deadline:
            self._drain_completions(timeout=0.1)
            for lane in self._lanes.values():
                while len(lane) > 1:
                    lane.pop()
        try:
            self._commit_ready()
        except KafkaException as exc:
            log.warning("final offset commit failed: %s", exc)
        self.close()

    def close(self) -> None:
        """Release Kafka and Postgres resources (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the consumer failed: %s", exc)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._plain.flush(10)
        self._progress.close()
        self._txns.flush(10)
        if self._pool is not None:
            self._pool.close()


def _open_pool(database_url: str | None, options: WorkerOptions) -> ConnectionPool | None:
    """The worker's connection pool (after migrating, when ``options.migrate``)."""
    if database_url is None:
        if options.delivery == "outbox":
            raise ValueError("delivery='outbox' needs a database_url")
        return None
    if options.migrate:
        migrate(database_url, options.schema)
    pool = ConnectionPool(
        database_url,
        min_size=1,
        max_size=max(2, options.concurrency + 1),
        open=True,
        check=ConnectionPool.check_connection,
        name=f"sagaline-worker-{describe_dsn(database_url)}",
        timeout=10.0,
        reconnect_timeout=3600.0,
    )
    with suppress(psycopg.Error), pool.connection(timeout=2.0) as conn:
        what = f"this worker (--concurrency {options.concurrency})"
        warn_if_pool_exceeds_server(pool.max_size, connections_allowed(conn), what)
    return pool


def _lane_key(task: Task) -> tuple[str, str]:
    """Tasks with the same key run one after another, in arrival order: the attempts,
    redeliveries and compensation of one step of one saga.  Different steps of a saga
    (parallel branches) may run concurrently."""
    return (task.envelope.saga_id, task.step)


def _outcome(future: Future[TaskResult]) -> TaskResult | BaseException:
    if future.cancelled():
        return TaskResult(outcome="abandoned", path="outbox")
    exc = future.exception()
    return exc if exc is not None else future.result()


def _headers(msg: Message) -> dict[str, bytes]:
    raw = msg.headers() or []
    pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
    return {k: v if isinstance(v, bytes) else str(v).encode() for k, v in pairs if v is not None}
