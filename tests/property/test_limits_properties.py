"""Property tests of concurrency and rate limits by key (the pure core).

Two levels:

* the limiter alone (:func:`step_limiter`): random acquires, releases of
  holders and of waiters, time jumps and window timers, with its state sent
  through the Avro codec (a restore) between requests: never more than
  ``max_running`` holders, grants strictly in arrival order, never more than
  ``max_starts`` grants in any ``per`` window, and nothing stuck at the end;
* sagas and limiters together through the real decider (``CoreLogic``):
  random interleavings of the commands topic per key, workers that answer,
  fail or hang (a timed-out step), cancels, and re-decisions of a message
  whose transaction aborted (a crash before commit).  Never more than N
  steps of one key run or hold a slot at once, each limiter grants in FIFO
  order, and once everything drains every saga has ended and no limiter
  holds or queues anything (no slot leaked).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sagaline.orchestrator.core.decider import derive_message_id
from sagaline.orchestrator.core.limit_spec import Limit
from sagaline.orchestrator.core.limiter import LimiterData, step_limiter
from sagaline.orchestrator.core.payloads import from_payload, input_sha256, to_payload
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.saga import Saga, step
from sagaline.orchestrator.runtime.core import CoreLogic
from sagaline.schemas.base import Envelope, Record
from sagaline.schemas.codec import default_codec
from sagaline.schemas.commands import CancelSaga, StartSaga
from sagaline.schemas.limits import (
    LIMITER_SAGA_TYPE,
    AcquireSlot,
    ReleaseSlot,
    SlotGranted,
    SlotHolder,
)
from sagaline.schemas.replies import StepFailed, StepSucceeded
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import ExecuteStep

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
CODEC = default_codec()


# -- the limiter alone ---------------------------------------------------------------


def _holder(i: int, at: datetime) -> SlotHolder:
    return SlotHolder(
        holder_id=f"h{i}", saga_id=f"s{i}", saga_type="t", saga_version=1, step="x", at=at
    )


def _env(i: int, at: datetime) -> Envelope:
    return Envelope(message_id=f"m{i}", saga_id="limit:l:k", saga_type="t", occurred_at=at)


def _restore(data: LimiterData) -> LimiterData:
    """Through the wire and back, as a restored orchestrator reads it."""
    snapshot = SagaState(
        saga_id="limit:l:k",
        saga_type=LIMITER_SAGA_TYPE,
        saga_version=1,
        data=to_payload(data),
        started_at=T0,
        updated_at=T0,
        input_sha256="",
    )
    decoded = CODEC.decode(CODEC.encode(snapshot), (SagaState,))
    assert isinstance(decoded, SagaState)
    return from_payload(decoded.data, LimiterData)


op = st.one_of(
    st.tuples(st.just("acquire"), st.integers(0, 0)),
    st.tuples(st.just("release_holder"), st.integers(0, 50)),
    st.tuples(st.just("release_waiter"), st.integers(0, 50)),
    st.tuples(st.just("time"), st.integers(1, 4000)),
    st.tuples(st.just("tick"), st.integers(0, 0)),
)


@settings(max_examples=300, deadline=None)
@given(
    max_running=st.one_of(st.none(), st.integers(1, 4)),
    rate=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(500, 3000))),
    ops=st.lists(op, min_size=1, max_size=60),
)
def test_limiter_never_exceeds_its_limits_and_grants_in_order(
    max_running: int | None, rate: tuple[int, int] | None, ops: list[tuple[str, int]]
) -> None:
    if max_running is None and rate is None:
        max_running = 2
    max_starts, per_ms = rate if rate is not None else (None, None)
    data = LimiterData(name="l", key="k")
    now = T0
    arrivals: list[str] = []
    grant_log: list[tuple[str, datetime]] = []
    wake: datetime | None = None
    n = 0

    def apply(request: AcquireSlot | ReleaseSlot | None) -> None:
        nonlocal data, wake
        result = step_limiter(data, request, now)
        data = _restore(result.data)
        wake = result.wake_at
        grant_log.extend((h.holder_id, now) for h in result.granted)

    for kind, arg in ops:
        if kind == "acquire":
            n += 1
            arrivals.append(f"h{n}")
            request = AcquireSlot(
                envelope=_env(n, now),
                name="l",
                key="k",
                holder=_holder(n, now),
                max_running=max_running,
                max_starts=max_starts,
                per_ms=per_ms,
            )
            apply(request)
        elif kind in ("release_holder", "release_waiter"):
            pool = data.holders if kind == "release_holder" else data.queue
            if pool:
                gone = pool[arg % len(pool)].holder_id
                apply(ReleaseSlot(envelope=_env(n, now), holder_id=gone, reason="done"))
        elif kind == "time":
            now += timedelta(milliseconds=arg)
        elif wake is not None and now >= wake:
            apply(None)  # the window timer fires (never before it is due)
        if max_running is not None:
            assert len(data.holders) <= max_running
        if wake is not None:
            assert data.queue, "a window timer with nobody waiting"

    granted = [h for h, _ in grant_log]
    assert len(set(granted)) == len(granted), "a holder granted twice"
    assert granted == [h for h in arrivals if h in set(granted)], "grants out of arrival order"
    if max_starts is not None and per_ms is not None:
        times = sorted(t for _, t in grant_log)
        per = timedelta(milliseconds=per_ms)
        for i, start in enumerate(times):
            assert len([t for t in times[i:] if t < start + per]) <= max_starts
    # drained: release every holder, let the windows pass: nobody stays queued
    for _ in range(len(arrivals) + 1):
        for h in list(data.holders):
            apply(ReleaseSlot(envelope=_env(n, now), holder_id=h.holder_id, reason="done"))
        now += timedelta(milliseconds=per_ms or 1)
        apply(None)
    assert not data.queue and not data.holders


# -- sagas and limiters through the decider --------------------------------------------


class Work(BaseModel):
    customer: str


class Limited(Saga[Work]):
    type_name = "test.limited"
    version = 1

    @step(
        compensate=None,
        limit=Limit("customer", key=lambda d: d.customer, max_running=2),
        retry=Retry(max_attempts=2, initial=timedelta(seconds=1)),
        timeout=timedelta(seconds=30),
    )
    def work(self, ctx: Any, data: Work) -> None:
        return None

    @step(compensate=None)
    def after(self, ctx: Any, data: Work) -> None:
        return None


class Whole(Saga[Work]):
    """Limited as a type: one saga per customer from its start to its end."""

    type_name = "test.whole"
    version = 1
    limit = Limit("whole", key=lambda d: d.customer, max_running=1)

    @step(compensate=None, timeout=timedelta(seconds=30), retry=Retry(max_attempts=1))
    def only(self, ctx: Any, data: Work) -> None:
        return None


LOGIC = CoreLogic.from_object([Limited, Whole])


@dataclass
class World:
    """Committed snapshots by key, the commands topic per key, the tasks outstanding."""

    now: datetime = T0
    states: dict[str, Record] = field(default_factory=dict)
    topic: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))
    tasks: list[ExecuteStep] = field(default_factory=list)
    arrivals: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    grants: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    seq: int = 0

    def env(self, saga_id: str, saga_type: str = Limited.type_name) -> Envelope:
        self.seq += 1
        self.now += timedelta(milliseconds=10)
        return Envelope(
            message_id=derive_message_id("world", self.seq),
            saga_id=saga_id,
            saga_type=saga_type,
            occurred_at=self.now,
        )

    def deliver(self, key: str, *, commit: bool = True) -> None:
        record = self.topic[key][0]
        outcome = LOGIC.decide(self.states.get(key), record)
        if not commit:
            return  # the transaction aborted: the input stays, nothing happened
        self.topic[key].pop(0)
        if isinstance(record, AcquireSlot):
            self.arrivals[key].append(record.holder.holder_id)
        self.states[key] = CODEC.decode(CODEC.encode(outcome.state), (SagaState,))
        for out in outcome.outgoing:
            rec = out.record
            if isinstance(rec, ExecuteStep):
                self.tasks.append(rec)
            else:
                if isinstance(rec, SlotGranted):
                    self.grants[rec.limiter_id].append(rec.holder_id)
                self.topic[rec.envelope.saga_id].append(rec)  # type: ignore[attr-defined]

    def fire_timers(self) -> None:
        for key, state in list(self.states.items()):
            for spec in LOGIC.timers(state):
                if spec.due_at <= self.now:
                    record = LOGIC.timer_input(state, spec.timer_id, self.now)
                    if record is not None:
                        self.topic[key].insert(0, record)
                        self.deliver(key)
                        state = self.states[key]

    def answer(self, index: int, how: str) -> None:
        task = self.tasks.pop(index % len(self.tasks))
        env = self.env(task.envelope.saga_id, task.envelope.saga_type)
        if how == "ok":
            reply: Record = StepSucceeded.for_task(task, envelope=env)
        elif how == "fail":
            reply = StepFailed.for_task(
                task, envelope=env, retryable=True, error_type="Boom", error_message="boom"
            )
        else:
            return  # the worker died: the step times out
        self.topic[task.envelope.saga_id].append(reply)

    def check(self) -> None:
        running: dict[str, int] = defaultdict(int)
        holding: dict[str, int] = defaultdict(int)
        whole: dict[str, int] = defaultdict(int)
        for state in self.states.values():
            assert isinstance(state, SagaState)
            if state.saga_type == LIMITER_SAGA_TYPE:
                assert len(from_payload(state.data, LimiterData).holders) <= 2
                continue
            customer = from_payload(state.data, Work).customer
            if state.saga_type == Whole.type_name:
                entered = state.node is not None and not state.is_terminal
                whole[customer] += 1 if entered else 0
                assert not entered or [x.status for x in state.slots] == ["held"]
                continue
            work = state.steps.get("work")
            if work is not None and work.status == "running":
                running[customer] += 1
            holding[customer] += sum(1 for s in state.slots if s.status == "held")
        assert all(v <= 2 for v in running.values()), running
        assert all(v <= 2 for v in holding.values()), holding
        assert all(v <= 1 for v in whole.values()), whole


action = st.tuples(
    st.sampled_from(["deliver", "deliver", "deliver", "abort", "answer", "time", "cancel"]),
    st.integers(0, 1000),
    st.sampled_from(["ok", "ok", "fail", "hang"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    customers=st.lists(st.sampled_from(["a", "b"]), min_size=2, max_size=8),
    wholes=st.lists(st.sampled_from(["a", "b"]), max_size=4),
    actions=st.lists(action, max_size=120),
)
def test_sagas_never_run_more_than_the_limit_and_leak_no_slot(
    customers: list[str], wholes: list[str], actions: list[tuple[str, int, str]]
) -> None:
    world = World()
    saga_ids = [f"saga-{i}" for i in range(len(customers))]
    whole_ids = [f"whole-{i}" for i in range(len(wholes))]
    starts = [(i, c, Limited.type_name) for i, c in zip(saga_ids, customers, strict=True)]
    starts += [(i, c, Whole.type_name) for i, c in zip(whole_ids, wholes, strict=True)]
    for saga_id, customer, saga_type in starts:
        payload = to_payload(Work(customer=customer))
        world.topic[saga_id].append(
            StartSaga(
                envelope=world.env(saga_id, saga_type),
                data=payload,
                input_sha256=input_sha256(payload),
            )
        )
    saga_ids += whole_ids
    for kind, n, how in actions:
        keys = sorted(k for k, msgs in world.topic.items() if msgs)
        if kind in ("deliver", "abort") and keys:
            world.deliver(keys[n % len(keys)], commit=kind == "deliver")
        elif kind == "answer" and world.tasks:
            world.answer(n, how)
        elif kind == "time":
            world.now += timedelta(seconds=n % 40)
            world.fire_timers()
        elif kind == "cancel":
            saga_id = saga_ids[n % len(saga_ids)]
            world.topic[saga_id].append(
                CancelSaga(envelope=world.env(saga_id), by="tests", reason="property")
            )
        world.check()
    # drain: deliver everything, answer every task, let the timers fire
    for _ in range(500):
        keys = sorted(k for k, msgs in world.topic.items() if msgs)
        if keys:
            world.deliver(keys[0])
        elif world.tasks:
            world.answer(0, "ok")
        else:
            if not any(LOGIC.timers(state) for state in world.states.values()):
                break
            world.now += timedelta(seconds=31)
            world.fire_timers()
        world.check()
    for saga_id in saga_ids:
        state = world.states[saga_id]
        assert isinstance(state, SagaState) and state.is_terminal, saga_id
        assert not state.slots
    for key, state in world.states.items():
        if isinstance(state, SagaState) and state.saga_type == LIMITER_SAGA_TYPE:
            data = from_payload(state.data, LimiterData)
            assert not data.holders and not data.queue, key
            granted = world.grants[key]
            assert granted == [h for h in world.arrivals[key] if h in set(granted)]
