"""How a worker runs, what it counts, and where one task's time went."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from sagaline.consumers.db import DEFAULT_SCHEMA
from sagaline.consumers.runner import DeliveryMode, RunnerOptions
from sagaline.orchestrator.runtime.kafka_config import KafkaConfig as ClientConfig
from sagaline.orchestrator.runtime.kafka_config import (
    client_producer_config,
    group_consumer_config,
)

__all__ = [
    "KafkaConfig",
    "TaskTrace",
    "WorkerOptions",
    "WorkerStats",
    "consumer_config",
    "producer_config",
    "runner_options",
]

KafkaConfig = Mapping[str, str | int | float | bool]


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs."""

    group_id: str = "sagaline-workers"
    #: Stable identity of this process (e.g. a pod ordinal) for the Kafka-only path's
    #: ``transactional.id``: a restarted worker with the same id fences its dead
    #: predecessor's open transaction at once.  None: random per start (a dead
    #: worker's open transaction then blocks readers until it times out, 10 s).
    instance_id: str | None = None
    schema: str = DEFAULT_SCHEMA
    #: Steps running at once in this process.
    concurrency: int = 8
    #: Tasks consumed but not finished before consumption pauses.
    max_buffered: int = 256
    #: ``auto``: per handler (``uses_db``); ``outbox``: all through Postgres;
    #: ``kafka``: all through Kafka transactions (no Postgres effects).
    delivery: DeliveryMode = "auto"
    payload_threshold: int = 64 * 1024
    default_timeout: timedelta | None = None
    heartbeat_interval: float = 2.0
    #: Apply the worker-table migrations at start.
    migrate: bool = True
    #: How long :meth:`Worker.run` waits for running steps when stopping (seconds).
    shutdown_grace: float = 30.0
    consumer_config: KafkaConfig = field(default_factory=dict)
    producer_config: KafkaConfig = field(default_factory=dict)


@dataclass
class WorkerStats:
    """Counters since start."""

    consumed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    re_emitted: int = 0
    dead_lettered: int = 0
    commits: int = 0
    kafka_transactions: int = 0


@dataclass(frozen=True)
class TaskTrace:
    """Where one task's time went (wall-clock ``time.time()`` values), for metrics and
    benchmarks: consumed by this worker → finished (after its Postgres commit on the
    outbox path) → offsets committed (with the reply, on the Kafka path)."""

    task_id: str
    saga_id: str
    path: str
    outcome: str
    consumed_at: float
    finished_at: float
    committed_at: float
    timings: Mapping[str, float]


def consumer_config(bootstrap_servers: str, options: WorkerOptions) -> ClientConfig:
    """The worker's consumer of the tasks topic.

    Cooperative-sticky assignment: a member joining or leaving moves only the
    partitions that change owner, the others keep running (safe with the
    Kafka-only path's transactions: KIP-447 fences by the consumer group
    metadata, not by the assignment protocol).  With a stable ``instance_id``
    the member is static (``group.instance.id``): a killed worker restarted
    under the same id takes its partitions back without any rebalance.  A
    static member does not leave the group on close, so a worker stopped for
    good hands its partitions over after ``session.timeout.ms``; a dynamic
    member (no ``instance_id``) leaves at once on a graceful stop.
    """
    member: ClientConfig = {
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 2_000,
        "partition.assignment.strategy": "cooperative-sticky",
        # a read_committed long poll is answered as soon as a commit moves the last
        # stable offset: 100 ms adds no latency and spares the broker empty fetches
        "fetch.wait.max.ms": 100,
    }
    if options.instance_id is not None:
        member["group.instance.id"] = f"{options.group_id}-worker-{options.instance_id}"
    return group_consumer_config(
        bootstrap_servers,
        options.group_id,
        client_id=f"{options.group_id}-worker",
        extra={**member, **options.consumer_config},
    )


def producer_config(bootstrap_servers: str, options: WorkerOptions) -> ClientConfig:
    """The base of the worker's producers (idempotent, sagaline's partitioner)."""
    return client_producer_config(bootstrap_servers, linger_ms=1, extra=options.producer_config)


def runner_options(replies_topic: str, options: WorkerOptions) -> RunnerOptions:
    """The :class:`RunnerOptions` of a worker's task runner."""
    return RunnerOptions(
        replies_topic=replies_topic,
        schema=options.schema,
        delivery=options.delivery,
        payload_threshold=options.payload_threshold,
        default_timeout=options.default_timeout,
        heartbeat_interval=options.heartbeat_interval,
    )
