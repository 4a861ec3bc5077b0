"""A schedule's decisions: declare, tick, pause, resume (pure).

A schedule lives like a saga on the partition its id (``schedule:<name>``)
hashes to.  Its snapshot is a :class:`SagaState` of type
``sagaline.schedule`` whose ``data`` is a :class:`ScheduleData` and whose one
timer (kind ``sleep``) is the next tick, so a restored or rebalanced
orchestrator rebuilds it like any saga timer.  Inputs:

- ``StartSaga`` (sent by every orchestrator at start): declares the schedule;
  the first one sets ``declared_at`` (no tick before it ever starts), a later
  one with another fingerprint updates the declaration (the ticks of the new
  one start after it), the same one is ignored;
- ``TimerFired`` of the tick timer: :func:`~sagaline.orchestrator.core.schedule.due_ticks`
  at the firing's time, one ``StartSaga`` per tick to start, keyed by the
  tick's saga id, decided in the same transaction as the new cursor;
- ``PauseSaga`` / ``ResumeSaga``: a paused schedule has no timer; resuming
  moves the cursor to the latest tick (ticks that passed while paused never
  start).

Anything else is refused.  No clock: every time is the input's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from sagaline.orchestrator.core.decision import derive_message_id
from sagaline.orchestrator.core.payloads import from_payload, input_sha256, to_payload
from sagaline.orchestrator.core.schedule import (
    SCHEDULE_SAGA_TYPE,
    CatchUp,
    Schedule,
    due_ticks,
)
from sagaline.schemas.base import Envelope
from sagaline.schemas.commands import PauseSaga, ResumeSaga, StartSaga
from sagaline.schemas.state import SagaState, Timer
from sagaline.schemas.timers import TimerFired

__all__ = [
    "TICK_TIMER",
    "ScheduleData",
    "ScheduleDecision",
    "ScheduleDeclaration",
    "decide_schedule",
    "declaration",
    "schedule_data",
    "tick_input",
]

#: the timer id of a schedule's next tick
TICK_TIMER = "schedule-tick"


class ScheduleDeclaration(BaseModel):
    """The data of the ``StartSaga`` that declares a schedule."""

    name: str
    describe: str
    fingerprint: str


class ScheduleData(BaseModel):
    """A schedule's state (the ``data`` of its snapshot)."""

    name: str
    saga_type: str
    describe: str
    fingerprint: str
    catch_up: CatchUp
    declared_at: datetime
    #: the latest tick decided (started or skipped); ``None`` before the first
    cursor: datetime | None = None
    last_started: datetime | None = None
    last_saga_id: str | None = None
    started: int = 0
    skipped: int = 0
    paused: bool = False
    #: who paused or resumed it last, when and why
    changed_by: str | None = None
    changed_at: datetime | None = None
    reason: str | None = None

    @property
    def since(self) -> datetime:
        """Ticks after this one may start."""
        return self.cursor if self.cursor is not None else self.declared_at


@dataclass(frozen=True)
class ScheduleDecision:
    """The schedule's new snapshot (``state`` is the old one when nothing changed),
    the sagas to start, and why an input was refused (``rejected``)."""

    state: SagaState | None
    starts: tuple[StartSaga, ...] = ()
    rejected: str | None = None


def schedule_data(state: SagaState) -> ScheduleData:
    """The :class:`ScheduleData` in a schedule's snapshot."""
    return from_payload(state.data, ScheduleData)


def declaration(schedule: Schedule[Any], *, at: datetime, message_id: str) -> StartSaga:
    """The ``StartSaga`` that declares ``schedule`` (sent when an orchestrator starts)."""
    payload = to_payload(
        ScheduleDeclaration(
            name=schedule.name, describe=schedule.describe(), fingerprint=schedule.fingerprint()
        )
    )
    return StartSaga(
        envelope=Envelope(
            message_id=message_id,
            saga_id=schedule.schedule_id,
            saga_type=SCHEDULE_SAGA_TYPE,
            occurred_at=at,
            correlation_id=schedule.schedule_id,
        ),
        data=payload,
        input_sha256=input_sha256(payload),
        requested_by="orchestrator",
    )


def tick_input(state: SagaState, now: datetime) -> TimerFired | None:
    """The ``TimerFired`` input of the schedule's tick timer (``None`` without one)."""
    timer = next((t for t in state.timers if t.timer_id == TICK_TIMER), None)
    if timer is None:
        return None
    return TimerFired(
        envelope=Envelope(
            message_id=derive_message_id(state.saga_id, "tick", timer.due_at.isoformat()),
            saga_id=state.saga_id,
            saga_type=SCHEDULE_SAGA_TYPE,
            occurred_at=max(now, timer.due_at),
            correlation_id=state.saga_id,
        ),
        timer_id=TICK_TIMER,
        kind="sleep",
        due_at=timer.due_at,
    )


