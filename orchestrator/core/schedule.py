"""Schedules: start a saga type on a cron expression or an interval, in a time zone.

A :class:`Schedule` is declared in code beside the saga classes.  Its ticks
are pure functions of the declaration: ``next_after(t)`` and
``latest_at_or_before(t)`` (cron expressions through ``croniter``, in the
schedule's time zone, so daylight-saving changes follow the wall clock;
intervals are aligned to the Unix epoch).  :func:`due_ticks` decides, from
the last tick already decided (the *cursor*) and ``now``, which ticks start
a saga under the declared catch-up policy:

- ``"all"``: every tick since the cursor, oldest first;
- ``"one"``: only the latest tick since the cursor (the missed ones are skipped);
- ``"skip"``: the latest tick only when it is at most ``grace`` old, else none.

Each tick's saga id is ``<name>@<tick in ISO 8601, in the schedule's zone>``,
so a tick can only ever name one saga.  No clock, no I/O: ``now`` comes from
the input being decided (see :mod:`sagaline.orchestrator.core.schedule_decide`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel

from sagaline.orchestrator.core.errors import SagalineError
from sagaline.orchestrator.core.saga import Saga

__all__ = [
    "SCHEDULE_PREFIX",
    "SCHEDULE_SAGA_TYPE",
    "CatchUp",
    "DueTicks",
    "Schedule",
    "ScheduleError",
    "due_ticks",
    "schedule_name_of",
]

DataT = TypeVar("DataT", bound=BaseModel)
CatchUp = Literal["skip", "one", "all"]

#: the ``saga_type`` of a schedule's snapshot and of the commands sent to it
SCHEDULE_SAGA_TYPE = "sagaline.schedule"
#: a schedule's id (its key on the commands and state topics) is this prefix + its name
SCHEDULE_PREFIX = "schedule:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: how many skipped ticks are counted one by one (beyond it the count says "at least")
_COUNT_CAP = 10_000


class ScheduleError(SagalineError):
    """A schedule declared wrongly (bad cron expression, unknown time zone, ...)."""


def schedule_name_of(schedule_id: str) -> str | None:
    """The schedule name in a schedule id (``None`` if it is not one)."""
    if schedule_id.startswith(SCHEDULE_PREFIX):
        return schedule_id[len(SCHEDULE_PREFIX) :]
    return None


@dataclass(frozen=True)
class Schedule(Generic[DataT]):
    """Start ``saga`` at every tick of ``cron`` (or ``every``), in ``timezone``.

    ``data`` builds the saga's input from the tick (a pure function of it).
    ``catch_up`` says what happens to ticks that passed while no orchestrator
    ran: ``"all"`` starts each, ``"one"`` only the latest, ``"skip"`` none
    (the latest still starts when it is at most ``grace`` late).  ``"all"``
    starts at most ``max_per_decision`` sagas per transaction and goes on in
    the next one.
    """

    name: str
    saga: type[Saga[DataT]]
    data: Callable[[datetime], DataT]
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    catch_up: CatchUp = "one"
    grace: timedelta = timedelta(minutes=1)
    max_per_decision: int = 100
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ScheduleError(
                f"schedule name {self.name!r}: use letters, digits, '.', '_' or '-' (at most 100)"
            )
        if (self.cron is None) == (self.every is None):
            raise ScheduleError(f"schedule {self.name}: give exactly one of cron= or every=")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ScheduleError(f"schedule {self.name}: invalid cron expression {self.cron!r}")
        if self.every is not None and self.every < timedelta(seconds=1):
            raise ScheduleError(f"schedule {self.name}: every= must be at least one second")
        if self.catch_up not in ("skip", "one", "all"):
            raise ScheduleError(
                f"schedule {self.name}: catch_up must be 'skip', 'one' or 'all', "
                f"not {self.catch_up!r}"
            )
        if self.max_per_decision < 1 or self.grace < timedelta(0):
            raise ScheduleError(f"schedule {self.name}: max_per_decision >= 1 and grace >= 0")
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ScheduleError(
                f"schedule {self.name}: unknown time zone {self.timezone!r}"
            ) from exc
        object.__setattr__(self, "_zone", zone)

    # -- identity ---------------------------------------------------------------

    @property
    def schedule_id(self) -> str:
        """The schedule's key on the commands and state topics."""
        return SCHEDULE_PREFIX + self.name

    def saga_id(self, tick: datetime) -> str:
        """The one saga id of ``tick``: ``<name>@<ISO 8601 in the schedule's zone>``."""
        return f"{self.name}@{tick.astimezone(self._zone).isoformat()}"

    def describe(self) -> str:
        """One line: what fires when, and what is caught up."""
        when = f"cron {self.cron!r}" if self.cron is not None else f"every {self.every}"
        return (
            f"{when} in {self.timezone}, starts {self.saga.type_name} v{self.saga.version}, "
            f"catch-up {self.catch_up}"
        )

    def fingerprint(self) -> str:
        """SHA-256 of the declaration (a changed schedule gets a new one)."""
        text = f"{self.describe()}|grace={self.grace}|max={self.max_per_decision}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # -- ticks ----------------------------------------------------------------

    def next_after(self, t: datetime) -> datetime:
        """The first tick strictly after ``t`` (UTC)."""
        if self.every is not None:
            k = (t - _EPOCH) // self.every
            return _EPOCH + (k + 1) * self.every
        assert self.cron is not None
        local = t.astimezone(self._zone)
        nxt: datetime = croniter(self.cron, local).get_next(datetime)
        return nxt.astimezone(UTC)

    def latest_at_or_before(self, t: datetime) -> datetime:
        """The last tick at or before ``t`` (UTC)."""
        if self.every is not None:
            k = (t - _EPOCH) // self.every
            return _EPOCH + k * self.every
        assert self.cron is not None
        whole = t.replace(microsecond=0) + timedelta(seconds=1)
        prev: datetime = croniter(self.cron, whole.astimezone(self._zone)).get_prev(datetime)
        return prev.astimezone(UTC)

    def ticks_between(self, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """The ticks in ``(after, until]``, oldest first, at most ``limit`` of them."""
        ticks: list[datetime] = []
        tick = self.next_after(after)
        while tick <= until and len(ticks) < limit:
            ticks.append(tick)
            tick = self.next_after(tick)
        return ticks

    def input_for(self, tick: datetime) -> DataT:
        """The saga's input for ``tick`` (checked to be the saga's data model)."""
        data = self.data(tick)
        if not isinstance(data, self.saga.data_type):
            raise ScheduleError(
                f"schedule {self.name}: data() returned a {type(data).__name__}, "
                f"{self.saga.type_name} takes a {self.saga.data_type.__name__}"
            )
        return data


@dataclass(frozen=True)
class DueTicks:
    """What one decision at ``now`` does: the ticks to start, how many were
    skipped, and the new cursor (the latest tick decided, started or skipped)."""

    start: tuple[datetime, ...]
    skipped: int
    cursor: datetime | None


def due_ticks(schedule: Schedule[Any], cursor: datetime, now: datetime) -> DueTicks:
    """The ticks in ``(cursor, now]`` to start under ``schedule.catch_up``.

    ``cursor`` is the last tick already decided (or when the schedule was
    declared).  The returned cursor is ``None`` when nothing was due; a tick
    at or before ``cursor`` is never returned, so no tick starts twice
    whatever ``now`` says (a clock that went back decides nothing).
    """
    if schedule.catch_up == "all":
        ticks = schedule.ticks_between(cursor, now, schedule.max_per_decision)
        return DueTicks(tuple(ticks), 0, ticks[-1] if ticks else None)
    latest = schedule.latest_at_or_before(now)
    if latest <= cursor:
        return DueTicks((), 0, None)
    missed = len(schedule.ticks_between(cursor, latest, _COUNT_CAP)) - 1
    if schedule.catch_up == "skip" and now - latest > schedule.grace:
        return DueTicks((), missed + 1, latest)
    return DueTicks((latest,), missed, latest)
