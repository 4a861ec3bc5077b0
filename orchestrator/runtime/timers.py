"""The timer wheel: a heap of due times over the timers recorded in saga state.

Timers live in saga state (the source of truth); the wheel is only an index
rebuilt from state after a restore and refreshed after every committed
decision.  Entries are replaced per saga, and stale heap entries are skipped
lazily when they surface.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sagaline.orchestrator.runtime.ports import SagaLogic
    from sagaline.schemas.base import Record

__all__ = ["DueTimer", "TimerWheel", "planned_timers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class DueTimer:
    """A timer that came due: ``due`` is seconds since the epoch."""

    due: float
    saga_id: str
    timer_id: str


class TimerWheel:
    """Due-time index of ``(saga_id, timer_id)`` pairs."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, str]] = []
        self._by_saga: dict[str, dict[str, float]] = {}
        self._seq = itertools.count()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _forget(self, saga_id: str) -> None:
        old = self._by_saga.pop(saga_id, None)
        if old:
            self._count -= len(old)

    def schedule(self, saga_id: str, timers: Iterable[tuple[str, float]]) -> None:
        """Replace the saga's timers with ``timers`` (``(timer_id, due)`` pairs)."""
        current = dict(timers)
        self._forget(saga_id)
        if not current:
            return
        self._by_saga[saga_id] = current
        self._count += len(current)
        for timer_id, due in current.items():
            heapq.heappush(self._heap, (due, next(self._seq), saga_id, timer_id))
        self._compact_if_bloated()

    def drop(self, saga_id: str) -> None:
        """Forget every timer of a saga."""
        self._forget(saga_id)

    def timers_of(self, saga_id: str) -> dict[str, float]:
        """The saga's scheduled timers."""
        return dict(self._by_saga.get(saga_id, {}))

    def _live(self, entry: tuple[float, int, str, str]) -> bool:
        due, _, saga_id, timer_id = entry
        return self._by_saga.get(saga_id, {}).get(timer_id) == due

    def next_due(self) -> float | None:
        """The earliest due time, or ``None`` when nothing is scheduled."""
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float, limit: int | None = None) -> list[DueTimer]:
        """Remove and return the timers due at ``now`` (earliest first)."""
        fired: list[DueTimer] = []
        while self._heap and (limit is None or len(fired) < limit):
            entry = self._heap[0]
            if not self._live(entry):
                heapq.heappop(self._heap)
                continue
            due, _, saga_id, timer_id = entry
            if due > now:
                break
            heapq.heappop(self._heap)
            timers = self._by_saga[saga_id]
            del timers[timer_id]
            self._count -= 1
            if not timers:
                del self._by_saga[saga_id]
            fired.append(DueTimer(due, saga_id, timer_id))
        return fired

    def _compact_if_bloated(self) -> None:
        live = len(self)
        if len(self._heap) > 1024 and len(self._heap) > 4 * live:
            self._heap = [e for e in self._heap if self._live(e)]
            heapq.heapify(self._heap)


def planned_timers(
    logic: SagaLogic,
    saga_id: str,
    state: Record,
    tombstone_timer: str,
    tombstone_grace_s: float,
    clock: Callable[[], float],
    fired: set[tuple[str, str, float]] | None = None,
) -> list[tuple[str, float]]:
    """The ``(timer_id, due)`` pairs to schedule for ``state``.

    A terminal saga gets only its tombstone timer; a timer that was just fired
    and is still in place is not scheduled again (at most once per decision,
    never a hot loop).
    """
    if logic.is_terminal(state):
        finished = logic.finished_at(state)
        base = finished.timestamp() if finished is not None else clock()
        return [(tombstone_timer, base + tombstone_grace_s)]
    timers = []
    for spec in logic.timers(state):
        due = spec.due_at.timestamp()
        if fired and (saga_id, spec.timer_id, due) in fired:
            log.warning("timer %s of saga %s survived its firing", spec.timer_id, saga_id)
            continue
        timers.append((spec.timer_id, due))
    return timers
