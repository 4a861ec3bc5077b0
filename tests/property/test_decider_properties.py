"""Property tests of the decider: random definitions, random input sequences.

Inputs include duplicates, stale attempts, reorderings, timer firings,
signals (right and wrong), cancels, pauses, operator retries and crashes
(modelled as re-deciding the last inputs from an earlier snapshot, and as
re-delivery of inputs already decided).  After every input:

* folding the events decided so far equals the state snapshot;
* every input left at least one journal event (nothing is dropped silently);
* the same input on the same state decides the same thing (determinism).

And across the run: a completed step is never dispatched again; compensations
run only for completed compensable steps, each once, in reverse completion
order; the saga ends in exactly one terminal status and nothing happens
after it; a saga that is driven to the end does end.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sagaline.orchestrator.core.agents import AgentDecision, AgentTurn
from sagaline.orchestrator.core.context import StepContext
from sagaline.orchestrator.core.decider import Decision, Input, decide, pending_timers, timer_input
from sagaline.orchestrator.core.fold import fold
from sagaline.orchestrator.core.payloads import input_sha256, to_payload
from sagaline.orchestrator.core.policies import Retry
from sagaline.orchestrator.core.saga import (
    Node,
    Saga,
    StepSpec,
    agent,
    approval,
    parallel,
    sleep,
    step,
    tool,
)
from sagaline.schemas.base import Envelope, Record
from sagaline.schemas.commands import (
    CancelSaga,
    PauseSaga,
    ResumeSaga,
    RetryStep,
    SignalSaga,
    SkipStep,
    StartSaga,
)
from sagaline.schemas.events import (
    AgentGaveUp,
    AgentTurnRecorded,
    CompensationDispatched,
    CompensationStarted,
    InputIgnored,
    NodeEntered,
    SagaFinished,
    SignalAccepted,
    SignalRejected,
    StepCompensated,
    StepCompleted,
    StepDispatched,
    WaitOpened,
)
from sagaline.schemas.replies import (
    CompensationFailed,
    CompensationSucceeded,
    StepFailed,
    StepHeartbeat,
    StepSucceeded,
)
from sagaline.schemas.state import SagaState
from sagaline.schemas.tasks import CompensateStep, ExecuteStep

pytestmark = pytest.mark.unit

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Data(BaseModel):
    n: int = 0


def _body(self: Any, ctx: StepContext, data: Data) -> None:
    return None


def _undo(self: Any, ctx: StepContext, data: Data) -> None:
    return None


@dataclass(frozen=True)
class Shape:
    """A random definition: steps (compensable?, max attempts, timeout?), a wait, a pivot."""

    steps: tuple[tuple[bool, int, bool], ...]
    wait_at: int | None
    pivot_at: int | None
    loop: bool = False


@cache
def build(shape: Shape) -> type[Saga[Data]]:
    namespace: dict[str, Any] = {"type_name": "prop"}
    for i, (compensable, attempts, timeout) in enumerate(shape.steps):
        if shape.wait_at == i:
            namespace["ok"] = approval(timeout=timedelta(hours=1))
        pivot = shape.pivot_at == i
        after_pivot = shape.pivot_at is not None and i > shape.pivot_at
        spec: StepSpec = step(
            retry=Retry(max_attempts=attempts, initial=timedelta(seconds=1), jitter=0.5),
            timeout=timedelta(seconds=30) if timeout else None,
            pivot=pivot,
            compensate=_undo if compensable and not pivot and not after_pivot else None,
        )(_body)
        namespace[f"s{i}"] = spec
    if shape.wait_at is not None and shape.wait_at >= len(shape.steps):
        namespace["ok"] = approval(timeout=timedelta(hours=1))
    if shape.loop and shape.pivot_at is None:
        again = step(compensate=_undo)(_count)
        again.on_result(_add)
        again.route("s0")(_loop_back)
        namespace["again"] = again
    return types.new_class("Prop", (Saga[Data],), {}, lambda ns: ns.update(namespace))


def _count(self: Any, ctx: StepContext, data: Data) -> Data:
    return Data(n=1)


def _add(self: Any, data: Data, result: Data) -> Data:
    return data.model_copy(update={"n": data.n + result.n})


def _loop_back(self: Any, data: Data) -> Node | None:
    return type(self).node("s0") if data.n < 2 else None


def results(task: ExecuteStep) -> Any:
    """Results the workers return: the loop counter's increment."""
    return to_payload(Data(n=1)) if task.step == "again" else None


