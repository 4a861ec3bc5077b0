"""The pure decider: ``decide(definition, state, input) -> Decision``.

No I/O, no clock, no randomness: the time is the input's
``envelope.occurred_at``, outgoing message ids derive from the input's
message id, retry jitter from the saga id, step and attempt.  Every event
is applied with :func:`sagaline.orchestrator.core.fold.evolve` as it is decided, so
``Decision.state`` always equals the fold of the events.

Task step names: a step's own name; ``"<agent>#<turn>"`` for an agent's LLM
turn; ``"<agent>.<tool>#<turn>"`` for a tool call decided in that turn (see
:func:`sagaline.orchestrator.core.saga.parse_task_step`).  Task ``args`` are the saga data
for steps and compensations, an :class:`~sagaline.orchestrator.core.agents.AgentTurn` for
LLM turns and the validated tool arguments for tool calls.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from sagaline.orchestrator.core.decider_agents import AgentDecider
from sagaline.orchestrator.core.decider_base import (
    INPUT_TYPES,
    Decision,
    Input,
    Outgoing,
    derive_message_id,
    failure_pause_reason,
)
from sagaline.orchestrator.core.errors import RoutingError
from sagaline.orchestrator.core.payloads import (
    PayloadDecodeError,
    from_payload,
    to_payload,
)
from sagaline.orchestrator.core.saga import (
    AgentSpec,
    ChildSpec,
    Node,
    ParallelSpec,
    Saga,
    SignalInfo,
    SleepSpec,
    StepSpec,
    WaitSpec,
    parse_task_step,
)
from sagaline.schemas.base import Envelope
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
    AgentObservation,
    BudgetExceeded,
    CompensationRetryDue,
    HeartbeatRecorded,
    IgnoreReason,
    SagaPaused,
    SagaResumed,
    SagaStarted,
    SignalAccepted,
    SignalRejected,
    SleepEnded,
    SleepStarted,
    StepCompleted,
    StepRetryDue,
    StepRetryRequested,
    StepSkipped,
    StepTimedOut,
    WaitOpened,
    WaitTimedOut,
)
from sagaline.schemas.replies import (
    CompensationFailed,
    CompensationSucceeded,
    StepFailed,
    StepHeartbeat,
    StepSucceeded,
)
from sagaline.schemas.state import SagaState, StepState, Timer, WaitState
from sagaline.schemas.timers import TimerFired

__all__ = [
    "INPUT_TYPES",
    "Decision",
    "Input",
    "Outgoing",
    "decide",
    "derive_message_id",
    "pending_timers",
    "timer_input",
]


def decide(definition: type[Saga[Any]], state: SagaState | None, input: Input) -> Decision:
    """Decide ``input`` against ``state`` under ``definition`` (pure)."""
    decider = _Decider(definition, state, input)
    rejected = decider.run()
    return Decision(
        events=tuple(decider.events),
        outgoing=tuple(decider.outgoing),
        state=decider.state,
        rejected=rejected,
    )


def pending_timers(state: SagaState | None) -> list[Timer]:
    """The timers of ``state`` in due order (empty for no state or a finished saga)."""
    if state is None or state.is_terminal:
        return []
    return sorted(state.timers, key=lambda t: (t.due_at, t.timer_id))


def timer_input(state: SagaState, timer: Timer, now: datetime) -> TimerFired:
    """The ``TimerFired`` input for a due ``timer`` (its id is stable across re-firings)."""
    return TimerFired(
        envelope=Envelope(
            message_id=derive_message_id(
                state.saga_id, "timer", timer.timer_id, timer.due_at.isoformat()
            ),
            saga_id=state.saga_id,
            saga_type=state.saga_type,
            saga_version=state.saga_version,
            occurred_at=max(now, timer.due_at),
            correlation_id=state.saga_id,
        ),
        timer_id=timer.timer_id,
        kind=timer.kind,
        due_at=timer.due_at,
        step=timer.step,
        attempt=timer.attempt,
    )


_MAX_MOVES = 1000


class _Decider(AgentDecider):
    """Handles each kind of input, then lets the saga advance."""

    # -- entry ----------------------------------------------------------------

    def run(self) -> str | None:
        inp = self.input
        if self.state is None:
            if isinstance(inp, StartSaga):
                return self.start(inp)
            return f"no saga {self.env.saga_id!r} for {type(inp).__name__}"
        if isinstance(inp, StartSaga):
            same = inp.input_sha256 == self.s.input_sha256
            self.ignore("duplicate" if same else "conflict", "saga already started")
            return None
        if self.s.is_terminal:
            if isinstance(inp, SignalSaga):
                self.reject_signal(inp, f"saga is {self.s.status}")
            else:
                self.ignore("terminal", f"saga is {self.s.status}")
            return None
        handler = _HANDLERS[type(inp)]
        handler(self, inp)
        self.check_budget()
        self.advance()
        return None

    def start(self, cmd: StartSaga) -> str | None:
        try:
            from_payload(cmd.data, self.defn.data_type)
        except PayloadDecodeError as exc:
            return str(exc)
        deadline = cmd.deadline_at
        if deadline is None and self.defn.deadline is not None:
            deadline = self.now + self.defn.deadline
        self.emit(
            SagaStarted(
                at=self.now,
                saga_id=self.env.saga_id,
                saga_type=self.defn.type_name,
                saga_version=self.defn.version,
                data=cmd.data,
                input_sha256=cmd.input_sha256,
                requested_by=cmd.requested_by,
                deadline_at=deadline,
                parent=cmd.parent,
            )
        )
        self.enter(self.defn.next_node(None), previous=None, via="start")
        self.advance()
        return None

    def advance(self) -> None:
        for _ in range(_MAX_MOVES):
            state = self.state
            if state is None or state.is_terminal or state.status == "paused":
                return
            if state.status == "compensating":
                self.drive_compensation()
                return
            if state.node is None:
                return
            moved = self.drive(self.defn.node(state.node))
            if not moved and self.s.status == state.status:
                return
        raise RoutingError(f"{self.defn.type_name}: more than {_MAX_MOVES} moves in one decision")

    def drive(self, node: Node) -> bool:
        """Make the current node progress; True when the saga moved to another node."""
        s = self.s
        if isinstance(node, StepSpec | ChildSpec):
            st = s.steps[node.name]
            if st.status in ("pending", "ready"):
                if isinstance(node, ChildSpec):
                    self.dispatch_child(node, st)
                else:
                    self.dispatch_step(node, st)
                return False
            if st.status in ("succeeded", "skipped"):
                self.route_after(node)
                return True
            return False
        if isinstance(node, ParallelSpec):
            for b in node.branches:
                st = s.steps[b.name]
                if st.status in ("pending", "ready"):
                    self.dispatch_step(b, st)
            if all(s.steps[b.name].status in ("succeeded", "skipped") for b in node.branches):
                self.route_after(node)
                return True
            return False
        if isinstance(node, WaitSpec):
            if any(w.name == node.name for w in s.waits):
                return False
            if node.when_fn is not None and not node.when_fn(self.saga, self.data()):
                self.enter(self.defn.next_node(node.name), previous=node.name, via="not needed")
                return True
            assert node.timeout is not None
            self.emit(
                WaitOpened(
                    at=self.now,
                    name=node.name,
                    kind=node.signal_kind,
                    timeout_at=self.now + node.timeout,
                )
            )
            return False
        if isinstance(node, SleepSpec):
            if s.sleeping_until is None:
                until = self.now + node.duration_for(self.saga, self.data())
                self.emit(SleepStarted(at=self.now, name=node.name, until=until))
            return False
        if isinstance(node, AgentSpec):
            return self.drive_agent(node)
        raise RoutingError(f"cannot run node {node!r}")  # pragma: no cover

    def on_step_succeeded(self, r: StepSucceeded) -> None:
        st = self.s.steps.get(r.step)
        verdict = _classify_success(st, r.task_id, r.idempotency_key)
        if verdict is not None:
            self.ignore(verdict, f"{r.step} attempt {r.attempt}")
            return
        assert st is not None
        self.record_usage(r.step, r.usage)
        node_name, tool_name, turn = parse_task_step(r.step)
        node = self.defn.nodes.get(node_name)
        if isinstance(node, AgentSpec) and turn is not None:
            self.emit(
                StepCompleted(
                    at=self.now, step=r.step, attempt=r.attempt, result=r.result, data=self.s.data
                )
            )
            if self.compensating or st.status == "abandoned":
                return
            if tool_name is None:
                self.on_agent_decision(node, turn, r.result)
            else:
                content = r.result.data.decode() if r.result and r.result.data else "ok"
                self.emit(
                    AgentObservation(
                        at=self.now,
                        agent=node.name,
                        turn=turn,
                        tool=tool_name,
                        ok=True,
                        content=content,
                    )
                )
            return
        try:
            new_data = self.fold_result(node, r.result)
        except PayloadDecodeError as exc:
            self.emit_failure(r.step, r.attempt, False, "InvalidResult", str(exc))
            return
        self.emit(
            StepCompleted(
                at=self.now,
                step=r.step,
                attempt=r.attempt,
                result=r.result,
                data=to_payload(new_data),
            )
        )

    def on_step_failed(self, r: StepFailed) -> None:
        st = self.s.steps.get(r.step)
        verdict = _classify_failure(st, r.task_id)
        if verdict is not None:
            self.ignore(verdict, f"{r.step} attempt {r.attempt}")
            return
        self.record_usage(r.step, r.usage)
        self.emit_failure(r.step, r.attempt, r.retryable, r.error_type, r.error_message)

    def on_heartbeat(self, r: StepHeartbeat) -> None:
        st = self.s.steps.get(r.step)
        if st is None or st.task_id != r.task_id or st.status != "running":
            self.ignore("stale", f"heartbeat of {r.step} attempt {r.attempt}")
            return
        deadline = None
        if st.heartbeat_timeout_ms is not None:
            deadline = self.now + timedelta(milliseconds=st.heartbeat_timeout_ms)
        self.emit(
            HeartbeatRecorded(
                at=self.now,
                step=r.step,
                attempt=r.attempt,
                progress=r.progress,
                detail=r.detail,
                heartbeat_deadline_at=deadline,
            )
        )

    # -- waits, signals, sleeps, timers ---------------------------------------

    def reject_signal(self, sig: SignalSaga, reason: str) -> None:
        self.emit(
            SignalRejected(
                at=self.now,
                name=sig.name,
                by=sig.by,
                reason=reason,
                approved=sig.approved,
                message_id=sig.envelope.message_id,
            )
        )

    def on_signal(self, sig: SignalSaga) -> None:
        wait = _find_wait(self.s.waits, sig.name)
        if wait is None:
            open_names = ", ".join(w.name for w in self.s.waits) or "none"
            self.reject_signal(sig, f"not waiting for {sig.name!r} (open waits: {open_names})")
            return
        if wait.kind in ("approval", "tool_approval") and sig.approved is None:
            self.reject_signal(sig, "an approval needs approved=true or approved=false")
            return
        if wait.kind == "tool_approval":
            self.on_tool_approval(wait, sig)
            return
        node = self.defn.node(wait.name)
        assert isinstance(node, WaitSpec)
        data = self.data()
        if node.on_signal_fn is not None:
            info: BaseModel = SignalInfo(
                name=sig.name, by=sig.by, approved=sig.approved, note=sig.note
            )
            if node.payload_type is not None:
                if sig.payload is None:
                    self.reject_signal(sig, f"signal needs a {node.payload_type.__name__}")
                    return
                try:
                    info = from_payload(sig.payload, node.payload_type)
                except PayloadDecodeError as exc:
                    self.reject_signal(sig, str(exc))
                    return
            data = node.on_signal_fn(self.saga, data, info)
        self.emit(
            SignalAccepted(
                at=self.now,
                name=wait.name,
                by=sig.by,
                approved=sig.approved,
                note=sig.note,
                payload=sig.payload,
                data=to_payload(data),
            )
        )
        if sig.approved is False:
            note = f": {sig.note}" if sig.note else ""
            self.apply_action(node.on_reject, node, f"{wait.name} rejected by {sig.by}{note}")
        else:
            self.apply_action(node.on_approve, node, f"{wait.name} approved by {sig.by}")

    def on_timer(self, t: TimerFired) -> None:
        timer = next((x for x in self.s.timers if x.timer_id == t.timer_id), None)
        if timer is None:
            self.ignore("stale", f"timer {t.timer_id} is no longer set")
            return
        if timer.due_at > self.now:
            self.ignore("stale", f"timer {t.timer_id} is due at {timer.due_at.isoformat()}")
            return
        kind = timer.kind
        if kind == "retry" and timer.step is not None:
            self.emit(StepRetryDue(at=self.now, step=timer.step, attempt=timer.attempt or 0))
        elif kind in ("step_timeout", "heartbeat_timeout") and timer.step is not None:
            self.on_step_timeout(timer)
        elif kind == "wait_timeout":
            self.on_wait_timeout(timer.timer_id.partition(":")[2])
        elif kind == "sleep" and timer.step is not None:
            self.emit(SleepEnded(at=self.now, name=timer.step))
            node = self.defn.node(timer.step)
            self.enter(self.defn.next_node(node.name), previous=node.name, via="slept")
        elif kind == "saga_deadline":
            self.start_compensation("saga deadline passed")
        elif kind == "compensation_retry" and timer.step is not None:
            self.emit(
                CompensationRetryDue(at=self.now, step=timer.step, attempt=timer.attempt or 0)
            )
        else:
            self.ignore("not_applicable", f"timer kind {kind}")

    def on_step_timeout(self, timer: Timer) -> None:
        assert timer.step is not None
        st = self.s.steps[timer.step]
        attempt = timer.attempt or st.attempt
        kind = "heartbeat_timeout" if timer.kind == "heartbeat_timeout" else "step_timeout"
        self.emit(StepTimedOut(at=self.now, step=timer.step, attempt=attempt, kind=kind))
        node = self.defn.nodes.get(timer.step)
        if isinstance(node, ChildSpec):
            self.send(
                "commands",
                CancelSaga(
                    envelope=self.envelope(
                        st.task_id, node.definition.type_name, node.definition.version
                    ),
                    by=f"saga:{self.s.saga_id}",
                    reason="child saga timed out",
                ),
            )
        error = "HeartbeatTimedOut" if kind == "heartbeat_timeout" else "StepTimedOut"
        self.emit_failure(timer.step, attempt, True, error, f"attempt {attempt} timed out")

    def on_wait_timeout(self, name: str) -> None:
        wait = next((w for w in self.s.waits if w.name == name), None)
        self.emit(WaitTimedOut(at=self.now, name=name))
        if wait is not None and wait.kind == "tool_approval" and wait.agent is not None:
            _, tool_name, turn = parse_task_step(name)
            self.emit(
                AgentObservation(
                    at=self.now,
                    agent=wait.agent,
                    turn=turn or 0,
                    tool=tool_name,
                    ok=False,
                    content=f"the call of {tool_name} was not approved in time",
                )
            )
            return
        node = self.defn.node(name)
        assert isinstance(node, WaitSpec)
        self.apply_action(node.on_timeout, node, f"{name} timed out")

    # -- operator commands ----------------------------------------------------

    def on_cancel(self, c: CancelSaga) -> None:
        if self.compensating:
            self.ignore("not_applicable", "already compensating")
            return
        why = f": {c.reason}" if c.reason else ""
        if self.s.status == "paused":  # an operator's cancel overrides the pause
            self.emit(SagaResumed(at=self.now, by=c.by, reason="cancelled"))
        self.start_compensation(f"cancelled by {c.by}{why}", final="cancelled")

    def on_pause(self, c: PauseSaga) -> None:
        if self.s.status == "paused":
            self.ignore("duplicate", "already paused")
            return
        self.emit(SagaPaused(at=self.now, by=c.by, reason=c.reason))

    def on_resume(self, c: ResumeSaga) -> None:
        if self.s.status != "paused":
            self.ignore("not_applicable", f"saga is {self.s.status}")
            return
        self.emit(SagaResumed(at=self.now, by=c.by, reason=c.reason))

    def on_retry_step(self, c: RetryStep) -> None:
        st = self.s.steps.get(c.step)
        if st is None:
            self.ignore("unknown_step", c.step)
            return
        if self.compensating:
            if st.compensation_status == "retry_wait":
                self.emit(
                    CompensationRetryDue(at=self.now, step=c.step, attempt=st.compensation_attempt)
                )
            else:
                self.ignore(
                    "not_applicable", f"compensation of {c.step} is {st.compensation_status}"
                )
            return
        if st.status not in ("failed", "retry_wait") or not self.is_current(c.step):
            self.ignore("not_applicable", f"step {c.step} is {st.status}")
            return
        self.emit(StepRetryRequested(at=self.now, step=c.step, by=c.by, reason=c.reason))
        if self.s.status == "paused" and self.s.pause_reason == failure_pause_reason(c.step):
            self.emit(SagaResumed(at=self.now, by=c.by, reason=f"retry of {c.step}"))

    def is_current(self, step: str) -> bool:
        """Whether ``step`` is what the saga is on: its node, a branch, an agent's task."""
        s = self.s
        if step == s.node or step in s.branches:
            return True
        agent = s.agents.get(s.node or "")
        if agent is None:
            return False
        return step in (agent.pending_tool_step, f"{agent.name}#{agent.turn}")

    def on_skip_step(self, c: SkipStep) -> None:
        st = self.s.steps.get(c.step)
        node = self.defn.nodes.get(c.step)
        if st is None or not isinstance(node, StepSpec | ChildSpec):
            self.ignore("unknown_step", c.step)
            return
        if (
            self.compensating
            or not self.is_current(c.step)
            or st.status not in ("pending", "ready", "running", "retry_wait", "failed")
        ):
            self.ignore("not_applicable", f"step {c.step} is {st.status}")
            return
        try:
            data = self.fold_result(node, c.result)
        except PayloadDecodeError as exc:
            self.ignore("not_applicable", f"skip result rejected: {exc}")
            return
        self.emit(
            StepSkipped(
                at=self.now,
                step=c.step,
                by=c.by,
                reason=c.reason,
                result=c.result,
                data=to_payload(data),
            )
        )
        if self.s.status == "paused" and self.s.pause_reason == failure_pause_reason(c.step):
            self.emit(SagaResumed(at=self.now, by=c.by, reason=f"skip of {c.step}"))

    # -- budgets --------------------------------------------------------------

    def check_budget(self) -> None:
        budget = self.defn.budget
        state = self.state
        if budget is None or state is None or state.is_terminal:
            return
        used = {
            "retries": state.retries_used,
            "llm_calls": state.usage.llm_calls,
            "tokens": state.usage.tokens_in + state.usage.tokens_out,
            "cost_micros": state.usage.cost_micros,
        }
        for kind, limit in budget.limits().items():
            if used[kind] > limit and kind not in self.s.budget_exceeded:
                self.emit(BudgetExceeded(at=self.now, kind=kind, limit=limit, used=used[kind]))
                if self.s.status != "paused" and not self.compensating:
                    self.emit(
                        SagaPaused(at=self.now, by="sagaline", reason=f"budget exceeded: {kind}")
                    )


