"""Schedules, property-based: across random restarts, crashes in the middle of a
tick and clock jumps (forward: downtime; backward: a clock that was fixed),
a tick never starts two sagas, and no tick is skipped beyond what the declared
catch-up policy skips.

The runtime is modelled exactly as the engine drives a schedule: only
committed decisions survive (a crash drops the decision in flight, its
``StartSaga`` commands and its new cursor together, as one Kafka transaction
does), every restart sends the declaration again, and the tick timer fires
when the clock has passed its due time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sagaline import Saga, StepContext, step
from sagaline.orchestrator.core.payloads import from_payload
from sagaline.orchestrator.core.schedule import Schedule, due_ticks
from sagaline.orchestrator.core.schedule_decide import (
    ScheduleData,
    decide_schedule,
    declaration,
    schedule_data,
    tick_input,
)
from sagaline.schemas.base import Envelope
from sagaline.schemas.commands import PauseSaga, ResumeSaga, StartSaga
from sagaline.schemas.state import SagaState

pytestmark = pytest.mark.unit


class TickData(BaseModel):
    tick: datetime


class Ticked(Saga[TickData]):
    type_name = "ticked-prop"

    @step()
    def work(self, ctx: StepContext, data: TickData) -> None:
        return None


CRONS = ["*/5 * * * *", "0 * * * *", "30 2 * * *", "0 8 * * 1-5", "15,45 * * * *", "0 0 1 * *"]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]
EVERY = [timedelta(minutes=1), timedelta(minutes=7), timedelta(hours=1), timedelta(days=1)]
#: near the 2026 daylight-saving changes of Europe and the US
STARTS = [
    datetime(2026, 3, 7, 22, tzinfo=UTC),
    datetime(2026, 3, 28, 20, tzinfo=UTC),
    datetime(2026, 10, 24, 20, tzinfo=UTC),
    datetime(2026, 10, 31, 22, tzinfo=UTC),
    datetime(2026, 11, 30, 7, 58, tzinfo=UTC),
]


@st.composite
def schedules(draw: st.DrawFn) -> Schedule[TickData]:
    zone = draw(st.sampled_from(ZONES))
    policy = draw(st.sampled_from(["skip", "one", "all"]))
    cap = draw(st.sampled_from([1, 3, 100]))
    grace = timedelta(seconds=draw(st.sampled_from([0, 30, 600])))
    if draw(st.booleans()):
        return Schedule(
            "prop",
            Ticked,
            lambda t: TickData(tick=t),
            cron=draw(st.sampled_from(CRONS)),
            timezone=zone,
            catch_up=policy,
            max_per_decision=cap,
            grace=grace,
        )
    return Schedule(
        "prop",
        Ticked,
        lambda t: TickData(tick=t),
        every=draw(st.sampled_from(EVERY)),
        timezone=zone,
        catch_up=policy,
        max_per_decision=cap,
        grace=grace,
    )


#: ("advance", seconds) | ("back", seconds) | ("fire", crash) | ("restart", crash)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 3 * 3600)),
        st.tuples(st.just("advance"), st.integers(0, 4 * 86_400)),  # downtime
        st.tuples(st.just("back"), st.integers(0, 2 * 3600)),  # a clock jump back
        st.tuples(st.just("fire"), st.booleans()),
        st.tuples(st.just("restart"), st.booleans()),
    ),
    min_size=1,
    max_size=40,
)


@dataclass
class Runtime:
    """The committed world: the schedule's snapshot and every StartSaga committed."""

    schedule: Schedule[TickData]
    now: datetime
    state: SagaState | None = None
    started: list[StartSaga] = field(default_factory=list)
    #: (decision time, cursor before, data after) of every committed tick decision
    ticks: list[tuple[datetime, datetime, ScheduleData]] = field(default_factory=list)

    def commit(self, message: object, crash: bool) -> None:
        decision = decide_schedule(self.schedule, self.state, message)
        assert decision.rejected is None
        if crash:
            return  # the transaction never committed: state and starts are both lost
        if decision.state is not self.state and self.state is not None and decision.starts:
            before = schedule_data(self.state).since
            self.ticks.append((self.now, before, schedule_data(decision.state)))  # type: ignore[arg-type]
        self.state = decision.state
        self.started.extend(decision.starts)

    def restart(self, crash: bool) -> None:
        self.commit(declaration(self.schedule, at=self.now, message_id=str(uuid.uuid4())), crash)

    def due(self) -> bool:
        if self.state is None:
            return False
        return any(t.due_at <= self.now for t in self.state.timers)

    def fire(self, crash: bool) -> None:
        if self.due():
            assert self.state is not None
            message = tick_input(self.state, self.now)
            assert message is not None
            self.commit(message, crash)

    def drain(self) -> None:
        for _ in range(10_000):
            if not self.due():
                return
            self.fire(False)
        raise AssertionError("the schedule never caught up")


