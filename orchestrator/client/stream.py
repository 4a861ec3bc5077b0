"""Following a saga live: ``SagaHandle.stream()`` and ``sagaline watch``.

A stream yields :class:`StreamEvent` items of two modes (LangGraph's stream
modes are the model):

* ``"state"``: a new snapshot of the saga (status, current node, steps), read
  through the client's one :class:`~sagaline.orchestrator.client.watch.SnapshotWatch`;
* ``"progress"``: a :class:`~sagaline.schemas.progress.ProgressReported` a step
  or agent turn published (``ctx.progress(...)``), read from the saga's
  partition of the progress topic by the stream's own reader.

Before a snapshot is yielded, the progress partition is read up to its end,
so everything a step published before its reply comes before the state that
follows it (the worker flushes a step's progress before recording its reply).
The last item is always the terminal snapshot; then the stream ends.

Progress is advisory: a missing progress topic, retention or a lost record
only means fewer ``"progress"`` items.  A stream that joins a running saga
yields the latest snapshot first, then the progress published since the saga
started (``since_ms``: from then, minus a margin for clocks), then live items.
"""

from __future__ import annotations

import logging
import queue
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from sagaline.orchestrator.client.delivery import kafka_log_config
from sagaline.orchestrator.client.errors import WaitTimeout
from sagaline.orchestrator.client.verdicts import LOOKBACK_MS
from sagaline.orchestrator.client.watch import SnapshotWatch
from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.kafka_config import reader_config
from sagaline.orchestrator.runtime.partitioner import partition_for
from sagaline.orchestrator.runtime.ports import Codec
from sagaline.orchestrator.runtime.stable_read import with_retries
from sagaline.schemas.errors import MessageError
from sagaline.schemas.progress import ProgressReported
from sagaline.schemas.state import SagaState

__all__ = [
    "MODES",
    "ClientParts",
    "ProgressTail",
    "StreamEvent",
    "StreamMode",
    "check_modes",
    "stream_saga",
]

log = logging.getLogger("sagaline.client")

StreamMode = Literal["state", "progress"]
MODES: tuple[StreamMode, ...] = ("state", "progress")
#: The longest one read of the progress partition "to its end" may take (seconds).
DRAIN_S = 5.0


@dataclass(frozen=True)
class StreamEvent:
    """One item of a stream: ``mode`` says which of ``state`` / ``progress`` is set."""

    mode: StreamMode
    saga_id: str
    state: SagaState | None = None
    progress: ProgressReported | None = None

    @property
    def final(self) -> bool:
        """Whether this is the saga's terminal snapshot (the stream's last item)."""
        return self.state is not None and self.state.is_terminal


@dataclass(frozen=True)
class ClientParts:
    """What a stream borrows from its client."""

    bootstrap: str
    names: TopicNames
    codec: Codec
    client_id: str
    debug: bool


class ProgressTail:
    """The progress records of one saga, read from its partition of the progress topic."""

    def __init__(self, parts: ClientParts, saga_id: str, since_ms: int) -> None:
        self._parts = parts
        self._key = saga_id.encode("utf-8")
        group = f"{parts.client_id}-stream-{uuid.uuid4().hex}"
        extra = {**kafka_log_config(parts.debug), "enable.partition.eof": False}
        self._consumer = Consumer(reader_config(parts.bootstrap, group, extra=extra))
        self._tp: TopicPartition | None = None
        self._next = 0
        topic = parts.names.progress
        meta = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            log.info("no progress topic %s: the stream shows states only", topic)
            return
        tp = TopicPartition(topic, partition_for(saga_id, len(meta.partitions)))
        _low, high = with_retries(
            lambda: self._consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        )
        found = self._consumer.offsets_for_times(
            [TopicPartition(topic, tp.partition, max(0, since_ms))], timeout=10
        )[0].offset
        self._next = found if 0 <= found < high else int(high)
        self._tp = tp
        self._consumer.assign([TopicPartition(topic, tp.partition, self._next)])

    def poll(self, timeout: float) -> list[ProgressReported]:
        """The saga's records read within ``timeout`` s (may be none)."""
        if self._tp is None:
            time.sleep(timeout)
            return []
        first = self._consumer.poll(timeout)
        if first is None:
            return []
        return self._take([first, *self._consumer.consume(500, 0)])

    def drain(self) -> list[ProgressReported]:
        """Everything stored in the partition up to now (at most ``DRAIN_S`` of reading)."""
        if self._tp is None:
            return []
        try:
            _low, high = self._consumer.get_watermark_offsets(self._tp, timeout=5, cached=False)
        except KafkaException as exc:
            log.info("progress end unknown (%s): not drained", exc)
            return []
        records: list[ProgressReported] = []
        deadline = time.monotonic() + DRAIN_S
        while self._next < high and time.monotonic() < deadline:
            records.extend(self._take(self._consumer.consume(500, 0.1)))
        return records

    def _take(self, messages: list[Message]) -> list[ProgressReported]:
        records: list[ProgressReported] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                continue
            self._next = max(self._next, (msg.offset() or 0) + 1)
            value = msg.value()
            if msg.key() != self._key or value is None:
                continue
            try:
                record = self._parts.codec.decode(value, (ProgressReported,))
            except MessageError:
                continue  # advisory: a record this client cannot read is skipped
            if isinstance(record, ProgressReported):
                records.append(record)
        return records

    def close(self) -> None:
        self._consumer.close()