def _find_wait(waits: list[WaitState], name: str) -> WaitState | None:
    for w in waits:
        if w.name == name:
            return w
    for w in waits:
        if w.kind == "tool_approval" and w.agent == name:
            return w
    return None


def _classify_success(st: StepState | None, task_id: str, key: str) -> IgnoreReason | None:
    """``None`` to accept a success reply, else why it is ignored.

    A success of an earlier attempt of the same execution (same idempotency
    key) is accepted while the step is not done: the effect happened.
    """
    if st is None:
        return "unknown_step"
    if st.status == "running" and st.task_id == task_id:
        return None
    if st.idempotency_key == key and st.status in ("running", "retry_wait", "ready", "abandoned"):
        return None
    if st.idempotency_key == key and st.status == "failed":
        return None
    if st.status == "skipped":
        return "late"
    if st.status == "succeeded":
        return "duplicate" if st.task_id == task_id else "late"
    if st.status == "pending":
        return "out_of_order"
    return "stale"


def _classify_failure(st: StepState | None, task_id: str) -> IgnoreReason | None:
    if st is None:
        return "unknown_step"
    if st.status == "running" and st.task_id == task_id:
        return None
    if st.task_id == task_id and st.status in ("succeeded", "failed", "retry_wait"):
        return "duplicate"
    if st.status == "pending":
        return "out_of_order"
    return "stale"


_HANDLERS: dict[type[Any], Any] = {
    SignalSaga: _Decider.on_signal,
    CancelSaga: _Decider.on_cancel,
    PauseSaga: _Decider.on_pause,
    ResumeSaga: _Decider.on_resume,
    RetryStep: _Decider.on_retry_step,
    SkipStep: _Decider.on_skip_step,
    StepSucceeded: _Decider.on_step_succeeded,
    StepFailed: _Decider.on_step_failed,
    StepHeartbeat: _Decider.on_heartbeat,
    CompensationSucceeded: _Decider.on_compensation_succeeded,
    CompensationFailed: _Decider.on_compensation_failed,
    TimerFired: _Decider.on_timer,
}
