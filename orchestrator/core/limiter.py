"""The limiter: one key's slots, decided purely (no I/O, no clock).

A limiter (``limit:<name>:<key>``) holds the slots of one key of one limit
across every saga: the holders, the FIFO queue of those waiting and the
times of its recent grants.  :func:`step_limiter` applies one request
(:class:`AcquireSlot`, :class:`ReleaseSlot`, or ``None`` for a window
timer) and grants, strictly in queue order, while fewer than
``max_running`` hold a slot and fewer than ``max_starts`` grants fall in
the last ``per_ms``.  When only the window holds the queue back,
``wake_at`` says when the next grant may be issued.

:func:`decide_limiter` wraps it for the runtime: the limiter lives on the
state topic as a ``SagaState`` of type ``sagaline.limiter`` (its data is a
:class:`LimiterData`; its window timer is a state timer), so restore,
timers and exactly-once commits are the sagas' own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from sagaline.orchestrator.core.decision import derive_message_id
from sagaline.orchestrator.core.limit_spec import limiter_id
from sagaline.orchestrator.core.payloads import from_payload, to_payload
from sagaline.schemas.base import Envelope, Record
from sagaline.schemas.limits import (
    LIMITER_SAGA_TYPE,
    AcquireSlot,
    ReleaseSlot,
    SlotGranted,
    SlotHolder,
)
from sagaline.schemas.state import SagaState, Timer
from sagaline.schemas.timers import TimerFired

__all__ = [
    "WINDOW_TIMER",
    "LimiterData",
    "LimiterDecision",
    "decide_limiter",
    "is_limiter_input",
    "limiter_id",
    "step_limiter",
]

#: the timer id of a limiter's "the rate window opens" timer
WINDOW_TIMER = "limiter-window"
_PREFIX = "limit:"


class LimiterData(BaseModel):
    """A limiter's state (the data of its snapshot)."""

    payload_type: ClassVar[str] = "sagaline.LimiterData"
    model_config = ConfigDict(frozen=True)

    name: str
    key: str
    max_running: int | None = None
    max_starts: int | None = None
    per_ms: int | None = None
    holders: list[SlotHolder] = []
    queue: list[SlotHolder] = []
    #: times of the grants that still count against the rate window
    grants: list[datetime] = []
    #: the latest time seen (time never runs backwards for a limiter)
    clock: datetime | None = None
    granted_total: int = 0


@dataclass(frozen=True)
class LimiterStep:
    """What one request did: the new data, the holders granted now, the next window."""

    data: LimiterData
    granted: list[SlotHolder] = field(default_factory=list)
    wake_at: datetime | None = None


def _window(data: LimiterData, now: datetime) -> list[datetime]:
    if data.max_starts is None or data.per_ms is None:
        return []
    start = now - timedelta(milliseconds=data.per_ms)
    return [g for g in data.grants if g > start]


def _grant(data: LimiterData, now: datetime) -> LimiterStep:
    holders, queue = list(data.holders), list(data.queue)
    grants = _window(data, now)
    granted: list[SlotHolder] = []
    wake_at: datetime | None = None
    while queue:
        if data.max_running is not None and len(holders) >= data.max_running:
            break
        if data.max_starts is not None and data.per_ms is not None:
            if len(grants) >= data.max_starts:
                wake_at = min(grants) + timedelta(milliseconds=data.per_ms)
                break
            grants.append(now)
        holder = queue.pop(0).model_copy(update={"at": now})
        holders.append(holder)
        granted.append(holder)
    new = data.model_copy(
        update={
            "holders": holders,
            "queue": queue,
            "grants": grants,
            "granted_total": data.granted_total + len(granted),
        }
    )
    return LimiterStep(new, granted, wake_at)


def step_limiter(
    data: LimiterData, request: AcquireSlot | ReleaseSlot | None, now: datetime
) -> LimiterStep:
    """Apply ``request`` (``None``: the window timer) at ``now`` and grant what may run."""
    if data.clock is not None and now < data.clock:
        now = data.clock
    data = data.model_copy(update={"clock": now})
    if isinstance(request, AcquireSlot):
        data = data.model_copy(
            update={
                "max_running": request.max_running,
                "max_starts": request.max_starts,
                "per_ms": request.per_ms,
            }
        )
        known = {h.holder_id for h in (*data.holders, *data.queue)}
        if request.holder.holder_id not in known:
            data = data.model_copy(update={"queue": [*data.queue, request.holder]})
    elif isinstance(request, ReleaseSlot):
        gone = request.holder_id
        data = data.model_copy(
            update={
                "holders": [h for h in data.holders if h.holder_id != gone],
                "queue": [h for h in data.queue if h.holder_id != gone],
            }
        )
    return _grant(data, now)


# -- the runtime's face ----------------------------------------------------------


@dataclass(frozen=True)
class LimiterDecision:
    """A limiter's new snapshot and the grants to send (to the commands topic)."""

    state: SagaState
    grants: tuple[SlotGranted, ...]


def is_limiter_input(record: Record, state: Record | None) -> bool:
    """Whether ``record`` (against ``state``) is for a limiter rather than a saga."""
    if isinstance(record, AcquireSlot | ReleaseSlot):
        return True
    return isinstance(state, SagaState) and state.saga_type == LIMITER_SAGA_TYPE


def _parse_id(lid: str) -> tuple[str, str]:
    name, _, key = lid.removeprefix(_PREFIX).partition(":")
    return name, key


def decide_limiter(state: SagaState | None, record: Record) -> LimiterDecision | None:
    """Decide one limiter input; ``None`` when it changes nothing (a stale timer)."""
    env: Envelope = getattr(record, "envelope")  # noqa: B009 - every input has one
    now = env.occurred_at
    if state is None:
        name, key = _parse_id(env.saga_id)
        if isinstance(record, AcquireSlot):
            name, key = record.name, record.key
        data = LimiterData(name=name, key=key)
        started = now
    else:
        data = from_payload(state.data, LimiterData)
        started = state.started_at
    if isinstance(record, TimerFired):
        if state is None or not any(t.timer_id == record.timer_id for t in state.timers):
            return None
        result = step_limiter(data, None, now)
    elif isinstance(record, AcquireSlot | ReleaseSlot):
        result = step_limiter(data, record, now)
    else:
        return None
    at = result.data.clock or now
    timers = []
    if result.wake_at is not None:
        timers.append(Timer(timer_id=WINDOW_TIMER, kind="sleep", due_at=result.wake_at))
    busy = bool(result.data.holders or result.data.queue)
    snapshot = SagaState(
        saga_id=env.saga_id,
        saga_type=LIMITER_SAGA_TYPE,
        saga_version=1,
        status="running" if busy else "waiting",
        data=to_payload(result.data),
        timers=timers,
        started_at=started,
        updated_at=at,
        input_sha256="",
    )
    grants = tuple(
        SlotGranted(
            envelope=Envelope(
                message_id=derive_message_id(env.message_id, "grant", h.holder_id),
                saga_id=h.saga_id,
                saga_type=h.saga_type,
                saga_version=h.saga_version,
                occurred_at=at,
                causation_id=env.message_id,
                correlation_id=h.saga_id,
            ),
            limiter_id=env.saga_id,
            holder_id=h.holder_id,
            step=h.step,
            queued_at=next((q.at for q in data.queue if q.holder_id == h.holder_id), at),
        )
        for h in result.granted
    )
    return LimiterDecision(snapshot, grants)
