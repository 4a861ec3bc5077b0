"""``sagaline bench replay``: audit replay read from Kafka, and restore of parked sagas.

Goal 8 of issue 11.  Both figures run on the configured Kafka with fresh topics:

* **journal**: ``--sagas`` sagas (one step, a manager approval, one step) are
  driven through the real decider and journaled with the real
  ``record_decision``; their entries are written to a journal topic, then
  read back with :func:`~sagaline.orchestrator.runtime.journal_reader.read_journal`
  (read_committed, decoded) and audited with
  :func:`~sagaline.orchestrator.audit.audit_entries` (hash chains, folds):
  journal events per second read, and read + audited.
* **restore**: ``--parked`` sagas parked at the approval (one real parked snapshot,
  its saga id changed per copy) are written to a state topic, then restored the
  way an orchestrator restores on assignment
  (:func:`~sagaline.orchestrator.runtime.restore.restore_partitions`): seconds
  for all of them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from pydantic import BaseModel

from sagaline.orchestrator.audit import audit_entries
from sagaline.orchestrator.bench.e2e import goal
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.decider import Input, Outgoing, decide, derive_message_id
from sagaline.orchestrator.core.journal import record_decision
from sagaline.orchestrator.core.payloads import input_sha256, to_payload
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.saga import Saga, approval, step
from sagaline.orchestrator.runtime.core import AvroCodec, CoreLogic
from sagaline.orchestrator.runtime.journal_reader import read_journal
from sagaline.orchestrator.runtime.kafka_config import (
    admin_config,
    client_producer_config,
    reader_config,
)
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.orchestrator.runtime.restore import RestoredPartition, restore_partitions
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
from sagaline.orchestrator.runtime.snapshots import LazySnapshot, hints_key, snapshot_headers
from sagaline.orchestrator.runtime.topics import TopicLayout, ensure_topics
from sagaline.schemas.base import Envelope
from sagaline.schemas.commands import SignalSaga, StartSaga
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.replies import StepSucceeded
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import ExecuteStep

__all__ = ["run_replay"]

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


class ParkData(BaseModel):
    """Saga data of the parked saga."""

    n: int = 0


class Parked(Saga[ParkData]):
    """A step, a manager approval, a step."""

    type_name = "bench.parked"

    @step(compensate=None, uses_db=False)
    def prepare(self, ctx: StepContext, data: ParkData) -> None:
        return None

    manager = approval(timeout=timedelta(days=7))

    @step(compensate=None, uses_db=False)
    def finish(self, ctx: StepContext, data: ParkData) -> None:
        return None


class _Run:
    """One saga through the decider, journaled as the orchestrator journals it."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        self.state: SagaState | None = None
        self.entries: list[JournalEntry] = []
        self.pending: list[Outgoing] = []
        self.counter = 0

    def envelope(self, tag: str) -> Envelope:
        self.counter += 1
        return Envelope(
            message_id=derive_message_id(self.saga_id, tag, self.counter),
            saga_id=self.saga_id,
            saga_type=Parked.type_name,
            saga_version=Parked.version,
            occurred_at=_T0 + timedelta(seconds=self.counter),
            correlation_id=self.saga_id,
        )

    def feed(self, inp: Input) -> None:
        decision = decide(Parked, self.state, inp)
        entry, self.state = record_decision(self.state, inp, decision)
        if entry is not None:
            self.entries.append(entry)
        self.pending.extend(decision.outgoing)

    def start(self) -> None:
        payload = to_payload(ParkData())
        self.feed(
            StartSaga(
                envelope=self.envelope("start"),
                data=payload,
                input_sha256=input_sha256(payload),
                requested_by="bench",
            )
        )

    def work(self) -> None:
        while self.pending:
            task = self.pending.pop(0).record
            if isinstance(task, ExecuteStep):
                self.feed(StepSucceeded.for_task(task, envelope=self.envelope("reply")))

    def approve(self) -> None:
        self.feed(
            SignalSaga(envelope=self.envelope("signal"), name="manager", by="m", approved=True)
        )


def _produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    headers: Callable[[bytes, bytes], list[tuple[str, str | bytes | None]]] | None = None,
) -> None:
    # journal entries and snapshots, signed as the orchestrator they stand in for (with
    # signing on, restore skips an unsigned snapshot and the audit reports an unsigned entry)
    producer = SignedProducer(client_producer_config(bootstrap, linger_ms=5), "orchestrator")
    for key, value in records:
        while True:
            try:
                extra = headers(key, value) if headers is not None else None
                producer.produce(topic, key=key, value=value, headers=extra)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError(f"records for {topic} not confirmed by Kafka")


