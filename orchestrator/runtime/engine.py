"""The exactly-once orchestrator loop.

One process = one consumer (commands + replies, read_committed, eager
``range`` assignment so partition *p* of both inputs lands on one member)
and one transactional producer.  Each batch is one Kafka transaction:

    decode → decide every input (and every due timer) → produce journal
    entries, the latest state snapshot of each touched saga, outgoing tasks /
    commands / replies, dead letters and due tombstones →
    ``send_offsets_to_transaction`` → ``commit_transaction``

In-memory state changes are staged in a per-batch overlay and applied only
after the commit succeeds; an abortable error aborts the transaction, seeks
the consumer back to the last committed offsets and drops the overlay.  A
fatal error raises :class:`FatalKafkaError` (exit non-zero, let the
supervisor restart the process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Tracer

from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.runtime.deadletter import dead_letter_from_message
from sagaline.orchestrator.runtime.errors import FatalKafkaError, InputRejected
from sagaline.orchestrator.runtime.kafka_config import (
    ConfigValue,
    input_consumer_config,
    reader_config,
    transactional_producer_config,
)
from sagaline.orchestrator.runtime.ports import Codec, SagaLogic
from sagaline.orchestrator.runtime.restore import restore_partitions
from sagaline.orchestrator.runtime.telemetry import (
    carrier_from_context,
    context_from_carrier,
    context_from_headers,
    get_tracer,
    headers_from_carrier,
    link_for,
)
from sagaline.orchestrator.runtime.timers import DueTimer, TimerWheel
from sagaline.orchestrator.runtime.transactions import Produce, TransactionalProducer
from sagaline.schemas.base import Record
from sagaline.schemas.commands import COMMAND_TYPES
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.replies import REPLY_TYPES

__all__ = ["TERMINAL_HEADER", "EngineConfig", "EngineStats", "Orchestrator"]

log = logging.getLogger(__name__)

#: header on state snapshots: ``true`` when the saga is terminal (lets readers skip decoding)
TERMINAL_HEADER = "sagaline-terminal"
#: reserved timer id of the "write the tombstone" timer of a finished saga
TOMBSTONE_TIMER = "__sagaline_tombstone__"


@dataclass(frozen=True)
class EngineConfig:
    """Tuning of one orchestrator process."""

    instance_id: str
    group_id: str = "sagaline-orchestrator"
    #: most inputs decided in one transaction
    max_batch: int = 500
    #: extra time to wait for more inputs once one arrived (0 = take what is there)
    linger_ms: float = 0.0
    #: longest blocking poll while idle (timers are checked at least this often)
    max_idle_s: float = 0.5
    #: how long a finished saga's terminal snapshot stays before its tombstone
    tombstone_grace_s: float = 86_400.0
    transaction_timeout_ms: int = 30_000
    producer_linger_ms: float = 0.5
    fetch_wait_max_ms: int = 5
    session_timeout_ms: int = 10_000
    #: ``group.instance.id`` = instance id: a restarted instance gets its partitions back at once
    static_membership: bool = True
    restore_timeout_s: float = 120.0
    producer_extra: Mapping[str, ConfigValue] = field(default_factory=dict)
    consumer_extra: Mapping[str, ConfigValue] = field(default_factory=dict)

    @property
    def transactional_id(self) -> str:
        """Stable per instance, so a restarted instance fences its own zombie."""
        return f"{self.group_id}-{self.instance_id}"


@dataclass
class EngineStats:
    """Counters (monotonic over the process lifetime)."""

    batches: int = 0
    inputs: int = 0
    decisions: int = 0
    timers_fired: int = 0
    dead_letters: int = 0
    tombstones: int = 0
    aborted_batches: int = 0
    restored_sagas: int = 0
    rebalances: int = 0
    #: wall time spent deciding (decode, decide, encode) and committing, in seconds
    decide_seconds: float = 0.0
    commit_seconds: float = 0.0


@dataclass
class _PartitionState:
    active: dict[str, Record] = field(default_factory=dict)
    finished: dict[str, Record] = field(default_factory=dict)


@dataclass
class _Batch:
    """What one transaction stages before it commits."""

    overlay: dict[str, Record] = field(default_factory=dict)
    partition_of: dict[str, int] = field(default_factory=dict)
    produces: list[Produce] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    fired: list[DueTimer] = field(default_factory=list)
    decided_timers: list[DueTimer] = field(default_factory=list)
    tombstoned: list[tuple[str, int]] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    inputs: int = 0
    decisions: int = 0
    timers: int = 0
    dead_letters: int = 0


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _saga_id_of(record: Record) -> str:
    envelope = getattr(record, "envelope", None)
    saga_id = getattr(envelope, "saga_id", None)
    if not isinstance(saga_id, str):
        raise InputRejected("NoEnvelope", f"{type(record).__name__} carries no envelope saga id")
    return saga_id


def _with_trace(record: Record, carrier: dict[str, str]) -> Record:
    envelope = getattr(record, "envelope", None)
    if envelope is None or not carrier:
        return record
    return record.model_copy(update={"envelope": envelope.model_copy(update={"trace": carrier})})


class Orchestrator:
    """Runs saga logic over Kafka with exactly-once transactions."""

    def __init__(
        self,
        settings: Settings,
        logic: SagaLogic,
        config: EngineConfig,
        *,
        codec: Codec,
        tracer: Tracer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.names = settings.topics
        self.logic = logic
        self.config = config
        self.codec = codec
        self.tracer = tracer or get_tracer()
        self.clock = clock
        self.stats = EngineStats()
        self._stop = threading.Event()
        self._fatal: KafkaError | None = None
        # consecutive aborted batches, and inputs whose decision cannot be committed
        self._aborts = 0
        self._isolate = 0
        self._single_failures: dict[tuple[str, int, int], int] = {}
        self._poison: dict[tuple[str, int, int], str] = {}
        self._timer_failures: dict[tuple[str, str], int] = {}
        self._bad_timers: dict[tuple[str, str], str] = {}
        self._epoch = 0
        self._assigned: set[tuple[str, int]] = set()
        self._positions: dict[tuple[str, int], int] = {}
        self._owned: dict[int, _PartitionState] = {}
        self._saga_partition: dict[str, int] = {}
        self._wheel = TimerWheel()
        self._input_types = {
            self.names.commands: COMMAND_TYPES,
            self.names.replies: REPLY_TYPES,
        }
        bootstrap = settings.kafka_bootstrap_servers
        self._producer = TransactionalProducer(
            transactional_producer_config(
                bootstrap,
                config.transactional_id,
                linger_ms=config.producer_linger_ms,
                transaction_timeout_ms=config.transaction_timeout_ms,
                extra=config.producer_extra,
            )
        )
        self._consumer = Consumer(
            input_consumer_config(
                bootstrap,
                config.group_id,
                instance_id=config.instance_id,
                fetch_wait_max_ms=config.fetch_wait_max_ms,
                session_timeout_ms=config.session_timeout_ms,
                static_membership=config.static_membership,
                extra={"error_cb": self._on_consumer_error, **config.consumer_extra},
            )
        )
        self._reader = Consumer(
            reader_config(bootstrap, f"{config.group_id}-restore-{config.instance_id}")
        )
        self._started = False

    # ------------------------------------------------------------------ public

    def request_stop(self) -> None:
        """Ask the loop to finish its current batch and leave the group."""
        self._stop.set()

    @property
    def owned_partitions(self) -> list[int]:
        """The state partitions this process currently owns."""
        return sorted(self._owned)

    def active_sagas(self) -> int:
        """How many non-terminal sagas are held in memory."""
        return sum(len(p.active) for p in self._owned.values())

    def start(self) -> None:
        """Fence earlier instances of this transactional id and join the group."""
        if self._started:
            return
        self._producer.init(60.0)
        self._consumer.subscribe(
            [self.names.commands, self.names.replies],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._started = True

    def run(self) -> None:
        """Run until :meth:`request_stop`; raises ``FatalKafkaError`` on fatal errors."""
        self.start()
        try:
            while not self._stop.is_set():
                self.run_once()
        finally:
            self.close()

    def run_once(self) -> None:
        """Poll, then decide and commit one batch if there is anything to do."""
        fatal = self._fatal or self._producer.fatal_error
        if fatal is not None:
            raise FatalKafkaError(f"fatal Kafka error: {fatal}")
        if self._isolate > 0:
            self._run_isolated()
            return
        messages = self._gather(self.config.max_batch)
        now = self.clock()
        next_due = self._wheel.next_due()
        if messages or (next_due is not None and next_due <= now):
            self._run_batch(messages, now, self.config.max_batch)

    def _run_isolated(self) -> None:
        """After repeated aborts: one due timer, or else one input, per transaction."""
        now = self.clock()
        next_due = self._wheel.next_due()
        if next_due is not None and next_due <= now:
            self._run_batch([], now, timer_limit=1)
            return
        messages = self._gather(1)
        if messages:
            self._run_batch(messages, self.clock(), timer_limit=0)

    def close(self) -> None:
        """Leave the group and release the clients (idempotent)."""
        if not self._started:
            return
        self._started = False
        try:
            self._consumer.close()
        except KafkaException as exc:
            log.warning("closing the consumer: %s", exc)
        self._reader.close()
        self._producer.flush(10.0)

    # ------------------------------------------------------------- callbacks

    def _on_consumer_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
        log.warning("consumer error: %s", err)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._epoch += 1
        self.stats.rebalances += 1
        # Committed offsets under read_committed are "stable": this waits until
        # any transaction of a previous owner that touches them is resolved, so
        # the state topic read next already contains that owner's writes.
        committed = self._stable_committed(consumer, partitions)
        new_parts = sorted({tp.partition for tp in partitions} - set(self._owned))
        with self.tracer.start_as_current_span(
            "sagaline restore", context=Context(), attributes={"sagaline.partitions": new_parts}
        ):
            restored = restore_partitions(
                self._reader,
                self.names.state,
                new_parts,
                self.codec,
                self.logic,
                timeout=self.config.restore_timeout_s,
            )
        for p, part in restored.items():
            self._owned[p] = _PartitionState(part.active, part.finished)
            for saga_id, state in part.active.items():
                self._saga_partition[saga_id] = p
                self._schedule(saga_id, state)
            for saga_id, state in part.finished.items():
                self._saga_partition[saga_id] = p
                self._schedule(saga_id, state)
            self.stats.restored_sagas += len(part.active)
        start: list[TopicPartition] = []
        for tp in committed:
            # never committed: start from the beginning (a logical offset that
            # send_offsets_to_transaction skips until the first input is decided)
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._positions[(tp.topic, tp.partition)] = offset
            self._assigned.add((tp.topic, tp.partition))
            start.append(TopicPartition(tp.topic, tp.partition, offset))
        consumer.assign(start)
        log.info("assigned %s", sorted(self._assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Transactions never span a poll, so nothing is open here: the last
        # batch of these partitions is already committed (or aborted).
        self._epoch += 1
        self.stats.rebalances += 1
        self._drop(partitions)
        consumer.unassign()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._epoch += 1
        self.stats.rebalances += 1
        self._drop(partitions)
        consumer.unassign()

    def _drop(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.discard((tp.topic, tp.partition))
            self._positions.pop((tp.topic, tp.partition), None)
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for marks in (self._poison, self._single_failures):
            for key in [k for k in marks if (k[0], k[1]) in gone]:
                del marks[key]
        self._aborts = self._isolate = 0
        still = {p for _t, p in self._assigned}
        for p in [p for p in self._owned if p not in still]:
            part = self._owned.pop(p)
            for saga_id in (*part.active, *part.finished):
                self._wheel.drop(saga_id)
                self._saga_partition.pop(saga_id, None)
            for timer_marks in (self._timer_failures, self._bad_timers):
                for tkey in [k for k in timer_marks if self._saga_partition.get(k[0]) is None]:
                    del timer_marks[tkey]
        log.info("revoked %s", sorted((tp.topic, tp.partition) for tp in partitions))

    def _stable_committed(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> list[TopicPartition]:
        deadline = time.monotonic() + self.config.transaction_timeout_ms / 1000 + 30
        while True:
            try:
                result: list[TopicPartition] = consumer.committed(partitions, timeout=10.0)
                return result
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise FatalKafkaError(f"cannot read committed offsets: {exc}") from exc
                log.info("committed offsets not stable yet (%s); retrying", exc)

    # ----------------------------------------------------------------- batch

    def _gather(self, limit: int) -> list[Message]:
        timeout = self.config.max_idle_s
        next_due = self._wheel.next_due()
        if next_due is not None:
            timeout = max(0.0, min(timeout, next_due - self.clock()))
        epoch = self._epoch
        first = self._consumer.poll(timeout)
        if first is None:
            if self._epoch != epoch:
                self._rewind()
            return []
        messages = [first]
        deadline = time.monotonic() + self.config.linger_ms / 1000
        while len(messages) < limit:
            more = self._consumer.consume(limit - len(messages), 0)
            messages.extend(more)
            if not more:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.0005)
        if self._epoch != epoch:
            # A rebalance ran inside poll/consume: which of the gathered
            # messages predate it is unknowable here, so drop them all and
            # restart every assigned partition from its committed offset.
            self._rewind()
            return []
        return messages

    def _state_of(self, batch: _Batch, saga_id: str, partition: int) -> Record | None:
        if saga_id in batch.overlay:
            return batch.overlay[saga_id]
        part = self._owned.get(partition)
        if part is None:
            return None
        state = part.active.get(saga_id)
        return state if state is not None else part.finished.get(saga_id)

    def _run_batch(self, messages: list[Message], now: float, timer_limit: int) -> None:
        batch = _Batch()
        started = time.perf_counter()
        accepted, batch.offsets = self._accept(messages)
        early = bool(accepted)
        if early:
            # the offsets are known before deciding: send them while we decide
            self._producer.begin(
                self._commit_offsets(batch.offsets), self._consumer.consumer_group_metadata
            )
        with self.tracer.start_as_current_span(
            "sagaline batch", context=Context(), kind=SpanKind.CONSUMER
        ) as span:
            for msg in accepted:
                self._handle_message(batch, msg, now)
            self._fire_timers(batch, now, timer_limit)
            for saga_id, state in batch.overlay.items():
                self._produce_state(batch, saga_id, state)
            for link in batch.links:
                span.add_link(link.context, link.attributes)
            span.set_attribute("sagaline.inputs", batch.inputs)
            span.set_attribute("sagaline.timers", batch.timers)
            span.set_attribute("sagaline.dead_letters", batch.dead_letters)
            deciding_done = time.perf_counter()
            committed = self._producer.finish(batch.produces) if early else self._transact(batch)
            self.stats.decide_seconds += deciding_done - started
            self.stats.commit_seconds += time.perf_counter() - deciding_done
            span.set_attribute("sagaline.committed", committed)
        keys = [(m.topic() or "", m.partition() or 0, m.offset() or 0) for m in messages]
        timers = [(t.saga_id, t.timer_id) for t in batch.decided_timers]
        if committed:
            self._aborts = 0
            self._isolate = max(0, self._isolate - len(keys) - len(timers))
            for key in keys:
                self._poison.pop(key, None)
                self._single_failures.pop(key, None)
            for timer_key in timers:
                self._timer_failures.pop(timer_key, None)
                self._bad_timers.pop(timer_key, None)
            self._apply(batch, now)
            return
        self._aborts += 1
        reason = self._producer.last_abort
        if len(keys) + len(timers) == 1:
            # one input alone cannot be committed (for example an output the broker
            # refuses): after its second failure it goes to the dead-letter topic
            if keys:
                failures = self._single_failures.get(keys[0], 0) + 1
                self._single_failures[keys[0]] = failures
                if failures >= 2:
                    self._poison[keys[0]] = reason
            else:
                failures = self._timer_failures.get(timers[0], 0) + 1
                self._timer_failures[timers[0]] = failures
                if failures >= 2:
                    self._bad_timers[timers[0]] = reason
        elif self._aborts >= 2:
            # the same batch failed twice: decide its inputs one per transaction
            self._isolate = max(self._isolate, len(keys) + len(timers))
        self._rollback(batch)

    def _accept(self, messages: list[Message]) -> tuple[list[Message], dict[tuple[str, int], int]]:
        """The messages to decide, in order, and the offsets that consume them."""
        accepted: list[Message] = []
        offsets: dict[tuple[str, int], int] = {}
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise FatalKafkaError(f"consumer: {err}")
                log.warning("consumer: %s", err)
                continue
            tp = (msg.topic() or "", msg.partition() or 0)
            if tp not in self._assigned:
                continue
            offset = msg.offset() or 0
            if offset < offsets.get(tp, self._positions.get(tp, 0)):
                continue  # already decided (a redelivery after a rewind): never twice
            offsets[tp] = offset + 1
            accepted.append(msg)
        return accepted, offsets

    def _commit_offsets(self, offsets: dict[tuple[str, int], int]) -> list[TopicPartition]:
        """Every assigned partition's position (KIP-447 fencing even for timer-only batches)."""
        merged = dict(self._positions)
        merged.update(offsets)
        return [
            TopicPartition(t, p, o)
            for (t, p), o in merged.items()
            if (t, p) in self._assigned and o >= 0
        ]

    def _handle_message(self, batch: _Batch, msg: Message, now: float) -> None:
        topic, partition = msg.topic() or "", msg.partition() or 0
        offset = msg.offset() or 0
        batch.inputs += 1
        refused = self._poison.get((topic, partition, offset))
        if refused is not None:
            reason = f"its decision could not be committed: {refused}"
            self._dead_letter(batch, msg, "OutputRejected", reason, now)
            return
        try:
            value = msg.value()
            if value is None:
                raise InputRejected("EmptyValue", "input message has no value")
            record = self.codec.decode(value, self._input_types[topic])
            saga_id = _saga_id_of(record)
            key = msg.key()
            if key is not None and key != saga_id.encode("utf-8"):
                raise InputRejected(
                    "KeyMismatch", f"message key {key!r} differs from envelope saga id {saga_id!r}"
                )
            parent = context_from_headers(msg.headers())
            if parent is None:
                parent = context_from_carrier(getattr(record, "envelope").trace)  # noqa: B009
            link = link_for(parent)
            if link is not None:
                batch.links.append(link)
            self._decide(batch, saga_id, partition, record, parent)
        except InputRejected as exc:
            self._dead_letter(batch, msg, exc.error_type, exc.reason, now)
        except Exception as exc:
            # undecodable bytes, invalid records, a decider bug: deterministic
            # for this input, so retrying cannot help; keep the partition flowing.
            self._dead_letter(batch, msg, type(exc).__name__, str(exc), now)

    def _decide(
        self,
        batch: _Batch,
        saga_id: str,
        partition: int,
        record: Record,
        parent: Context | None,
    ) -> None:
        state = self._state_of(batch, saga_id, partition)
        with self.tracer.start_as_current_span(
            f"sagaline decide {type(record).__name__}",
            context=parent,
            attributes={"sagaline.saga_id": saga_id, "messaging.kafka.partition": partition},
        ):
            outcome = self.logic.decide(state, record)
            carrier = carrier_from_context()
        batch.decisions += 1
        if outcome.state is not state or outcome.journal:
            # an ignored input (no events) leaves the snapshot as it was
            batch.overlay[saga_id] = outcome.state
            batch.partition_of[saga_id] = partition
        key = saga_id.encode("utf-8")
        for entry in outcome.journal:
            batch.produces.append(Produce(self.names.journal, key, self.codec.encode(entry)))
        for out in outcome.outgoing:
            rec = out.record
            rec = _with_trace(rec, carrier)
            headers = headers_from_carrier(carrier) or None
            target_key = _saga_id_of(rec).encode("utf-8")
            batch.produces.append(
                Produce(
                    self._topic_for(out.destination),
                    target_key,
                    self.codec.encode(rec),
                    headers=headers,
                )
            )

    def _topic_for(self, destination: str) -> str:
        if destination == "tasks":
            return self.names.tasks
        if destination == "commands":
            return self.names.commands
        if destination == "replies":
            return self.names.replies
        return destination

    def _fire_timers(self, batch: _Batch, now: float, limit: int) -> None:
        if limit <= 0:
            return
        due = self._wheel.pop_due(now, limit=limit)
        batch.fired = due
        now_dt = _utc(now)
        for timer in due:
            partition = self._saga_partition.get(timer.saga_id)
            if partition is None:
                continue
            state = self._state_of(batch, timer.saga_id, partition)
            if state is None:
                continue
            if timer.timer_id == TOMBSTONE_TIMER:
                if self.logic.is_terminal(state) and timer.saga_id not in batch.overlay:
                    batch.produces.append(
                        Produce(self.names.state, timer.saga_id.encode("utf-8"), None, partition)
                    )
                    batch.tombstoned.append((timer.saga_id, partition))
                continue
            if self.logic.is_terminal(state):
                continue
            if timer.timer_id not in {t.timer_id for t in self.logic.timers(state)}:
                continue
            record = self.logic.timer_input(state, timer.timer_id, now_dt)
            if record is None:
                continue
            batch.timers += 1
            refused = self._bad_timers.get((timer.saga_id, timer.timer_id))
            if refused is not None:
                # its decision never commits: record it and leave the saga as it is
                reason = f"its decision could not be committed: {refused}"
                self._timer_dead_letter(batch, record, partition, "OutputRejected", reason, now)
                continue
            batch.decided_timers.append(timer)
            try:
                # a timer's stored trace context is history: start a new trace
                self._decide(batch, timer.saga_id, partition, record, Context())
            except Exception as exc:
                log.error("timer %s of saga %s: %s", timer.timer_id, timer.saga_id, exc)
                self._timer_dead_letter(batch, record, partition, type(exc).__name__, str(exc), now)

    def _timer_dead_letter(
        self,
        batch: _Batch,
        record: Record,
        partition: int,
        error_type: str,
        reason: str,
        now: float,
    ) -> None:
        saga_id = _saga_id_of(record)
        log.warning("dead-lettering a timer of saga %s: %s: %s", saga_id, error_type, reason)
        letter = DeadLetter(
            source_topic=f"{self.names.state}#timers",
            source_partition=partition,
            source_offset=-1,
            key=saga_id.encode("utf-8"),
            value=self.codec.encode(record),
            reason=reason[:4000],
            error_type=error_type,
            rejected_by=self.config.transactional_id,
            rejected_at=_utc(now),
        )
        self._produce_dead_letter(batch, letter)

    def _produce_state(self, batch: _Batch, saga_id: str, state: Record) -> None:
        terminal = b"true" if self.logic.is_terminal(state) else b"false"
        batch.produces.append(
            Produce(
                self.names.state,
                saga_id.encode("utf-8"),
                self.codec.encode(state),
                batch.partition_of[saga_id],
                headers=[(TERMINAL_HEADER, terminal)],
            )
        )

    def _dead_letter(
        self, batch: _Batch, msg: Message, error_type: str, reason: str, now: float
    ) -> None:
        log.warning(
            "dead-lettering %s[%s]@%s: %s: %s",
            msg.topic(),
            msg.partition(),
            msg.offset(),
            error_type,
            reason,
        )
        letter = dead_letter_from_message(
            msg,
            reason=reason,
            error_type=error_type,
            rejected_by=self.config.transactional_id,
            now=_utc(now),
        )
        self._produce_dead_letter(batch, letter)

    def _produce_dead_letter(self, batch: _Batch, letter: DeadLetter) -> None:
        batch.dead_letters += 1
        batch.produces.append(
            Produce(self.names.deadletter, letter.key or b"", self.codec.encode(letter))
        )

    # ----------------------------------------------------------- transaction

    def _transact(self, batch: _Batch) -> bool:
        if not batch.produces and not batch.offsets:
            return True  # only stale timers: nothing to commit
        return self._producer.commit_batch(
            batch.produces,
            self._commit_offsets(batch.offsets),
            self._consumer.consumer_group_metadata,
        )

    def _apply(self, batch: _Batch, now: float) -> None:
        fired = {(t.saga_id, t.timer_id, t.due) for t in batch.fired}
        for saga_id, state in batch.overlay.items():
            p = batch.partition_of[saga_id]
            part = self._owned.get(p)
            if part is None:
                continue
            self._saga_partition[saga_id] = p
            if self.logic.is_terminal(state):
                part.active.pop(saga_id, None)
                part.finished[saga_id] = state
            else:
                part.finished.pop(saga_id, None)
                part.active[saga_id] = state
            self._schedule(saga_id, state, fired)
        for saga_id, p in batch.tombstoned:
            part = self._owned.get(p)
            if part is not None:
                part.finished.pop(saga_id, None)
            self._saga_partition.pop(saga_id, None)
            self._wheel.drop(saga_id)
        self._positions.update({k: v for k, v in batch.offsets.items() if k in self._assigned})
        s = self.stats
        s.batches += 1
        s.inputs += batch.inputs
        s.decisions += batch.decisions
        s.timers_fired += batch.timers
        s.dead_letters += batch.dead_letters
        s.tombstones += len(batch.tombstoned)

    def _rollback(self, batch: _Batch) -> None:
        self.stats.aborted_batches += 1
        self._rewind()
        for saga_id in {t.saga_id for t in batch.fired} | set(batch.overlay):
            p = self._saga_partition.get(saga_id)
            part = self._owned.get(p) if p is not None else None
            if part is None:
                continue
            state = part.active.get(saga_id)
            if state is None:
                state = part.finished.get(saga_id)
            if state is not None:
                self._schedule(saga_id, state)

    def _rewind(self) -> None:
        """Seek every assigned partition back to the last committed offset."""
        for (topic, partition), offset in self._positions.items():
            if (topic, partition) in self._assigned:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def _schedule(
        self,
        saga_id: str,
        state: Record,
        fired: set[tuple[str, str, float]] | None = None,
    ) -> None:
        if self.logic.is_terminal(state):
            finished = self.logic.finished_at(state)
            base = finished.timestamp() if finished is not None else self.clock()
            self._wheel.schedule(saga_id, [(TOMBSTONE_TIMER, base + self.config.tombstone_grace_s)])
            return
        timers = []
        for spec in self.logic.timers(state):
            due = spec.due_at.timestamp()
            if fired and (saga_id, spec.timer_id, due) in fired:
                # at most once per decision: a firing that left its timer in
                # place must not fire it again in a hot loop
                log.warning("timer %s of saga %s survived its firing", spec.timer_id, saga_id)
                continue
            timers.append((spec.timer_id, due))
        self._wheel.schedule(saga_id, timers)
