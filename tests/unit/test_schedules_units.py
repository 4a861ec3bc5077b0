"""Schedules without Kafka: declarations refused in one line, the runtime's routing of
schedule ids, a re-sent tick start that starts nothing, and the daily digest."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel

from sagaline import Saga, SagaTestKit, Schedule, StepContext, step
from sagaline.orchestrator.core.payloads import to_payload
from sagaline.orchestrator.core.registry import SagaRegistry
from sagaline.orchestrator.core.schedule import SCHEDULE_SAGA_TYPE, ScheduleError
from sagaline.orchestrator.core.schedule_decide import declaration, schedule_data
from sagaline.orchestrator.runtime.core import CoreLogic
from sagaline.orchestrator.runtime.errors import InputRejected
from sagaline.orchestrator.runtime.schedules import ScheduledLogic, split_app
from sagaline.sagas.digest import DAILY_DIGEST, DailyDigest, Digest
from sagaline.schemas.base import Envelope
from sagaline.schemas.commands import SignalSaga, StartSaga
from sagaline.schemas.state import SagaState

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 30, 7, 59, 58, tzinfo=UTC)


class Beat(BaseModel):
    at: datetime


class Other(BaseModel):
    x: int = 0


class Beating(Saga[Beat]):
    type_name = "beating-unit"

    @step
    def work(self, ctx: StepContext, data: Beat) -> None:
        return None


def every_minute(**kw: object) -> Schedule[Beat]:
    return Schedule(
        "beat",
        Beating,
        lambda t: Beat(at=t),
        every=timedelta(minutes=1),
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"cron": "61 * * * *"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "0 8 * * *", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"cron": "0 8 * * *", "every": timedelta(hours=1)}, "exactly one of cron= or every="),
        ({}, "exactly one of cron= or every="),
        ({"every": timedelta(0)}, "every= must be at least one second"),
        ({"cron": "0 8 * * *", "catch_up": "most"}, "catch_up must be 'skip', 'one' or 'all'"),
    ],
)
def test_a_wrong_declaration_is_one_line(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        Schedule("nightly", Beating, lambda t: Beat(at=t), **kwargs)  # type: ignore[arg-type]
    text = str(caught.value)
    assert text.startswith("schedule nightly: ") and says in text and "\n" not in text


def test_a_bad_name_and_a_wrong_data_model_are_refused() -> None:
    with pytest.raises(ScheduleError, match="schedule name 'a b'"):
        Schedule("a b", Beating, lambda t: Beat(at=t), every=timedelta(minutes=1))
    wrong = Schedule("w", Beating, lambda t: Other(), every=timedelta(minutes=1))  # type: ignore[arg-type,return-value]
    with pytest.raises(ScheduleError, match="returned a Other, beating-unit takes a Beat"):
        wrong.input_for(T0)


def test_split_app_adds_a_schedules_saga_and_leaves_other_apps_alone() -> None:
    beat = every_minute()
    sagas, schedules = split_app([beat])
    assert sagas == [Beating] and schedules == [beat]
    registry = SagaRegistry([Beating])
    assert split_app(registry) == (registry, [])
    assert split_app([Beating]) == ([Beating], [])


def logic(*schedules: Schedule[Beat]) -> ScheduledLogic:
    return ScheduledLogic(CoreLogic(SagaRegistry([Beating])), schedules or [every_minute()])


def declared(lg: ScheduledLogic, at: datetime = T0) -> SagaState:
    beat = lg.schedules["beat"]
    outcome = lg.decide(None, declaration(beat, at=at, message_id=str(uuid.uuid4())))
    assert isinstance(outcome.state, SagaState) and outcome.outgoing == ()
    return outcome.state


def test_the_runtime_decides_a_schedules_tick_into_one_start() -> None:
    lg = logic()
    state = declared(lg)
    assert state.saga_type == SCHEDULE_SAGA_TYPE and not lg.is_terminal(state)
    [timer] = lg.timers(state)
    assert timer.due_at == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    fired = lg.timer_input(state, timer.timer_id, timer.due_at + timedelta(milliseconds=5))
    assert fired is not None
    outcome = lg.decide(state, fired)
    [out] = outcome.outgoing
    assert out.destination == "commands" and isinstance(out.record, StartSaga)
    assert out.record.envelope.saga_id == "beat@2026-11-30T08:00:00+00:00"
    assert out.record.requested_by == "schedule:beat"
    after = schedule_data(outcome.state)  # type: ignore[arg-type]
    assert after.started == 1 and after.last_saga_id == out.record.envelope.saga_id
    # the same firing again (a redelivered timer) is stale: nothing more starts
    again = lg.decide(outcome.state, fired)
    assert again.outgoing == () and again.state is outcome.state


def test_a_re_sent_start_of_a_tick_starts_nothing() -> None:
    lg = logic()
    state = declared(lg)
    fired = lg.timer_input(state, "schedule-tick", datetime(2026, 11, 30, 8, 0, 1, tzinfo=UTC))
    assert fired is not None
    start = lg.decide(state, fired).outgoing[0].record
    assert isinstance(start, StartSaga)
    first = lg.decide(None, start)
    assert isinstance(first.state, SagaState) and first.outgoing  # the saga's first task
    second = lg.decide(first.state, start)  # the same StartSaga, delivered twice
    assert second.outgoing == ()
    assert isinstance(second.state, SagaState)
    assert second.state.steps == first.state.steps and second.state.status == "running"


def test_unknown_schedules_and_other_commands_are_refused() -> None:
    lg = logic()
    state = declared(lg)
    env = Envelope(
        message_id="m", saga_id="schedule:beat", saga_type=SCHEDULE_SAGA_TYPE, occurred_at=T0
    )
    with pytest.raises(InputRejected, match="pause and resume only, not SignalSaga"):
        lg.decide(state, SignalSaga(envelope=env, name="go", by="x"))
    stray = declaration(every_minute(), at=T0, message_id="m2").model_copy(
        update={"envelope": env.model_copy(update={"saga_id": "schedule:nightly"})}
    )
    with pytest.raises(InputRejected, match="no schedule 'schedule:nightly' is declared"):
        lg.decide(None, stray)
    # a schedule dropped from the code keeps its snapshot and has no timer
    assert ScheduledLogic(CoreLogic(SagaRegistry([Beating])), []).timers(state) == []


def test_a_changed_declaration_starts_after_it_is_decided() -> None:
    lg = logic()
    state = declared(lg)
    hourly = Schedule("beat", Beating, lambda t: Beat(at=t), every=timedelta(hours=1))
    changed_at = T0 + timedelta(minutes=30)
    outcome = ScheduledLogic(CoreLogic(SagaRegistry([Beating])), [hourly]).decide(
        state, declaration(hourly, at=changed_at, message_id="m3")
    )
    data = schedule_data(outcome.state)  # type: ignore[arg-type]
    assert data.fingerprint == hourly.fingerprint() and data.cursor == changed_at
    assert outcome.state.timers[0].due_at == datetime(2026, 11, 30, 9, tzinfo=UTC)  # type: ignore[attr-defined]


def test_the_daily_digest_runs_every_paris_morning_and_keeps_its_numbers() -> None:
    tick = DAILY_DIGEST.next_after(datetime(2026, 7, 1, 12, tzinfo=UTC))
    assert tick == datetime(2026, 7, 2, 6, tzinfo=UTC)  # 08:00 in Paris, summer time
    assert DAILY_DIGEST.saga_id(tick) == "daily-digest@2026-07-02T08:00:00+02:00"
    data = DAILY_DIGEST.input_for(tick)
    assert data.until - data.since == timedelta(days=1)
    kit = SagaTestKit(DailyDigest, saga_id=DAILY_DIGEST.saga_id(tick))
    kit.start(data)
    kit.succeed(DailyDigest.compile_digest, Digest(refunds_paid=3, refunded_cents=12_500))
    kit.expect_status("completed")
    assert kit.data.refunds_paid == 3 and kit.data.refunded_cents == 12_500
    assert to_payload(kit.data).type_name.endswith("DigestData")
