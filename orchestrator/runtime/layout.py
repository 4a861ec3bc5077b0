"""The partition layout the orchestrator runs on, checked at start and while running.

A saga lives in partition ``partition_for(saga_id, N)`` of commands, replies,
state and journal.  Changing ``N`` moves sagas to partitions that hold none
of their state, so sagaline refuses any change (ADR 0009):

* at start, the co-partitioned topics must have one partition count;
* while running, the count is checked every ``check_interval_s``; a change
  raises :class:`PartitionCountChanged` (the process exits with a clear error);
* on restore, a state record stored in a partition its key does not hash to
  means the count changed after sagas were written: refused the same way;
* an input whose key hashes to another partition is dead-lettered
  (``WrongPartition``), never stored under the partition it arrived on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaException

from sagaline.orchestrator.config import TopicNames
from sagaline.orchestrator.runtime.errors import InputRejected, TopicConfigError
from sagaline.orchestrator.runtime.partitioner import partition_for

__all__ = ["PartitionCountChanged", "PartitionGuard", "copartitioned", "wrong_partition"]

log = logging.getLogger(__name__)


class PartitionCountChanged(TopicConfigError):
    """A co-partitioned topic's partition count differs from the one sagas were written with."""


def copartitioned(names: TopicNames) -> tuple[str, ...]:
    """The topics partitioned by saga id with one partition count."""
    return (names.commands, names.replies, names.state, names.journal)


def _describe(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{topic}={n}" for topic, n in sorted(counts.items()))


def wrong_partition(saga_id: str, topic: str, partition: int, partitions: int) -> None:
    """Raise ``InputRejected("WrongPartition")`` unless ``saga_id`` belongs to ``partition``."""
    expected = partition_for(saga_id, partitions)
    if expected != partition:
        raise InputRejected(
            "WrongPartition",
            f"saga {saga_id!r} belongs to partition {expected} of {topic} "
            f"({partitions} partitions, CRC32 of the key) but arrived on partition {partition}; "
            "produce with sagaline's partitioner or partition_for()",
        )


class PartitionGuard:
    """Reads the partition counts at start and refuses any later change."""

    def __init__(
        self,
        names: TopicNames,
        *,
        check_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics = copartitioned(names)
        self.check_interval_s = check_interval_s
        self._clock = clock
        self.partitions = 0
        self._next_check = 0.0

    def _counts(self, consumer: Consumer, timeout: float) -> dict[str, int]:
        metadata = consumer.list_topics(timeout=timeout)
        counts: dict[str, int] = {}
        for topic in self.topics:
            meta = metadata.topics.get(topic)
            if meta is not None and meta.error is None and meta.partitions:
                counts[topic] = len(meta.partitions)
        return counts

    def start(self, consumer: Consumer, stopping: Callable[[], bool], timeout: float = 10.0) -> int:
        """The partition count of the co-partitioned topics; ``TopicConfigError`` if they differ.

        Waits for Kafka (with backoff, logging it) while the metadata cannot be
        read; returns 0 if ``stopping()`` became true meanwhile.
        """
        delay = 0.5
        while True:
            try:
                counts = self._counts(consumer, timeout)
                break
            except KafkaException as exc:
                if stopping():
                    return 0
                log.warning("waiting for Kafka metadata (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        missing = [t for t in self.topics if t not in counts]
        if missing:
            raise TopicConfigError(
                f"missing topics: {', '.join(missing)}; run `sagaline topics ensure` first"
            )
        if len(set(counts.values())) > 1:
            raise TopicConfigError(
                "commands, replies, state and journal must have the same partition count "
                f"(co-partitioned by saga id), found {_describe(counts)}; refusing to start "
                "(see docs/adr/0009-partition-counts.md)"
            )
        self.partitions = next(iter(counts.values()))
        self._next_check = self._clock() + self.check_interval_s
        return self.partitions

    def check(self, consumer: Consumer, timeout: float = 5.0) -> None:
        """Every ``check_interval_s``: raise :class:`PartitionCountChanged` on a change.

        Metadata that cannot be read (a broker outage) is tried again later.
        """
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self.check_interval_s
        try:
            counts = self._counts(consumer, timeout)
        except KafkaException as exc:
            log.info("partition check postponed: %s", exc)
            return
        changed = {t: n for t, n in counts.items() if n != self.partitions}
        if changed:
            raise PartitionCountChanged(
                f"partition count changed while running: started with {self.partitions}, "
                f"now {_describe(changed)}; sagas would be orphaned, refusing to continue "
                "(see docs/adr/0009-partition-counts.md)"
            )

    def check_restored(self, topic: str, partition: int, saga_ids: list[str]) -> None:
        """Refuse a state partition holding sagas that hash elsewhere (the count changed)."""
        for saga_id in saga_ids:
            expected = partition_for(saga_id, self.partitions)
            if expected != partition:
                raise PartitionCountChanged(
                    f"saga {saga_id!r} is stored in {topic}[{partition}] but hashes to "
                    f"partition {expected} of {self.partitions}: the partition count changed "
                    "after sagas were written; refusing to start "
                    "(see docs/adr/0009-partition-counts.md)"
                )