def run(schedule: Schedule[TickData], start: datetime, ops: list[tuple[str, Any]]) -> Runtime:
    rt = Runtime(schedule, start)
    rt.restart(False)
    for op, arg in ops:
        if op == "advance":
            rt.now += timedelta(seconds=arg)
        elif op == "back":
            rt.now -= timedelta(seconds=arg)
        elif op == "fire":
            rt.fire(arg)
        else:
            rt.restart(arg)
    rt.drain()
    return rt


def all_ticks(schedule: Schedule[TickData], after: datetime, until: datetime) -> list[datetime]:
    return schedule.ticks_between(after, until, 100_000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), st.sampled_from(STARTS), steps)
def test_a_tick_never_starts_two_sagas(
    schedule: Schedule[TickData], start: datetime, ops: list[tuple[str, Any]]
) -> None:
    rt = run(schedule, start, ops)
    ids = [s.envelope.saga_id for s in rt.started]
    assert len(ids) == len(set(ids))
    ticks = [from_payload(s.data, TickData).tick for s in rt.started]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    assert rt.state is not None
    declared = schedule_data(rt.state).declared_at
    for s, tick in zip(rt.started, ticks, strict=True):
        assert tick > declared
        assert schedule.next_after(tick - timedelta(microseconds=1)) == tick  # a real tick
        assert s.envelope.saga_id == schedule.saga_id(tick)  # deterministic id
        assert s.envelope.saga_type == Ticked.type_name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), st.sampled_from(STARTS), steps)
def test_no_tick_is_skipped_beyond_the_policy(
    schedule: Schedule[TickData], start: datetime, ops: list[tuple[str, Any]]
) -> None:
    rt = run(schedule, start, ops)
    assert rt.state is not None
    data = schedule_data(rt.state)
    started = [from_payload(s.data, TickData).tick for s in rt.started]
    every = all_ticks(schedule, data.declared_at, data.since)
    # every tick up to the cursor was decided: started or counted as skipped
    assert data.started == len(started)
    assert data.started + data.skipped == len(every)
    if schedule.catch_up == "all":
        assert started == every  # nothing skipped at all
    # the cursor reached the latest tick the clock has passed (nothing left pending)
    assert not rt.due()
    for decided_at, before, after in rt.ticks:
        latest = schedule.latest_at_or_before(decided_at)
        if schedule.catch_up == "one":
            # the latest due tick always starts
            assert after.last_started == latest
        if schedule.catch_up == "skip":
            assert after.last_started is not None
            assert decided_at - after.last_started <= schedule.grace
            assert after.last_started == latest
        assert after.last_started is not None and after.last_started > before


@settings(max_examples=100, deadline=None)
@given(schedules(), st.sampled_from(STARTS), st.integers(0, 5 * 86_400))
def test_a_firing_on_time_starts_the_tick_under_every_policy(
    schedule: Schedule[TickData], start: datetime, offset: int
) -> None:
    now = start + timedelta(seconds=offset)
    tick = schedule.next_after(now)
    due = due_ticks(schedule, now, tick)
    assert due.start == (tick,)
    assert due.cursor == tick


def _command(kind: type[PauseSaga | ResumeSaga], schedule: Schedule[Any], at: datetime) -> Any:
    env = Envelope(
        message_id=str(uuid.uuid4()),
        saga_id=schedule.schedule_id,
        saga_type="sagaline.schedule",
        occurred_at=at,
    )
    return kind(envelope=env, by="ops", reason="test")


@settings(max_examples=60, deadline=None)
@given(schedules(), st.sampled_from(STARTS), st.integers(60, 3 * 86_400), st.integers(0, 86_400))
def test_a_paused_schedule_starts_nothing_and_resumes_after_the_pause(
    schedule: Schedule[TickData], start: datetime, paused_for: int, after: int
) -> None:
    rt = run(schedule, start, [])
    rt.commit(_command(PauseSaga, schedule, rt.now), False)
    assert rt.state is not None and rt.state.status == "paused" and not rt.state.timers
    rt.now += timedelta(seconds=paused_for)
    rt.drain()
    assert rt.started == []
    resumed_at = rt.now
    rt.commit(_command(ResumeSaga, schedule, rt.now), False)
    rt.now += timedelta(seconds=after)
    rt.drain()
    ticks = [from_payload(s.data, TickData).tick for s in rt.started]
    assert all(t > resumed_at for t in ticks)  # a tick of the pause never starts
    if schedule.catch_up == "all":
        assert ticks == all_ticks(schedule, resumed_at, rt.now)
