"""Prometheus metrics of every long-running sagaline process (ADR 0015).

Each process serves the metrics it knows on its own port (``--metrics-port``;
0 = off): the orchestrator counts sagas, decisions, transactions, restores and
its dead letters and reports open approvals; a worker times steps and counts
attempts; the relay reports the outbox backlog and its delay; every consumer
reports its lag per partition.  Names carry their unit (``_seconds``,
``_total``, ``_records``, ``_rows``); every label takes a bounded set of
values (saga types, step names, statuses, error types, topics, partitions).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.snapshots import approvals_by_type

__all__ = [
    "APPROVALS_OPEN",
    "BATCH_SIZE",
    "COMMIT_SECONDS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "OUTBOX_BACKLOG",
    "RELAY_DELAY",
    "RESTORE_SECONDS",
    "SAGAS_ENDED",
    "SAGAS_STARTED",
    "STEP_ATTEMPTS",
    "STEP_SECONDS",
    "ApprovalCollector",
    "LagMonitor",
    "count_dead_letter",
    "observe_batch",
    "observe_commit",
    "observe_step",
    "serve_metrics",
]

log = logging.getLogger("sagaline.metrics")

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

SAGAS_STARTED = Counter(
    "sagaline_sagas_started", "Sagas started (their SagaStarted committed)", ["saga_type"]
)
SAGAS_ENDED = Counter(
    "sagaline_sagas_ended",
    "Sagas that reached a final status (completed, compensated, failed, cancelled)",
    ["saga_type", "status"],
)
STEP_SECONDS = Histogram(
    "sagaline_step_duration_seconds",
    "Wall time of one step or compensation attempt in a worker (with its transaction)",
    ["saga_type", "step", "kind", "outcome"],
    buckets=_LATENCY,
)
STEP_ATTEMPTS = Histogram(
    "sagaline_step_attempts",
    "The attempt number of each step task a worker finished (1 = first try)",
    ["saga_type", "step"],
    buckets=(1, 2, 3, 4, 5, 8, 13, 21),
)
BATCH_SIZE = Histogram(
    "sagaline_decision_batch_size",
    "Inputs and timers decided in one committed orchestrator transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
COMMIT_SECONDS = Histogram(
    "sagaline_transaction_commit_seconds",
    "Time to commit one orchestrator transaction (produces, offsets, commit)",
    buckets=_LATENCY,
)
CONSUMER_LAG = Gauge(
    "sagaline_consumer_lag_records",
    "Records between a consumer group's committed offset and the partition's end",
    ["group", "topic", "partition"],
)
OUTBOX_BACKLOG = Gauge("sagaline_outbox_backlog_rows", "Outbox rows not yet published")
RELAY_DELAY = Histogram(
    "sagaline_relay_delay_seconds",
    "Time from an outbox row's insert to its publication being recorded",
    buckets=_LATENCY,
)
DEAD_LETTERS = Counter(
    "sagaline_dead_letters",
    "Dead letters written, by the component that wrote them and the error type",
    ["component", "reason"],
)
RESTORE_SECONDS = Histogram(
    "sagaline_restore_duration_seconds",
    "Time to restore newly assigned state partitions",
    buckets=_LATENCY,
)

#: a lag this small is counted record by record (markers of transactions are no records)
_COUNT_BELOW = 100

_TERMINAL = frozenset({"completed", "compensated", "failed", "cancelled"})


def serve_metrics(port: int, host: str = "0.0.0.0") -> bool:  # noqa: S104
    """Serve ``/metrics`` on ``port`` in a daemon thread (``False`` when ``port`` is 0)."""
    if port <= 0:
        return False
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return True


def _status(state: object | None) -> str | None:
    status = getattr(state, "status", None)
    return status if isinstance(status, str) else None


def _final_status(state: object) -> str | None:
    status = _status(state)
    return status if status in _TERMINAL else None


def observe_batch(
    overlay: Mapping[str, object],
    partition_of: Mapping[str, int],
    owned: Mapping[int, Any],
    decided: int,
) -> None:
    """Count what one committed transaction changed: sagas started and ended, batch size.

    Called before the transaction's states are applied: ``overlay`` holds each
    changed saga's new state, ``owned`` (partition -> ``PartitionState``) the
    states before it.
    """
    if decided:
        BATCH_SIZE.observe(decided)
    for saga_id, state in overlay.items():
        saga_type = getattr(state, "saga_type", None)
        if not isinstance(saga_type, str):
            continue
        before = _previous(owned.get(partition_of.get(saga_id, -1)), saga_id)
        if before is None:
            SAGAS_STARTED.labels(saga_type).inc()
        final = _final_status(state)
        if final is not None and (before is None or _status(before) not in _TERMINAL):
            SAGAS_ENDED.labels(saga_type, final).inc()


def _previous(part: Any, saga_id: str) -> object | None:
    if part is None:
        return None
    state: object | None = part.active.get(saga_id)
    return state if state is not None else part.finished.get(saga_id)


def observe_commit(seconds: float) -> float:
    """Record one transaction's commit time; returns ``seconds`` (to add to the stats)."""
    COMMIT_SECONDS.observe(seconds)
    return seconds