def _snapshot(
    schedule: Schedule[Any], before: SagaState | None, data: ScheduleData, now: datetime, sha: str
) -> SagaState:
    timers = (
        []
        if data.paused
        else [Timer(timer_id=TICK_TIMER, kind="sleep", due_at=_next(schedule, data))]
    )
    fields: dict[str, Any] = {
        "status": "paused" if data.paused else "running",
        "data": to_payload(data),
        "timers": timers,
        "sleeping_until": timers[0].due_at if timers else None,
        "updated_at": now,
    }
    if before is not None:
        return before.model_copy(update=fields)
    return SagaState(
        saga_id=schedule.schedule_id,
        saga_type=SCHEDULE_SAGA_TYPE,
        saga_version=1,
        started_at=now,
        input_sha256=sha,
        requested_by="orchestrator",
        **fields,
    )


def _next(schedule: Schedule[Any], data: ScheduleData) -> datetime:
    return schedule.next_after(data.since)


def _start(schedule: Schedule[Any], tick: datetime, cause: Envelope) -> StartSaga:
    payload = to_payload(schedule.input_for(tick))
    return StartSaga(
        envelope=Envelope(
            message_id=derive_message_id(schedule.schedule_id, "start", tick.isoformat()),
            saga_id=schedule.saga_id(tick),
            saga_type=schedule.saga.type_name,
            saga_version=schedule.saga.version,
            occurred_at=cause.occurred_at,
            causation_id=cause.message_id,
            correlation_id=schedule.schedule_id,
        ),
        data=payload,
        input_sha256=input_sha256(payload),
        requested_by=schedule.schedule_id,
    )


def _declare(schedule: Schedule[Any], state: SagaState | None, cmd: StartSaga) -> ScheduleDecision:
    now = cmd.envelope.occurred_at
    fingerprint = schedule.fingerprint()
    if state is None:
        data = ScheduleData(
            name=schedule.name,
            saga_type=schedule.saga.type_name,
            describe=schedule.describe(),
            fingerprint=fingerprint,
            catch_up=schedule.catch_up,
            declared_at=now,
        )
        return ScheduleDecision(_snapshot(schedule, None, data, now, cmd.input_sha256))
    data = schedule_data(state)
    if data.fingerprint == fingerprint:
        return ScheduleDecision(state)  # declared again as it is: nothing to do
    changed = data.model_copy(
        update={
            "saga_type": schedule.saga.type_name,
            "describe": schedule.describe(),
            "fingerprint": fingerprint,
            "catch_up": schedule.catch_up,
            # the changed declaration's ticks start after it
            "cursor": max(data.since, now),
        }
    )
    return ScheduleDecision(_snapshot(schedule, state, changed, now, cmd.input_sha256))


def _tick(schedule: Schedule[Any], state: SagaState, fired: TimerFired) -> ScheduleDecision:
    data = schedule_data(state)
    current = next((t for t in state.timers if t.timer_id == TICK_TIMER), None)
    if data.paused or current is None or current.due_at != fired.due_at:
        return ScheduleDecision(state)  # a stale firing: the timer moved on or was removed
    now = fired.envelope.occurred_at
    due = due_ticks(schedule, data.since, now)
    if due.cursor is None:
        return ScheduleDecision(state)  # not due yet (the firing carries its due time)
    starts = tuple(_start(schedule, tick, fired.envelope) for tick in due.start)
    update: dict[str, Any] = {"cursor": due.cursor, "skipped": data.skipped + due.skipped}
    if starts:
        update.update(
            last_started=due.start[-1],
            last_saga_id=starts[-1].envelope.saga_id,
            started=data.started + len(starts),
        )
    after = _snapshot(schedule, state, data.model_copy(update=update), now, state.input_sha256)
    return ScheduleDecision(after, starts)


def _pause_resume(
    schedule: Schedule[Any], state: SagaState, cmd: PauseSaga | ResumeSaga
) -> ScheduleDecision:
    data = schedule_data(state)
    pause = isinstance(cmd, PauseSaga)
    if data.paused == pause:
        return ScheduleDecision(state)  # already paused (or running): nothing to do
    now = cmd.envelope.occurred_at
    update: dict[str, Any] = {
        "paused": pause,
        "changed_by": cmd.by,
        "changed_at": now,
        "reason": cmd.reason,
    }
    if not pause:
        latest = schedule.latest_at_or_before(now)
        if latest > data.since:
            # the ticks that passed while paused never start
            missed = len(schedule.ticks_between(data.since, latest, 10_000))
            update.update(cursor=latest, skipped=data.skipped + missed)
    after = data.model_copy(update=update)
    return ScheduleDecision(_snapshot(schedule, state, after, now, state.input_sha256))


def decide_schedule(
    schedule: Schedule[Any], state: SagaState | None, message: object
) -> ScheduleDecision:
    """Decide one input of ``schedule`` (see the module's docstring)."""
    if isinstance(message, StartSaga):
        return _declare(schedule, state, message)
    if state is None:
        return ScheduleDecision(None, rejected=f"schedule {schedule.name} is not declared yet")
    if isinstance(message, TimerFired):
        return _tick(schedule, state, message)
    if isinstance(message, PauseSaga | ResumeSaga):
        return _pause_resume(schedule, state, message)
    kind = type(message).__name__
    return ScheduleDecision(state, rejected=f"a schedule takes pause and resume only, not {kind}")