shapes = st.builds(
    Shape,
    steps=st.lists(
        st.tuples(st.booleans(), st.integers(1, 3), st.booleans()), min_size=1, max_size=5
    ).map(tuple),
    wait_at=st.none() | st.integers(0, 5),
    pivot_at=st.none() | st.integers(0, 4),
    loop=st.booleans(),
)


@dataclass
class Run:
    """Feeds inputs to ``decide`` the way the runtime does and checks every step."""

    definition: type[Saga[Data]]
    now: datetime = T0
    state: SagaState | None = None
    counter: int = 0
    history: list[tuple[SagaState | None, Input, Decision]] = field(default_factory=list)
    tasks: list[ExecuteStep | CompensateStep] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    events: list[Any] = field(default_factory=list)
    llm: Any = None  # task -> result payload a worker returns (None: no result)
    folded: SagaState | None = None

    def env(self) -> Envelope:
        self.counter += 1
        return Envelope(
            message_id=f"m-{self.counter}",
            saga_id="s-1",
            saga_type="prop",
            occurred_at=self.now,
            correlation_id="s-1",
        )

    def feed(self, inp: Input) -> Decision:
        before = self.state
        decision = decide(self.definition, before, inp)
        assert decide(self.definition, before, inp) == decision, "decide is not deterministic"
        if before is not None:
            assert decision.events, f"{type(inp).__name__} left no journal event"
        if before is not None and before.is_terminal:
            assert all(isinstance(e, InputIgnored | SignalRejected) for e in decision.events)
            assert decision.outgoing == ()
        self.history.append((before, inp, decision))
        self.events.extend(decision.events)
        self.state = decision.state
        self.folded = fold(decision.events, self.folded)  # the journal so far, folded
        assert self.folded == self.state, "fold(journal) != state"
        for out in decision.outgoing:
            if isinstance(out.record, ExecuteStep | CompensateStep):
                self.tasks.append(out.record)
        return decision

    def open_tasks(self) -> list[ExecuteStep | CompensateStep]:
        return [t for t in self.tasks if t.task_id not in self.answered]

    def reply(self, task: ExecuteStep | CompensateStep, ok: bool, retryable: bool) -> None:
        self.answered.add(task.task_id)
        common: dict[str, Any] = {
            "envelope": self.env(),
            "step": task.step,
            "attempt": task.attempt,
            "idempotency_key": task.idempotency_key,
            "task_id": task.task_id,
        }
        failure: dict[str, Any] = {
            "retryable": retryable,
            "error_type": "E",
            "error_message": "x",
        }
        rec: Record
        if isinstance(task, ExecuteStep):
            result = self.llm(task) if self.llm is not None and ok else None
            rec = StepSucceeded(**common, result=result) if ok else StepFailed(**common, **failure)
        else:
            rec = CompensationSucceeded(**common) if ok else CompensationFailed(**common, **failure)
        self.feed(rec)

    def fire_next_timer(self) -> bool:
        timers = pending_timers(self.state)
        if not timers or self.state is None:
            return False
        timer = timers[0]
        self.now = max(self.now, timer.due_at)
        self.counter += 1
        self.feed(timer_input(self.state, timer, self.now))
        return True

    def crash_and_redecide(self, k: int) -> None:
        """A crash before commit: the last ``k`` decisions are lost and re-made."""
        tail = self.history[-k:]
        state = tail[0][0]
        for before, inp, decision in tail:
            assert before == state
            again = decide(self.definition, state, inp)
            assert again == decision, "re-deciding after a crash changed the decision"
            state = again.state