def observe_step(
    saga_type: str, step: str, kind: str, attempt: int, outcome: str, s: float
) -> None:
    """Record one finished step (or compensation) attempt in a worker."""
    STEP_SECONDS.labels(saga_type, step, kind, outcome).observe(s)
    STEP_ATTEMPTS.labels(saga_type, step).observe(attempt)


def count_dead_letter(component: str, error_type: str) -> int:
    """Count one dead letter; returns 1 (to add to the component's own counter)."""
    DEAD_LETTERS.labels(component, error_type).inc()
    return 1


@contextlib.contextmanager
def restore_timer() -> Iterator[None]:
    """Time a restore into :data:`RESTORE_SECONDS`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        RESTORE_SECONDS.observe(time.perf_counter() - started)


class ApprovalCollector(Collector):
    """``sagaline_approvals_open{saga_type}``: open approval waits of the sagas a process holds.

    Computed at scrape time from the source given to :meth:`track` (the
    orchestrator's active sagas); nothing is reported before that.
    """

    def __init__(self) -> None:
        self._states: Callable[[], Iterable[object]] | None = None

    def track(self, states: Callable[[], Iterable[object]]) -> None:
        """Report the open approvals among ``states()`` from now on."""
        self._states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sagaline_approvals_open", "Open approval waits of active sagas", labels=["saga_type"]
        )
        counts: dict[str, int] = {}
        for _ in range(3):  # the engine thread may change the dicts while we copy them
            try:
                counts = approvals_by_type(list(self._states() if self._states else ()))
                break
            except RuntimeError:
                continue
        for saga_type, n in sorted(counts.items()):
            family.add_metric([saga_type], n)
        yield family


#: the one collector of open approvals (registered at import)
APPROVALS_OPEN = ApprovalCollector()
REGISTRY.register(APPROVALS_OPEN)


class LagMonitor:
    """Samples a consumer group's lag per partition every ``interval`` seconds.

    Lag = the partition's end (the last stable offset under read_committed)
    minus the group's committed offset, read with a consumer that joins no
    group, so it never disturbs the process's own consumer.  A consumer that
    keeps its offsets elsewhere (the projection: in PostgreSQL) passes
    ``committed``, returning ``{(topic, partition): next offset}``.
    """

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: Iterable[str],
        *,
        interval: float = 5.0,
        committed: Callable[[], Mapping[tuple[str, int], int]] | None = None,
    ) -> None:
        self.group = group
        self._committed = committed
        self.topics = tuple(topics)
        self.interval = interval
        self._consumer = Consumer(reader_config(bootstrap, group))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sagaline-lag", daemon=True)

    def start(self) -> LagMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # a sample that fails is skipped, never fatal
                log.debug("lag sample of %s failed: %s", self.group, exc)
            self._stop.wait(self.interval)
        self._consumer.close()

    def sample(self) -> dict[tuple[str, int], int]:
        """Sample once; the lag of every partition of the topics."""
        parts: list[TopicPartition] = []
        metadata = self._consumer.list_topics(timeout=5)
        for topic in self.topics:
            found = metadata.topics.get(topic)
            if found is not None and found.error is None:
                parts.extend(TopicPartition(topic, p) for p in sorted(found.partitions))
        lags: dict[tuple[str, int], int] = {}
        if self._committed is not None:
            stored = self._committed()
            for tp in parts:
                tp.offset = stored.get((tp.topic, tp.partition), -1)
        else:
            parts = self._consumer.committed(parts, timeout=5)
        for tp in parts:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=5)
            start = tp.offset if tp.offset >= 0 else low
            lag = max(0, high - start)
            if 0 < lag <= _COUNT_BELOW:
                lag = self._records_between(tp.topic, tp.partition, start, high)
            lags[(tp.topic, tp.partition)] = lag
            CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(lag)
        return lags

    def _records_between(self, topic: str, partition: int, start: int, end: int) -> int:
        """The records in ``[start, end)``: transaction markers take offsets but are no
        records, so a caught-up consumer of transactional writes is not behind."""
        self._consumer.assign([TopicPartition(topic, partition, start)])
        count = 0
        deadline = time.monotonic() + 2.0
        try:
            while time.monotonic() < deadline:
                msg = self._consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error() is not None:
                    break  # the partition's end (read_committed: its last stable offset)
                if (msg.offset() or 0) >= end:
                    break
                count += 1
        finally:
            self._consumer.unassign()
        return count
