"""The exactly-once orchestrator loop.

One process = one consumer (commands + replies, read_committed, eager
``range`` assignment so partition *p* of both inputs lands on one member)
and one transactional producer.  Each batch is one Kafka transaction:

    decode → check signatures → decide every input (and every due timer) → produce journal entries,
    the latest state snapshot of each touched saga, outgoing tasks / commands / replies, dead
    letters and due tombstones → ``send_offsets_to_transaction`` → ``commit_transaction``

In-memory state changes are staged in a per-batch overlay and applied only after the commit
succeeds; an abortable error aborts the transaction, seeks the consumer back to the last
committed offsets and drops the overlay.  A fatal error raises :class:`FatalKafkaError` (exit
non-zero, let the supervisor restart the process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer

from sagaline.orchestrator.config import Settings
from sagaline.orchestrator.runtime import metrics, telemetry
from sagaline.orchestrator.runtime.batch import (
    Batch,
    EngineConfig,
    EngineStats,
    PartitionState,
    make_clients,
)
from sagaline.orchestrator.runtime.deadletter import dead_letter_from_message, timer_dead_letter
from sagaline.orchestrator.runtime.errors import FatalKafkaError, InputRejected, RestoreError
from sagaline.orchestrator.runtime.intake import (
    accept_new,
    commit_offsets,
    decode_input,
    gather,
    utc,
)
from sagaline.orchestrator.runtime.intake import saga_id_of as _saga_id_of
from sagaline.orchestrator.runtime.layout import PartitionGuard
from sagaline.orchestrator.runtime.local_runs import LocalSteps, Outbound
from sagaline.orchestrator.runtime.poison import AbortPolicy, Verdict
from sagaline.orchestrator.runtime.ports import Codec, SagaLogic
from sagaline.orchestrator.runtime.restore import restore_partitions, stable_committed
from sagaline.orchestrator.runtime.signing_inputs import guard_message
from sagaline.orchestrator.runtime.snapshots import LazySnapshot, hints_key, snapshot_headers
from sagaline.orchestrator.runtime.telemetry import (
    carrier_from_context,
    get_tracer,
    link_for,
)
from sagaline.orchestrator.runtime.timer_gate import GatedTimerWheel
from sagaline.orchestrator.runtime.timers import DueTimer, planned_timers
from sagaline.orchestrator.runtime.transactions import Produce, rewind
from sagaline.schemas.base import Record
from sagaline.schemas.commands import COMMAND_TYPES
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.replies import REPLY_TYPES

__all__ = ["EngineConfig", "EngineStats", "Orchestrator"]

log = logging.getLogger(__name__)

#: reserved timer id of the "write the tombstone" timer of a finished saga
TOMBSTONE_TIMER = "__sagaline_tombstone__"
#: reserved timer id: load a saga restore left unread, at its earliest timer
LOAD_TIMER = "__sagaline_load__"
#: first element of a timer's key in the AbortPolicy (inputs use their topic)
_TIMER = "#timer"


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
        local_steps: LocalSteps | None = None,
    ) -> None:
        self.settings = settings
        self.names = settings.topics
        self.logic = logic
        self.config = config
        self.codec = codec
        self.tracer = tracer or get_tracer()
        self._hints = hints_key()  # authenticates the hints beside each snapshot
        self.clock = clock
        self.stats = EngineStats()
        self._stop = threading.Event()
        self._fatal: KafkaError | None = None
        # consecutive aborted batches, and inputs whose decision cannot be committed
        self._policy = AbortPolicy()
        self._guard = PartitionGuard(self.names, check_interval_s=config.partition_check_s)
        self._epoch = 0
        self._assigned: set[tuple[str, int]] = set()
        self._positions: dict[tuple[str, int], int] = {}
        self._owned: dict[int, PartitionState] = {}
        self._saga_partition: dict[str, int] = {}
        self._wheel = GatedTimerWheel(self._positions, self._assigned, clock, lambda: self._epoch)
        self._outbound = Outbound(self.names, codec, local_steps, config.transactional_id)
        self._input_types = {
            self.names.commands: COMMAND_TYPES,
            self.names.replies: REPLY_TYPES,
        }
        self._producer, self._consumer, self._reader = make_clients(
            config, settings.kafka_bootstrap_servers, self._on_consumer_error
        )
        self._wheel.bind(self._consumer)
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
        if self._guard.start(self._consumer, self._stop.is_set) == 0:
            return  # stopped while waiting for Kafka
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
        self._guard.check(self._consumer)
        if self._policy.isolate > 0:
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
        # Stable committed offsets: a previous owner's transaction on them is resolved (its
        # writes may not have reached the state partition yet: the restore waits for them).
        committed = stable_committed(
            consumer, partitions, self.config.transaction_timeout_ms / 1000 + 30
        )
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
            self._guard.check_restored(self.names.state, p, [*part.active, *part.finished])
            self._owned[p] = PartitionState(part.active, part.finished)
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
        self._policy.reset()
        still = {p for _t, p in self._assigned}
        for p in [p for p in self._owned if p not in still]:
            part = self._owned.pop(p)
            for saga_id in (*part.active, *part.finished):
                self._wheel.drop(saga_id)
                self._saga_partition.pop(saga_id, None)

        def revoked(key: object) -> bool:
            assert isinstance(key, tuple)
            if key[0] == _TIMER:
                return self._saga_partition.get(key[1]) is None
            return (key[0], key[1]) in gone

        self._policy.forget(revoked)
        log.info("revoked %s", sorted((tp.topic, tp.partition) for tp in partitions))

    # ----------------------------------------------------------------- batch

    def _gather(self, limit: int) -> list[Message]:
        timeout = self.config.max_idle_s
        next_due = self._wheel.next_due()
        if next_due is not None:
            timeout = max(0.0, min(timeout, next_due - self.clock()))
        epoch = self._epoch
        messages = gather(self._consumer, limit, timeout, self.config.linger_ms)
        if self._epoch != epoch:
            # A rebalance ran inside poll/consume: which messages predate it is unknowable
            # here, so drop them all and restart every assigned partition from its commit.
            self._rewind()
            return []
        return self._wheel.saw(messages)  # due timers wait for the inputs written before them

    def _state_of(self, batch: Batch, saga_id: str, partition: int) -> Record | None:
        if saga_id in batch.overlay:
            return batch.overlay[saga_id]
        part = self._owned.get(partition)
        if part is None:
            return None
        return part.state(saga_id, self.codec, self.logic)

    def _run_batch(self, messages: list[Message], now: float, timer_limit: int) -> None:
        batch = Batch(traced=telemetry.records_spans(self.tracer))
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
            self._outbound.drain(batch, self._decide)  # local steps, in this transaction
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
            self.stats.commit_seconds += metrics.observe_commit(time.perf_counter() - deciding_done)
            span.set_attribute("sagaline.committed", committed)
        keys: list[tuple[str, str | int, str | int]] = [
            (m.topic() or "", m.partition() or 0, m.offset() or 0) for m in messages
        ]
        keys.extend(batch.timer_keys)
        if committed:
            self._policy.committed(keys)
            self._apply(batch, now)
            return
        self._policy.aborted(keys, self._producer.last_abort, refused=self._producer.last_refused)
        self._rollback(batch)

    def _accept(self, messages: list[Message]) -> tuple[list[Message], dict[tuple[str, int], int]]:
        """The messages to decide, in order, and the offsets that consume them."""
        return accept_new(messages, self._assigned, self._positions)

    def _commit_offsets(self, offsets: dict[tuple[str, int], int]) -> list[TopicPartition]:
        """Every assigned partition's position (KIP-447 fencing even for timer-only batches)."""
        return commit_offsets(self._positions, offsets, self._assigned)

    def _handle_message(self, batch: Batch, msg: Message, now: float) -> None:
        topic, partition = msg.topic() or "", msg.partition() or 0
        offset = msg.offset() or 0
        batch.inputs += 1
        verdict = self._policy.verdict((topic, partition, offset))
        if verdict is Verdict.SKIP:
            return  # not even its dead letter commits: consumed without output (logged)
        if verdict is Verdict.DEAD_LETTER:
            refused = self._policy.reason((topic, partition, offset))
            reason = f"its decision could not be committed: {refused}"
            self._dead_letter(batch, msg, "OutputRejected", reason, now)
            return
        try:
            saga_id, record, parent = decode_input(
                msg, self.codec, self._input_types[topic], self._guard.partitions
            )
            record = guard_message(msg, record, self._state_of(batch, saga_id, partition))
            link = link_for(parent)
            if link is not None:
                batch.links.append(link)
            self._decide(batch, saga_id, partition, record, parent)
        except InputRejected as exc:
            self._dead_letter(batch, msg, exc.error_type, exc.reason, now)
        except RestoreError:
            raise  # our own snapshot does not decode: not this input's fault
        except Exception as exc:
            # undecodable bytes, invalid records, a decider bug: deterministic
            # for this input, so retrying cannot help; keep the partition flowing.
            self._dead_letter(batch, msg, type(exc).__name__, str(exc), now)

    def _decide(
        self,
        batch: Batch,
        saga_id: str,
        partition: int,
        record: Record,
        parent: Context | None,
    ) -> None:
        state = self._state_of(batch, saga_id, partition)
        if not batch.traced:  # a no-op span would only pass the parent's context on
            outcome = self.logic.decide(state, record)
            carrier = carrier_from_context(parent) if parent is not None else {}
        else:
            with self.tracer.start_as_current_span(
                f"sagaline decide {type(record).__name__}",
                context=parent,
                **telemetry.decision_span(self._input_types, saga_id, partition, record),
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
        self._outbound.route(batch, saga_id, partition, outcome.outgoing, carrier)

    def _fire_timers(self, batch: Batch, now: float, limit: int) -> None:
        if limit <= 0:
            return
        due = self._wheel.pop_due(now, limit=limit)
        batch.fired = due
        now_dt = utc(now)
        for timer in due:
            partition = self._saga_partition.get(timer.saga_id)
            if partition is None:
                continue
            state = self._state_of(batch, timer.saga_id, partition)
            if state is None:
                continue
            if timer.timer_id == LOAD_TIMER:  # loaded now: its own timers from here on
                self._schedule(timer.saga_id, state)
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
            self._decide_timer(batch, timer, record, partition, now)

    def _decide_timer(
        self, batch: Batch, timer: DueTimer, record: Record, partition: int, now: float
    ) -> None:
        key = (_TIMER, timer.saga_id, timer.timer_id)
        batch.timer_keys.append(key)
        verdict = self._policy.verdict(key)
        if verdict is Verdict.SKIP:
            return  # not even its dead letter commits: left as it is (logged)
        if verdict is Verdict.DEAD_LETTER:
            # its decision never commits: record it and leave the saga as it is
            reason = f"its decision could not be committed: {self._policy.reason(key)}"
            self._timer_dead_letter(batch, record, partition, "OutputRejected", reason, now)
            return
        try:
            # a timer's stored trace context is history: start a new trace
            self._decide(batch, timer.saga_id, partition, record, Context())
        except Exception as exc:
            log.error("timer %s of saga %s: %s", timer.timer_id, timer.saga_id, exc)
            self._timer_dead_letter(batch, record, partition, type(exc).__name__, str(exc), now)

    def _timer_dead_letter(
        self, batch: Batch, record: Record, partition: int, error_type: str, reason: str, now: float
    ) -> None:
        saga_id = _saga_id_of(record)
        log.warning("dead-lettering a timer of saga %s: %s: %s", saga_id, error_type, reason)
        source = f"{self.names.state}#timers"
        encoded = self.codec.encode(record)
        letter = timer_dead_letter(
            source,
            partition,
            saga_id,
            encoded,
            reason=reason,
            error_type=error_type,
            rejected_by=self.config.transactional_id,
            now=utc(now),
        )
        self._produce_dead_letter(batch, letter)

    def _produce_state(self, batch: Batch, saga_id: str, state: Record) -> None:
        key, value = saga_id.encode("utf-8"), self.codec.encode(state)
        hints = snapshot_headers(self.logic, state, self.names.state, key, value, self._hints)
        p = batch.partition_of[saga_id]
        batch.produces.append(Produce(self.names.state, key, value, p, headers=hints))

    def _dead_letter(
        self, batch: Batch, msg: Message, error_type: str, reason: str, now: float
    ) -> None:
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        log.warning("dead-lettering %s: %s: %s", where, error_type, reason)
        rejected_by = self.config.transactional_id
        letter = dead_letter_from_message(
            msg, reason=reason, error_type=error_type, rejected_by=rejected_by, now=utc(now)
        )
        self._produce_dead_letter(batch, letter)

    def _produce_dead_letter(self, batch: Batch, letter: DeadLetter) -> None:
        batch.dead_letters += metrics.count_dead_letter("orchestrator", letter.error_type)
        batch.produces.append(
            Produce(self.names.deadletter, letter.key or b"", self.codec.encode(letter))
        )

    # ----------------------------------------------------------- transaction

    def _transact(self, batch: Batch) -> bool:
        if not batch.produces and not batch.offsets:
            return True  # only stale timers: nothing to commit
        return self._producer.commit_batch(
            batch.produces,
            self._commit_offsets(batch.offsets),
            self._consumer.consumer_group_metadata,
        )

    def _apply(self, batch: Batch, now: float) -> None:
        metrics.observe_batch(batch.overlay, batch.partition_of, self._owned, batch.decisions)
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

    def _rollback(self, batch: Batch) -> None:
        self.stats.aborted_batches += 1
        if self._producer.take_recreated():
            # a fatal error re-created the producer: only Kafka knows whether the batch
            # committed, so every assigned partition is restored from what was committed
            self.stats.producers_recreated += 1
            tps = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
            kept, self._policy = self._policy, AbortPolicy()  # refusals seen stay known
            self._drop(tps)
            self._on_assign(self._consumer, tps)
            self._policy = kept
            return
        self._rewind()
        for saga_id in {t.saga_id for t in batch.fired} | set(batch.overlay):
            p = self._saga_partition.get(saga_id)
            part = self._owned.get(p) if p is not None else None
            if part is None:
                continue
            state = part.active.get(saga_id, part.finished.get(saga_id))
            if state is not None:
                self._schedule(saga_id, state)

    def _rewind(self) -> None:
        """Seek every assigned partition back to the last committed offset."""
        rewind(self._consumer, self._positions, self._assigned)

    def _schedule(
        self,
        saga_id: str,
        state: Record | LazySnapshot,
        fired: set[tuple[str, str, float]] | None = None,
    ) -> None:
        if isinstance(state, LazySnapshot):
            self._wheel.schedule(saga_id, [] if state.due is None else [(LOAD_TIMER, state.due)])
            return
        grace = self.config.tombstone_grace_s
        plan = planned_timers(self.logic, saga_id, state, TOMBSTONE_TIMER, grace, self.clock, fired)
        self._wheel.schedule(saga_id, plan)