def drive(run: Run, data: st.DataObject, actions: int) -> None:
    start = to_payload(Data())
    run.feed(StartSaga(envelope=run.env(), data=start, input_sha256=input_sha256(start)))
    for _ in range(actions):
        state = run.state
        assert state is not None
        choice = data.draw(
            st.sampled_from(
                [
                    "ok",
                    "ok",
                    "ok",
                    "fail",
                    "fail_final",
                    "dup",
                    "stale",
                    "timer",
                    "approve",
                    "reject",
                    "bogus_signal",
                    "cancel",
                    "pause",
                    "resume",
                    "retry",
                    "skip",
                    "heartbeat",
                    "crash",
                ]
            ),
            label="action",
        )
        open_tasks = run.open_tasks()
        if choice in ("ok", "fail", "fail_final") and open_tasks:
            task = data.draw(st.sampled_from(open_tasks), label="task")
            run.reply(task, ok=choice == "ok", retryable=choice == "fail")
        elif choice == "dup" and run.history:
            _, inp, _ = data.draw(st.sampled_from(run.history), label="dup")
            run.feed(inp)
        elif choice == "stale" and run.tasks:
            task = data.draw(st.sampled_from(run.tasks), label="stale")
            run.reply(task, ok=data.draw(st.booleans(), label="stale_ok"), retryable=True)
        elif choice == "timer":
            run.fire_next_timer()
        elif choice in ("approve", "reject"):
            run.feed(
                SignalSaga(envelope=run.env(), name="ok", by="p", approved=choice == "approve")
            )
        elif choice == "bogus_signal":
            run.feed(SignalSaga(envelope=run.env(), name="nope", by="p", approved=True))
        elif choice == "cancel":
            run.feed(CancelSaga(envelope=run.env(), by="op"))
        elif choice == "pause":
            run.feed(PauseSaga(envelope=run.env(), by="op"))
        elif choice == "resume":
            run.feed(ResumeSaga(envelope=run.env(), by="op"))
        elif choice == "retry":
            names = sorted(state.steps) or ["s0"]
            name = data.draw(st.sampled_from(names), label="retry_step")
            run.feed(RetryStep(envelope=run.env(), step=name, by="op"))
        elif choice == "skip":
            names = sorted(state.steps) or ["s0"]
            name = data.draw(st.sampled_from(names), label="skip_step")
            run.feed(SkipStep(envelope=run.env(), step=name, by="op"))
        elif choice == "heartbeat" and open_tasks:
            task = data.draw(st.sampled_from(open_tasks), label="beat")
            run.feed(
                StepHeartbeat(
                    envelope=run.env(), step=task.step, attempt=task.attempt, task_id=task.task_id
                )
            )
        elif choice == "crash" and len(run.history) >= 2:
            run.crash_and_redecide(data.draw(st.integers(1, min(3, len(run.history))), label="k"))


def finish(run: Run) -> None:
    """Drive the saga to its end: succeed tasks, approve, fire timers, resume."""
    for _ in range(200):
        state = run.state
        assert state is not None
        if state.is_terminal:
            return
        if state.status == "paused":
            run.feed(ResumeSaga(envelope=run.env(), by="op"))
        elif run.open_tasks():
            run.reply(run.open_tasks()[0], ok=True, retryable=True)
        elif state.waits:
            name = state.waits[0].name
            run.feed(SignalSaga(envelope=run.env(), name=name, by="p", approved=True))
        elif not run.fire_next_timer():
            raise AssertionError(f"saga stuck in {state.status} at {state.node}")
    raise AssertionError("saga did not finish")


def check_run(run: Run) -> None:
    events = run.events
    finished = [e for e in events if isinstance(e, SagaFinished)]
    assert len(finished) == 1, "exactly one terminal status"
    end = events.index(finished[0])
    assert all(isinstance(e, InputIgnored | SignalRejected) for e in events[end + 1 :])
    completed: list[str] = []  # step names in order of their latest completion
    done_runs: set[tuple[str, int]] = set()
    run_of: dict[str, int] = {}
    compensable: set[str] = set()
    compensated: list[str] = []
    plan_start: list[str] | None = None
    for e in events:
        if isinstance(e, StepDispatched):
            key = (e.step, e.run)
            assert key not in done_runs, f"completed step {e.step} run {e.run} dispatched again"
            run_of[e.step] = e.run
            if e.compensable:
                compensable.add(e.step)
        elif isinstance(e, StepCompleted):
            key = (e.step, run_of[e.step])
            assert key not in done_runs, f"{e.step} run {key[1]} completed twice"
            done_runs.add(key)
            completed = [s for s in completed if s != e.step] + [e.step]
        elif isinstance(e, CompensationStarted):
            assert plan_start is None, "compensation started twice"
            plan_start = list(completed)
        elif isinstance(e, CompensationDispatched):
            assert e.step in completed and e.step in compensable
            assert plan_start is not None
        elif isinstance(e, StepCompensated):
            assert e.step not in compensated, f"{e.step} compensated twice"
            compensated.append(e.step)
    status = finished[0].status
    event(f"status={status}")
    if any(isinstance(e, NodeEntered) and e.via == "route:s0" for e in events):
        event("looped")
    event(f"compensations={len(compensated)}")
    should_undo = [s for s in completed if s in compensable]
    if status == "completed":
        assert plan_start is None and compensated == []
    elif status in ("compensated", "cancelled"):
        assert sorted(compensated) == sorted(should_undo)
        assert plan_start is not None
        before = [s for s in plan_start if s in compensable]
        order = [s for s in compensated if s in before]
        assert order == list(reversed(before)), "compensations not in reverse order"
    else:
        assert status == "failed"
    signals = [i for _, i, _ in run.history if isinstance(i, SignalSaga)]
    answers = [e for e in events if isinstance(e, SignalAccepted | SignalRejected)]
    assert len(answers) == len(signals), "a signal was dropped"


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(shape=shapes, data=st.data(), actions=st.integers(0, 14))
def test_random_inputs_keep_the_saga_semantics(
    shape: Shape, data: st.DataObject, actions: int
) -> None:
    run = Run(build(shape), llm=results)
    drive(run, data, actions)
    finish(run)
    check_run(run)
    for e in run.events:
        if isinstance(e, AgentTurnRecorded | AgentGaveUp | WaitOpened):
            event(type(e).__name__ + (f":{e.kind}" if isinstance(e, WaitOpened) else ""))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=shapes, outcomes=st.lists(st.sampled_from(["ok", "fail", "final"]), max_size=12))