def _journal(bootstrap: str, names: TopicNames, sagas: int) -> dict[str, Any]:
    codec = AvroCodec()
    entries: list[JournalEntry] = []
    for i in range(sagas):
        run = _Run(f"j-{i}")
        run.start()
        run.work()
        run.approve()
        run.work()
        entries.extend(run.entries)
    _produce(
        bootstrap,
        names.journal,
        [(e.envelope.saga_id.encode(), codec.encode(e)) for e in entries],
    )
    t0, c0 = time.perf_counter(), time.process_time()
    read = read_journal(bootstrap, names.journal, timeout=300)
    read_s, read_cpu = time.perf_counter() - t0, time.process_time() - c0
    by_saga = read.by_saga()
    report = audit_entries(by_saga, topic=names.journal, undecodable=read.undecodable)
    total_s, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    events = len(read.records)
    return {
        "sagas": sagas,
        "journal_events": events,
        "read_s": round(read_s, 3),
        "read_events_per_s": round(events / read_s),
        "read_and_audit_s": round(total_s, 3),
        "read_and_audit_events_per_s": round(events / total_s),
        # wall clock on a shared machine understates an idle one: CPU per event too
        "read_and_audit_cpu_us_per_event": round(1e6 * total_cpu / max(1, events), 1),
        "read_and_audit_events_per_cpu_s": round(events / max(total_cpu, 1e-9)),
        "read_cpu_us_per_event": round(1e6 * read_cpu / max(1, events), 1),
        "audit_findings": len(report.findings),
    }


def _restore(bootstrap: str, names: TopicNames, parked: int, partitions: int) -> dict[str, Any]:
    codec = AvroCodec()
    run = _Run("parked-template")
    run.start()
    run.work()
    template = run.state
    assert template is not None and not template.is_terminal
    records = []
    for i in range(parked):
        saga_id = f"p-{i}"
        state = template.model_copy(update={"saga_id": saga_id})
        records.append((saga_id.encode(), codec.encode(state)))
    logic = CoreLogic(SagaRegistry([Parked]))
    # the hints the orchestrator writes beside an active snapshot (the same for every copy)
    mac_key = hints_key()
    _produce(
        bootstrap,
        names.state,
        records,
        lambda key, value: snapshot_headers(logic, template, names.state, key, value, mac_key),
    )
    reader = Consumer(reader_config(bootstrap, f"bench-restore-{uuid.uuid4().hex}"))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        restored = restore_partitions(
            reader, names.state, range(partitions), codec, logic, timeout=300
        )
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        first_use = _first_use(restored, codec, logic)
    finally:
        reader.close()
    active = sum(len(p.active) for p in restored.values())
    return {
        "parked_sagas": parked,
        "restored_active": active,
        "partitions": partitions,
        "seconds": round(seconds, 3),
        "sagas_per_s": round(active / seconds),
        "cpu_s": round(cpu, 3),
        "cpu_us_per_saga": round(1e6 * cpu / max(1, active), 1),
        "left_unread": first_use["unread"],
        # what restore no longer pays, paid by each saga when first needed (an input, a timer)
        "first_use_cpu_us_per_saga": first_use["cpu_us_per_saga"],
    }


def _first_use(
    restored: dict[int, RestoredPartition], codec: Codec, logic: CoreLogic
) -> dict[str, Any]:
    """Load up to 2,000 of the sagas restore left unread, as their first input would."""
    unread = [
        s for p in restored.values() for s in p.active.values() if isinstance(s, LazySnapshot)
    ]
    sample = unread[:2000]
    c0 = time.process_time()
    loaded = [lazy.load(codec, logic) for lazy in sample]
    cpu = time.process_time() - c0
    if any(getattr(state, "status", None) != "waiting" for state in loaded):
        raise RuntimeError("a parked snapshot restore left unread did not load as parked")
    return {"unread": len(unread), "cpu_us_per_saga": round(1e6 * cpu / max(1, len(sample)), 1)}


def run_replay(*, bootstrap: str, sagas: int, parked: int, partitions: int = 4) -> dict[str, Any]:
    """Run both figures on fresh topics (deleted afterwards); returns the JSON-able report."""
    names = TopicNames(f"bench-replay-{uuid.uuid4().hex[:8]}")
    ensure_topics(bootstrap, names, TopicLayout(partitions))
    report: dict[str, Any] = {
        "benchmark": "sagaline replay and restore (real Kafka)",
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        report["journal"] = _journal(bootstrap, names, sagas)
        report["restore"] = _restore(bootstrap, names, parked, partitions)
    finally:
        admin = AdminClient(admin_config(bootstrap))
        for future in admin.delete_topics(list(names.all())).values():
            future.result(30)
    restore_s = report["restore"]["seconds"] * 100_000 / max(1, parked)
    restore_cpu_s = report["restore"]["cpu_s"] * 100_000 / max(1, parked)
    journal = report["journal"]
    report["goals"] = {
        "goal8_audit_replay_events_per_s": goal(
            journal["read_and_audit_events_per_s"], 200_000, at_least=True
        ),
        "goal8_audit_replay_events_per_cpu_s": goal(
            journal["read_and_audit_events_per_cpu_s"], 200_000, at_least=True
        ),
        "goal8_restore_100k_parked_s": goal(round(restore_s, 3), 2.0),
        "goal8_restore_100k_parked_cpu_s": goal(round(restore_cpu_s, 3), 2.0),
    }
    return report
