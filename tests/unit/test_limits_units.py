"""Concurrency and rate limits by key in the test kit, the definition checks and the status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from sagaline import Limit, Saga, SagaTestKit, step
from sagaline.orchestrator.cli.status_view import summary, text
from sagaline.orchestrator.core.audit_rules import audit_entries
from sagaline.orchestrator.core.errors import SagaDefinitionError
from sagaline.orchestrator.core.limiter import LimiterData
from sagaline.orchestrator.core.payloads import from_payload
from sagaline.orchestrator.core.replay_check import check_saga
from sagaline.schemas.limits import SlotAcquired, SlotReleased, StepQueued

pytestmark = pytest.mark.unit


class Call(BaseModel):
    provider: str


PER_MINUTE = Limit("provider", key=lambda d: d.provider, max_starts=1, per=timedelta(minutes=1))


class TwoCalls(Saga[Call]):
    type_name = "test.two-calls"

    @step(compensate=None, limit=PER_MINUTE)
    def first(self, ctx: Any, data: Call) -> None:
        return None

    @step(compensate=None, limit=PER_MINUTE)
    def second(self, ctx: Any, data: Call) -> None:
        return None


def test_a_limited_step_queues_runs_on_its_grant_and_releases_when_done() -> None:
    kit = SagaTestKit(TwoCalls)
    kit.start(Call(provider="openai"))
    kit.expect_task(TwoCalls.first)  # a free slot: granted at once
    queued = kit.expect_event(StepQueued, step="first")
    assert queued.limiter_id == "limit:provider:openai"
    kit.expect_event(SlotAcquired, step="first")
    kit.succeed(TwoCalls.first)
    kit.expect_event(SlotReleased, step="first", reason="step succeeded")
    kit.expect_no_tasks()  # one start per minute: second waits for the window
    state = kit.state
    assert state is not None
    assert [(x.step, x.status) for x in state.slots] == [("second", "queued")]
    assert "second: queued for a slot of limit:provider:openai" in text(state)
    assert summary(state)["slots"][0]["status"] == "queued"
    kit.advance(seconds=30)
    kit.expect_no_tasks()
    kit.advance(seconds=30)
    kit.expect_task(TwoCalls.second)
    kit.succeed(TwoCalls.second)
    kit.expect_status("completed")
    limiter = kit.limiters.states["limit:provider:openai"]
    data = from_payload(limiter.data, LimiterData)
    assert (data.holders, data.queue, data.granted_total) == ([], [], 2)


def test_a_cancelled_saga_leaves_the_queue() -> None:
    kit = SagaTestKit(TwoCalls)
    kit.start(Call(provider="p"))
    kit.succeed(TwoCalls.first)
    kit.cancel(reason="no longer needed")
    kit.expect_event(SlotReleased, step="second")
    assert kit.state is not None and kit.state.is_terminal and not kit.state.slots
    data = from_payload(kit.limiters.states["limit:provider:p"].data, LimiterData)
    assert data.queue == [] and data.holders == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "set max_running and/or max_starts"),
        ({"max_running": 0}, "max_running must be at least 1"),
        ({"max_starts": 2}, "max_starts and per go together"),
        ({"max_running": 1, "per": timedelta(seconds=1)}, "max_starts and per go together"),
        ({"max_starts": 1, "per": timedelta(0)}, "per must be positive"),
    ],
)
def test_a_limit_says_what_is_wrong_in_one_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SagaDefinitionError, match=message):
        Limit("x", key=lambda d: "k", **kwargs)


def test_a_limit_name_has_no_colon() -> None:
    with pytest.raises(SagaDefinitionError, match="without ':'"):
        Limit("a:b", key=lambda d: "k", max_running=1)


class Nightly(Saga[Call]):
    """A saga type limited as a whole: one running per provider."""

    type_name = "test.nightly"
    limit = Limit("nightly", key=lambda d: d.provider, max_running=1)

    @step(compensate=None)
    def run(self, ctx: Any, data: Call) -> None:
        return None


def test_a_saga_type_limit_holds_its_slot_from_the_start_to_the_end() -> None:
    kit = SagaTestKit(Nightly)
    kit.start(Call(provider="p"))
    kit.expect_event(StepQueued, step="(saga)", limiter_id="limit:nightly:p")
    kit.expect_event(SlotAcquired, step="(saga)")
    kit.succeed(Nightly.run)
    kit.expect_status("completed")
    kit.expect_event(SlotReleased, step="(saga)", reason="saga completed")
    data = from_payload(kit.limiters.states["limit:nightly:p"].data, LimiterData)
    assert (data.holders, data.queue, data.granted_total) == ([], [], 1)


def test_a_limited_saga_audits_clean_and_replays_strictly() -> None:
    kit = SagaTestKit(TwoCalls, saga_id="audited")
    kit.start(Call(provider="openai"))
    kit.succeed(TwoCalls.first)
    kit.advance(minutes=1)
    kit.succeed(TwoCalls.second)
    kit.expect_status("completed")
    assert audit_entries({"audited": kit.journal}).findings == []
    checked, divergences = check_saga(kit.journal, lambda _t, _v: TwoCalls)
    assert checked == len(kit.journal) and divergences == []
