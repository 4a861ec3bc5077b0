"""One reader per client for every wait: :class:`SnapshotWatch`.

``SagaClient.wait`` and ``confirm_start`` register a waiter here instead of
opening a reader each.  One background thread holds one read_committed
consumer assigned to every partition of the state topic and to the dead-letter
topic; it long-polls (the broker answers the fetch as soon as a transaction
commits, so a waiter wakes within a millisecond of the commit), hands each
snapshot to the waiters of its saga, and keeps the latest snapshot of the
sagas it saw in a bounded cache.

No snapshot is missed.  All bookkeeping happens in the reader's thread: a new
waiter is first checked against the cache, which holds every key read since
``covered_from[p]`` of its partition; when the saga may have a snapshot older
than that (its start was sent earlier, minus a margin for clocks, or the time
is unknown), the partition is re-read from there (one re-assignment at
explicit offsets, shared by every waiter registered at the same time).
Re-reading is harmless: a waiter is satisfied by the first snapshot for
which its predicate holds, and a terminal snapshot is the saga's last.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from sagaline.orchestrator.client.delivery import kafka_log_config
from sagaline.orchestrator.client.errors import SagaRejected, WaitTimeout
from sagaline.orchestrator.client.verdicts import LOOKBACK_MS
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.orchestrator.runtime.stable_read import with_retries
from sagaline.schemas.commands import StartSaga
from sagaline.schemas.deadletter import DeadLetter
from sagaline.schemas.errors import MessageError
from sagaline.schemas.state import SagaState

__all__ = ["CACHE_KEYS", "SnapshotWatch", "Waiter"]

#: Latest snapshots kept per client (an evicted key moves its partition's
#: ``covered_from`` past it, so a later waiter re-reads instead of missing it).
CACHE_KEYS = 20_000

Done = Callable[[SagaState], bool]


@dataclass(eq=False)
class Waiter:
    saga_id: str
    partition: int
    done: Done
    since_ms: int | None
    event: threading.Event = field(default_factory=threading.Event)
    result: SagaState | None = None
    error: BaseException | None = None
    latest: SagaState | None = None


class SnapshotWatch:
    """A client's one reader of snapshots and dead letters, shared by its waits."""

    #: Kafka consumers created by this class in this process (the benchmarks read it)
    consumers_created = 0
    _created_lock = threading.Lock()

    def __init__(
        self, bootstrap: str, names: TopicNames, codec: Codec, client_id: str, *, debug: bool
    ) -> None:
        self.names = names
        self.codec = codec
        group = f"{client_id}-watch-{uuid.uuid4().hex}"
        self._consumer = Consumer(
            reader_config(
                bootstrap,
                group,
                extra={
                    **kafka_log_config(debug),
                    "enable.partition.eof": False,
                    # a read_committed long poll is answered when a commit moves the
                    # last stable offset: no idle fetch traffic, no added latency
                    "fetch.wait.max.ms": 500,
                },
            )
        )
        with SnapshotWatch._created_lock:
            SnapshotWatch.consumers_created += 1
        self._lock = threading.RLock()  # the reader's thread decodes and finishes under it
        self._new: list[Waiter] = []
        self._waiters: dict[bytes, list[Waiter]] = {}
        self._cache: OrderedDict[bytes, tuple[int, bytes]] = OrderedDict()
        self._letters: OrderedDict[bytes, bytes] = OrderedDict()
        self._covered: dict[str, dict[int, int]] = {}
        self._next: dict[tuple[str, int], int] = {}
        self._ready_ms: dict[str, dict[int, int]] = {}
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sagaline-watch", daemon=True)
        self._thread.start()

    # -- caller side -------------------------------------------------------------

    def follow(self, saga_id: str, partition: int, done: Done, since_ms: int | None) -> Waiter:
        """Register a waiter without blocking: ``done`` sees every snapshot of ``saga_id``
        read from now on (the latest known one first) until it returns ``True``; then, or
        on a rejected start or a failed reader, ``waiter.event`` is set.  :meth:`cancel`
        stops it (``SagaHandle.stream`` follows a saga this way)."""
        waiter = Waiter(saga_id, partition, done, since_ms)
        with self._lock:
            if self._failure is not None:
                raise WaitTimeout(f"the client's reader failed: {self._failure}")
            if self._rewinds(waiter):
                self._new.append(waiter)  # the reader's thread re-reads, then registers it
            elif not self._admit(waiter):
                self._waiters.setdefault(saga_id.encode("utf-8"), []).append(waiter)
        return waiter

    def cancel(self, waiter: Waiter) -> None:
        """Stop offering snapshots to ``waiter`` (idempotent)."""
        with self._lock:
            key = waiter.saga_id.encode("utf-8")
            if waiter in self._new:
                self._new.remove(waiter)
            if waiter in self._waiters.get(key, []):
                self._waiters[key].remove(waiter)
                if not self._waiters[key]:
                    del self._waiters[key]

    def wait(
        self, saga_id: str, partition: int, done: Done, timeout: float, since_ms: int | None
    ) -> SagaState:
        """The first snapshot of ``saga_id`` for which ``done`` holds (see the module)."""
        waiter = self.follow(saga_id, partition, done, since_ms)
        if not waiter.event.wait(timeout):
            self.cancel(waiter)
            if not waiter.event.is_set():
                status = waiter.latest.status if waiter.latest else "no snapshot"
                raise WaitTimeout(
                    f"saga {saga_id!r} not done within {timeout:g} s (last status: {status})"
                )
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    def close(self) -> None:
        """Stop the reader's thread and close its consumer (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    # -- the reader's thread -----------------------------------------------------

    def _assign(self) -> None:
        parts = self._consumer.list_topics(self.names.state, timeout=10).topics[self.names.state]
        if parts.error is not None or not parts.partitions:
            raise KafkaException(parts.error) if parts.error else KafkaException("no partitions")
        tps = [(self.names.state, p) for p in parts.partitions]
        tps.append((self.names.deadletter, 0))
        now_ms = int(time.time() * 1000)
        for topic, partition in tps:
            # for a read_committed consumer the "high" watermark is the last stable
            # offset: everything committed from now on lies at or after it
            _low, high = with_retries(
                functools.partial(
                    self._consumer.get_watermark_offsets,
                    TopicPartition(topic, partition),
                    timeout=10,
                    cached=False,
                )
            )
            self._next[(topic, partition)] = int(high)
            self._covered.setdefault(topic, {})[partition] = int(high)
            self._ready_ms.setdefault(topic, {})[partition] = now_ms
        self._reassign()

    def _reassign(self) -> None:
        """Assign every partition at the offset to read next (explicit offsets only: a
        re-read never races a pending "end of partition" lookup)."""
        self._consumer.assign([TopicPartition(t, p, off) for (t, p), off in self._next.items()])

    def _run(self) -> None:
        try:
            with self._lock:
                self._assign()
            while not self._stop.is_set():
                self._take_new()
                first = self._consumer.poll(0.05)
                if first is None:
                    continue
                batch = [first, *self._consumer.consume(999, 0)]
                with self._lock:
                    for msg in batch:
                        self._record(msg)
        except (KafkaException, RuntimeError) as exc:
            self._fail(exc)
        finally:
            self._consumer.close()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            self._failure = exc
            pending = [w for ws in self._waiters.values() for w in ws] + self._new
            self._waiters.clear()
            self._new.clear()
        for waiter in pending:
            waiter.error = WaitTimeout(f"the client's reader failed: {exc}")
            waiter.event.set()

    def _admit(self, waiter: Waiter) -> bool:
        """Settle ``waiter`` from what was read already; ``True`` when it is done."""
        key = waiter.saga_id.encode("utf-8")
        cached = self._cache.get(key)
        if cached is not None and self._offer(waiter, cached[1]):
            return True
        letter = self._letters.get(key)
        return letter is not None and waiter.latest is None and self._rejects(waiter, letter)

    def _rewinds(self, waiter: Waiter) -> dict[tuple[str, int], int]:
        """The partitions to re-read for ``waiter`` and from when (ms; -1: the start)."""
        since = -1 if waiter.since_ms is None else waiter.since_ms - LOOKBACK_MS
        return {
            (topic, partition): since
            for topic, partition in (
                (self.names.state, waiter.partition),
                (self.names.deadletter, 0),
            )
            if self._needs_rewind(topic, partition, waiter.since_ms)
        }

    def _take_new(self) -> None:
        with self._lock:
            new, self._new = self._new, []
            rewind: dict[tuple[str, int], int] = {}
            for waiter in new:
                for tp, since in self._rewinds(waiter).items():
                    rewind[tp] = since if tp not in rewind else min(rewind[tp], since)
            moved = [self._rewind(topic, part, since) for (topic, part), since in rewind.items()]
            if any(moved):
                self._reassign()
            for waiter in new:
                if not self._admit(waiter):
                    self._waiters.setdefault(waiter.saga_id.encode("utf-8"), []).append(waiter)

    def _needs_rewind(self, topic: str, partition: int, since_ms: int | None) -> bool:
        ready = self._ready_ms.get(topic, {}).get(partition)
        if ready is None:
            return True
        if since_ms is None:
            return ready > 0  # unknown start: read from the beginning, once
        return since_ms - LOOKBACK_MS < ready

    def _rewind(self, topic: str, partition: int, since_ms: int) -> bool:
        """Plan to read ``partition`` again from the first record at or after ``since_ms``
        (unless everything from there was read already); afterwards every record
        stored since ``since_ms`` is known to this reader.  ``True`` when the
        assignment must change."""
        offset = OFFSET_BEGINNING
        if since_ms >= 0:
            found = self._consumer.offsets_for_times(
                [TopicPartition(topic, partition, since_ms)], timeout=10
            )
            offset = found[0].offset
        covered = self._covered.setdefault(topic, {})
        ready = self._ready_ms.setdefault(topic, {})
        ready[partition] = min(ready.get(partition, since_ms), max(0, since_ms))
        # offset < 0 (other than the beginning): nothing stored since then
        if offset == OFFSET_BEGINNING or 0 <= offset < covered.get(partition, 0):
            self._next[(topic, partition)] = offset
            covered[partition] = max(0, offset)
            return True
        return False

    def _record(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise KafkaException(err)
            return
        key, value = msg.key(), msg.value()
        self._next[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        if key is None:
            return
        if msg.topic() == self.names.deadletter:
            if value is not None:
                self._remember(self._letters, key, value)
                for waiter in list(self._waiters.get(key, [])):
                    if waiter.latest is None:
                        self._rejects(waiter, value)
            return
        if value is None:
            return
        offset = msg.offset() or 0
        self._cache[key] = (offset, value)
        self._cache.move_to_end(key)
        if len(self._cache) > CACHE_KEYS:
            _evicted, (old_offset, _) = self._cache.popitem(last=False)
            covered = self._covered.setdefault(self.names.state, {})
            # a key read before old_offset may be gone from the cache: re-read if needed
            part = msg.partition() or 0
            covered[part] = max(covered.get(part, 0), old_offset + 1)
            self._ready_ms.setdefault(self.names.state, {})[part] = int(time.time() * 1000)
        for waiter in list(self._waiters.get(key, [])):
            self._offer(waiter, value)

    def _remember(self, cache: OrderedDict[bytes, bytes], key: bytes, value: bytes) -> None:
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > CACHE_KEYS:
            cache.popitem(last=False)

    def _finish(self, waiter: Waiter) -> None:
        key = waiter.saga_id.encode("utf-8")
        with self._lock:
            waiting = self._waiters.get(key, [])
            if waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[key]
        waiter.event.set()

    def _offer(self, waiter: Waiter, value: bytes) -> bool:
        try:
            state = self.codec.decode(value, (SagaState,))
        except MessageError:
            return False
        if not isinstance(state, SagaState):
            return False
        waiter.latest = state
        if waiter.done(state):
            waiter.result = state
            self._finish(waiter)
            return True
        return False

    def _rejects(self, waiter: Waiter, value: bytes) -> bool:
        try:
            letter = self.codec.decode(value, (DeadLetter,))
            if not isinstance(letter, DeadLetter) or letter.source_topic != self.names.commands:
                return False
            if letter.value is None:
                return False
            command = self.codec.decode(letter.value, (StartSaga,))
        except MessageError:
            return False  # a dead-lettered signal or garbage under this key: not a start
        if not isinstance(command, StartSaga):
            return False
        waiter.error = SagaRejected(waiter.saga_id, letter.error_type, letter.reason)
        self._finish(waiter)
        return True
