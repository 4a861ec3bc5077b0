"""Helpers for the orchestrator's integration and chaos tests (real Kafka).

* :class:`Responder` (from ``sagaline.orchestrator.bench.responder``) — a worker-like
  responder: answers each task with a success reply in a Kafka transaction.
* :func:`read_committed` — reads a whole topic with a read_committed consumer.
* :func:`fresh_prefix` — unique topic prefix per test.
* :class:`Running` — an in-process orchestrator on a thread for a ``with`` block.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from sagaline.orchestrator.bench.responder import Responder
from sagaline.orchestrator.runtime.engine import Orchestrator
from sagaline.orchestrator.runtime.kafka_config import admin_config, reader_config
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import TASK_TYPES, CompensateStep, ExecuteStep

__all__ = [
    "ReadRecord",
    "Responder",
    "Running",
    "check_saga_invariants",
    "delete_prefix_topics",
    "fresh_prefix",
    "journals",
    "latest_snapshots",
    "read_committed",
    "wait_all_terminal",
]

log = logging.getLogger(__name__)


class Running:
    """Runs an orchestrator on a thread; on exit, stops it and re-raises what it raised
    (also during shutdown), unless ``raise_errors=False`` (the test checks ``error``)."""

    def __init__(
        self, orch: Orchestrator, *, raise_errors: bool = True, join_s: float = 30.0
    ) -> None:
        self.orch = orch
        self.raise_errors = raise_errors
        self.join_s = join_s
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.orch.run()
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.orch.request_stop()
        self.thread.join(self.join_s)
        if exc_type is not None:
            return  # the test's own failure comes first
        if self.thread.is_alive():
            raise AssertionError(f"the orchestrator did not stop within {self.join_s:g} s")
        if self.raise_errors and self.error is not None:
            raise AssertionError(f"the orchestrator raised: {self.error!r}") from self.error


def fresh_prefix(tag: str) -> str:
    """A unique topic prefix so concurrent tests never share topics."""
    return f"t-orch-{tag}-{uuid.uuid4().hex[:8]}"


def bootstrap_from_env() -> str | None:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS")


@dataclass
class ReadRecord:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)


def read_committed(bootstrap: str, topic: str, timeout: float = 30.0) -> list[ReadRecord]:
    """Every committed record of ``topic`` (all partitions), in partition order."""
    reader = Consumer(reader_config(bootstrap, f"verify-{uuid.uuid4().hex[:8]}"))
    try:
        meta = reader.list_topics(topic, timeout=10)
        parts = sorted(meta.topics[topic].partitions)
        ends: dict[int, int] = {}
        assign = []
        for p in parts:
            low, high = reader.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10, cached=False
            )
            ends[p] = high
            if high > low:
                assign.append(TopicPartition(topic, p, low))
        out: list[ReadRecord] = []
        pending = {tp.partition for tp in assign}
        if not pending:
            return out
        reader.assign(assign)
        import time

        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in reader.consume(500, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if (msg.offset() or 0) >= ends[msg.partition() or 0]:
                            pending.discard(msg.partition() or 0)
                        continue
                    if err.fatal():
                        raise KafkaException(err)
                    log.info("reading %s: %s (retrying)", topic, err)
                    continue
                key = msg.key()
                raw_headers = msg.headers() or []
                pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
                headers = {k: v for k, v in pairs if isinstance(v, bytes)}
                out.append(
                    ReadRecord(
                        topic,
                        msg.partition() or 0,
                        msg.offset() or 0,
                        key.decode() if key is not None else None,
                        msg.value(),
                        headers,
                    )
                )
            for tp in reader.position([TopicPartition(topic, p) for p in list(pending)]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)
        if pending:
            raise AssertionError(f"could not read {topic} partitions {sorted(pending)} to the end")
        return out
    finally:
        reader.close()


def latest_snapshots(bootstrap: str, prefix: str, codec: Codec) -> dict[str, SagaState]:
    """The latest committed state snapshot of every saga (tombstoned ones omitted)."""
    states: dict[str, SagaState] = {}
    for rec in read_committed(bootstrap, f"{prefix}.state"):
        assert rec.key is not None
        if rec.value is None:
            states.pop(rec.key, None)
            continue
        state = codec.decode(rec.value, (SagaState,))
        assert isinstance(state, SagaState)
        states[rec.key] = state
    return states


def wait_all_terminal(
    bootstrap: str, prefix: str, codec: Codec, ids: Sequence[str], timeout: float
) -> dict[str, SagaState]:
    """Poll the state topic until every saga in ``ids`` is terminal."""
    import time

    deadline = time.monotonic() + timeout
    states: dict[str, SagaState] = {}
    while time.monotonic() < deadline:
        states = latest_snapshots(bootstrap, prefix, codec)
        if all(i in states and states[i].is_terminal for i in ids):
            return states
        time.sleep(0.2)
    unfinished = [i for i in ids if i not in states or not states[i].is_terminal]
    sample = [
        (i, states[i].status, states[i].node) if i in states else (i, None, None)
        for i in unfinished[:3]
    ]
    raise AssertionError(f"{len(unfinished)} of {len(ids)} sagas not terminal, e.g. {sample}")


def journals(bootstrap: str, prefix: str, codec: Codec) -> dict[str, list[JournalEntry]]:
    """Every committed journal entry, per saga, in topic order."""
    out: dict[str, list[JournalEntry]] = {}
    for rec in read_committed(bootstrap, f"{prefix}.journal"):
        assert rec.key is not None and rec.value is not None
        entry = codec.decode(rec.value, (JournalEntry,))
        assert isinstance(entry, JournalEntry)
        out.setdefault(rec.key, []).append(entry)
    return out


def check_saga_invariants(
    bootstrap: str, prefix: str, codec: Codec, ids: Sequence[str]
) -> dict[str, SagaState]:
    """The orchestrator's exactly-once invariants over committed topic contents.

    * every saga is terminal;
    * each saga's journal is one unbroken hash chain (no duplicate or lost entry);
    * no step is dispatched after its completion was journaled;
    * the state snapshot equals the fold of the journal;
    * every task on the tasks topic appears once (no duplicate dispatch).
    """
    from sagaline.orchestrator.core.journal import fold_journal, verify_chain
    from sagaline.schemas.events import StepCompleted, StepDispatched

    states = latest_snapshots(bootstrap, prefix, codec)
    by_saga = journals(bootstrap, prefix, codec)
    for saga_id in ids:
        state = states.get(saga_id)
        assert state is not None, f"{saga_id}: no snapshot"
        assert state.is_terminal, f"{saga_id}: {state.status}"
        entries = by_saga.get(saga_id, [])
        problems = verify_chain(entries)
        assert not problems, f"{saga_id}: {problems}"
        completed: set[str] = set()
        for entry in entries:
            for event in entry.events:
                if isinstance(event, StepCompleted):
                    completed.add(event.step)
                if isinstance(event, StepDispatched):
                    assert event.step not in completed, (
                        f"{saga_id}: {event.step} dispatched after it completed"
                    )
        folded = fold_journal(entries)
        assert folded == state, f"{saga_id}: state topic differs from the fold of the journal"
    task_ids = [
        t.task_id
        for r in read_committed(bootstrap, f"{prefix}.tasks")
        if r.value is not None
        for t in [codec.decode(r.value, TASK_TYPES)]
        if isinstance(t, ExecuteStep | CompensateStep)
    ]
    dupes = [t for t, n in Counter(task_ids).items() if n > 1]
    assert not dupes, f"tasks published more than once: {dupes[:5]}"
    return states


def delete_prefix_topics(bootstrap: str, prefix: str) -> None:
    """Best-effort removal of every topic under ``prefix`` (keeps the broker small)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(admin_config(bootstrap))
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(f"{prefix}.")]
    if not names:
        return
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result(30)
        except KafkaException:
            continue
