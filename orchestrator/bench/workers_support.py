"""Shared pieces of the worker benchmarks: a reply tail and percentile summaries."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Sequence

from confluent_kafka import Consumer

from sagaline.orchestrator.runtime.kafka_config import group_consumer_config
from sagaline.schemas.codec import default_codec
from sagaline.schemas.replies import REPLY_TYPES, StepHeartbeat

__all__ = ["ReplyTail", "summary"]


class ReplyTail:
    """Records when each reply arrives and its Kafka CreateTime, by task id (or saga id)."""

    def __init__(self, bootstrap: str, topic: str, *, key: str = "task") -> None:
        self._by_saga = key == "saga"
        self.arrived: dict[str, tuple[float, float]] = {}
        self._codec = default_codec()
        self._stop = threading.Event()
        self._consumer = Consumer(
            group_consumer_config(
                bootstrap, f"bench-reader-{uuid.uuid4().hex}", fetch_wait_max_ms=5
            )
        )
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._consumer.poll(0.05)
            if msg is None or msg.error() is not None or msg.value() is None:
                continue
            now = time.time()
            record = self._codec.decode(msg.value() or b"", REPLY_TYPES)
            if isinstance(record, StepHeartbeat):
                continue
            envelope = getattr(record, "envelope", None)
            if self._by_saga and envelope is not None:
                ident = str(envelope.saga_id)
            else:
                ident = str(getattr(record, "task_id", ""))
            created = msg.timestamp()[1] / 1000.0
            self.arrived.setdefault(ident, (now, created))

    def wait_for(self, task_ids: Sequence[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(t in self.arrived for t in task_ids):
                return True
            time.sleep(0.005)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

    return {
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
        "n": len(ordered),
    }
