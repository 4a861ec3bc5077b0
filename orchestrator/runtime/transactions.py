"""The orchestrator's transactional producer: one batch = one Kafka transaction.

:meth:`TransactionalProducer.commit_batch` runs begin → produce every record
→ ``send_offsets_to_transaction`` → commit, and sorts librdkafka's errors
(rdkafka.h "Transactional producer API"):

* retriable — the same call is retried with the same arguments;
* abortable — the transaction is aborted and ``commit_batch`` returns
  ``False`` (the caller rewinds and decides the batch again);
* fatal — the librdkafka producer is unusable: it is replaced by a new one
  with the same ``transactional.id`` (whose ``init_transactions`` fences the
  old one and resolves its last transaction), ``commit_batch`` returns
  ``False`` and :attr:`TransactionalProducer.recreated` tells the caller that
  whether the batch committed is known only to Kafka now: it must restore
  its partitions from the committed offsets and the state topic.  A fatal
  error of configuration (authorization, unsupported broker) or more than
  :data:`_RECREATE_LIMIT` of them within :data:`_RECREATE_WINDOW_S` raises
  :class:`FatalKafkaError` instead (exit, let the supervisor restart).

Every abort says whether it was **refused**: a record of the transaction was
refused for good by the client or the broker (:func:`refused_for_good`: too
large, invalid, ...), which deciding the same inputs again cannot change.
Only such aborts may be blamed on an input (``AbortPolicy``); any other abort
(an out-of-order sequence number, an epoch bump, a timeout, a broker outage,
a transaction the coordinator timed out) says nothing about the inputs, which
are decided again until they commit.  Consecutive aborts that were not
refused back off (50 ms doubling to 2 s).  A topic that is unknown or that
this principal may not write (:data:`SUSPECTS`) counts as a refusal only once
it has aborted :data:`SUSPECT_AFTER` transactions in a row: a new topic is
briefly unknown, but a step's missing ``to=`` topic must end in a dead letter,
not a batch retried for ever.

:meth:`TransactionalProducer.begin` sends the consumed offsets on a helper
thread while the caller decides the batch (the two round trips of
``send_offsets_to_transaction`` overlap the CPU work); :meth:`finish` joins
it before the commit.  librdkafka allows ``produce()`` concurrently with the
transactional calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence, Set
from contextlib import suppress
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from sagaline.orchestrator.runtime.errors import FatalKafkaError
from sagaline.orchestrator.runtime.kafka_config import KafkaConfig
from sagaline.orchestrator.runtime.release import release
from sagaline.orchestrator.runtime.signing_runtime import SignedProducer, signer_for
from sagaline.orchestrator.runtime.telemetry import ProducerHeaders

__all__ = [
    "REFUSALS",
    "Produce",
    "RecreateBudget",
    "TransactionalProducer",
    "init_fencing",
    "is_fatal",
    "refused_for_good",
    "rewind",
]

log = logging.getLogger(__name__)


@dataclass
class Produce:
    """One record of a batch (``value=None`` is a tombstone)."""

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None
    headers: ProducerHeaders | None = None


_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)

#: errors that refuse one record for good, whatever the state of the client or the cluster
#: (a delivery report's error carries no retriable/fatal flags: the code is all there is)
REFUSALS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # client (message.max.bytes) or topic (max.message.bytes)
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.POLICY_VIOLATION,
        KafkaError._INVALID_ARG,
        KafkaError._UNKNOWN_PARTITION,
    }
)

#: errors that are either the cluster's passing state (a topic just created whose metadata
#: has not reached every broker, an ACL being granted) or a record's lasting fault (a step's
#: ``to=`` topic that does not exist or that this principal may not write): blamed like a
#: refusal only after :data:`SUSPECT_AFTER` aborts in a row with no commit between them, so
#: that a batch is never retried for ever (the whole instance would stall behind it)
SUSPECTS = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    }
)
SUSPECT_AFTER = 6

#: fatal errors that a new producer would meet again: configuration, not state
_CONFIGURATION = frozenset(
    {
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.INVALID_TRANSACTION_TIMEOUT,
        KafkaError.UNSUPPORTED_VERSION,
        KafkaError._UNSUPPORTED_FEATURE,
    }
)

#: at most this many re-created producers within the window, then exit
_RECREATE_LIMIT = 3
_RECREATE_WINDOW_S = 300.0
#: how often ``init_fencing`` asks again while a predecessor's transaction is aborted
_ASK_S = 0.1


class RecreateBudget:
    """Whether a producer may be re-created after a fatal error: never for an error of
    configuration, at most :data:`_RECREATE_LIMIT` times within :data:`_RECREATE_WINDOW_S`
    (shared by the orchestrator and the worker)."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def allows(self, err: KafkaError | None) -> bool:
        """Count one re-creation for ``err``; ``False`` when it must not happen (exit)."""
        now = time.monotonic()
        while self._times and now - self._times[0] > _RECREATE_WINDOW_S:
            self._times.popleft()
        if (err is not None and err.code() in _CONFIGURATION) or len(
            self._times
        ) >= _RECREATE_LIMIT:
            return False
        self._times.append(now)
        return True


