"""Real journals for the replay, audit and projection tests.

Sagas are run through the real decider (:func:`sagaline.orchestrator.core.decider.decide`)
and every decision is recorded with :func:`sagaline.orchestrator.core.journal.record_decision`,
so the entries are exactly what the orchestrator journals.  A tiny in-memory
"worker" answers each dispatched task with a success (or the failure the test
asks for).  Tests then tamper with the entries to prove the audit fires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from sagaline.orchestrator.core.decider import (
    Input,
    Outgoing,
    decide,
    derive_message_id,
    timer_input,
)
from sagaline.orchestrator.core.journal import entry_hash, record_decision
from sagaline.orchestrator.core.payloads import input_sha256, to_payload
from sagaline.orchestrator.core.saga import Saga, approval, step
from sagaline.schemas.base import Envelope, Usage
from sagaline.schemas.commands import CancelSaga, SignalSaga, StartSaga
from sagaline.schemas.journal import JournalEntry
from sagaline.schemas.replies import CompensationSucceeded, StepFailed, StepSucceeded
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

__all__ = [
    "CHANGED",
    "JOURNAL_TOPIC_CONFIG",
    "REGISTRY",
    "T0",
    "Refund",
    "RefundData",
    "RefundShorterTimeout",
    "SagaRun",
    "publish_journal",
    "refund_saga",
    "rehash",
    "renumber",
    "run_refund",
    "wait_until_stable",
]

T0 = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)


def _journal_topic_config() -> dict[str, str]:
    from sagaline.orchestrator.config import TopicNames
    from sagaline.orchestrator.runtime.topics import topic_specs

    names = TopicNames("t")
    (spec,) = [s for s in topic_specs(names) if s.name == names.journal]
    return dict(spec.config)


#: the journal topic's configuration as ``sagaline topics`` creates it (kept forever).
#: A test journal must be created with it: the entries carry their envelope time (T0,
#: months ago) as CreateTime, and a topic under the broker's default retention (7
#: days) loses them at the broker's next retention check (30 s after it starts, then
#: every 5 min), under whichever test is reading them then.
JOURNAL_TOPIC_CONFIG = _journal_topic_config()


class RefundData(BaseModel):
    customer_id: int = 12345
    amount_cents: int = 15_000
    eligible: bool = False
    record_updated: bool = False
    reversed: bool = False
    notified: bool = False


def refund_saga(
    *,
    approval_timeout: timedelta = timedelta(days=7),
    with_fraud_check: bool = False,
) -> type[Saga[RefundData]]:
    """The refund ``test.refund`` v1, as deployed or as a later deploy changed it:
    ``approval_timeout`` of the manager approval, a new ``fraud_check`` step before
    the record update (``with_fraud_check``)."""

    class Refund(Saga[RefundData]):
        """Check eligibility → update the record → manager approval → reverse → notify."""

        type_name = "test.refund"
        version = 1

        @step(compensate=None)
        def check_eligibility(self, ctx: Any, data: RefundData) -> None:
            return None

        if with_fraud_check:

            @step(compensate=None)
            def fraud_check(self, ctx: Any, data: RefundData) -> None:
                return None

        @step
        def update_record(self, ctx: Any, data: RefundData) -> None:
            return None

        @update_record.compensation
        def undo_update_record(self, ctx: Any, data: RefundData) -> None:
            return None

        manager_ok = approval(timeout=approval_timeout)

        @step
        def reverse_payment(self, ctx: Any, data: RefundData) -> None:
            return None

        @reverse_payment.compensation
        def undo_reverse_payment(self, ctx: Any, data: RefundData) -> None:
            return None

        @step(compensate=None)
        def notify(self, ctx: Any, data: RefundData) -> None:
            return None

    return Refund


Refund = refund_saga()
"""The refund as the recorded journals were written."""

RefundShorterTimeout = refund_saga(approval_timeout=timedelta(days=1))
"""Same steps, but the approval now times out after one day."""

REGISTRY = [Refund]
"""What ``--sagas journal_builders:REGISTRY`` loads (the code that wrote the journals)."""

CHANGED = [RefundShorterTimeout]
"""A deploy that changed the approval timeout (diverges from recorded journals)."""


Failure = Callable[[ExecuteStep], bool]


@dataclass
class SagaRun:
    """One saga driven through the decider; ``entries`` is its journal."""

    definition: type[Saga[Any]]
    saga_id: str
    now: datetime = T0
    state: SagaState | None = None
    entries: list[JournalEntry] = field(default_factory=list)
    pending: list[Outgoing] = field(default_factory=list)
    counter: int = 0

    def feed(self, inp: Input) -> None:
        decision = decide(self.definition, self.state, inp)
        entry, self.state = record_decision(self.state, inp, decision)
        if entry is not None:
            self.entries.append(entry)
        self.pending.extend(decision.outgoing)

    def envelope(self, tag: str) -> Envelope:
        self.counter += 1
        self.now = self.now + timedelta(seconds=1)
        return Envelope(
            message_id=derive_message_id(self.saga_id, tag, self.counter),
            saga_id=self.saga_id,
            saga_type=self.definition.type_name,
            saga_version=self.definition.version,
            occurred_at=self.now,
            correlation_id=self.saga_id,
        )

    def start(self, data: BaseModel) -> None:
        payload = to_payload(data)
        self.feed(
            StartSaga(
                envelope=self.envelope("start"),
                data=payload,
                input_sha256=input_sha256(payload),
                requested_by="tests",
            )
        )

    def work(self, fail: Failure | None = None, *, usage_tokens: int = 0) -> None:
        """Answer every pending task (repeatedly) until none is left."""
        while self.pending:
            out = self.pending.pop(0)
            task = out.record
            if isinstance(task, ExecuteStep):
                if fail is not None and fail(task):
                    self.feed(
                        StepFailed.for_task(
                            task,
                            envelope=self.envelope("reply"),
                            retryable=False,
                            error_type="Declined",
                            error_message="declined by the bank",
                        )
                    )
                else:
                    usage = Usage(llm_calls=1 if usage_tokens else 0, tokens_in=usage_tokens)
                    self.feed(
                        StepSucceeded.for_task(task, envelope=self.envelope("reply"), usage=usage)
                    )
            elif isinstance(task, CompensateStep):
                self.feed(CompensationSucceeded.for_task(task, envelope=self.envelope("creply")))

    def signal(self, name: str, *, approved: bool, by: str) -> None:
        self.feed(SignalSaga(envelope=self.envelope("signal"), name=name, by=by, approved=approved))

    def cancel(self, by: str) -> None:
        self.feed(CancelSaga(envelope=self.envelope("cancel"), by=by, reason="test"))

    def fire_timers(self, advance: timedelta) -> None:
        """Advance the clock by ``advance`` and fire every timer that is due."""
        assert self.state is not None
        self.now = self.now + advance
        for timer in sorted(self.state.timers, key=lambda t: t.due_at):
            if timer.due_at <= self.now and self.state is not None:
                self.feed(timer_input(self.state, timer, self.now))

    def redeliver_last_reply(self) -> None:
        """Feed the last recorded input again (a duplicate, which the decider ignores)."""
        last = self.entries[-1].input
        assert last is not None
        self.feed(last)


def run_refund(
    saga_id: str,
    outcome: str = "approved",
    *,
    definition: type[Saga[Any]] = Refund,
    approver: str = "manager@example.com",
) -> SagaRun:
    """A refund run to its end: ``approved``, ``rejected``, ``timeout``, ``failed_reverse``,
    ``failed_notify`` (two compensations), ``waiting`` (stops at the approval) or
    ``cancelled`` (cancelled while waiting)."""
    run = SagaRun(definition, saga_id)
    run.start(RefundData())
    run.work()
    if outcome == "waiting":
        return run
    if outcome == "cancelled":
        run.cancel(by="operator@example.com")
        run.work()
        return run
    if outcome == "timeout":
        run.fire_timers(timedelta(days=8))
        run.work()
        return run
    run.signal("manager_ok", approved=outcome != "rejected", by=approver)
    if outcome == "failed_reverse":
        run.work(fail=lambda task: task.step == "reverse_payment")
    elif outcome == "failed_notify":
        run.work(fail=lambda task: task.step == "notify")
    else:
        run.work()
    return run


def rehash(entries: Sequence[JournalEntry], start: int = 0) -> list[JournalEntry]:
    """Re-sign ``entries[start:]`` so the chain is valid again (a careful forger)."""
    out = list(entries[:start])
    prev = out[-1].hash if out else "0" * 64
    for entry in entries[start:]:
        unsigned = entry.model_copy(update={"prev_hash": prev, "hash": ""})
        signed = unsigned.model_copy(update={"hash": entry_hash(unsigned)})
        out.append(signed)
        prev = signed.hash
    return out


def renumber(entries: Iterable[JournalEntry]) -> list[JournalEntry]:
    """Give ``entries`` contiguous seqs from 1 and a valid chain."""
    numbered = [e.model_copy(update={"seq": i}) for i, e in enumerate(entries, start=1)]
    return rehash(numbered)


def publish_journal(
    bootstrap: str,
    topic: str,
    entries: Iterable[JournalEntry],
    *,
    transactional_id: str,
    abort: bool = False,
    raw: Iterable[tuple[str, bytes]] = (),
    signer: str | None = "orchestrator",
) -> None:
    """Write ``entries`` (keyed by saga id, timestamped with their envelope time) and any
    ``raw`` (key, bytes) records in one Kafka transaction, committed or ``abort``-ed;
    signed as ``signer`` when signing is on (as the orchestrator signs its journal),
    unsigned when ``signer`` is ``None``."""
    from confluent_kafka import Producer

    from sagaline.orchestrator.runtime.kafka_config import transactional_producer_config
    from sagaline.orchestrator.runtime.signing_runtime import SignedProducer
    from sagaline.schemas.codec import default_codec

    codec = default_codec()
    config = transactional_producer_config(bootstrap, transactional_id)
    producer = Producer(config) if signer is None else SignedProducer(config, signer)
    producer.init_transactions(30)
    producer.begin_transaction()
    for entry in entries:
        producer.produce(
            topic,
            key=entry.envelope.saga_id.encode(),
            value=codec.encode(entry),
            timestamp=int(entry.envelope.occurred_at.timestamp() * 1000),
        )
    for key, value in raw:
        producer.produce(topic, key=key.encode(), value=value)
    producer.flush(30)
    if abort:
        producer.abort_transaction(30)
    else:
        producer.commit_transaction(30)
    wait_until_stable(bootstrap, topic)


def wait_until_stable(bootstrap: str, topic: str, timeout: float = 30.0) -> None:
    """Wait until every partition's last stable offset reached its high watermark.

    ``commit_transaction`` returns once the commit is decided; the markers
    reach the partitions a little later, and until then a read_committed
    reader's end offset stops before the new records.
    """
    import time
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    from sagaline.orchestrator.runtime.kafka_config import reader_config

    def consumer(isolation: str) -> Consumer:
        group = f"stable-{uuid.uuid4().hex}"
        return Consumer(reader_config(bootstrap, group, extra={"isolation.level": isolation}))

    committed, uncommitted = consumer("read_committed"), consumer("read_uncommitted")
    try:
        partitions = committed.list_topics(topic, timeout=10).topics[topic].partitions
        deadline = time.monotonic() + timeout
        while True:
            lagging = [
                p
                for p in partitions
                if committed.get_watermark_offsets(TopicPartition(topic, p), 10, False)[1]
                < uncommitted.get_watermark_offsets(TopicPartition(topic, p), 10, False)[1]
            ]
            if not lagging:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic} partitions {lagging} not stable after {timeout}s")
            time.sleep(0.05)
    finally:
        committed.close()
        uncommitted.close()
