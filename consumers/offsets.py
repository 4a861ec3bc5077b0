"""Which consumed offsets may be committed: the contiguous done prefix per partition.

Tasks of different sagas finish out of order; an offset is committed only
when every earlier offset of its partition is done, so a crash never skips
an unfinished task.  Pure bookkeeping, no Kafka.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["OffsetTracker", "Ready"]

P = TypeVar("P")  # partition identity, e.g. (topic, partition)
T = TypeVar("T")  # what a done offset carries (replies to publish with the commit)

_PENDING = object()


@dataclass
class Ready(Generic[T]):
    """Offsets to commit: ``next_offset`` is the last done offset + 1."""

    next_offset: int
    items: list[T] = field(default_factory=list)


class OffsetTracker(Generic[P, T]):
    """Tracks consumed offsets per partition in consumption order."""

    def __init__(self) -> None:
        self._order: dict[P, deque[int]] = {}
        self._done: dict[P, dict[int, object]] = {}

    def add(self, partition: P, offset: int) -> None:
        """Record a consumed offset (offsets of a partition arrive increasing)."""
        self._order.setdefault(partition, deque()).append(offset)
        self._done.setdefault(partition, {})[offset] = _PENDING

    def done(self, partition: P, offset: int, items: Iterable[T] = ()) -> bool:
        """Mark an offset done; False when the partition or offset is not tracked any more."""
        done = self._done.get(partition)
        if done is None or offset not in done:
            return False
        done[offset] = list(items)
        return True

    def pop_ready(self) -> dict[P, Ready[T]]:
        """Remove and return, per partition, the contiguous done prefix."""
        ready: dict[P, Ready[T]] = {}
        for partition, order in self._order.items():
            done = self._done[partition]
            while order and done[order[0]] is not _PENDING:
                offset = order.popleft()
                items = done.pop(offset)
                entry = ready.setdefault(partition, Ready(next_offset=offset + 1))
                entry.next_offset = offset + 1
                assert isinstance(items, list)
                entry.items.extend(items)
        return ready

    def is_pending(self, partition: P, offset: int) -> bool:
        """True while ``offset`` is tracked and not yet returned by :meth:`pop_ready`."""
        done = self._done.get(partition)
        return done is not None and offset in done

    def forget(self, partitions: Iterable[P]) -> None:
        """Stop tracking partitions (revoked, lost or rewound)."""
        for partition in partitions:
            self._order.pop(partition, None)
            self._done.pop(partition, None)

    def pending(self) -> int:
        """Offsets consumed but not yet returned by :meth:`pop_ready`."""
        return sum(len(order) for order in self._order.values())