def test_happy_and_failing_paths_end_cleanly(shape: Shape, outcomes: list[str]) -> None:
    run = Run(build(shape), llm=results)
    start = to_payload(Data())
    run.feed(StartSaga(envelope=run.env(), data=start, input_sha256=input_sha256(start)))
    for outcome in outcomes:
        open_tasks = run.open_tasks()
        if not open_tasks:
            break
        run.reply(open_tasks[0], ok=outcome == "ok", retryable=outcome == "fail")
        if outcome == "fail":
            run.fire_next_timer()
    finish(run)
    check_run(run)


class Args(BaseModel):
    q: str


def _tool(self: Any, ctx: StepContext, args: Args) -> None:
    return None


def _undo_tool(self: Any, ctx: StepContext, args: Args) -> None:
    return None


def _llm(self: Any, ctx: StepContext, turn: AgentTurn) -> AgentDecision:
    return AgentDecision.final("x")


@dataclass(frozen=True)
class MixShape:
    """parallel(b0..bk) → sleep → (agent with a compensable tool and a risky one) → step."""

    branches: tuple[bool, ...]
    with_sleep: bool
    with_agent: bool
    max_turns: int


@cache
def build_mix(shape: MixShape) -> type[Saga[Data]]:
    namespace: dict[str, Any] = {"type_name": "mix"}
    branch_specs = []
    for i, compensable in enumerate(shape.branches):
        spec = step(compensate=_undo if compensable else None)(_body)
        namespace[f"b{i}"] = spec
        branch_specs.append(spec)
    if len(branch_specs) >= 2:
        namespace["fan"] = parallel(*branch_specs)
    if shape.with_sleep:
        namespace["nap"] = sleep(timedelta(minutes=30))
    if shape.with_agent:
        lookup = tool()(_tool)
        lookup.compensation(_undo_tool)
        namespace["lookup"] = lookup
        namespace["send"] = tool(risky=True)(_tool)
        think = agent(tools=[lookup, namespace["send"]], max_turns=shape.max_turns)
        think.llm(_llm)
        namespace["think"] = think
    namespace["last"] = step(compensate=_undo)(_body)
    return types.new_class("Mix", (Saga[Data],), {}, lambda ns: ns.update(namespace))


mix_shapes = st.builds(
    MixShape,
    branches=st.lists(st.booleans(), min_size=2, max_size=3).map(tuple),
    with_sleep=st.booleans(),
    with_agent=st.booleans(),
    max_turns=st.integers(1, 4),
)

DECISIONS = [
    AgentDecision.final("done"),
    AgentDecision.call("lookup", {"q": "a"}),
    AgentDecision.call("lookup", {"nope": 1}),
    AgentDecision.call("send", {"q": "b"}),
    AgentDecision.call("missing", {}),
]


@settings(
    max_examples=350,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(shape=mix_shapes, data=st.data(), actions=st.integers(0, 16))
def test_parallel_sleep_and_agents_keep_the_semantics(
    shape: MixShape, data: st.DataObject, actions: int
) -> None:
    run = Run(build_mix(shape))

    def llm(task: ExecuteStep) -> Any:
        if "#" not in task.step or "." in task.step:
            return None
        return to_payload(data.draw(st.sampled_from(DECISIONS), label="llm"))

    run.llm = llm
    drive(run, data, actions)
    finish(run)
    check_run(run)
    for e in run.events:
        if isinstance(e, AgentTurnRecorded | AgentGaveUp | WaitOpened):
            event(type(e).__name__ + (f":{e.kind}" if isinstance(e, WaitOpened) else ""))