def check_modes(modes: Collection[str]) -> None:
    """Refuse an empty or unknown set of stream modes (``ValueError``, one line)."""
    if not modes or set(modes) - set(MODES):
        raise ValueError(f"stream modes are {', '.join(MODES)}; got {sorted(modes)}")


def stream_saga(
    watch: SnapshotWatch,
    parts: ClientParts,
    saga_id: str,
    partition: int,
    *,
    since_ms: int | None,
    timeout: float | None,
    modes: Collection[StreamMode] = MODES,
) -> Iterator[StreamEvent]:
    """The items of one saga until its terminal snapshot (see the module).

    Raises :class:`SagaRejected` when the orchestrator refused its start and
    :class:`WaitTimeout` when it is not terminal within ``timeout`` s (``None``:
    no limit).
    """
    follower = _Follower(watch, parts, saga_id, partition, since_ms, set(modes))
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            yield from follower.live()
            state = follower.next_state()
            if state is None:
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(
                        f"saga {saga_id!r} not done within {timeout:g} s "
                        f"(last status: {follower.last_status})"
                    )
                continue
            yield from follower.around(state)
            if state.is_terminal:
                return
    finally:
        follower.close()


class _Follower:
    """The state of one stream: its waiter on the shared reader and its progress tail."""

    def __init__(
        self,
        watch: SnapshotWatch,
        parts: ClientParts,
        saga_id: str,
        partition: int,
        since_ms: int | None,
        modes: set[StreamMode],
    ) -> None:
        self.watch, self.parts, self.saga_id = watch, parts, saga_id
        self.since_ms, self.modes = since_ms, modes
        self.states: queue.SimpleQueue[SagaState] = queue.SimpleQueue()
        self.tail: ProgressTail | None = None
        self.seen = -1
        self.waiter = watch.follow(saga_id, partition, self._offer, since_ms)

    def _offer(self, state: SagaState) -> bool:
        self.states.put(state)
        return state.is_terminal

    @property
    def last_status(self) -> str:
        return self.waiter.latest.status if self.waiter.latest else "no snapshot"

    def _event(self, record: ProgressReported) -> StreamEvent:
        return StreamEvent("progress", self.saga_id, progress=record)

    def live(self) -> Iterator[StreamEvent]:
        """Progress read as it arrives."""
        if self.tail is not None:
            yield from map(self._event, self.tail.poll(0.05))

    def next_state(self) -> SagaState | None:
        """The next new snapshot (``None`` after a short wait); raises the waiter's error."""
        try:
            state = self.states.get(timeout=0.05)
        except queue.Empty:
            if self.waiter.error is not None:
                raise self.waiter.error from None
            return None
        if state.journal_seq <= self.seen:
            return None  # the same snapshot read again
        self.seen = state.journal_seq
        return state

    def around(self, state: SagaState) -> Iterator[StreamEvent]:
        """``state``, after the progress stored before it: everything read up to the end of
        the progress partition published no later than the state (all of it before a
        terminal state), the rest right after it."""
        if self.tail is None and "progress" in self.modes:
            start = self.since_ms if self.since_ms is not None else _ms(state)
            self.tail = ProgressTail(self.parts, self.saga_id, start - LOOKBACK_MS)
        stored = self.tail.drain() if self.tail is not None else []
        after = not state.is_terminal
        yield from map(self._event, [r for r in stored if not (after and r.at > state.updated_at)])
        if "state" in self.modes or state.is_terminal:
            yield StreamEvent("state", self.saga_id, state=state)
        yield from map(self._event, [r for r in stored if after and r.at > state.updated_at])

    def close(self) -> None:
        self.watch.cancel(self.waiter)
        if self.tail is not None:
            self.tail.close()


def _ms(state: SagaState) -> int:
    return int(state.started_at.timestamp() * 1000)
