"""Schedules, property-based: across random restarts, crashes in the middle of a
tick and clock jumps (forward: downtime; backward: a clock that was fixed),
a tick never starts two sagas, and no tick is skipped beyond what the declared
catch-up policy skips.

``ScheduleTestKit`` drives the schedule as the engine does: only committed
decisions survive (a crash drops the decision in flight, its ``StartSaga``
commands and its new cursor together, as one Kafka transaction does), every
restart sends the declaration again, and the tick timer fires when the clock
has passed its due time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sagaline import Saga, StepContext, step
from sagaline.orchestrator.core.payloads import from_payload
from sagaline.orchestrator.core.schedule import Schedule, due_ticks
from sagaline.orchestrator.core.schedule_testing import ScheduleTestKit

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


#: what happens between two looks at the schedule
steps = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.integers(0, 3 * 3600)),  # an orchestrator runs
        st.tuples(st.just("down"), st.integers(0, 4 * 86_400)),  # downtime, then a restart
        st.tuples(st.just("jump"), st.integers(-2 * 3600, 6 * 3600)),  # the wall clock jumps
        st.tuples(st.just("kill_in_tick"), st.integers(0, 600)),  # SIGKILL during a tick
        st.tuples(st.just("restart"), st.booleans()),  # a restart (crashing or not)
    ),
    min_size=1,
    max_size=40,
)


def run(
    schedule: Schedule[TickData], start: datetime, ops: list[tuple[str, Any]]
) -> ScheduleTestKit:
    kit = ScheduleTestKit(schedule, now=start)
    for op, arg in ops:
        if op == "advance":
            kit.advance(seconds=arg)
        elif op == "down":
            kit.down(seconds=arg)
            kit.restart()
        elif op == "jump":
            kit.jump(seconds=arg)
        elif op == "kill_in_tick":
            due = kit.next_due
            if due is not None:
                kit.now = max(kit.now, due)  # the tick comes due ...
                kit.fire(crash=True)  # ... and the orchestrator dies before its commit
                kit.down(seconds=arg)
                kit.restart()
        else:
            kit.restart(crash=arg)
    kit.restart()
    return kit


def all_ticks(schedule: Schedule[TickData], after: datetime, until: datetime) -> list[datetime]:
    return schedule.ticks_between(after, until, 100_000)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), st.sampled_from(STARTS), steps)
def test_a_tick_never_starts_two_sagas(
    schedule: Schedule[TickData], start: datetime, ops: list[tuple[str, Any]]
) -> None:
    kit = run(schedule, start, ops)
    ids = kit.started_ids
    assert len(ids) == len(set(ids))
    ticks = [from_payload(s.data, TickData).tick for s in kit.starts]
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    declared = kit.data.declared_at
    for s, tick in zip(kit.starts, ticks, strict=True):
        assert tick > declared
        assert schedule.next_after(tick - timedelta(microseconds=1)) == tick  # a real tick
        assert s.envelope.saga_id == schedule.saga_id(tick)  # deterministic id
        assert s.envelope.saga_type == Ticked.type_name


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), st.sampled_from(STARTS), steps)
def test_no_tick_is_skipped_beyond_the_policy(
    schedule: Schedule[TickData], start: datetime, ops: list[tuple[str, Any]]
) -> None:
    kit = run(schedule, start, ops)
    data = kit.data
    started = [from_payload(s.data, TickData).tick for s in kit.starts]
    every = all_ticks(schedule, data.declared_at, data.since)
    # every tick up to the cursor was decided: started or counted as skipped
    assert data.started == len(started)
    assert data.started + data.skipped == len(every)
    if schedule.catch_up == "all":
        assert started == every  # nothing skipped at all
    # the cursor reached the latest tick the clock has passed (nothing left pending)
    due = kit.next_due
    assert due is not None and due > kit.now  # nothing left pending
    before, count = data.declared_at, 0
    for decided_at, after in kit.ticks:
        latest = schedule.latest_at_or_before(decided_at)
        began = after.started - count
        if schedule.catch_up != "all":
            assert after.cursor == latest  # every due tick was decided at once
            on_time = decided_at - latest <= schedule.grace
            # "one" always starts the latest; "skip" starts it only when it is on time
            assert began == (1 if schedule.catch_up == "one" or on_time else 0)
            if began:
                assert after.last_started == latest
        else:
            assert 1 <= began <= schedule.max_per_decision
        assert after.cursor is not None and after.cursor > before
        before, count = after.cursor, after.started


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


@settings(max_examples=60, deadline=None)
@given(schedules(), st.sampled_from(STARTS), st.integers(60, 3 * 86_400), st.integers(0, 86_400))
def test_a_paused_schedule_starts_nothing_and_resumes_after_the_pause(
    schedule: Schedule[TickData], start: datetime, paused_for: int, after: int
) -> None:
    kit = ScheduleTestKit(schedule, now=start)
    kit.pause("ops")
    assert kit.state is not None and kit.state.status == "paused" and kit.next_due is None
    kit.advance(seconds=paused_for)
    kit.down(seconds=paused_for)
    kit.restart()  # the pause survives a restart
    assert kit.starts == [] and kit.data.paused
    resumed_at = kit.now
    kit.resume("ops")
    kit.advance(seconds=after)
    ticks = [from_payload(s.data, TickData).tick for s in kit.starts]
    assert all(t > resumed_at for t in ticks)  # a tick of the pause never starts
    assert ticks == all_ticks(schedule, resumed_at, kit.now)  # on time: every policy starts it