def is_fatal(err: KafkaError) -> bool:
    """A fatal error of the client (``_FATAL`` is what calls on a failed client raise)."""
    return err.fatal() or err.code() == KafkaError._FATAL


def refused_for_good(err: KafkaError) -> bool:
    """A refusal of one record that no retry, and no new producer, can change."""
    return not err.fatal() and err.code() in REFUSALS


def suspect(err: KafkaError) -> bool:
    """An error that is the record's fault only when it lasts (:data:`SUSPECTS`)."""
    return not err.fatal() and err.code() in SUSPECTS


def blame_suspects(aborts_in_a_row: int, suspects: Sequence[str]) -> bool:
    """Whether an abort whose only errors are suspects is to be blamed on its inputs."""
    return bool(suspects) and aborts_in_a_row >= SUSPECT_AFTER


def rewind(
    consumer: Consumer, positions: Mapping[tuple[str, int], int], assigned: Set[object]
) -> None:
    """Seek every assigned partition back to its last committed position."""
    for (topic, partition), offset in positions.items():
        if (topic, partition) in assigned:
            consumer.seek(TopicPartition(topic, partition, offset))


def init_fencing(producer: Producer, timeout: float) -> None:
    """``producer.init_transactions(timeout)``, asking the coordinator again every
    :data:`_ASK_S` while it answers that it is still busy.

    A predecessor killed with a transaction open makes the coordinator answer the
    first InitProducerId with CONCURRENT_TRANSACTIONS while it aborts that
    transaction, and librdkafka asks again only after a fixed 500 ms
    (``rd_kafka_idemp_pid_timer_restart``): most of a restarted orchestrator's wait
    to fence (0.63 s, against 0.10 s with nothing to abort).  A new call of
    ``init_transactions`` resumes the initialisation and asks again at once
    (``rd_kafka_idemp_start(rk, immediately)``; never a second request while one is
    out), so short calls in a row ask again within 0.1 s of each answer.  Raises
    the last error as the single call would: a fatal or permanent one at once, a
    retriable one (``_TIMED_OUT``, CONCURRENT_TRANSACTIONS) at ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            producer.init_transactions(max(0.001, min(_ASK_S, left)))
            return
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.fatal() or not err.retriable() or time.monotonic() >= deadline:
                raise


class _Broken(Exception):
    """A fatal error of the librdkafka producer (re-create it)."""

    def __init__(self, what: str, err: KafkaError | None) -> None:
        super().__init__(f"{what}: {err}")
        self.err = err


def _kafka_error(exc: BaseException) -> KafkaError | None:
    arg = exc.args[0] if exc.args else None
    return arg if isinstance(arg, KafkaError) else None


class TransactionalProducer:
    """A librdkafka transactional producer used one batch at a time."""

    def __init__(self, config: KafkaConfig) -> None:
        #: an unrecoverable fatal error (the engine exits on it)
        self.fatal_error: KafkaError | None = None
        #: why the last batch was aborted (for dead letters of inputs that never commit)
        self.last_abort = ""
        #: whether the last abort was a record refused for good (the only kind blamed on inputs)
        self.last_refused = False
        #: set when a fatal error re-created the client: the caller restores from Kafka
        self.recreated = False
        self._config = config
        self._producer = self._new_client()
        self._offsets_thread: threading.Thread | None = None
        self._offsets_error: BaseException | None = None
        self._broken: _Broken | None = None
        self._refused: list[str] = []
        self._suspects: list[str] = []
        self._unrefused_aborts = 0
        self._recreations = RecreateBudget()

    def _new_client(self) -> SignedProducer:
        # signs every record as the orchestrator (tasks, state, tombstones, ...) when signing is on
        return SignedProducer(
            {**self._config, "error_cb": self._on_error}, signer_for("orchestrator")
        )

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() and err.code() in _CONFIGURATION:
            self.fatal_error = err
        log.warning("producer error: %s", err)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        if err.code() in _PURGED:  # an aborted transaction's records: expected
            log.debug("delivery to %s purged by the abort", msg.topic())
            return
        log.warning("delivery to %s failed: %s", msg.topic(), err)
        self._note(err, f"{msg.topic()} refused a record: {err}")

    def _note(self, err: KafkaError, text: str) -> None:
        """Keep a failed record's error if it may be the batch's fault (a refusal for good,
        or a suspect that counts once it lasts)."""
        if refused_for_good(err):
            self._refused.append(text)
        elif suspect(err):
            self._suspects.append(text)

    def take_recreated(self) -> bool:
        """Whether a fatal error re-created the client since the last call."""
        recreated, self.recreated = self.recreated, False
        return recreated

    def init(self, timeout: float = 60.0) -> None:
        """Fence earlier producers with the same transactional id (aborts their open txn)."""
        self._call(lambda: init_fencing(self._producer, timeout), "init_transactions")

    def flush(self, timeout: float) -> None:
        self._producer.flush(timeout)

    def _call(self, fn: Callable[[], object], what: str, attempts: int = 5) -> None:
        """Run a transactional call, retrying retriable errors with the same arguments."""
        for attempt in range(attempts):
            try:
                fn()
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.fatal():
                    raise FatalKafkaError(f"{what}: {err}") from exc
                if err.txn_requires_abort():
                    raise
                if err.retriable() and attempt + 1 < attempts:
                    log.info("%s: retriable %s, retrying", what, err)
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise FatalKafkaError(f"{what}: {err}") from exc

    def _produce(self, item: Produce) -> None:
        while True:
            try:
                self._producer.produce(
                    item.topic,
                    value=item.value,
                    key=item.key,
                    partition=item.partition if item.partition is not None else -1,
                    headers=item.headers,
                    on_delivery=self._on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def begin(self, offsets: list[TopicPartition], group_metadata: Callable[[], object]) -> None:
        """Begin a transaction; send ``offsets`` to it in the background.

        ``send_offsets_to_transaction`` takes two round trips to the brokers;
        running it while the caller decides the batch hides them.  Finish with
        :meth:`finish` (a fatal error here is dealt with there).
        """
        self._offsets_error = None
        self._offsets_thread = None
        self._refused = []
        self._suspects = []
        self._broken = None
        try:
            self._call(self._producer.begin_transaction, "begin_transaction")
        except (FatalKafkaError, KafkaException) as exc:
            self._broken = _Broken("begin_transaction", _kafka_error(exc.__cause__ or exc))
            return
        if not offsets:
            return
        metadata = group_metadata()

        def send() -> None:
            try:
                self._call(
                    lambda: self._producer.send_offsets_to_transaction(offsets, metadata),
                    "send_offsets_to_transaction",
                )
            except BaseException as exc:  # re-raised by finish() in the caller's thread
                self._offsets_error = exc

        self._offsets_thread = threading.Thread(target=send, name="send-offsets", daemon=True)
        self._offsets_thread.start()

    def _join_offsets(self) -> None:
        thread, self._offsets_thread = self._offsets_thread, None
        if thread is not None:
            thread.join()
        error, self._offsets_error = self._offsets_error, None
        if error is not None:
            raise error

    def _join_offsets_quietly(self) -> None:
        """Wait for the offsets call before aborting; its own error no longer matters."""
        try:
            self._join_offsets()
        except (KafkaException, FatalKafkaError) as exc:
            log.debug("send_offsets_to_transaction of an aborted batch: %s", exc)

    def finish(self, records: Sequence[Produce]) -> bool:
        """Produce ``records`` into the transaction begun by :meth:`begin` and commit it.

        Returns ``False`` when the transaction was aborted (abortable error, a
        record refused, or a fatal error that re-created the client: see
        :attr:`recreated`); raises :class:`FatalKafkaError` when it cannot go on.
        """
        try:
            if self._broken is not None:
                raise self._broken
            committed = self._produce_and_commit(records)
        except _Broken as broken:
            self._join_offsets_quietly()
            return self._recreate(broken)
        if committed:
            self._unrefused_aborts = 0
        return committed

    def _produce_and_commit(self, records: Sequence[Produce]) -> bool:
        try:
            try:
                for item in records:
                    self._produce(item)
            except KafkaException as exc:
                refusal: KafkaError = exc.args[0]
                if is_fatal(refusal):
                    raise _Broken("produce", refusal) from exc
                log.warning("aborting batch, %s refused a record: %s", item.topic, refusal)
                self._note(refusal, f"{item.topic} refused a record: {refusal}")
                self._join_offsets_quietly()
                return self._abort(str(refusal))
            self._join_offsets()
            self._call(self._producer.commit_transaction, "commit_transaction")
            return True
        except FatalKafkaError as exc:
            raise _Broken("transaction", _kafka_error(exc.__cause__ or exc)) from exc
        except KafkaException as exc:
            self._join_offsets_quietly()
            err: KafkaError = exc.args[0]
            if not err.txn_requires_abort():
                raise _Broken("transaction", err) from exc
            log.warning("aborting batch: %s", err)
            self._note(err, str(err))
            return self._abort(str(err))

    def _abort(self, reason: str) -> bool:
        try:
            # purges the transaction's records and serves every delivery report of them
            self._call(self._producer.abort_transaction, "abort_transaction")
        except (FatalKafkaError, KafkaException) as exc:
            raise _Broken("abort_transaction", _kafka_error(exc.__cause__ or exc)) from exc
        self._producer.poll(0)  # any report still queued: none is left for the next batch
        if not self._refused and blame_suspects(self._unrefused_aborts + 1, self._suspects):
            log.warning(
                "aborted %d times in a row by %s: blamed on the batch",
                self._unrefused_aborts + 1,
                self._suspects[0],
            )
            self._refused = self._suspects
        self.last_refused = bool(self._refused)
        self.last_abort = "; ".join(dict.fromkeys(self._refused)) or reason
        if not self.last_refused:
            # not the inputs' fault (the cluster, the producer's state): retry them, backing off
            self._unrefused_aborts += 1
            pause = min(2.0, 0.05 * 2 ** (self._unrefused_aborts - 1))
            log.info("batch aborted (%s), not a refused record: retrying in %.2fs", reason, pause)
            time.sleep(pause)
        return False

    def _recreate(self, broken: _Broken) -> bool:
        """Replace the client after a fatal error: same transactional id, fresh state."""
        err = broken.err
        if not self._recreations.allows(err):
            self.fatal_error = err
            raise FatalKafkaError(f"fatal Kafka error: {broken}") from broken
        log.warning("transactional producer failed (%s): re-creating it", broken)
        failed = [self._producer]
        self._producer = self._new_client()
        with suppress(KafkaException, RuntimeError):
            failed[0].purge()
            failed[0].poll(0)
        release(failed)  # its broker may be gone: freed off this thread, bounded
        self.init()  # fences the old client; its last transaction is completed or aborted
        self.recreated = True
        self.last_refused = False
        self.last_abort = f"the producer was re-created after a fatal error ({broken})"
        return False

    def commit_batch(
        self,
        records: Sequence[Produce],
        offsets: list[TopicPartition],
        group_metadata: Callable[[], object],
    ) -> bool:
        """Produce ``records`` and commit ``offsets`` atomically; ``False`` if aborted."""
        self.begin(offsets, group_metadata)
        return self.finish(records)
